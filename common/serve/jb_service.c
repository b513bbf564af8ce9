// jb_service.c: see jb_service.h.
#include "jb_service.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>

#include "jb_progress.h"

static double g_last_ping = -1, g_interval = -1;

void jb_service_ready(const char *status) {
    if (status) sd_notifyf(0, "READY=1\nSTATUS=%s", status);
    else sd_notify(0, "READY=1");
}

void jb_service_watchdog(void) {
    if (g_interval < 0) {
        uint64_t usec = 0;
        g_interval = sd_watchdog_enabled(0, &usec) > 0 ? (double)usec / 2e6 : 0;
    }
    if (g_interval <= 0) return;
    double now = jb_now();
    if (g_last_ping < 0 || now - g_last_ping >= g_interval) {
        sd_notify(0, "WATCHDOG=1");
        g_last_ping = now;
    }
}

void jb_service_status(const char *fmt, ...) {
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    sd_notifyf(0, "STATUS=%s", buf);
}

void jb_service_stopping(void) { sd_notify(0, "STOPPING=1"); }

int jb_service_is_ready_msg(const char *msg) {
    for (const char *p = msg; p && *p;) {
        if (!strncmp(p, "READY=1", 7) && (p[7] == '\n' || p[7] == '\0')) return 1;
        p = strchr(p, '\n');
        if (p) p++;
    }
    return 0;
}
