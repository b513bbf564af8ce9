// jukebox-launch: start a stage as a background service and wait until it is ready.
//
//   jukebox-launch --log FILE --pidfile FILE [--timeout S] -- jukebox-upsampler-mid ...
//
// The stages tell systemd when their weights are loaded and their sockets open
// (READY=1 over $NOTIFY_SOCKET, jb_service.h). This tool plays systemd's part for
// pipelines/local-services.sh: it binds a datagram socket, starts the command in its
// own session with NOTIFY_SOCKET pointing there (stdin /dev/null, stdout and stderr
// appended to the log), writes the pid file and returns once READY=1 arrives, so a
// script knows the stage can take work. The service keeps running after this tool
// exits (its later notifications go nowhere, which the stages ignore).
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "jb_publish.h"
#include "jb_service.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: jukebox-launch --log FILE --pidfile FILE [--timeout S] -- COMMAND [ARGS...]\n"
            "\n"
            "Starts COMMAND in the background (its own session; stdin /dev/null; stdout and\n"
            "stderr appended to FILE) with NOTIFY_SOCKET set, writes its pid to the pid file\n"
            "and waits for the READY=1 notification a Jukebox stage sends once its model is\n"
            "loaded and its sockets are open. Prints the pid.\n"
            "\n"
            "  --log FILE       where the command's output goes (appended; required)\n"
            "  --pidfile FILE   written (atomically) with the command's pid (required)\n"
            "  --timeout S      seconds to wait for READY=1 (default 600)\n"
            "\n"
            "exit codes: 0 ready; 64 bad usage; 69 the command exited before it was ready\n"
            "  (its status is printed); 71 cannot create the socket or start the command;\n"
            "  75 not ready within the timeout (the command is left running).\n");
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

// Writes pid to path atomically, so a reader never sees half a number.
static int write_pidfile(const char *path, pid_t pid, jb_err_t *err) {
    char text[32];
    int n = snprintf(text, sizeof text, "%ld\n", (long)pid);
    return jb_publish_bytes(path, text, (size_t)n, err);
}

int main(int argc, char **argv) {
    const char *log = NULL, *pidfile = NULL;
    double timeout = 600;
    static const struct option longs[] = {{"log", 1, 0, 'l'}, {"pidfile", 1, 0, 'p'},
                                          {"timeout", 1, 0, 't'}, {"help", 0, 0, 'h'},
                                          {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "+l:p:t:h", longs, NULL)) != -1) {
        char *end = NULL;
        switch (c) {
        case 'l': log = optarg; break;
        case 'p': pidfile = optarg; break;
        case 't':
            timeout = strtod(optarg, &end);
            if (!*optarg || *end || !(timeout > 0)) {
                fprintf(stderr, "jukebox-launch: --timeout %s: expected seconds > 0\n", optarg);
                return EX_USAGE;
            }
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return EX_USAGE;
        }
    }
    if (!log || !pidfile || optind >= argc) {
        usage(stderr);
        return EX_USAGE;
    }
    // The socket lives in a private directory, so its name cannot clash or be hijacked.
    char dir[] = "/tmp/jukebox-launch.XXXXXX";
    if (!mkdtemp(dir)) {
        fprintf(stderr, "jukebox-launch: cannot create a directory in /tmp: %s\n", strerror(errno));
        return EX_OSERR;
    }
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s/notify", dir);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        fprintf(stderr, "jukebox-launch: notify socket %s: %s\n", sa.sun_path, strerror(errno));
        if (fd >= 0) close(fd);
        rmdir(dir);
        return EX_OSERR;
    }
    int logfd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (logfd < 0) {
        fprintf(stderr, "jukebox-launch: %s: %s\n", log, strerror(errno));
        close(fd);
        unlink(sa.sun_path);
        rmdir(dir);
        return EX_OSERR;
    }
    // A command that cannot be started is "cannot start" (71), not a command that exited
    // before it was ready (69): the child sends exec's errno through a close-on-exec pipe,
    // which a successful exec closes with nothing written.
    int ep[2];
    if (pipe2(ep, O_CLOEXEC) != 0) {
        fprintf(stderr, "jukebox-launch: pipe: %s\n", strerror(errno));
        return EX_OSERR;
    }
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "jukebox-launch: fork: %s\n", strerror(errno));
        return EX_OSERR;
    }
    if (pid == 0) {
        setsid();   // its own session: a terminal's ^C or the caller's exit does not reach it
        int nul = open("/dev/null", O_RDONLY);
        if (nul >= 0) dup2(nul, 0);
        dup2(logfd, 1);
        dup2(logfd, 2);
        setenv("NOTIFY_SOCKET", sa.sun_path, 1);
        unsetenv("WATCHDOG_USEC");
        unsetenv("WATCHDOG_PID");
        signal(SIGPIPE, SIG_DFL);
        execvp(argv[optind], argv + optind);
        int e = errno;
        fprintf(stderr, "jukebox-launch: cannot run %s: %s\n", argv[optind], strerror(e));
        ssize_t wr = write(ep[1], &e, sizeof e);
        (void)wr;
        _exit(127);
    }
    close(logfd);
    close(ep[1]);
    int exec_errno;
    ssize_t got_e;
    while ((got_e = read(ep[0], &exec_errno, sizeof exec_errno)) < 0 && errno == EINTR) {}
    close(ep[0]);
    if (got_e == (ssize_t)sizeof exec_errno) {
        fprintf(stderr, "jukebox-launch: cannot run %s: %s\n", argv[optind], strerror(exec_errno));
        waitpid(pid, NULL, 0);
        close(fd);
        unlink(sa.sun_path);
        rmdir(dir);
        return EX_OSERR;
    }
    int rc = EX_TEMPFAIL;
    jb_err_t perr = {0};
    if (write_pidfile(pidfile, pid, &perr) != 0) {
        fprintf(stderr, "jukebox-launch: cannot write the pid file: %s\n", perr.msg);
        kill(pid, SIGTERM);
        rc = EX_OSERR;
        goto out;
    }
    double end = now_s() + timeout;
    for (;;) {
        int status;
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid) {
            if (WIFEXITED(status))
                fprintf(stderr, "jukebox-launch: %s exited with status %d before it was ready "
                        "(see %s)\n", argv[optind], WEXITSTATUS(status), log);
            else
                fprintf(stderr, "jukebox-launch: %s was killed by signal %d before it was "
                        "ready (see %s)\n", argv[optind], WTERMSIG(status), log);
            unlink(pidfile);
            rc = EX_UNAVAILABLE;
            break;
        }
        double left = end - now_s();
        if (left <= 0) {
            fprintf(stderr, "jukebox-launch: %s (pid %ld) not ready after %g s; left running\n",
                    argv[optind], (long)pid, timeout);
            rc = EX_TEMPFAIL;
            break;
        }
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int n = poll(&p, 1, left < 0.2 ? (int)(left * 1000) + 1 : 200);
        if (n > 0) {
            char buf[4097];
            ssize_t got = recv(fd, buf, sizeof buf - 1, 0);
            if (got > 0) {
                buf[got] = '\0';
                if (jb_service_is_ready_msg(buf)) {
                    printf("%ld\n", (long)pid);
                    rc = 0;
                    break;
                }
            }
        }
    }
out:
    close(fd);
    unlink(sa.sun_path);
    rmdir(dir);
    return rc;
}
