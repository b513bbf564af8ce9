// fuzz_stream.c: libFuzzer target for the stream side of jb_transport: the
// input is what arrives on a pipe (a frame stream, possibly garbage), read with a
// model's admission bounds (jb_admit) and kept by the decoder's reader (jb_reader), as
// jukebox-decoder does. The endpoint must end in EOF or an error, never crash or loop;
// every message it hands out must obey the rules; the reader must give each job one
// result at most. Fuzz builds skip the frame checksum.
//
// fuzz-sources: common/jb_transport.c common/jb_link.c common/jb_log.c common/jb_wire.c common/jb_err.c
// fuzz-sources: common/wire/jb_admit.c common/serve/jb_reader.c common/wire/jb_codes.c
// fuzz-sources: common/wire/jb_link_producer.c common/wire/jb_link_consumer.c
// fuzz-sources: common/wire/jb_link_status.c common/core/jb_publish.c
// fuzz-libs: -lzmq -lmsgpackc -llz4 -ljansson -lpthread
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz_seeds.h"
#include "jb_reader.h"
#include "jb_transport.h"

#define CODEBOOK 2048
#define MAX_INPUT 60000   // below the pipe's buffer: written whole before reading

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > MAX_INPUT) return 0;
    int fds[2];
    if (pipe(fds)) return 0;
    if (size && write(fds[1], data, size) != (ssize_t)size) __builtin_trap();
    close(fds[1]);
    jb_endpoint_opts_t o;
    jb_endpoint_default_opts(&o);
    o.codebook = CODEBOOK;
    o.admit.sr = 44100;
    o.admit.levels = 3;
    o.admit.hop[0] = 8, o.admit.hop[1] = 32, o.admit.hop[2] = 128;
    jb_err_t err;
    jb_reader_opts_t ro = {.levels = 3, .codebook = CODEBOOK, .max_jobs = 8};
    jb_reader_t *rd = jb_reader_new(&ro, &err);
    if (!rd) __builtin_trap();
    char results[64][JB_WIRE_JOB_ID_MAX + 1];
    int n_results = 0;
    jb_endpoint_t *in = jb_endpoint_from_fd(fds[0], 0, 1, "fuzz", &o, &err);
    if (!in) __builtin_trap();
    jb_msg_t m;
    jb_msg_init(&m);
    // Each message takes at least one frame prefix, so the loop is bounded.
    for (size_t i = 0; i <= size / JB_FRAME_PREFIX + 1; i++) {
        jb_recv_t r = jb_endpoint_recv(in, &m, 1000, &err);
        if (r == JB_RECV_EOF || r == JB_RECV_ERROR) break;
        if (r == JB_RECV_TIMEOUT) __builtin_trap();   // all bytes are there: never waits
        if (r == JB_RECV_MSG && m.type == JB_MSG_CODES)
            for (int64_t k = 0; k < m.batch * m.count; k++)
                if (m.codes[k] < 0 || m.codes[k] >= CODEBOOK) __builtin_trap();
        jb_reader_ev_t ev;
        if (r == JB_RECV_BAD) jb_reader_refused(rd, &m, &err, &ev);
        else if (jb_reader_feed(rd, &m, &ev, &err)) __builtin_trap();
        if (ev.kind == JB_READ_DONE || ev.kind == JB_READ_FAILED) {   // one result a job
            for (int k = 0; k < n_results && k < 64; k++)
                if (!strcmp(results[k], ev.id)) __builtin_trap();
            if (n_results < 64) snprintf(results[n_results++], sizeof results[0], "%s", ev.id);
        }
        if (ev.kind == JB_READ_DONE) jb_reader_job_free(&ev.job);
        if (i == size / JB_FRAME_PREFIX + 1) __builtin_trap();   // did not end
    }
    jb_msg_clear(&m);
    for (jb_reader_job_t *j = jb_reader_take_open(rd), *next; j; j = next) {
        next = j->next;
        jb_reader_job_free(&j);
    }
    jb_reader_destroy(&rd);
    jb_endpoint_destroy(&in);
    return 0;
}

// Seeds: a valid stream of job, codes, end; and the same cut short; the bombs and cut
// streams of fuzz_seeds.h.
int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    const char *dir = getenv("JB_FUZZ_WRITE_SEEDS");
    if (!dir || !*dir) return 0;
    fuzz_write_wire_seeds(dir);   // bombs and cut streams
    jb_err_t err;
    jb_bytes_t s = {0}, h = {0}, p = {0};
    jb_msg_t m;
    jb_msg_init(&m);
    m.type = JB_MSG_JOB;
    jb_msg_set_job_id(&m, "s", &err);
    jb_msg_set_spec(&m, "{\"mode\":\"primed\"}", &err);
    jb_frame_append_msg(&s, &m, &h, &p, &err);
    jb_msg_clear(&m);
    m.type = JB_MSG_CODES;
    jb_msg_set_job_id(&m, "s", &err);
    m.level = 2;
    m.offset = 0;
    int32_t c[48];
    for (int i = 0; i < 48; i++) c[i] = (i * 131) % CODEBOOK;
    jb_msg_set_codes(&m, c, 2, 24, &err);
    jb_frame_append_msg(&s, &m, &h, &p, &err);
    jb_msg_clear(&m);
    m.type = JB_MSG_END;
    jb_msg_set_job_id(&m, "s", &err);
    jb_frame_append_msg(&s, &m, &h, &p, &err);
    jb_msg_clear(&m);
    const size_t lens[2] = {s.len, s.len - 7};
    for (int i = 0; i < 2; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/stream-%d", dir, i);
        FILE *f = fopen(path, "wb");
        if (!f) exit(1);
        fwrite(s.data, 1, lens[i], f);
        fclose(f);
    }
    jb_bytes_free(&s);
    jb_bytes_free(&h);
    jb_bytes_free(&p);
    exit(0);
}
