// test_jb_torch.c: the PyTorch checkpoint reader against the golden checkpoints
// (written by torch.save from the golden models) and our own fixtures.
//
// Good files must give, tensor for tensor, the names, dtypes, shapes and bytes of
// the golden model.safetensors (or, for tests/fixtures/torch, of expect.safetensors
// written by the same generator); damaged files must fail with a message and no
// result; every truncation of a small file must fail cleanly.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jb_safetensors.h"
#include "jb_test.h"
#include "jb_torch.h"

static const char *golden_dir(void) {
    const char *g = getenv("GOLDEN");
    return g && *g ? g : "tests/golden";
}

static void *read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *p = malloc(sz > 0 ? (size_t)sz : 1);
    *n = p ? fread(p, 1, (size_t)sz, f) : 0;
    fclose(f);
    return p;
}

// Every tensor of the safetensors file equals the checkpoint's, and vice versa;
// same order too (the state dict's order is the model's).
static void compare(const char *what, const jb_torch_t *ck, const jb_st_t *st) {
    int n = jb_st_count(st), bad = 0, order = 1;
    JB_CHECK(jb_torch_count(ck) == n, "%s: %d tensors (expected %d)", what, jb_torch_count(ck),
             n);
    for (int i = 0; i < n; i++) {
        const jb_st_entry_t *e = jb_st_entry(st, i);
        const jb_torch_tensor_t *t = jb_torch_find(ck, e->name);
        if (!t) {
            if (bad++ < 3) JB_CHECK(0, "%s: tensor '%s' missing", what, e->name);
            continue;
        }
        if (jb_torch_tensor(ck, i) != t) order = 0;
        int same = t->dtype == e->dtype && t->ndim == e->ndim && t->nbytes == e->nbytes;
        for (int d = 0; same && d < t->ndim; d++) same = t->shape[d] == e->shape[d];
        if (same && e->nbytes) same = memcmp(t->data, e->data, e->nbytes) == 0;
        if (!same && bad++ < 3) JB_CHECK(0, "%s: tensor '%s' differs", what, e->name);
    }
    JB_CHECK(bad == 0, "%s: all %d tensors bit-identical (%d differ)", what, n, bad);
    JB_CHECK(order, "%s: state dict order kept", what);
}

static void check_golden(void) {
    char path[1024];
    snprintf(path, sizeof path, "%s/checkpoints/index.json", golden_dir());
    json_error_t jerr;
    json_t *idx = json_load_file(path, 0, &jerr);
    JB_CHECK(idx != NULL, "index.json loads (%s)", idx ? "" : jerr.text);
    if (!idx) return;
    json_int_t want_step = json_integer_value(json_object_get(idx, "step"));
    size_t k;
    json_t *f;
    int n_good = 0, n_bad = 0;
    json_array_foreach(json_object_get(idx, "files"), k, f) {
        const char *file = json_string_value(json_object_get(f, "file"));
        const char *kase = json_string_value(json_object_get(f, "case"));
        const char *fmt = json_string_value(json_object_get(f, "format"));
        snprintf(path, sizeof path, "%s/checkpoints/%s", golden_dir(), file);
        jb_err_t err = {0};
        jb_torch_t *ck = jb_torch_open(path, &err);
        if (!strcmp(fmt, "damaged")) {
            n_bad++;
            JB_CHECK(ck == NULL, "%s: refused", file);
            JB_CHECK(err.code != JB_OK && strstr(err.msg, file) != NULL,
                     "%s: message names the file: %s", file, err.msg);
            if (strstr(file, "corrupt"))
                JB_CHECK((strstr(err.msg, "opcode 0xd8") && strstr(err.msg, "byte")) ||
                             strstr(err.msg, "data.pkl': CRC-32 mismatch"),
                         "%s: message names the opcode and offset: %s", file, err.msg);
            if (strstr(file, "truncated"))
                JB_CHECK(strstr(err.msg, "truncated") || strstr(err.msg, "end"),
                         "%s: message says truncated: %s", file, err.msg);
            jb_torch_destroy(&ck);
            continue;
        }
        n_good++;
        JB_CHECK(ck != NULL, "%s: opens (%s)", file, err.msg);
        if (!ck) continue;
        JB_CHECK(jb_torch_format(ck) == (!strcmp(fmt, "zip") ? JB_TORCH_ZIP : JB_TORCH_LEGACY),
                 "%s: format %s", file, fmt);
        JB_CHECK(jb_torch_step(ck) == want_step, "%s: step %lld", file,
                 (long long)jb_torch_step(ck));
        snprintf(path, sizeof path, "%s/%s/model.safetensors", golden_dir(), kase);
        jb_st_t *st = jb_st_open(path, &err);
        JB_CHECK(st != NULL, "%s: golden model opens (%s)", kase, err.msg);
        if (st) {
            compare(file, ck, st);
            // hps equals the model file's hparams, as JSON values.
            json_t *hp = json_loads(jb_st_meta(st, "hparams"), 0, &jerr);
            const json_t *got = jb_torch_hps(ck);
            JB_CHECK(hp && got && json_equal(hp, (json_t *)got), "%s: hps equals the hparams",
                     file);
            json_decref(hp);
        }
        jb_st_close(&st);
        jb_torch_destroy(&ck);
    }
    JB_CHECK(n_good >= 16 && n_bad == 4, "index lists %d good and %d damaged files", n_good,
             n_bad);
    json_decref(idx);
}

// Prefixes of a small checkpoint fail cleanly (and the whole file loads): every
// `step` bytes through the first 4 KiB (headers, start of the pickle), then every
// `far` bytes to the end.
static void check_truncations(const char *file, size_t step, size_t far) {
    char path[1024];
    snprintf(path, sizeof path, "%s/checkpoints/%s", golden_dir(), file);
    size_t n = 0;
    uint8_t *d = read_file(path, &n);
    JB_CHECK(d != NULL, "%s read", file);
    if (!d) return;
    int bad = 0;
    for (size_t len = 0; len < n; len += len < 4096 ? step : far) {
        // A copy of exactly len bytes, so that ASan sees any read past the end.
        uint8_t *c = malloc(len ? len : 1);
        memcpy(c, d, len);
        jb_err_t err = {0};
        jb_torch_t *ck = jb_torch_open_mem(c, len, file, &err);
        if (ck || err.code == JB_OK || !err.msg[0]) bad++;
        jb_torch_destroy(&ck);
        free(c);
    }
    jb_err_t err = {0};
    jb_torch_t *ck = jb_torch_open_mem(d, n, file, &err);
    JB_CHECK(ck != NULL, "%s: whole file loads from memory (%s)", file, err.msg);
    jb_torch_destroy(&ck);
    JB_CHECK(bad == 0, "%s: every prefix tried (steps %zu, %zu) refused with a message (%d not)",
             file, step, far, bad);
    free(d);
}

// Flip each byte of the pickle region in turn: success or a clean error, never a crash
// (ASan/valgrind runs make "never a crash" strict).
static void check_flips(const char *file, size_t upto) {
    char path[1024];
    snprintf(path, sizeof path, "%s/checkpoints/%s", golden_dir(), file);
    size_t n = 0;
    uint8_t *d = read_file(path, &n);
    if (!d) return;
    int crashed_silently = 0, refused = 0;
    for (size_t i = 0; i < upto && i < n; i++) {
        d[i] ^= 0xff;
        jb_err_t err = {0};
        jb_torch_t *ck = jb_torch_open_mem(d, n, file, &err);
        if (!ck && !err.msg[0]) crashed_silently++;
        if (!ck) refused++;
        jb_torch_destroy(&ck);
        d[i] ^= 0xff;
    }
    JB_CHECK(crashed_silently == 0, "%s: %zu single-byte flips: each loads or fails with a "
             "message (%d refused)", file, upto, refused);
    free(d);
}

// Own fixtures: tests/fixtures/torch/<name>.pth.tar against <name>.expect.safetensors.
static void check_fixtures(void) {
    static const char *names[] = {"bf16_i64",  "bf16_i64.zip", "offsets",  "offsets.zip", "offsets.zip64",
                                  "module_prefix.zip", "legacy_view", "nested_hps",
                                  "nested_hps.zip", "bare_state_dict.zip", NULL};
    for (int k = 0; names[k]; k++) {
        char path[512], exp[512];
        snprintf(path, sizeof path, "tests/fixtures/torch/%s.pth.tar", names[k]);
        const char *dot = strstr(names[k], ".zip");
        int base_len = dot ? (int)(dot - names[k]) : (int)strlen(names[k]);
        snprintf(exp, sizeof exp, "tests/fixtures/torch/%.*s.expect.safetensors", base_len,
                 names[k]);
        jb_err_t err = {0};
        jb_torch_t *ck = jb_torch_open(path, &err);
        JB_CHECK(ck != NULL, "%s opens (%s)", path, err.msg);
        jb_st_t *st = jb_st_open(exp, &err);
        JB_CHECK(st != NULL, "%s opens (%s)", exp, err.msg);
        if (ck && st) {
            compare(path, ck, st);
            const char *hp = jb_st_meta(st, "hps");
            if (hp) {
                json_error_t jerr;
                json_t *want = json_loads(hp, 0, &jerr);
                const json_t *got = jb_torch_hps(ck);
                char *gs = got ? json_dumps(got, JSON_SORT_KEYS | JSON_COMPACT) : NULL;
                JB_CHECK(want && got && json_equal(want, (json_t *)got), "%s: hps %s", path,
                         gs ? gs : "(none)");
                free(gs);
                json_decref(want);
            } else {
                JB_CHECK(jb_torch_hps(ck) == NULL, "%s: no hps", path);
            }
        }
        jb_st_close(&st);
        jb_torch_destroy(&ck);
    }
}

// Hand-made pickles: errors name the opcode; bounds hold.
static void check_small(void) {
    struct { const char *what; const char *bytes; size_t n; const char *needle; } cases[] = {
        {"empty", "", 0, "neither"},
        {"unknown opcode", "\x80\x02\xff", 3, "opcode 0xff"},
        {"memo read before write", "\x80\x02h\x05.", 5, "memo slot 5"},
        {"pop on empty stack", "\x80\x02" "0", 3, "empty stack"},
        {"string past end", "\x80\x02X\xff\xff\x00\x00ab", 9, "end of data"},
        {"no STOP", "\x80\x02N", 3, "before STOP"},
        {"bad magic", "\x80\x02K\x01.", 5, "magic"},
        {"zip without directory", "PK\x03\x04xxxxxxxxxxxxxxxxxxxxxxxxxxxx", 32, "central"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        jb_err_t err = {0};
        jb_torch_t *ck = jb_torch_open_mem(cases[k].bytes, cases[k].n, "t.pth", &err);
        JB_CHECK(!ck && strstr(err.msg, cases[k].needle), "%s: refused: %s", cases[k].what,
                 err.msg);
        jb_torch_destroy(&ck);
    }
    // hps that cannot become JSON: refused with a message, no partial result.
    struct { const char *path, *needle; } bad[] = {
        {"tests/fixtures/torch/bad_cyclic_hps.pth.tar", "nested deeper"},
        {"tests/fixtures/torch/bad_shared_hps.zip.pth.tar", "more than"},
    };
    for (size_t k = 0; k < 2; k++) {
        jb_err_t e = {0};
        jb_torch_t *c = jb_torch_open(bad[k].path, &e);
        JB_CHECK(!c && strstr(e.msg, bad[k].needle), "%s refused: %s", bad[k].path, e.msg);
        jb_torch_destroy(&c);
    }
    jb_err_t err = {0};
    jb_torch_t *ck = jb_torch_open("tests/fixtures/torch/no_such_file.pth.tar", &err);
    JB_CHECK(!ck && err.code == JB_ENOENT, "missing file: JB_ENOENT (%s)", err.msg);
    jb_torch_destroy(&ck);
    jb_torch_destroy(&ck);   // twice is fine
}

int main(void) {
    check_golden();
    check_truncations("vqvae_tiny.pth.tar", 7, 997);
    check_truncations("vqvae_tiny.zip.pth.tar", 7, 1009);
    check_flips("prior_top_1b_lyrics_tiny.pth.tar", 1500);
    check_flips("vqvae_tiny.zip.pth.tar", 600);
    check_fixtures();
    check_small();
    return jb_test_summary("test_jb_torch");
}
