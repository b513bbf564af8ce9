// jb_progress.c: see jb_progress.h.
#include "jb_progress.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "jb_log.h"

double jb_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void jb_progress_start(jb_progress_t *p, const char *what, int64_t total, const char *unit) {
    memset(p, 0, sizeof *p);
    snprintf(p->what, sizeof p->what, "%s", what ? what : "");
    p->unit = unit ? unit : "";
    p->total = total;
    p->t0 = p->last = jb_now();
    p->interval = 10.0;
    p->tty = isatty(2) && jb_log_get_level() <= JB_INFO;
    p->active = jb_log_get_level() <= JB_INFO;
}

static void fmt_eta(char *buf, size_t n, double secs) {
    if (secs < 0 || secs > 1e7) snprintf(buf, n, "?");
    else if (secs >= 3600) snprintf(buf, n, "%dh%02dm", (int)(secs / 3600), (int)(secs / 60) % 60);
    else snprintf(buf, n, "%dm%02ds", (int)(secs / 60), (int)secs % 60);
}

static void emit(jb_progress_t *p, int final) {
    double now = jb_now(), el = now - p->t0;
    double rate = el > 0 ? (double)p->done / el : 0;
    char eta[32];
    fmt_eta(eta, sizeof eta, rate > 0 ? (double)(p->total - p->done) / rate : -1);
    if (p->tty) {
        int width = 24, fill = p->total > 0 ? (int)(width * p->done / p->total) : 0;
        char bar[32];
        for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
        bar[width] = 0;
        fprintf(stderr, "\r%s [%s] %lld/%lld %s %.1f %s/s ETA %s%s", p->what, bar,
                (long long)p->done, (long long)p->total, p->unit, rate, p->unit,
                final ? "0m00s" : eta, final ? "\n" : "  ");
        fflush(stderr);
    } else {
        jb_log(JB_INFO, "%s %s=%lld/%lld %s/s=%.1f eta=%s%s", p->what, p->unit,
               (long long)p->done, (long long)p->total, p->unit, rate, final ? "0m00s" : eta,
               final ? " done" : "");
    }
    p->last = now;
}

void jb_progress_update(jb_progress_t *p, int64_t done) {
    p->done = done;
    if (!p->active) return;
    double now = jb_now();
    if (p->tty ? now - p->last >= 0.2 : now - p->last >= p->interval) emit(p, 0);
}

void jb_progress_finish(jb_progress_t *p) {
    if (!p->active) return;
    p->done = p->total;
    emit(p, 1);
    p->active = 0;
}
