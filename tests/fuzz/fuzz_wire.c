// fuzz_wire.c: libFuzzer target for the frame and message decoders (jb_wire).
//
// Input starting with "JBX": a frame stream (fuzz builds skip the checksum so
// mutations reach the message decoder). Otherwise: byte 0-1 = header length
// (little-endian, modulo what is left), then header, then payload — the message
// decoder without framing, as a ZeroMQ peer would feed it. Accepted messages
// must satisfy the rules (codes in range, sizes consistent) and re-encode.
//
// Seeds: JB_FUZZ_WRITE_SEEDS=dir ./fuzz_wire writes valid messages there and exits
// (tests/fuzz/run_fuzz.sh does this before fuzzing).
//
// fuzz-sources: common/jb_wire.c common/jb_err.c
// fuzz-libs: -lmsgpackc -llz4 -ljansson -lpthread
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jb_wire.h"

#define CODEBOOK 2048

static void check_accepted(const jb_msg_t *m) {
    if (m->type <= JB_MSG_NONE || m->type >= JB_MSG_TYPE_COUNT) __builtin_trap();
    if (m->type == JB_MSG_CODES) {
        if (!m->codes || m->batch < 1 || m->count < 1) __builtin_trap();
        for (int64_t i = 0; i < m->batch * m->count; i++)
            if (m->codes[i] < 0 || m->codes[i] >= CODEBOOK) __builtin_trap();
    } else if (m->type == JB_MSG_ALIGN) {
        if (!m->codes || m->cols < 1 || !m->text) __builtin_trap();
        for (size_t i = 0; i < jb_msg_payload_elems(m); i++)
            if (m->codes[i] < 0 || m->codes[i] > JB_WIRE_ALIGN_ONE) __builtin_trap();
    } else if (m->codes) {
        __builtin_trap();
    }
    // What the decoder accepts, the encoder must accept and reproduce.
    jb_err_t err;
    jb_bytes_t h = {0}, p = {0};
    jb_msg_t back;
    jb_msg_init(&back);
    if (jb_wire_encode(m, &h, &p, &err)) __builtin_trap();
    if (jb_wire_decode(h.data, h.len, p.data, p.len, CODEBOOK, &back, &err)) __builtin_trap();
    if (back.type != m->type || back.offset != m->offset || back.count != m->count
        || strcmp(back.job_id, m->job_id) != 0)
        __builtin_trap();
    if (back.sample0 != m->sample0 || back.cols != m->cols || back.batch != m->batch)
        __builtin_trap();
    if (m->codes && memcmp(back.codes, m->codes, jb_msg_payload_elems(m) * 4) != 0)
        __builtin_trap();
    jb_msg_clear(&back);
    jb_bytes_free(&h);
    jb_bytes_free(&p);
}

static int on_msg(jb_msg_t *m, uint64_t off, void *user) {
    (void)off;
    (void)user;
    check_accepted(m);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    jb_err_t err;
    if (size >= 3 && memcmp(data, "JBX", 3) == 0) {
        jb_frame_decode_all(data, size, CODEBOOK, on_msg, NULL, &err);
        return 0;
    }
    if (size < 2) return 0;
    size_t hl = (size_t)(data[0] | data[1] << 8), rest = size - 2;
    hl = rest ? hl % (rest + 1) : 0;
    jb_msg_t m;
    jb_msg_init(&m);
    // Copies, so that ASan sees reads past the exact header and payload ends.
    uint8_t *hdr = malloc(hl ? hl : 1), *pl = malloc(rest - hl ? rest - hl : 1);
    memcpy(hdr, data + 2, hl);
    memcpy(pl, data + 2 + hl, rest - hl);
    if (jb_wire_decode(hdr, hl, pl, rest - hl, CODEBOOK, &m, &err) == 0) check_accepted(&m);
    jb_msg_clear(&m);
    free(hdr);
    free(pl);
    return 0;
}

// ---- seeds: valid messages of every type, framed and unframed

static void write_file(const char *dir, const char *name, const uint8_t *a, size_t na,
                       const uint8_t *b, size_t nb, const uint8_t *c, size_t nc) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) return;
    fwrite(a, 1, na, f);
    if (nb) fwrite(b, 1, nb, f);
    if (nc) fwrite(c, 1, nc, f);
    fclose(f);
}

static void seed(const char *dir, const char *name, const jb_msg_t *m, jb_bytes_t *stream) {
    jb_err_t err;
    jb_bytes_t h = {0}, p = {0}, fr = {0};
    if (jb_wire_encode(m, &h, &p, &err)) {
        fprintf(stderr, "seed %s: %s\n", name, err.msg);
        exit(1);
    }
    uint8_t len2[2] = {(uint8_t)(h.len & 0xFF), (uint8_t)(h.len >> 8)};
    char fname[256];
    snprintf(fname, sizeof fname, "msg-%s", name);
    write_file(dir, fname, len2, 2, h.data, h.len, p.data, p.len);
    jb_frame_append(&fr, h.data, h.len, p.data, p.len, &err);
    snprintf(fname, sizeof fname, "frame-%s", name);
    write_file(dir, fname, fr.data, fr.len, NULL, 0, NULL, 0);
    jb_frame_append(stream, h.data, h.len, p.data, p.len, &err);
    jb_bytes_free(&h);
    jb_bytes_free(&p);
    jb_bytes_free(&fr);
}

static void write_seeds(const char *dir) {
    jb_err_t err;
    jb_bytes_t stream = {0};
    jb_msg_t m;
    jb_msg_init(&m);
    m.type = JB_MSG_JOB;
    jb_msg_set_job_id(&m, "seed-1", &err);
    jb_msg_set_spec(&m, "{\"mode\":\"ancestral\",\"artist\":\"unknown\",\"genre\":\"jazz\","
                        "\"lyrics\":\"la la\",\"total_length\":20.5,\"temp\":[0.99,0.99,0.99],"
                        "\"seed\":7}", &err);
    m.sample_rate = 44100;
    m.audio_len = 904050;
    m.codebook = CODEBOOK;
    seed(dir, "job", &m, &stream);
    jb_msg_clear(&m);
    for (int lvl = 2; lvl >= 0; lvl--) {
        m.type = JB_MSG_CODES;
        jb_msg_set_job_id(&m, "seed-1", &err);
        m.level = lvl;
        m.offset = 64 * lvl;
        m.codebook = lvl == 0 ? -1 : CODEBOOK;
        m.sample_rate = 44100;
        m.sample0 = lvl == 1 ? 1 : -1;
        int64_t batch = lvl + 1, count = 16 << lvl;
        int32_t *c = malloc((size_t)(batch * count) * 4);
        for (int64_t i = 0; i < batch * count; i++) c[i] = (int32_t)((i * 37 + lvl) % CODEBOOK);
        jb_msg_set_codes(&m, c, batch, count, &err);
        free(c);
        char name[32];
        snprintf(name, sizeof name, "codes%d", lvl);
        seed(dir, name, &m, &stream);
        jb_msg_clear(&m);
    }
    m.type = JB_MSG_ALIGN;
    jb_msg_set_job_id(&m, "seed-1", &err);
    m.level = 2;
    int32_t w[2 * 4 * 5];
    for (int i = 0; i < 40; i++) w[i] = (int32_t)((i * 4099) % (JB_WIRE_ALIGN_ONE + 1));
    jb_msg_set_align(&m, w, 2, 4, 5, &err);
    jb_msg_set_text(&m, "la l\xc3\xa0", &err);
    seed(dir, "align", &m, &stream);
    jb_msg_clear(&m);
    m.type = JB_MSG_END;
    jb_msg_set_job_id(&m, "seed-1", &err);
    m.level = 0;
    m.offset = 64;
    m.batch = 1;
    m.audio_len = 904050;
    jb_msg_set_text(&m, "{\"artist_id\":4,\"dropped\":\"\"}", &err);
    seed(dir, "end", &m, &stream);
    jb_msg_clear(&m);
    m.type = JB_MSG_ERROR;
    jb_msg_set_job_id(&m, "seed-1", &err);
    jb_msg_set_text(&m, "lyrics: dropped '\xe2\x99\xaa'", &err);
    m.code = 65;
    seed(dir, "error", &m, &stream);
    jb_msg_clear(&m);
    m.type = JB_MSG_ACK;
    jb_msg_set_job_id(&m, "seed-1", &err);
    m.seq = 3;
    m.credit = 2;
    seed(dir, "ack", &m, &stream);
    jb_msg_clear(&m);
    m.type = JB_MSG_HEARTBEAT;
    m.seq = 9;
    seed(dir, "heartbeat", &m, &stream);
    jb_msg_clear(&m);
    m.type = JB_MSG_STATUS;
    jb_msg_set_text(&m, "{\"stage\":\"decoder\",\"queue\":0}", &err);
    seed(dir, "status", &m, &stream);
    jb_msg_clear(&m);
    m.type = JB_MSG_STATUS;   // a request: no info
    seed(dir, "status-request", &m, &stream);
    jb_msg_clear(&m);
    m.type = JB_MSG_HELLO;
    jb_msg_set_text(&m, "{\"name\":\"mid-a\",\"role\":\"consumer\",\"want\":1}", &err);
    m.credit = 16;
    seed(dir, "hello", &m, &stream);
    jb_msg_clear(&m);
    const int link_types[3] = {JB_MSG_DONE, JB_MSG_CANCEL, JB_MSG_RELEASE};
    const char *link_names[3] = {"done", "cancel", "release"};
    for (int i = 0; i < 3; i++) {
        m.type = link_types[i];
        jb_msg_set_job_id(&m, "seed-1", &err);
        seed(dir, link_names[i], &m, &stream);
        jb_msg_clear(&m);
    }
    write_file(dir, "stream-all", stream.data, stream.len, NULL, 0, NULL, 0);
    jb_bytes_free(&stream);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    const char *dir = getenv("JB_FUZZ_WRITE_SEEDS");
    if (dir && *dir) {
        write_seeds(dir);
        exit(0);
    }
    return 0;
}
