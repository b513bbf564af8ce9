// jb_log.c: see jb_log.h.
#include "jb_log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static char g_stage[32] = "jukebox";
static jb_log_level_t g_level = JB_INFO;
static jb_log_fn g_sink;
static void *g_sink_user;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

void jb_log_set_stage(const char *stage) {
    snprintf(g_stage, sizeof g_stage, "%s", stage ? stage : "jukebox");
}
void jb_log_set_level(jb_log_level_t level) { g_level = level; }
jb_log_level_t jb_log_get_level(void) { return g_level; }
void jb_log_set_sink(jb_log_fn fn, void *user) {
    pthread_mutex_lock(&g_lock);
    g_sink = fn;
    g_sink_user = user;
    pthread_mutex_unlock(&g_lock);
}

void jb_log(jb_log_level_t level, const char *fmt, ...) {
    if (level < g_level || level >= JB_QUIET) return;
    static const char *names[] = {"DEBUG", "INFO", "WARN", "ERROR"};
    char stamp[32], body[1024], line[1200];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &tm);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(body, sizeof body, fmt, ap);
    va_end(ap);
    snprintf(line, sizeof line, "%s %s %s %s\n", stamp, g_stage, names[level], body);
    pthread_mutex_lock(&g_lock);
    if (g_sink) g_sink(level, line, g_sink_user);
    else fputs(line, stderr);
    pthread_mutex_unlock(&g_lock);
}
