// jb_err.c: see jb_err.h.
#include "jb_err.h"

#include <stdio.h>
#include <string.h>

int jb_err_set(jb_err_t *err, int code, const char *fmt, ...) {
    if (!err) return -1;
    err->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return -1;
}

int jb_err_prefix(jb_err_t *err, const char *fmt, ...) {
    if (!err) return -1;
    char pre[256], old[sizeof err->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pre, sizeof pre, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    size_t n = strlen(pre);
    if (n > sizeof err->msg - 3) n = sizeof err->msg - 3;
    memcpy(err->msg, pre, n);
    memcpy(err->msg + n, ": ", 2);
    size_t rest = sizeof err->msg - n - 3;
    size_t m = strnlen(old, rest);
    memcpy(err->msg + n + 2, old, m);
    err->msg[n + 2 + m] = '\0';
    if (err->code == JB_OK) err->code = JB_EINTERNAL;
    return -1;
}

void jb_err_clear(jb_err_t *err) {
    if (!err) return;
    err->code = JB_OK;
    err->msg[0] = '\0';
}

const char *jb_err_name(int code) {
    switch (code) {
    case JB_OK: return "ok";
    case JB_EINVAL: return "usage";
    case JB_EFORMAT: return "format";
    case JB_ENOENT: return "missing";
    case JB_EUNAVAIL: return "unavailable";
    case JB_EINTERNAL: return "internal";
    case JB_ENOMEM: return "out of memory";
    case JB_EIO: return "io";
    case JB_EUNSUP: return "unsupported";
    case JB_ECANCEL: return "cancelled";
    default: return "unknown";
    }
}

int jb_err_exit_code(int code) {
    switch (code) {
    case JB_OK: return 0;
    case JB_EINVAL: return 64;     // EX_USAGE
    case JB_EFORMAT: return 65;    // EX_DATAERR
    case JB_EUNSUP: return 65;
    case JB_ENOENT: return 66;     // EX_NOINPUT
    case JB_EUNAVAIL: return 69;   // EX_UNAVAILABLE
    case JB_EIO: return 74;        // EX_IOERR
    case JB_ECANCEL: return 0;
    default: return 70;            // EX_SOFTWARE
    }
}
