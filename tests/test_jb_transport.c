// test_jb_transport.c: endpoints (common/jb_transport.h) over a pipe(2) pair, a
// file, tcp loopback and ipc, with a writer thread: messages arrive whole and in
// order, EOF/timeout/peer-gone are told apart, garbage is rejected and the
// receiver keeps serving, an output file appears only when complete.
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#include "jb_test.h"
#include "jb_link.h"
#include "jb_log.h"
#include "jb_transport.h"

#define WAIT_MS 5000   // every wait is bounded: a broken transport fails, never hangs

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

// Message i of a test stream: codes of job "t", level 1, offset 100*i, codes
// (2, n) with code[j] = (i * 7 + j) % 2048 so the receiver can check every one.
static void make_codes(jb_msg_t *m, int i, int64_t n) {
    jb_msg_init(m);
    m->type = JB_MSG_CODES;
    snprintf(m->job_id, sizeof m->job_id, "t");
    m->level = 1;
    m->offset = 100 * (int64_t)i;
    m->codebook = 2048;
    m->batch = 2;
    m->count = n;
    m->codes = malloc((size_t)(2 * n) * sizeof(int32_t));
    for (int64_t j = 0; j < 2 * n; j++) m->codes[j] = (int32_t)((i * 7 + j) % 2048);
}

static int codes_ok(const jb_msg_t *m, int i, int64_t n) {
    if (m->type != JB_MSG_CODES || m->offset != 100 * (int64_t)i || m->count != n || m->batch != 2)
        return 0;
    for (int64_t j = 0; j < 2 * n; j++)
        if (m->codes[j] != (int32_t)((i * 7 + j) % 2048)) return 0;
    return 1;
}

typedef struct {
    jb_endpoint_t *out;
    int n_msgs;
    int64_t n_codes;
    int close;          // 1: jb_endpoint_close, 0: destroy
    int rc;
    jb_err_t err;
} writer_t;

static void *writer_main(void *arg) {
    writer_t *w = arg;
    w->rc = 0;
    for (int i = 0; i < w->n_msgs && !w->rc; i++) {
        jb_msg_t m;
        make_codes(&m, i, w->n_codes);
        w->rc = jb_endpoint_send(w->out, &m, &w->err);
        jb_msg_clear(&m);
    }
    jb_msg_t end;
    jb_msg_init(&end);
    end.type = JB_MSG_END;
    snprintf(end.job_id, sizeof end.job_id, "t");
    if (!w->rc) w->rc = jb_endpoint_send(w->out, &end, &w->err);
    if (w->close) {
        if (jb_endpoint_close(&w->out, &w->err)) w->rc = -1;
    } else {
        jb_endpoint_destroy(&w->out);
    }
    return NULL;
}

// Receives n codes messages and the end message; returns how many were right.
static int receive_stream(jb_endpoint_t *in, int n_msgs, int64_t n_codes, const char *what) {
    jb_err_t err = {0};
    jb_msg_t m;
    jb_msg_init(&m);
    int good = 0;
    for (int i = 0; i < n_msgs; i++) {
        jb_recv_t r = jb_endpoint_recv(in, &m, WAIT_MS, &err);
        if (r != JB_RECV_MSG) {
            printf("  %s: message %d: recv %d (%s)\n", what, i, r, err.msg);
            break;
        }
        good += codes_ok(&m, i, n_codes);
    }
    jb_recv_t r = jb_endpoint_recv(in, &m, WAIT_MS, &err);
    JB_CHECK(good == n_msgs && r == JB_RECV_MSG && m.type == JB_MSG_END,
             "%s: %d/%d codes messages right, then end", what, good, n_msgs);
    jb_msg_clear(&m);
    return good;
}

// ---- pipes

static void test_pipe(void) {
    jb_err_t err = {0};
    int fds[2];
    JB_CHECK(pipe(fds) == 0, "pipe");
    writer_t w = {.n_msgs = 50, .n_codes = 3000, .close = 1};
    w.out = jb_endpoint_from_fd(fds[1], 1, 1, "pipe-out", NULL, &err);
    jb_endpoint_t *in = jb_endpoint_from_fd(fds[0], 0, 1, "pipe-in", NULL, &err);
    pthread_t th;
    pthread_create(&th, NULL, writer_main, &w);
    receive_stream(in, 50, 3000, "pipe");
    jb_msg_t m;
    jb_msg_init(&m);
    JB_CHECK(jb_endpoint_recv(in, &m, WAIT_MS, &err) == JB_RECV_EOF, "pipe: clean EOF after "
             "the writer closes");
    pthread_join(th, NULL);
    JB_CHECK(w.rc == 0, "pipe writer: %s", w.rc ? w.err.msg : "ok");
    jb_endpoint_destroy(&in);

    // Timeout: nothing written.
    JB_CHECK(pipe(fds) == 0, "pipe");
    in = jb_endpoint_from_fd(fds[0], 0, 1, "pipe-in", NULL, &err);
    int64_t t0 = now_ms();
    jb_recv_t r = jb_endpoint_recv(in, &m, 150, &err);
    int64_t dt = now_ms() - t0;
    JB_CHECK(r == JB_RECV_TIMEOUT && dt >= 140 && dt < 2000, "pipe: timeout after %lld ms",
             (long long)dt);
    JB_CHECK(jb_endpoint_recv(in, &m, 0, &err) == JB_RECV_TIMEOUT, "pipe: zero timeout polls");

    // A valid frame whose message is bad (version 2) is dropped; the next is read.
    jb_bytes_t s = {0}, h = {0}, p = {0};
    uint8_t v2[] = {0x83, 0xa4, 't', 'y', 'p', 'e', 0xa3, 'e', 'n', 'd', 0xa1, 'v', 0x02,
                    0xa3, 'j', 'o', 'b', 0xa1, 'x'};
    jb_frame_append(&s, v2, sizeof v2, NULL, 0, &err);
    jb_msg_t good;
    make_codes(&good, 3, 10);
    jb_frame_append_msg(&s, &good, &h, &p, &err);
    jb_msg_clear(&good);
    size_t first = s.len;
    // Then half a frame, then the writer goes away: truncation.
    make_codes(&good, 4, 10);
    jb_frame_append_msg(&s, &good, &h, &p, &err);
    jb_msg_clear(&good);
    size_t cut = first + (s.len - first) / 2;
    JB_CHECK(write(fds[1], s.data, cut) == (ssize_t)cut, "write frames");
    close(fds[1]);
    r = jb_endpoint_recv(in, &m, WAIT_MS, &err);
    JB_CHECK(r == JB_RECV_BAD && err.code == JB_EUNSUP && strstr(err.msg, "byte 0"),
             "pipe: version-2 message dropped (%s)", err.msg);
    r = jb_endpoint_recv(in, &m, WAIT_MS, &err);
    JB_CHECK(r == JB_RECV_MSG && codes_ok(&m, 3, 10), "pipe: the next message is read");
    r = jb_endpoint_recv(in, &m, WAIT_MS, &err);
    char want[64];
    snprintf(want, sizeof want, "byte %zu: truncated", first);
    JB_CHECK(r == JB_RECV_ERROR && strstr(err.msg, want), "pipe: truncated frame (%s)", err.msg);
    r = jb_endpoint_recv(in, &m, WAIT_MS, &err);
    JB_CHECK(r == JB_RECV_ERROR, "pipe: the error is sticky");
    jb_endpoint_destroy(&in);

    // Garbage (bad magic) after a good frame.
    JB_CHECK(pipe(fds) == 0, "pipe");
    in = jb_endpoint_from_fd(fds[0], 0, 1, "pipe-in", NULL, &err);
    JB_CHECK(write(fds[1], s.data + sizeof v2 + JB_FRAME_PREFIX, first - sizeof v2 - JB_FRAME_PREFIX)
                 > 0 && write(fds[1], "GARBAGE GARBAGE GARBAGE", 23) == 23, "write");
    close(fds[1]);
    r = jb_endpoint_recv(in, &m, WAIT_MS, &err);
    JB_CHECK(r == JB_RECV_MSG && codes_ok(&m, 3, 10), "pipe: good frame before garbage");
    r = jb_endpoint_recv(in, &m, WAIT_MS, &err);
    JB_CHECK(r == JB_RECV_ERROR && strstr(err.msg, "magic"), "pipe: garbage refused (%s)",
             err.msg);
    jb_endpoint_destroy(&in);

    // A prefix claiming a 16 MB payload (under the cap), then the writer goes away: memory
    // follows the bytes that arrived, not the claim, and the error says truncated.
    JB_CHECK(pipe(fds) == 0, "pipe");
    in = jb_endpoint_from_fd(fds[0], 0, 1, "pipe-in", NULL, &err);
    uint8_t big[JB_FRAME_PREFIX + 100] = {'J', 'B', 'X', '1', 10, 0, 0, 0, 0x00, 0x24, 0xf4, 0x00};
    JB_CHECK(write(fds[1], big, sizeof big) == (ssize_t)sizeof big, "write lying prefix");
    close(fds[1]);
    // In a child with its address space capped at 8 MB more than it uses now:
    // allocating for the claim would fail with "out of memory".
#if defined(__SANITIZE_ADDRESS__)
    int asan = 1;   // ASan reserves terabytes of address space: no cap possible
#else
    int asan = 0;
#endif
    if (!asan) {
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) {
            long pages = 0;
            FILE *f = fopen("/proc/self/statm", "r");
            if (!f || fscanf(f, "%ld", &pages) != 1) _exit(2);
            fclose(f);
            rlim_t cap = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) + ((rlim_t)8 << 20);
            struct rlimit rl = {cap, cap};
            if (setrlimit(RLIMIT_AS, &rl)) _exit(2);
            r = jb_endpoint_recv(in, &m, WAIT_MS, &err);
            _exit(r == JB_RECV_ERROR && strstr(err.msg, "truncated") ? 0 : 1);
        }
        int status = -1;
        waitpid(pid, &status, 0);
        JB_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                 "pipe: reading a 16 MB claim fits in 8 MB of address space");
    }
    jb_endpoint_destroy(&in);
    JB_CHECK(pipe(fds) == 0, "pipe");   // again, for this process
    in = jb_endpoint_from_fd(fds[0], 0, 1, "pipe-in", NULL, &err);
    JB_CHECK(write(fds[1], big, sizeof big) == (ssize_t)sizeof big, "write lying prefix");
    close(fds[1]);
    r = jb_endpoint_recv(in, &m, WAIT_MS, &err);
    JB_CHECK(r == JB_RECV_ERROR && strstr(err.msg, "truncated") && strstr(err.msg, "16000026"),
             "pipe: 16 MB claim, 116 bytes sent -> truncated (%s)", err.msg);
    jb_endpoint_destroy(&in);

    // Peer gone: the reader closes; the writer gets JB_EUNAVAIL, not SIGPIPE.
    JB_CHECK(pipe(fds) == 0, "pipe");
    close(fds[0]);
    jb_endpoint_t *out = jb_endpoint_from_fd(fds[1], 1, 1, "pipe-out", NULL, &err);
    make_codes(&good, 0, 10);
    int rc = jb_endpoint_send(out, &good, &err);
    JB_CHECK(rc == -1 && err.code == JB_EUNAVAIL && strstr(err.msg, "gone"),
             "pipe: reader gone -> unavailable, process alive (%s)", err.msg);
    sigset_t pend;
    sigpending(&pend);
    JB_CHECK(!sigismember(&pend, SIGPIPE), "pipe: no SIGPIPE left pending");
    JB_CHECK(jb_endpoint_send(out, &good, &err) == -1, "pipe: broken output stays broken");
    jb_msg_clear(&good);
    jb_endpoint_destroy(&out);

    // A message that breaks the rules is refused before anything is written.
    JB_CHECK(pipe(fds) == 0, "pipe");
    out = jb_endpoint_from_fd(fds[1], 1, 1, "pipe-out", NULL, &err);
    make_codes(&good, 0, 10);
    good.codes[5] = 4000;   // codebook 2048
    JB_CHECK(jb_endpoint_send(out, &good, &err) == -1 && err.code == JB_EINVAL,
             "pipe: invalid message not sent (%s)", err.msg);
    good.codes[5] = 5;
    JB_CHECK_OK(jb_endpoint_send(out, &good, &err), &err, "pipe: endpoint still usable");
    jb_msg_clear(&good);
    jb_endpoint_destroy(&out);
    in = jb_endpoint_from_fd(fds[0], 0, 1, "pipe-in", NULL, &err);
    JB_CHECK(jb_endpoint_recv(in, &m, WAIT_MS, &err) == JB_RECV_MSG && codes_ok(&m, 0, 10)
                 && jb_endpoint_recv(in, &m, WAIT_MS, &err) == JB_RECV_EOF,
             "pipe: exactly the valid message arrived");
    jb_endpoint_destroy(&in);
    jb_msg_clear(&m);
    jb_bytes_free(&s);
    jb_bytes_free(&h);
    jb_bytes_free(&p);
}

// ---- files

static int exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

static int count_tmp(const char *dir) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "ls %s | grep -c tmp", dir);
    FILE *f = popen(cmd, "r");
    int n = -1;
    if (f) {
        if (fscanf(f, "%d", &n) != 1) n = -1;
        pclose(f);
    }
    return n;
}

static void test_file(void) {
    jb_err_t err = {0};
    char dir[] = "/tmp/jb_transport_XXXXXX";
    JB_CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    char path[256];
    snprintf(path, sizeof path, "%s/song.jbc", dir);

    jb_endpoint_t *out = jb_endpoint_open_out(path, NULL, &err);
    JB_CHECK(out != NULL, "file: open output (%s)", out ? "" : err.msg);
    jb_msg_t m;
    make_codes(&m, 0, 100);
    JB_CHECK_OK(jb_endpoint_send(out, &m, &err), &err, "file: send");
    jb_msg_clear(&m);
    JB_CHECK(!exists(path) && count_tmp(dir) == 1, "file: not visible before close");
    JB_CHECK_OK(jb_endpoint_close(&out, &err), &err, "file: close");
    JB_CHECK(out == NULL && exists(path) && count_tmp(dir) == 0, "file: renamed on close");

    jb_endpoint_t *in = jb_endpoint_open_in(path, NULL, &err);
    JB_CHECK(in && jb_endpoint_recv(in, &m, WAIT_MS, &err) == JB_RECV_MSG && codes_ok(&m, 0, 100)
                 && jb_endpoint_recv(in, &m, WAIT_MS, &err) == JB_RECV_EOF,
             "file: read back, then EOF");
    jb_endpoint_destroy(&in);
    jb_msg_clear(&m);

    // Destroy without close: no file, no temporary. The old file is untouched.
    struct stat before, after;
    stat(path, &before);
    out = jb_endpoint_open_out(path, NULL, &err);
    make_codes(&m, 1, 100000);
    jb_endpoint_send(out, &m, &err);
    jb_msg_clear(&m);
    jb_endpoint_destroy(&out);
    stat(path, &after);
    JB_CHECK(count_tmp(dir) == 0 && after.st_size == before.st_size,
             "file: abandoned output leaves the old file and no temporary");

    // A codes file written by a thread through the pipe-style writer.
    writer_t w = {.n_msgs = 20, .n_codes = 500, .close = 1};
    w.out = jb_endpoint_open_out(path, NULL, &err);
    writer_main(&w);
    JB_CHECK(w.rc == 0, "file: writer (%s)", w.rc ? w.err.msg : "ok");
    in = jb_endpoint_open_in(path, NULL, &err);
    receive_stream(in, 20, 500, "file");
    JB_CHECK(jb_endpoint_recv(in, &m, WAIT_MS, &err) == JB_RECV_EOF, "file: EOF");
    jb_endpoint_destroy(&in);

    snprintf(path, sizeof path, "%s/missing.jbc", dir);
    in = jb_endpoint_open_in(path, NULL, &err);
    JB_CHECK(!in && err.code == JB_ENOENT, "file: missing input (%s)", err.msg);
    snprintf(path, sizeof path, "%s/no/such/dir.jbc", dir);
    out = jb_endpoint_open_out(path, NULL, &err);
    JB_CHECK(!out && strstr(err.msg, "cannot create"), "file: output in a missing directory "
             "(%s)", err.msg);
    JB_CHECK(!jb_endpoint_open_in("", NULL, &err) && err.code == JB_EINVAL, "empty spec");

    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    JB_CHECK(system(cmd) == 0, "cleanup");
}

// ---- ZeroMQ

static void test_zmq_stream(const char *bind_spec, const char *what) {
    jb_err_t err = {0};
    jb_endpoint_t *in = jb_endpoint_open_in(bind_spec, NULL, &err);
    JB_CHECK(in != NULL, "%s: bind %s (%s)", what, bind_spec, in ? "" : err.msg);
    if (!in) return;
    const char *addr = jb_endpoint_address(in);
    JB_CHECK(strstr(addr, "*") == NULL, "%s: resolved address %s", what, addr);
    writer_t w = {.n_msgs = 40, .n_codes = 20000, .close = 1};
    w.out = jb_endpoint_open_out(addr, NULL, &err);
    JB_CHECK(w.out != NULL, "%s: connect (%s)", what, w.out ? "" : err.msg);
    if (!w.out) {
        jb_endpoint_destroy(&in);
        return;
    }
    pthread_t th;
    pthread_create(&th, NULL, writer_main, &w);
    receive_stream(in, 40, 20000, what);
    pthread_join(th, NULL);
    JB_CHECK(w.rc == 0, "%s: writer (%s)", what, w.rc ? w.err.msg : "ok");

    jb_msg_t m;
    jb_msg_init(&m);
    int64_t t0 = now_ms();
    jb_recv_t r = jb_endpoint_recv(in, &m, 150, &err);
    int64_t dt = now_ms() - t0;
    JB_CHECK(r == JB_RECV_TIMEOUT && dt >= 140 && dt < 2000, "%s: timeout after %lld ms, no EOF",
             what, (long long)dt);

    // Garbage from a raw ZeroMQ peer (a DEALER that never introduced itself): wrong
    // part counts, bad headers, a cut payload, a valid message from an unknown peer.
    // The link drops and counts each; the receiver never sees them and keeps serving.
    jb_link_stats_t st0, st1;
    JB_CHECK(jb_endpoint_stats(in, &st0) == 0, "%s: a link has counters", what);
    void *ctx = zmq_ctx_new();
    void *raw = zmq_socket(ctx, ZMQ_DEALER);
    zmq_connect(raw, addr);
    zmq_send(raw, "one part only", 13, 0);
    zmq_send(raw, "a", 1, ZMQ_SNDMORE);
    zmq_send(raw, "b", 1, ZMQ_SNDMORE);
    zmq_send(raw, "c", 1, 0);
    zmq_send(raw, "\xde\xff\xff", 3, ZMQ_SNDMORE);
    zmq_send(raw, "", 0, 0);
    uint8_t junk[300];
    for (int i = 0; i < 300; i++) junk[i] = (uint8_t)(i * 37 + 11);
    zmq_send(raw, junk, sizeof junk, ZMQ_SNDMORE);
    zmq_send(raw, junk, sizeof junk, 0);
    jb_msg_t good;
    make_codes(&good, 9, 64);
    good.seq = 0;
    jb_bytes_t h = {0}, p = {0};
    jb_wire_encode(&good, &h, &p, &err);
    zmq_send(raw, h.data, h.len, ZMQ_SNDMORE);
    zmq_send(raw, p.data, p.len - 1, 0);   // payload cut by one byte
    zmq_send(raw, h.data, h.len, ZMQ_SNDMORE);
    zmq_send(raw, p.data, p.len, 0);       // valid, but from a peer without HELLO
    int64_t t_end = now_ms() + WAIT_MS;
    do jb_endpoint_stats(in, &st1);
    while (st1.bad - st0.bad < 6 && now_ms() < t_end);
    JB_CHECK(st1.bad - st0.bad == 6, "%s: 6 garbage messages dropped and counted (%lld)", what,
             (long long)(st1.bad - st0.bad));
    r = jb_endpoint_recv(in, &m, 100, &err);
    JB_CHECK(r == JB_RECV_TIMEOUT, "%s: garbage never reaches the receiver", what);
    // Another producer instance: its own name (the writer's default name, <host>-<pid>,
    // is this process's too; a second run under one name voids the first one's jobs).
    jb_link_opts_t lo2;
    jb_link_default_opts(&lo2);
    lo2.name = "second-writer";
    jb_endpoint_opts_t eo2;
    jb_endpoint_default_opts(&eo2);
    eo2.link = &lo2;
    jb_endpoint_t *out2 = jb_endpoint_open_out(addr, &eo2, &err);
    snprintf(good.job_id, sizeof good.job_id, "t2");
    JB_CHECK(out2 && jb_endpoint_send(out2, &good, &err) == 0, "%s: send after garbage", what);
    r = jb_endpoint_recv(in, &m, WAIT_MS, &err);
    JB_CHECK(r == JB_RECV_MSG && codes_ok(&m, 9, 64), "%s: valid message after garbage", what);

    // Raw bytes that are not ZMTP at all (tcp only): libzmq drops that connection.
    if (strncmp(addr, "tcp://", 6) == 0) {
        int port = atoi(strrchr(addr, ':') + 1);
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        int c = connect(fd, (struct sockaddr *)&sa, sizeof sa);
        ssize_t wr = c == 0 ? write(fd, "GET / HTTP/1.0\r\n\r\n\xff\xff\xff\xff", 22) : -1;
        close(fd);
        good.offset = 100 * 9;
        JB_CHECK(jb_endpoint_send(out2, &good, &err) == 0, "%s: send", what);
        r = jb_endpoint_recv(in, &m, WAIT_MS, &err);
        JB_CHECK(c == 0 && wr == 22 && r == JB_RECV_MSG && codes_ok(&m, 9, 64),
                 "%s: still serving after a non-ZeroMQ client", what);
    }
    int zero = 0;
    zmq_setsockopt(raw, ZMQ_LINGER, &zero, sizeof zero);
    zmq_close(raw);
    zmq_ctx_term(ctx);
    jb_bytes_free(&h);
    jb_bytes_free(&p);
    jb_msg_clear(&m);
    jb_msg_clear(&good);
    jb_endpoint_destroy(&out2);
    char ipc_file[256] = "";
    if (strncmp(addr, "ipc://", 6) == 0) snprintf(ipc_file, sizeof ipc_file, "%s", addr + 6);
    jb_endpoint_destroy(&in);
    if (ipc_file[0]) JB_CHECK(!exists(ipc_file), "%s: socket file removed", what);
}

static void test_zmq_bounds(void) {
    jb_err_t err = {0};
    // No peer: hwm messages wait; the next send gives up after send_timeout_ms.
    jb_endpoint_opts_t o;
    jb_endpoint_default_opts(&o);
    o.send_timeout_ms = 200;
    char addr[128];
    snprintf(addr, sizeof addr, "ipc:///tmp/jb_test_nobody_%ld", (long)getpid());
    jb_endpoint_t *out = jb_endpoint_open_out(addr, &o, &err);
    jb_msg_t m;
    make_codes(&m, 0, 10);
    int rc = 0, n_ok = 0;
    int64_t dt = 0;
    while (out && n_ok < 100) {
        int64_t t0 = now_ms();
        rc = jb_endpoint_send(out, &m, &err);
        dt = now_ms() - t0;
        if (rc) break;
        n_ok++;
    }
    JB_CHECK(out && n_ok == o.hwm && rc == -1 && err.code == JB_EUNAVAIL && dt >= 190,
             "zmq: no peer -> %d queued, then unavailable after %lld ms (%s)", n_ok,
             (long long)dt, err.msg);
    jb_endpoint_destroy(&out);
    jb_msg_clear(&m);

    // A reader that does not read: the writer is held back after a bounded number.
    jb_endpoint_opts_t oi;
    jb_endpoint_default_opts(&oi);
    oi.hwm = 2;
    snprintf(addr, sizeof addr, "ipc:///tmp/jb_test_slow_%ld", (long)getpid());
    jb_endpoint_t *in = jb_endpoint_open_in(addr, &oi, &err);
    o.hwm = 2;
    out = jb_endpoint_open_out(addr, &o, &err);
    int sent = 0;
    make_codes(&m, 0, 1 << 18);   // 2 MB of codes, ~1.4 MB compressed
    for (int i = 0; i < 200 && out; i++) {
        if (jb_endpoint_send(out, &m, &err)) break;
        sent++;
    }
    JB_CHECK(in && out && sent < 50 && err.code == JB_EUNAVAIL,
             "zmq: hwm 2 -> writer held after %d messages (%s)", sent, err.msg);
    jb_msg_clear(&m);
    jb_endpoint_destroy(&out);
    jb_endpoint_destroy(&in);

    JB_CHECK(!jb_endpoint_open_in("tcp://no-such-host-name.invalid:1", NULL, &err),
             "zmq: unusable bind address (%s)", err.msg);
    // '@' on an output binds: a reversed pipeline (upstream listens).
    out = jb_endpoint_open_out("@tcp://127.0.0.1:*", NULL, &err);
    JB_CHECK(out != NULL, "zmq: output binds with '@' (%s)", out ? jb_endpoint_address(out) : err.msg);
    if (out) {
        char conn[300];
        snprintf(conn, sizeof conn, ">%s", jb_endpoint_address(out));
        in = jb_endpoint_open_in(conn, NULL, &err);
        make_codes(&m, 2, 5);
        JB_CHECK(in && jb_endpoint_send(out, &m, &err) == 0, "zmq: reversed send");
        jb_msg_clear(&m);
        JB_CHECK(in && jb_endpoint_recv(in, &m, WAIT_MS, &err) == JB_RECV_MSG && codes_ok(&m, 2, 5),
                 "zmq: input connects with '>'");
        jb_msg_clear(&m);
        jb_endpoint_destroy(&in);
        JB_CHECK_OK(jb_endpoint_close(&out, &err), &err, "zmq: close output");
    }
}

// ---- what only a link does: on a stream nothing; DONE passes on upstream

static int send_job(jb_endpoint_t *out, const char *id, jb_err_t *err) {
    jb_msg_t m;
    jb_msg_init(&m);
    m.type = JB_MSG_END;
    m.level = -1;
    snprintf(m.job_id, sizeof m.job_id, "%s", id);
    return jb_endpoint_send(out, &m, err);
}

static void test_link_ops(void) {
    // Streams: the link-only operations do nothing and say so.
    int fds[2];
    JB_CHECK(pipe(fds) == 0, "ops: pipe");
    jb_err_t err = {0};
    jb_endpoint_t *sin = jb_endpoint_from_fd(fds[0], 0, 1, "pipe-in", NULL, &err);
    jb_endpoint_opts_t so;
    jb_endpoint_default_opts(&so);
    so.upstream = sin;
    jb_endpoint_t *sout = jb_endpoint_from_fd(fds[1], 1, 1, "pipe-out", &so, &err);
    char name[64], epoch[64];
    jb_link_stats_t st;
    JB_CHECK(!jb_endpoint_records_input(sin) && !jb_endpoint_confirms(sout),
             "ops: a pipe is not a reliable link");
    jb_endpoint_done(sin, "j");
    jb_endpoint_pause(sin);
    jb_endpoint_finished(sout, "j");   // DONE to a stream input: nothing
    JB_CHECK(jb_endpoint_release(sin, "j") == 0 && jb_endpoint_cancel(sout, "j") == 0,
             "ops: release / cancel on a pipe do nothing (0)");
    JB_CHECK(jb_endpoint_preload(sin, "j", 3, NULL, NULL, &err) == 0 &&
             jb_endpoint_flush(sout, 0, 1, &err) == 0,
             "ops: preload / flush on a pipe succeed at once");
    JB_CHECK(jb_endpoint_owner(sin, "j", name, sizeof name, epoch, sizeof epoch) == -1 &&
             jb_endpoint_status_json(sin) == NULL && jb_endpoint_stats(sin, &st) == -1,
             "ops: a pipe has no owner, status or counters");
    JB_CHECK(send_job(sout, "j", &err) == 0, "ops: the pipe still works (%s)", err.msg);
    jb_endpoint_destroy(&sout);
    jb_endpoint_destroy(&sin);

    // A link P -> C, and a stream output S whose upstream is C: the job is finished
    // on S (a stream holds it at once), so C reports it DONE to P.
    jb_endpoint_t *c = jb_endpoint_open_in("tcp://127.0.0.1:*", NULL, &err);
    JB_CHECK(c != NULL, "ops: bind (%s)", c ? "" : err.msg);
    if (!c) return;
    jb_endpoint_t *p = jb_endpoint_open_out(jb_endpoint_address(c), NULL, &err);
    JB_CHECK(p != NULL && jb_endpoint_confirms(p) && jb_endpoint_records_input(c),
             "ops: tcp endpoints are reliable links");
    JB_CHECK(pipe(fds) == 0, "ops: pipe");
    so.upstream = c;
    jb_endpoint_t *s = jb_endpoint_from_fd(fds[1], 1, 1, "pipe-out", &so, &err);
    close(fds[0]);
    jb_msg_t m;
    jb_msg_init(&m);
    JB_CHECK(p && send_job(p, "k", &err) == 0 &&
             jb_endpoint_recv(c, &m, WAIT_MS, &err) == JB_RECV_MSG && !strcmp(m.job_id, "k"),
             "ops: the job arrives over the link (%s)", err.msg);
    jb_msg_clear(&m);
    JB_CHECK(jb_endpoint_flush(p, 50, 1, &err) == -1 && err.code == JB_EUNAVAIL,
             "ops: before it is finished below, the producer waits for its DONE");
    JB_CHECK(jb_endpoint_owner(c, "k", name, sizeof name, epoch, sizeof epoch) == 0,
             "ops: the consumer knows whose stream the job is");
    char *status = jb_endpoint_status_json(c);
    JB_CHECK(status && strstr(status, "\"role\""), "ops: a link's status: %.60s",
             status ? status : "(null)");
    free(status);
    jb_endpoint_finished(s, "k");
    JB_CHECK(jb_endpoint_flush(p, WAIT_MS, 1, &err) == 0,
             "ops: finished on the stream below: DONE reached the producer (%s)",
             err.code ? err.msg : "ok");
    JB_CHECK(jb_endpoint_stats(p, &st) == 0 && st.done_rx == 1, "ops: one DONE counted (%lld)",
             (long long)st.done_rx);
    jb_endpoint_destroy(&s);
    jb_endpoint_destroy(&p);
    jb_endpoint_destroy(&c);
}

int main(void) {
    if (!getenv("JB_TEST_VERBOSE")) jb_log_set_level(JB_ERROR);   // link warnings on garbage
    test_pipe();
    test_file();
    test_zmq_stream("tcp://127.0.0.1:*", "tcp");
    char ipc[128];
    snprintf(ipc, sizeof ipc, "ipc:///tmp/jb_test_ipc_%ld", (long)getpid());
    test_zmq_stream(ipc, "ipc");
    test_zmq_bounds();
    test_link_ops();
    return jb_test_summary("test_jb_transport");
}
