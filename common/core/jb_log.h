// jb_log.h: one-line log events on stderr (stdout may carry frames in pipe mode).
//
//   2025-01-05T10:02:11Z prior-top INFO job=7f3a level=2 tokens=512/8192 tok/s=41.3
//
// The stage name is set once in main(); job and level go in the message.
// Kernels never log. Thread-safe: each event is written with one fputs under a lock.
#ifndef JB_LOG_H
#define JB_LOG_H

typedef enum { JB_DEBUG = 0, JB_INFO = 1, JB_WARN = 2, JB_ERROR = 3, JB_QUIET = 4 } jb_log_level_t;

// Name that prefixes every line ("encoder", "prior-top", ...). Copied.
void jb_log_set_stage(const char *stage);
// Events below this level are dropped (default JB_INFO).
void jb_log_set_level(jb_log_level_t level);
jb_log_level_t jb_log_get_level(void);

// Redirect events (e.g. into a test). fn == NULL restores stderr.
typedef void (*jb_log_fn)(jb_log_level_t level, const char *line, void *user);
void jb_log_set_sink(jb_log_fn fn, void *user);

void jb_log(jb_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
