// test_jb_outdir.c: run directories (common/serve/jb_outdir.h) with the bundled VQ-VAE
// (models/default): what a finished job leaves (job.json, labels.json, codes.jbc, audio of
// every level present, index.html), a failed job's error.json, no overwriting, nothing
// half-written when a job cannot be written.
#include <dirent.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "jb_audio.h"
#include "jb_codes.h"
#include "jb_outdir.h"
#include "jb_safetensors.h"
#include "jb_test.h"
#include "jb_vqvae.h"

static char root[256];

static int exists(const char *rel) {
    char p[600];
    snprintf(p, sizeof p, "%s/%s", root, rel);
    return access(p, F_OK) == 0;
}

static json_t *load(const char *rel) {
    char p[600];
    snprintf(p, sizeof p, "%s/%s", root, rel);
    return json_load_file(p, 0, NULL);
}

// Entries of root whose name starts with '.' (a partial run left behind).
static int partials(void) {
    int n = 0;
    DIR *d = opendir(root);
    for (struct dirent *e; d && (e = readdir(d));)
        if (e->d_name[0] == '.' && strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    if (d) closedir(d);
    return n;
}

static char *slurp(const char *rel) {
    char p[600];
    snprintf(p, sizeof p, "%s/%s", root, rel);
    FILE *f = fopen(p, "rb");
    if (!f) return NULL;
    char *b = calloc(1, 1 << 20);
    if (b && fread(b, 1, (1 << 20) - 1, f) == 0) b[0] = 0;
    fclose(f);
    return b;
}

static void test_error(void) {
    jb_err_t err = {0};
    JB_CHECK_OK(jb_outdir_write_error(root, "bad1", 1, 65, "codes out of range", &err), &err,
                "error.json written");
    json_t *j = load("bad1/error.json");
    JB_CHECK(j && !strcmp(json_string_value(json_object_get(j, "job")), "bad1") &&
                 json_integer_value(json_object_get(j, "level")) == 1 &&
                 json_integer_value(json_object_get(j, "code")) == 65 &&
                 !strcmp(json_string_value(json_object_get(j, "error")), "codes out of range"),
             "error.json: job, level, code, error");
    json_decref(j);
    JB_CHECK_OK(jb_outdir_write_error(root, "bad1", 0, 70, "again", &err), &err, "same id again");
    j = load("bad1.1/error.json");
    JB_CHECK(j && json_integer_value(json_object_get(j, "code")) == 70,
             "an existing run is not overwritten: the second goes to bad1.1");
    json_decref(j);
    j = load("bad1/error.json");
    JB_CHECK(j && json_integer_value(json_object_get(j, "code")) == 65, "the first is intact");
    json_decref(j);
    JB_CHECK(partials() == 0, "no partial run left");
}

static void test_run(jb_vqvae_t *vq) {
    jb_err_t err = {0};
    const jb_vqvae_hparams_t *hp = jb_vqvae_hparams(vq);
    jb_codes_t c;
    JB_CHECK_OK(jb_codes_init(&c, "song1", 3, 2, hp->l_bins, &err), &err, "codes init");
    enum { T2 = 8 };
    int32_t top[2 * T2];
    for (int i = 0; i < 2 * T2; i++) top[i] = (i * 7 + 3) % hp->l_bins;
    JB_CHECK_OK(jb_codes_put(&c, 2, 0, 0, 2, T2, top, &err), &err, "top codes");
    jb_outdir_job_t o;
    memset(&o, 0, sizeof o);
    o.codes = &c;
    o.labels[2] = "{\"artist_id\": 3, \"genre_ids\": [1, 2], \"lyrics\": \"la la\"}";
    char *final = NULL;
    JB_CHECK_OK(jb_outdir_write(root, vq, &o, &final, &err), &err, "run written");
    char want[400];
    snprintf(want, sizeof want, "%s/song1", root);
    JB_CHECK(final && !strcmp(final, want), "final directory %s", final ? final : "none");
    free(final);
    JB_CHECK(exists("song1/job.json") && exists("song1/labels.json") && exists("song1/codes.jbc") &&
                 exists("song1/index.html"),
             "job.json, labels.json, codes.jbc, index.html");
    JB_CHECK(exists("song1/level_2/sample_0.wav") && exists("song1/level_2/sample_1.wav") &&
                 !exists("song1/level_1") && !exists("song1/level_0"),
             "audio of the level present only, one file per sample");
    json_t *l = load("song1/labels.json");
    JB_CHECK(l && json_integer_value(json_object_get(json_object_get(l, "level_2"), "artist_id")) == 3 &&
                 json_is_null(json_object_get(l, "level_0")),
             "labels.json: level_2 as the stage reported, the others null");
    json_decref(l);
    jb_codes_t back;
    char p[600];
    snprintf(p, sizeof p, "%s/song1/codes.jbc", root);
    JB_CHECK_OK(jb_codes_load(&back, p, &err), &err, "codes.jbc loads");
    JB_CHECK(jb_codes_len(&back, 2) == T2 && !memcmp(jb_codes_row(&back, 2, 1), top + T2, sizeof(int32_t) * T2),
             "codes.jbc holds the codes");
    jb_codes_free(&back);
    float *x = NULL;
    int64_t n = 0;
    snprintf(p, sizeof p, "%s/song1/level_2/sample_1.wav", root);
    JB_CHECK(jb_audio_read(p, hp->sr, &x, &n, NULL, &err) == 0 && n == (int64_t)T2 * hp->hop_lengths[2],
             "sample_1.wav: %d tokens x hop %d samples (%lld)", T2, hp->hop_lengths[2], (long long)n);
    free(x);
    char *html = slurp("song1/index.html");
    JB_CHECK(html && strstr(html, "id 3") && strstr(html, "ids 1 2") && strstr(html, "<span>l</span><span>a</span><span> </span>") &&
                 strstr(html, "level_2/sample_1.wav"),
             "the page names the artist and genre ids, shows the lyrics (one span a character), "
             "links the audio");
    free(html);

    // audio decoded while the codes streamed in is written as it is
    int64_t T = (int64_t)T2 * hp->hop_lengths[2];
    float *pre = malloc(sizeof(float) * (size_t)(2 * T));
    for (int64_t i = 0; i < 2 * T; i++) pre[i] = i < T ? 0.25f : -0.5f;
    o.audio[2] = pre, o.audio_len[2] = T;
    JB_CHECK_OK(jb_outdir_write(root, vq, &o, NULL, &err), &err, "run with decoded audio");
    snprintf(p, sizeof p, "%s/song1.1/level_2/sample_1.wav", root);
    JB_CHECK(jb_audio_read(p, hp->sr, &x, &n, NULL, &err) == 0 && n == T && x[0] > -0.51f && x[0] < -0.49f,
             "the streamed audio is what was written (%f)", x ? x[0] : 0.0f);
    free(x), free(pre);
    o.audio[2] = NULL;

    // a job that cannot be written leaves nothing
    free(c.spec);
    c.spec = strdup("{not json");
    snprintf(c.job_id, sizeof c.job_id, "broken");
    JB_CHECK(jb_outdir_write(root, vq, &o, NULL, &err) != 0 && err.code == JB_EFORMAT &&
                 strstr(err.msg, "broken"),
             "a bad spec: JB_EFORMAT naming the job (%s)", err.msg);
    JB_CHECK(!exists("broken") && partials() == 0, "  and no directory, no partial left");
    jb_codes_free(&c);
}

int main(void) {
    snprintf(root, sizeof root, "/tmp/test_jb_outdir.%ld", (long)getpid());
    jb_err_t err = {0};
    test_error();
    jb_st_t *st = jb_st_open("models/default/vqvae.safetensors", &err);
    jb_vqvae_t *vq = st ? jb_vqvae_new(st, 0, &err) : NULL;
    JB_CHECK(vq != NULL, "the bundled VQ-VAE loads (%s)", err.msg);
    if (vq) test_run(vq);
    jb_vqvae_destroy(&vq);
    jb_st_close(&st);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    if (getenv("KEEP")) printf("kept %s\n", root);
    else if (system(cmd) != 0) printf("  (could not remove %s)\n", root);
    return jb_test_summary("test_jb_outdir");
}
