// fuzz_seeds.h: seed streams shared by the fuzz targets (included by them, header-only):
// a decompression bomb for a known job (a job message, then a codes message claiming
// 2^19 codes of a job whose bottom level holds 560), the old 1 GiB claim, and a valid
// job stream cut at a frame boundary in the middle of the job and inside a frame.
#ifndef FUZZ_SEEDS_H
#define FUZZ_SEEDS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jb_wire.h"

static void fuzz_seed_file(const char *dir, const char *name, const uint8_t *d, size_t n) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(d, 1, n, f) != n) exit(1);
    fclose(f);
}

static void fuzz_seed_append(jb_bytes_t *s, jb_msg_t *m) {
    jb_bytes_t h = {0}, p = {0};
    jb_err_t err;
    if (jb_frame_append_msg(s, m, &h, &p, &err)) {
        fprintf(stderr, "seed: %s\n", err.msg);
        exit(1);
    }
    jb_bytes_free(&h);
    jb_bytes_free(&p);
    jb_msg_clear(m);
}

static void fuzz_write_wire_seeds(const char *dir) {
    jb_err_t err;
    jb_msg_t m;
    // The bomb: 0.1 s, one sample (a 44.1 kHz model's bottom level holds 560 tokens).
    jb_bytes_t s = {0};
    jb_msg_init(&m);
    m.type = JB_MSG_JOB;
    jb_msg_set_job_id(&m, "bomb", &err);
    jb_msg_set_spec(&m, "{\"n_samples\":1,\"sample_seconds\":0.1,\"total_seconds\":0.1}", &err);
    fuzz_seed_append(&s, &m);
    jb_msg_init(&m);
    m.type = JB_MSG_CODES;
    jb_msg_set_job_id(&m, "bomb", &err);
    m.level = 0;
    m.offset = 0;
    int32_t *z = calloc((size_t)1 << 19, sizeof *z);
    jb_msg_set_codes(&m, z, 1, (int64_t)1 << 19, &err);
    free(z);
    fuzz_seed_append(&s, &m);
    jb_msg_init(&m);
    m.type = JB_MSG_END;
    jb_msg_set_job_id(&m, "bomb", &err);
    fuzz_seed_append(&s, &m);
    fuzz_seed_file(dir, "bomb-known-job", s.data, s.len);
    jb_bytes_free(&s);
    // The 1 GiB claim of the spec before: raw_len 2^30 for 2^28 codes, a small block.
    static const uint8_t old_bomb[] = {
        0x88, 0xa4, 't', 'y', 'p', 'e', 0xa5, 'c', 'o', 'd', 'e', 's', 0xa1, 'v', 0x01,
        0xa3, 'j', 'o', 'b', 0xa1, 'u', 0xa5, 'l', 'e', 'v', 'e', 'l', 0x00,
        0xa6, 'o', 'f', 'f', 's', 'e', 't', 0x00,
        0xa5, 'c', 'o', 'u', 'n', 't', 0xce, 0x10, 0x00, 0x00, 0x00,
        0xa7, 'r', 'a', 'w', '_', 'l', 'e', 'n', 0xce, 0x40, 0x00, 0x00, 0x00,
        0xa5, 'd', 't', 'y', 'p', 'e', 0xa3, 'i', '3', '2'};
    uint8_t block[64] = {0x1f, 0x00, 0x01, 0x00, 0xff, 0xff, 0xff, 0xff, 0x50};
    jb_bytes_t f = {0};
    if (jb_frame_append(&f, old_bomb, sizeof old_bomb, block, 20, &err) == 0)
        fuzz_seed_file(dir, "bomb-1gib-claim", f.data, f.len);
    jb_bytes_free(&f);
    // A valid job cut at a frame boundary (after its level 2) and inside a frame.
    jb_msg_init(&m);
    m.type = JB_MSG_JOB;
    jb_msg_set_job_id(&m, "cut", &err);
    jb_msg_set_spec(&m, "{\"n_samples\":2,\"sample_seconds\":1,\"total_seconds\":1}", &err);
    fuzz_seed_append(&s, &m);
    int32_t c[32];
    for (int i = 0; i < 32; i++) c[i] = (i * 7) % 64;
    size_t cut_at = 0;
    for (int l = 2; l >= 0; l--) {
        jb_msg_init(&m);
        m.type = JB_MSG_CODES;
        jb_msg_set_job_id(&m, "cut", &err);
        m.level = l;
        m.offset = 0;
        m.sample0 = 1;   // one row a message: sample 1, then sample 0
        jb_msg_set_codes(&m, c, 1, 16, &err);
        fuzz_seed_append(&s, &m);
        jb_msg_init(&m);
        m.type = JB_MSG_CODES;
        jb_msg_set_job_id(&m, "cut", &err);
        m.level = l;
        m.offset = 0;
        jb_msg_set_codes(&m, c + 16, 1, 16, &err);
        fuzz_seed_append(&s, &m);
        jb_msg_init(&m);
        m.type = JB_MSG_END;
        jb_msg_set_job_id(&m, "cut", &err);
        m.level = l;
        m.offset = 16;
        m.batch = 2;
        fuzz_seed_append(&s, &m);
        if (l == 2) cut_at = s.len;
    }
    size_t whole = s.len;
    jb_msg_init(&m);
    m.type = JB_MSG_END;
    jb_msg_set_job_id(&m, "cut", &err);
    m.sample_rate = 44100;
    m.audio_len = 100;
    fuzz_seed_append(&s, &m);
    fuzz_seed_file(dir, "rows-whole", s.data, s.len);
    fuzz_seed_file(dir, "cut-at-frame", s.data, cut_at);
    fuzz_seed_file(dir, "cut-in-frame", s.data, whole - 5);
    jb_bytes_free(&s);
}

#endif
