// fuzz_codes.c: libFuzzer target for the codes store (jb_codes): a frame stream
// is (a) loaded as a codes file with jb_codes_load (through a memfd, as a file
// the loader reads), and (b) applied message by message to a store made for its
// first job, as a stage does with what it receives. Whatever is accepted must
// satisfy the store's invariants (codes in the codebook, len = the minimum of
// the per-sample lengths, rows within the stride), and a loaded store must
// survive jb_codes_save -> jb_codes_load unchanged.
//
// Seeds: JB_FUZZ_WRITE_SEEDS=dir ./fuzz_codes writes codes files there and exits (with
// the bombs and cut streams of fuzz_seeds.h).
//
// fuzz-sources: common/jb_codes.c common/jb_wire.c common/jb_err.c
// fuzz-libs: -lmsgpackc -llz4 -ljansson -lpthread
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz_seeds.h"
#include "jb_codes.h"
#include "jb_wire.h"

static void check_store(const jb_codes_t *c) {
    for (int l = 0; l < c->levels; l++) {
        int64_t min = -1;
        for (int s = 0; s < c->n_samples; s++) {
            int64_t n = jb_codes_sample_len(c, l, s);
            if (n < 0 || n > jb_codes_stride(c, l)) __builtin_trap();
            if (min < 0 || n < min) min = n;
            const int32_t *row = jb_codes_row(c, l, s);
            for (int64_t t = 0; t < n; t++)
                if (row[t] < 0 || (c->codebook > 0 && row[t] >= c->codebook)) __builtin_trap();
        }
        if (jb_codes_len(c, l) != (min < 0 ? 0 : min)) __builtin_trap();
    }
}

static int same_store(const jb_codes_t *a, const jb_codes_t *b) {
    if (a->levels != b->levels || a->n_samples != b->n_samples || a->codebook != b->codebook
        || a->sample_rate != b->sample_rate || a->audio_len != b->audio_len
        || strcmp(a->job_id, b->job_id) != 0 || (!a->spec) != (!b->spec)
        || (a->spec && strcmp(a->spec, b->spec) != 0))
        return 0;
    for (int l = 0; l < a->levels; l++)
        for (int s = 0; s < a->n_samples; s++) {
            int64_t n = jb_codes_sample_len(a, l, s);
            if (n != jb_codes_sample_len(b, l, s)) return 0;
            if (n && memcmp(jb_codes_row(a, l, s), jb_codes_row(b, l, s), (size_t)n * 4)) return 0;
        }
    return 1;
}

typedef struct {
    jb_codes_t c;
    int inited;
} apply_t;

static int on_msg(jb_msg_t *m, uint64_t off, void *user) {
    (void)off;
    apply_t *a = user;
    jb_err_t err;
    if (!a->inited) {
        if (!m->job_id[0]) return 0;
        if (jb_codes_init(&a->c, m->job_id, 3, 4, -1, &err)) __builtin_trap();
        a->inited = 1;
    }
    jb_codes_apply(&a->c, m, &err);   // refusals are fine; the store must stay sound
    check_store(&a->c);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    jb_err_t err;
    // (b) a stage's store
    apply_t a = {0};
    jb_frame_decode_all(data, size, -1, on_msg, &a, &err);
    if (a.inited) jb_codes_free(&a.c);

    // (a) a codes file
    int fd = memfd_create("codes", 0);
    if (fd < 0) return 0;
    if (write(fd, data, size) != (ssize_t)size) {
        close(fd);
        return 0;
    }
    char path[64], back[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    jb_codes_t c, d;
    if (jb_codes_load(&c, path, &err) == 0) {
        check_store(&c);
        int64_t total = 0;
        for (int l = 0; l < c.levels; l++) total += c.cap[l] * c.n_samples;
        if (total < (1 << 20)) {   // save -> load: identical
            snprintf(back, sizeof back, "/tmp/fuzz_codes.%ld.jbc", (long)getpid());
            if (jb_codes_save(&c, back, &err) == 0) {
                if (jb_codes_load(&d, back, &err)) __builtin_trap();
                if (!same_store(&c, &d)) __builtin_trap();
                jb_codes_free(&d);
                unlink(back);
            }
        }
        jb_codes_free(&c);
    }
    close(fd);
    return 0;
}

// ---- seeds: codes files as jb_codes_save writes them, and a stage's stream

static void seed_store(const char *dir, const char *name, int n, int with_spec, int uneven) {
    jb_err_t err;
    jb_codes_t c;
    jb_codes_init(&c, "seed-1", 3, n, 2048, &err);
    if (with_spec) c.spec = strdup("{\"mode\":\"continue\",\"n_samples\":2}");
    c.sample_rate = 44100;
    c.audio_len = 4000;
    for (int l = 2; l >= 0; l--) {
        int64_t len = 8 << (2 * (2 - l));
        int32_t *codes = malloc(sizeof *codes * (size_t)(n * len));
        for (int64_t i = 0; i < n * len; i++) codes[i] = (int32_t)((i * 37 + l) % 2048);
        jb_codes_put(&c, l, 0, 0, n, len, codes, &err);
        if (uneven && l == 1) jb_codes_put(&c, l, len, n - 1, 1, 5, codes, &err);
        free(codes);
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (jb_codes_save(&c, path, &err)) {
        fprintf(stderr, "seed %s: %s\n", name, err.msg);
        exit(1);
    }
    jb_codes_free(&c);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    const char *dir = getenv("JB_FUZZ_WRITE_SEEDS");
    if (dir && *dir) {
        seed_store(dir, "two-samples", 2, 1, 0);
        seed_store(dir, "uneven", 3, 1, 1);
        seed_store(dir, "no-spec", 1, 0, 0);
        fuzz_write_wire_seeds(dir);   // bombs and cut streams
        exit(0);
    }
    return 0;
}
