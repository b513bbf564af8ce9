// test_jb_collect.c: the end of the pipeline. A job stream whose bottom codes arrive
// window by window is decoded while it streams in; the run directory equals the one
// written from the whole level at once, and incomplete or failed jobs leave error records.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "jb_collect.h"
#include "jb_audio.h"
#include "jb_codec.h"
#include "jb_test.h"

#define MODEL "tests/golden/pipeline_tiny/vqvae.safetensors"

static char g_dir[128];

// A 3-level job of one sample: random codes, the bottom level in windows of `win`.
static void write_stream(const char *path, const char *id, int64_t t2, int win, int complete) {
    jb_err_t err = {0};
    jb_endpoint_t *ep = jb_endpoint_open_out(path, NULL, &err);
    jb_msg_t m;
    jb_msg_init(&m);
    m.type = JB_MSG_JOB;
    jb_msg_set_job_id(&m, id, &err);
    jb_msg_set_spec(&m, "{\"n_samples\": 1}", &err);
    jb_endpoint_send(ep, &m, &err);
    jb_msg_clear(&m);
    srand(7);
    for (int l = 2; l >= 0; l--) {
        int64_t n = t2 << (2 * (2 - l));
        int32_t *codes = malloc(sizeof(int32_t) * (size_t)n);
        for (int64_t i = 0; i < n; i++) codes[i] = rand() % 64;
        int64_t step = l == 0 ? win : n;
        for (int64_t o = 0; o < n; o += step) {
            if (!complete && l == 0 && o + step >= n) break;   // the last window never comes
            jb_msg_init(&m);
            m.type = JB_MSG_CODES;
            m.level = l;
            m.offset = o;
            m.codebook = 64;
            jb_msg_set_job_id(&m, id, &err);
            jb_msg_set_codes(&m, codes + o, 1, o + step < n ? step : n - o, &err);
            jb_endpoint_send(ep, &m, &err);
            jb_msg_clear(&m);
        }
        free(codes);
        if (!complete && l == 0) break;
        jb_msg_init(&m);
        m.type = JB_MSG_END;
        m.level = l;
        jb_msg_set_job_id(&m, id, &err);
        jb_endpoint_send(ep, &m, &err);
        jb_msg_clear(&m);
    }
    if (complete) {
        jb_msg_init(&m);
        m.type = JB_MSG_END;
        jb_msg_set_job_id(&m, id, &err);
        jb_endpoint_send(ep, &m, &err);
        jb_msg_clear(&m);
    }
    JB_CHECK(jb_endpoint_close(&ep, &err) == 0, "stream %s written (%s)", id, err.msg);
}

static int run(jb_vqvae_t *vq, const char *stream, const char *root, int64_t step,
               jb_collect_stats_t *st) {
    jb_err_t err = {0};
    jb_endpoint_t *in = jb_endpoint_open_in(stream, NULL, &err);
    jb_collect_opts_t o = {.root = root, .decode_step = step};
    int rc = in ? jb_collect_run(vq, in, &o, st, &err) : -1;
    if (rc) printf("  collect: %s\n", err.msg);
    jb_endpoint_destroy(&in);
    return rc;
}

int main(void) {
    jb_err_t err = {0};
    snprintf(g_dir, sizeof g_dir, "/tmp/jb_test_collect_%ld", (long)getpid());
    mkdir(g_dir, 0755);
    jb_vqvae_t *vq = jb_codec_load_vqvae(MODEL, 0, &err);
    JB_CHECK(vq != NULL, "model (%s)", err.msg);
    if (!vq) return jb_test_summary("test_jb_collect");
    char stream[256], a[256], b[256];
    snprintf(stream, sizeof stream, "%s/job.jbc", g_dir);
    write_stream(stream, "song", 50, 40, 1);   // 50 top codes = 6400 samples, 800 bottom codes
    snprintf(a, sizeof a, "%s/streamed", g_dir);
    snprintf(b, sizeof b, "%s/whole", g_dir);
    jb_collect_stats_t s1, s2;
    JB_CHECK(run(vq, stream, a, 64, &s1) == 0 && s1.jobs_done == 1, "streamed decode: run written");
    JB_CHECK(run(vq, stream, b, -1, &s2) == 0 && s2.jobs_done == 1, "decode at the end: written");
    JB_CHECK(s1.first_audio_s > 0 && s1.first_audio_s <= s1.total_s,
             "first audio (%.3f s) before the end (%.3f s)", s1.first_audio_s, s1.total_s);
    char fa[300], fb[300];
    snprintf(fa, sizeof fa, "%s/song/level_0/sample_0.wav", a);
    snprintf(fb, sizeof fb, "%s/song/level_0/sample_0.wav", b);
    float *xa = NULL, *xb = NULL;
    int64_t na = 0, nb = 0;
    int ok = jb_audio_read(fa, -1, &xa, &na, NULL, &err) == 0 &&
             jb_audio_read(fb, -1, &xb, &nb, NULL, &err) == 0;
    JB_CHECK(ok && na == 6400 && nb == 6400, "both level-0 files hold 6400 samples (%lld, %lld)",
             (long long)na, (long long)nb);
    double maxd = 0;
    for (int64_t i = 0; ok && i < na; i++)
        if (fabs(xa[i] - xb[i]) > maxd) maxd = fabs(xa[i] - xb[i]);
    // 16-bit files: the float results agree to ~1e-6, so at most one step of rounding.
    JB_CHECK(ok && maxd <= 1.0 / 32768 + 1e-9, "streamed == whole decode (max diff %.3g)", maxd);
    free(xa);
    free(xb);

    // A stream that stops in the middle of the job: an error record, no run.
    snprintf(stream, sizeof stream, "%s/cut.jbc", g_dir);
    write_stream(stream, "cut", 50, 40, 0);
    jb_collect_stats_t s3;
    JB_CHECK(run(vq, stream, a, 64, &s3) == 0 && s3.jobs_failed == 1 && s3.jobs_done == 0,
             "an unfinished job is counted as failed");
    snprintf(fa, sizeof fa, "%s/cut/error.json", a);
    snprintf(fb, sizeof fb, "%s/cut/codes.jbc", a);
    JB_CHECK(access(fa, R_OK) == 0 && access(fb, F_OK) != 0, "error.json and no half run");
    char cmd[300];
    snprintf(cmd, sizeof cmd, "ls -a %s | grep -q partial", a);
    JB_CHECK(system(cmd) != 0, "no .partial directory left");
    jb_vqvae_destroy(&vq);
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    if (system(cmd) != 0) return 1;
    return jb_test_summary("test_jb_collect");
}
