// test_jb_service.c: the systemd notifications of a stage (common/serve/jb_service.h) as a
// datagram socket standing in for systemd receives them: READY=1 with STATUS, STATUS=,
// WATCHDOG=1 at most every half WatchdogSec, STOPPING=1; nothing without NOTIFY_SOCKET.
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "jb_service.h"
#include "jb_test.h"

static int sock = -1;

// The next notification within ms milliseconds into buf ("" when none came).
static const char *next(char *buf, size_t n, int ms) {
    struct pollfd p = {sock, POLLIN, 0};
    buf[0] = 0;
    if (poll(&p, 1, ms) == 1) {
        ssize_t k = recv(sock, buf, n - 1, 0);
        buf[k > 0 ? k : 0] = 0;
    }
    return buf;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(void) {
    char path[108], buf[512];
    snprintf(path, sizeof path, "/tmp/test_jb_service.%ld.sock", (long)getpid());
    // without NOTIFY_SOCKET: no-ops (nothing to receive them; they must not fail or block)
    unsetenv("NOTIFY_SOCKET");
    jb_service_ready("x");
    jb_service_status("y");
    jb_service_stopping();

    // the listening side's parser: READY=1 as a whole line of the notification
    JB_CHECK(jb_service_is_ready_msg("READY=1") && jb_service_is_ready_msg("STATUS=x\nREADY=1") &&
                 jb_service_is_ready_msg("READY=1\nSTATUS=loaded"),
             "READY=1 found as any line of a notification");
    JB_CHECK(!jb_service_is_ready_msg("READY=10") && !jb_service_is_ready_msg("STATUS=READY=1") &&
                 !jb_service_is_ready_msg("") && !jb_service_is_ready_msg("WATCHDOG=1"),
             "no READY=1 line: not ready (READY=10, inside another value, empty, watchdog)");

    sock = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
    unlink(path);
    if (sock < 0 || bind(sock, (struct sockaddr *)&a, sizeof a) != 0) {
        JB_CHECK(0, "cannot bind %s: %s", path, strerror(errno));
        return jb_test_summary("test_jb_service");
    }
    setenv("NOTIFY_SOCKET", path, 1);
    char pid[32];
    snprintf(pid, sizeof pid, "%ld", (long)getpid());
    setenv("WATCHDOG_PID", pid, 1);
    // WatchdogSec=2: a ping every second at most (long enough that two calls in a row on a
    // loaded machine are still "at once")
    setenv("WATCHDOG_USEC", "2000000", 1);

    jb_service_ready("loaded prior_level_2");
    JB_CHECK(!strcmp(next(buf, sizeof buf, 2000), "READY=1\nSTATUS=loaded prior_level_2"),
             "READY=1 with the status (%s)", buf);
    jb_service_ready(NULL);
    JB_CHECK(!strcmp(next(buf, sizeof buf, 2000), "READY=1"), "READY=1 alone (%s)", buf);
    jb_service_status("%d job(s), %s", 3, "idle");
    JB_CHECK(!strcmp(next(buf, sizeof buf, 2000), "STATUS=3 job(s), idle"), "STATUS= (%s)", buf);

    double t0 = now_s();
    jb_service_watchdog();
    JB_CHECK(!strcmp(next(buf, sizeof buf, 2000), "WATCHDOG=1"), "the first watchdog call pings");
    jb_service_watchdog();   // at once again: too soon
    JB_CHECK(!strcmp(next(buf, sizeof buf, 20), ""), "a second call at once does not (%s)", buf);
    // called often, it pings again once half the interval has passed (bounded wait)
    double t1 = 0;
    while (now_s() - t0 < 10.0) {
        jb_service_watchdog();
        if (!strcmp(next(buf, sizeof buf, 5), "WATCHDOG=1")) {
            t1 = now_s();
            break;
        }
    }
    JB_CHECK(t1 > 0 && t1 - t0 >= 0.999, "the next ping after half WatchdogSec (%.3f s)", t1 - t0);
    jb_service_stopping();
    JB_CHECK(!strcmp(next(buf, sizeof buf, 2000), "STOPPING=1"), "STOPPING=1 (%s)", buf);
    close(sock);
    unlink(path);
    return jb_test_summary("test_jb_service");
}
