// test_jb_link_peer_death.c: a link's connecting socket keeps reading two-frame
// messages when the peer that sent them dies (common/wire/jb_link.c, jb_link_dealer_setup).
//
// The scenario that killed the decoder in the kill -9 fault test, made deterministic: a
// ROUTER in a child process sends two-frame messages to our DEALER and is killed; the
// DEALER then reads them. libzmq processes its command queue (where the news of the
// dropped connection waits) on every 100th receive. A receive's count is reset by a
// non-blocking receive that finds nothing, so the 100th receive after that falls on the
// second frame of the 50th message (phase 0) or on a first frame (phase 1, the first
// message has one frame). With ZMQ_IMMEDIATE on, the first case aborts inside libzmq
// ("Assertion failed: !_more (src/fq.cpp:112)"). Each scenario runs in a child
// process so that an abort is a failed check, not a crashed test.
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#include "jb_link.h"
#include "jb_test.h"

#define N_MSGS 600

static char g_dir[256];

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) && errno == EINTR) {}
}

// The sending peer: answers the DEALER's greeting, waits for "go", sends the messages
// (a one-frame message first in phase 1), then waits to be killed.
static void run_router(const char *ep, int phase, int go_fd) {
    void *ctx = zmq_ctx_new(), *r = zmq_socket(ctx, ZMQ_ROUTER);
    if (zmq_bind(r, ep)) _exit(2);
    char rid[64], b[64];
    int n = zmq_recv(r, rid, sizeof rid, 0);
    if (n <= 0 || zmq_recv(r, b, sizeof b, 0) < 0) _exit(3);
    zmq_send(r, rid, (size_t)n, ZMQ_SNDMORE);
    zmq_send(r, "ready", 5, 0);
    char go;
    if (read(go_fd, &go, 1) != 1) _exit(4);
    zmq_send(r, rid, (size_t)n, ZMQ_SNDMORE);
    if (phase) {
        zmq_send(r, "single", 6, 0);
    } else {
        zmq_send(r, "header", 6, ZMQ_SNDMORE);
        zmq_send(r, "payload", 7, 0);
    }
    if (read(go_fd, &go, 1) != 1) _exit(4);
    for (int i = 0; i < N_MSGS; i++) {
        zmq_send(r, rid, (size_t)n, ZMQ_SNDMORE);
        zmq_send(r, "header", 6, ZMQ_SNDMORE);
        zmq_send(r, "payload", 7, 0);
    }
    for (;;) pause();
}

// The receiving side (a child of the test): exits 0 when every message was read whole,
// 100 + (two-frame messages read) / 12 when some were not, 254 on a setup error.
static int run_scenario(int phase, int immediate) {
    char ep[320];
    snprintf(ep, sizeof ep, "ipc://%s/p%d_i%d", g_dir, phase, immediate);
    int go[2];
    if (pipe(go)) return -1;
    pid_t peer = fork();
    if (peer == 0) {
        close(go[1]);
        run_router(ep, phase, go[0]);
    }
    close(go[0]);
    // A bound on the whole scenario: with ZMQ_IMMEDIATE on, libzmq may also drop the rest
    // of a message instead of aborting, and a blocking receive would then wait forever
    // (seen once: the control run hung make test).
    alarm(60);
    void *ctx = zmq_ctx_new(), *d = zmq_socket(ctx, ZMQ_DEALER);
    jb_link_dealer_setup(d);
    if (immediate) zmq_setsockopt(d, ZMQ_IMMEDIATE, &immediate, sizeof immediate);
    int rcv_ms = 5000;   // no receive below waits longer (a frame that never comes)
    zmq_setsockopt(d, ZMQ_RCVTIMEO, &rcv_ms, sizeof rcv_ms);
    char b[64];
    if (zmq_connect(d, ep) || zmq_send(d, "hi", 2, 0) != 2 || zmq_recv(d, b, sizeof b, 0) != 5) {
        kill(peer, SIGKILL);
        _exit(254);
    }
    // Reset libzmq's receive count: a non-blocking receive that finds nothing.
    if (zmq_recv(d, b, sizeof b, ZMQ_DONTWAIT) >= 0) _exit(254);
    // The first message: waiting for it (poll) makes the pipe readable again without
    // a receive; it then stays so while it holds messages.
    zmq_pollitem_t it = {d, 0, ZMQ_POLLIN, 0};
    if (write(go[1], "g", 1) != 1 || zmq_poll(&it, 1, 5000) != 1) _exit(254);
    if (write(go[1], "g", 1) != 1) _exit(254);
    sleep_ms(500);   // the peer sends everything ...
    kill(peer, SIGKILL);   // ... and dies with it unread
    waitpid(peer, NULL, 0);
    sleep_ms(300);   // the dropped connection is now news waiting in the command queue
    int pairs = 0, singles = 0;
    for (;;) {
        int n = zmq_recv(d, b, sizeof b, ZMQ_DONTWAIT);
        if (n < 0) break;
        int more = 0;
        size_t ml = sizeof more;
        zmq_getsockopt(d, ZMQ_RCVMORE, &more, &ml);
        if (!more) {
            singles++;
            continue;
        }
        if (zmq_recv(d, b, sizeof b, 0) == 7 && !memcmp(b, "payload", 7)) pairs++;
    }
    zmq_close(d);
    zmq_ctx_term(ctx);
    _exit(pairs == N_MSGS + 1 - phase && singles == phase ? 0 : 100 + pairs * 100 / N_MSGS / 2);
}

// Runs one scenario in a child; returns its exit code, or -signal.
static int scenario(int phase, int immediate) {
    fflush(stdout);
    pid_t p = fork();
    if (p == 0) {
        if (immediate) {   // the control run: libzmq's abort message is expected
            int null = open("/dev/null", O_WRONLY);
            if (null >= 0) dup2(null, 2);
        }
        run_scenario(phase, immediate);
    }
    int st = 0;
    if (p < 0 || waitpid(p, &st, 0) != p) return -1000;
    return WIFSIGNALED(st) ? -WTERMSIG(st) : WEXITSTATUS(st);
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/jb_link_peer_death.XXXXXX");
    if (!mkdtemp(g_dir)) return 1;
    for (int phase = 0; phase < 2; phase++) {
        int r = scenario(phase, 0);
        JB_CHECK(r == 0,
                 "phase %d: every message of a killed peer is read whole, no abort (%s %d)",
                 phase, r < 0 ? "killed by signal" : "exit", r < 0 ? -r : r);
    }
    // The same scenario with ZMQ_IMMEDIATE on shows that the test reaches libzmq's
    // failure (not a check: a fixed libzmq would not abort).
    int r = scenario(0, 1);
    printf("  note: with ZMQ_IMMEDIATE on, phase 0 %s\n",
           r == -SIGABRT ? "aborts in libzmq (the failure this setup avoids)"
           : r >= 100    ? "loses messages with this libzmq (no abort this time)"
                         : "does not abort with this libzmq");
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd)) {}
    return jb_test_summary("test_jb_link_peer_death");
}
