// fuzz_stream.c: libFuzzer target for the stream side of jb_transport: the
// input is what arrives on a pipe (a frame stream, possibly garbage). The
// endpoint must end in EOF or an error, never crash or loop, and every message
// it hands out must obey the rules. Fuzz builds skip the frame checksum.
//
// fuzz-sources: common/jb_transport.c common/jb_link.c common/jb_log.c common/jb_wire.c common/jb_err.c
// fuzz-libs: -lzmq -lmsgpackc -llz4 -ljansson -lpthread
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
    jb_err_t err;
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
        if (i == size / JB_FRAME_PREFIX + 1) __builtin_trap();   // did not end
    }
    jb_msg_clear(&m);
    jb_endpoint_destroy(&in);
    return 0;
}

// Seeds: a valid stream of job, codes, end; and the same cut short.
int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    const char *dir = getenv("JB_FUZZ_WRITE_SEEDS");
    if (!dir || !*dir) return 0;
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
