// test_jb_model_files.c: safetensors reading/writing and hyper-parameters.
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "jb_hparams.h"
#include "jb_safetensors.h"
#include "jb_test.h"

static char g_tmp[256];

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (f) {
        fwrite(data, 1, n, f);
        fclose(f);
    }
}

static void *read_bytes(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *p = malloc(sz > 0 ? (size_t)sz : 1);
    *n = fread(p, 1, (size_t)sz, f);
    fclose(f);
    return p;
}

// A safetensors file from a header string and data bytes.
static void write_st(const char *path, const char *hdr, const void *data, size_t n) {
    size_t h = strlen(hdr);
    uint8_t len[8];
    for (int i = 0; i < 8; i++) len[i] = (uint8_t)((uint64_t)h >> (8 * i));
    FILE *f = fopen(path, "wb");
    fwrite(len, 1, 8, f);
    fwrite(hdr, 1, h, f);
    if (n) fwrite(data, 1, n, f);
    fclose(f);
}

static void expect_open_fails(const char *what, const char *path, const char *needle) {
    jb_err_t err = {0};
    jb_st_t *st = jb_st_open(path, &err);
    JB_CHECK(st == NULL, "%s: refused", what);
    JB_CHECK(strstr(err.msg, path) != NULL, "%s: message names the file (%s)", what, err.msg);
    if (needle) JB_CHECK(strstr(err.msg, needle) != NULL, "%s: message mentions '%s' (%s)", what,
                         needle, err.msg);
    jb_st_close(&st);
}

static void test_golden_file(void) {
    jb_err_t err = {0};
    jb_st_t *st = jb_st_open("tests/golden/vqvae_tiny/model.safetensors", &err);
    JB_CHECK(st != NULL, "open golden vqvae_tiny (%s)", err.msg);
    if (!st) return;
    JB_CHECK(jb_st_count(st) == 381, "381 tensors (checkpoint index says 381), got %d",
             jb_st_count(st));
    JB_CHECK(strcmp(jb_st_meta(st, "kind"), "vqvae") == 0, "kind metadata");
    const jb_st_entry_t *k = jb_st_find(st, "bottleneck.level_blocks.0.k");
    JB_CHECK(k && k->dtype == JB_F32 && k->ndim == 2 && k->shape[0] == 32 && k->shape[1] == 16,
             "codebook shape [32, 16]");
    int64_t bad[2] = {16, 32};
    JB_CHECK(jb_st_get(st, "bottleneck.level_blocks.0.k", 2, bad, &err) == NULL &&
                 strstr(err.msg, "bottleneck.level_blocks.0.k") && strstr(err.msg, "[32, 16]"),
             "wrong shape names tensor and shapes: %s", err.msg);
    JB_CHECK(jb_st_get(st, "no.such.tensor", -1, NULL, &err) == NULL &&
                 strstr(err.msg, "no.such.tensor") && strstr(err.msg, "vqvae_tiny"),
             "missing tensor named: %s", err.msg);
    json_t *hp = jb_hparams_from_st(st, &err);
    JB_CHECK(hp != NULL, "hparams parse (%s)", err.msg);
    jb_vqvae_hparams_t v;
    JB_CHECK(hp && jb_vqvae_hparams_parse(hp, &v, &err) == 0, "vqvae hparams (%s)", err.msg);
    // golden README: vqvae_tiny = downs (3,2,2), strides 2, emb 16, l_bins 32, width 8, depth 2
    JB_CHECK(v.levels == 3 && v.downs_t[0] == 3 && v.emb_width == 16 && v.l_bins == 32 &&
                 v.width == 8 && v.depth == 2 && v.multipliers[0] == 2 &&
                 v.reverse_decoder_dilation == 1,
             "vqvae_tiny hparams as the README states");
    JB_CHECK(v.hop_lengths[0] == 8 && v.hop_lengths[1] == 32 && v.hop_lengths[2] == 128,
             "hop lengths 8/32/128");
    json_decref(hp);
    jb_st_close(&st);
    JB_CHECK(st == NULL, "close nulls the pointer");
    jb_st_close(&st);   // safe twice
}

static void test_round_trip(void) {
    jb_err_t err = {0};
    char path[300];
    snprintf(path, sizeof path, "%s/rt.safetensors", g_tmp);
    float a[6] = {1, -2, 3.5f, 4, 5, 6};
    uint16_t h[3] = {jb_f32_to_f16(1.5f), jb_f32_to_f16(-0.25f), jb_f32_to_bf16(3.0f)};
    int32_t c[4] = {0, 2047, 5, -1};
    int64_t sa[2] = {2, 3}, sh[1] = {3}, sc[2] = {1, 4}, s0[1] = {0};
    jb_st_writer_t *w = jb_st_writer_new(&err);
    JB_CHECK_OK(jb_st_writer_meta(w, "kind", "test", &err), &err, "meta");
    JB_CHECK_OK(jb_st_writer_add(w, "a.weight", JB_F32, 2, sa, a, &err), &err, "add f32");
    JB_CHECK_OK(jb_st_writer_add(w, "h", JB_F16, 1, sh, h, &err), &err, "add f16");
    JB_CHECK_OK(jb_st_writer_add(w, "codes", JB_I32, 2, sc, c, &err), &err, "add i32");
    JB_CHECK_OK(jb_st_writer_add(w, "empty", JB_F32, 1, s0, NULL, &err), &err, "add empty");
    JB_CHECK(jb_st_writer_add(w, "h", JB_F16, 1, sh, h, &err) != 0, "duplicate refused");
    JB_CHECK_OK(jb_st_writer_write(w, path, NULL, NULL, &err), &err, "write");
    jb_st_writer_destroy(&w);
    JB_CHECK(w == NULL, "writer destroy nulls");
    char tmpname[400];
    snprintf(tmpname, sizeof tmpname, "rt.safetensors.tmp.");
    int left = 0;
    DIR *dd = opendir(g_tmp);
    for (struct dirent *de; dd && (de = readdir(dd));)
        if (!strncmp(de->d_name, tmpname, strlen(tmpname))) left++;
    if (dd) closedir(dd);
    JB_CHECK(dd && left == 0, "no temporary left behind (%d)", left);

    jb_st_t *st = jb_st_open(path, &err);
    JB_CHECK(st != NULL, "reopen (%s)", err.msg);
    if (!st) return;
    JB_CHECK(jb_st_count(st) == 4, "4 tensors");
    JB_CHECK(strcmp(jb_st_meta(st, "kind"), "test") == 0, "metadata back");
    const jb_st_entry_t *e = jb_st_get(st, "a.weight", 2, sa, &err);
    JB_CHECK(e && memcmp(e->data, a, sizeof a) == 0, "f32 bytes back");
    e = jb_st_find(st, "h");
    JB_CHECK(e && e->dtype == JB_F16 && memcmp(e->data, h, sizeof h) == 0, "f16 bytes back");
    float *hf = jb_st_get_f32(st, "h", 1, sh, &err);
    JB_CHECK(hf && hf[0] == 1.5f && hf[1] == -0.25f, "f16 widened exactly");
    jb_free(hf);
    int32_t *ci = jb_st_get_i32(st, "codes", 2, sc, &err);
    JB_CHECK(ci && ci[1] == 2047 && ci[3] == -1, "i32 back");
    jb_free(ci);
    // Header padded to a multiple of 8, as the format asks.
    size_t n = 0;
    uint8_t *bytes = read_bytes(path, &n);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = (hl << 8) | bytes[i];
    JB_CHECK(hl % 8 == 0 && n == 8 + hl + sizeof a + sizeof h + sizeof c, "layout and padding");

    // Every truncation of this file is refused cleanly, naming the file.
    char tpath[300];
    snprintf(tpath, sizeof tpath, "%s/trunc.safetensors", g_tmp);
    int refused = 0;
    for (size_t cut = 0; cut < n; cut++) {
        write_bytes(tpath, bytes, cut);
        jb_st_t *t = jb_st_open(tpath, &err);
        if (!t && strstr(err.msg, tpath)) refused++;
        jb_st_close(&t);
    }
    JB_CHECK(refused == (int)n, "all %zu truncations refused (%d)", n, refused);
    free(bytes);
    jb_st_close(&st);

    // Writing into a missing directory fails and leaves nothing.
    w = jb_st_writer_new(&err);
    jb_st_writer_add(w, "a", JB_F32, 2, sa, a, &err);
    char bad[300];
    snprintf(bad, sizeof bad, "%s/no/such/dir/x.safetensors", g_tmp);
    JB_CHECK(jb_st_writer_write(w, bad, NULL, NULL, &err) != 0 && strstr(err.msg, "no/such"),
             "write into a missing dir refused: %s", err.msg);
    jb_st_writer_destroy(&w);
}

static void test_bad_files(void) {
    char p[300];
    float d[4] = {0};
    snprintf(p, sizeof p, "%s/bad.safetensors", g_tmp);
    expect_open_fails("missing file", "/nonexistent/x.safetensors", "cannot open");
    write_bytes(p, "abc", 3);
    expect_open_fails("3-byte file", p, "too short");
    write_st(p, "{not json", NULL, 0);
    expect_open_fails("bad JSON", p, "JSON");
    write_st(p, "{\"x\": {\"dtype\": \"F99\", \"shape\": [1], \"data_offsets\": [0, 4]}}", d, 4);
    expect_open_fails("unknown dtype", p, "F99");
    write_st(p, "{\"x\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 4]}}", d, 4);
    expect_open_fails("shape/bytes mismatch", p, "'x'");
    write_st(p, "{\"x\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]}}", d, 8);
    expect_open_fails("data past the end", p, "truncated");
    write_st(p, "{\"x\": {\"dtype\": \"F32\", \"shape\": [-1], \"data_offsets\": [0, 4]}}", d, 4);
    expect_open_fails("negative dim", p, "'x'");
    write_st(p,
             "{\"x\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
             " \"y\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}",
             d, 12);
    expect_open_fails("overlapping tensors", p, "overlap");
    write_st(p, "{\"__metadata__\": {\"k\": 3}}", NULL, 0);
    expect_open_fails("non-string metadata", p, "__metadata__");
    // header length larger than the file
    uint8_t big[16] = {0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, '{', '}'};
    write_bytes(p, big, sizeof big);
    expect_open_fails("huge header length", p, "header length");
    unlink(p);
}

static void test_presets(void) {
    jb_err_t err = {0};
    for (int i = 0; jb_hparams_preset_names[i]; i++) {
        const char *name = jb_hparams_preset_names[i];
        json_t *hp = jb_hparams_preset(name, &err);
        JB_CHECK(hp != NULL, "preset %s (%s)", name, err.msg);
        if (!hp) continue;
        if (!strcmp(name, "vqvae")) {
            jb_vqvae_hparams_t v;
            JB_CHECK(jb_vqvae_hparams_parse(hp, &v, &err) == 0 && v.l_bins == 2048 &&
                         v.emb_width == 64 && v.width == 32 && v.depth == 4 &&
                         v.multipliers[0] == 2 && v.hop_lengths[2] == 128 &&
                         v.dilation_growth_rate == 3,
                     "vqvae preset values (%s)", err.msg);
        } else {
            jb_prior_hparams_t p;
            int rc = jb_prior_hparams_parse(hp, &p, &err);
            JB_CHECK(rc == 0, "preset %s parses as a prior (%s)", name, err.msg);
            if (rc) continue;
            if (!strcmp(name, "upsampler_level_0"))
                JB_CHECK(p.level == 0 && p.width == 1920 && p.depth == 72 && p.n_ctx == 8192 &&
                             p.heads == 1 && p.blocks == 128 && p.cond_width == 1024 &&
                             p.cond_depth == 16 && p.cond_dilation_cycle == 8 &&
                             !p.cond_res_scale && p.y_bins[0] == 120 && p.y_bins[1] == 4111,
                         "upsampler_level_0 values");
            if (!strcmp(name, "upsampler_level_1"))
                JB_CHECK(p.level == 1 && p.cond_res_scale, "upsampler_level_1 values");
            if (!strcmp(name, "prior_5b"))
                JB_CHECK(p.level == 2 && p.width == 4800 && p.heads == 8 && p.merged_decoder &&
                             p.fp16_params && p.min_duration == 60.0 && !p.use_tokens,
                         "prior_5b values");
            if (!strcmp(name, "prior_5b_lyrics"))
                JB_CHECK(p.depth == 79 && p.attn_order == 10 && p.n_tokens == 512 &&
                             p.prime_width == 1280 && p.prime_depth == 18 &&
                             p.alignment_layer == 68 && p.alignment_head == 2,
                         "prior_5b_lyrics values");
            if (!strcmp(name, "prior_1b_lyrics"))
                JB_CHECK(p.n_ctx == 6144 && p.width == 2048 && p.attn_order == 12 &&
                             p.single_enc_dec && p.labels_v3 && p.y_bins[0] == 604 &&
                             p.y_bins[1] == 7898 && p.t_bins == 64 && p.n_vocab == 79 &&
                             p.alignment_layer == 63,
                         "prior_1b_lyrics values");
            static const int hops[3] = {8, 32, 128};
            JB_CHECK(p.vqvae.l_bins == 2048 && p.vqvae.hop_lengths[p.level] == hops[p.level],
                     "%s: nested vqvae", name);
        }
        json_decref(hp);
    }
    JB_CHECK(jb_hparams_preset("prior_7b", &err) == NULL && strstr(err.msg, "prior_7b"),
             "unknown preset refused: %s", err.msg);
    // Golden prior files parse, and their values match case.json.
    const char *cases[] = {"prior_top_5b_tiny", "prior_top_5b_lyrics_tiny",
                           "prior_top_1b_lyrics_tiny", "upsampler_mid_tiny",
                           "upsampler_bottom_tiny"};
    for (int i = 0; i < 5; i++) {
        char path[256];
        snprintf(path, sizeof path, "tests/golden/%s/model.safetensors", cases[i]);
        jb_st_t *st = jb_st_open(path, &err);
        json_t *hp = st ? jb_hparams_from_st(st, &err) : NULL;
        jb_prior_hparams_t p;
        int ok = hp && jb_prior_hparams_parse(hp, &p, &err) == 0;
        JB_CHECK(ok, "%s parses (%s)", cases[i], err.msg);
        snprintf(path, sizeof path, "tests/golden/%s/case.json", cases[i]);
        json_t *cj = json_load_file(path, 0, NULL);
        json_t *ch = json_object_get(cj, "hparams");
        if (ok && ch)
            JB_CHECK(p.n_ctx == json_integer_value(json_object_get(ch, "n_ctx")) &&
                         p.depth == json_integer_value(json_object_get(ch, "prior_depth")) &&
                         p.attn_order == json_integer_value(json_object_get(ch, "attn_order")),
                     "%s: n_ctx/depth/attn_order as case.json", cases[i]);
        json_decref(cj);
        json_decref(hp);
        jb_st_close(&st);
    }
}

int main(void) {
    snprintf(g_tmp, sizeof g_tmp, "/tmp/jb_test_model_%ld", (long)getpid());
    char cmd[300];
    snprintf(cmd, sizeof cmd, "mkdir -p %s", g_tmp);
    if (system(cmd) != 0) return 1;
    test_golden_file();
    test_round_trip();
    test_bad_files();
    test_presets();
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_tmp);
    if (system(cmd) != 0) return 1;
    return jb_test_summary("test_jb_model_files");
}
