// jb_progress.h: progress of a long step on stderr.
//
// On a terminal: one line redrawn in place (a bar, tokens, tokens/s, ETA); else
// plain log lines at most every `interval` seconds (and at the end), so logs
// stay readable under systemd. Quiet level (jb_log level > INFO) prints nothing.
//
//   jb_progress_t p; jb_progress_start(&p, "job=7f level=2", total, "tokens");
//   jb_progress_update(&p, done); ... jb_progress_finish(&p);
//
// Thread rules: one progress per thread.
#ifndef JB_PROGRESS_H
#define JB_PROGRESS_H

#include <stdint.h>

typedef struct {
    char what[160];      // prefix: "job=7f3a level=2"
    const char *unit;    // "tokens", "s audio"
    int64_t total, done;
    double t0, last;     // monotonic seconds
    double interval;     // seconds between plain lines (default 10)
    int tty;
    int active;
} jb_progress_t;

double jb_now(void);   // monotonic seconds
void jb_progress_start(jb_progress_t *p, const char *what, int64_t total, const char *unit);
void jb_progress_update(jb_progress_t *p, int64_t done);
void jb_progress_finish(jb_progress_t *p);

#endif
