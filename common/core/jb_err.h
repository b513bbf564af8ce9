// jb_err.h: error values shared by every module.
//
// A function that can fail returns 0 on success and -1 on failure (or NULL for
// constructors) and fills a caller-provided jb_err_t with a code and a message
// that names what failed and where (file, tensor, job, level, offset).
// common/ never prints, exits or aborts on bad input: it reports through jb_err_t.
// Thread rules: a jb_err_t belongs to one thread; the functions here are reentrant.
#ifndef JB_ERR_H
#define JB_ERR_H

#include <stdarg.h>

// Error classes. Stage executables map them to sysexits exit codes with
// jb_err_exit_code(), so a script can tell bad input from a missing file.
typedef enum {
    JB_OK = 0,
    JB_EINVAL,    // bad argument or option (usage)            -> 64
    JB_EFORMAT,   // malformed input data (file, message)      -> 65
    JB_ENOENT,    // file or model missing                     -> 66
    JB_EUNAVAIL,  // device or peer unavailable                -> 69
    JB_EINTERNAL, // bug or unexpected state                   -> 70
    JB_ENOMEM,    // allocation failed                         -> 70
    JB_EIO,       // read or write failed (full disk, ...)     -> 74
    JB_EUNSUP,    // valid but unsupported input (a codec, ...) -> 65
    JB_ECANCEL,   // stopped by a signal                       -> 0
} jb_errcode_t;

typedef struct {
    int code;       // jb_errcode_t
    char msg[512];  // one line, no trailing newline
} jb_err_t;

// Fill err (if not NULL) with code and a printf-style message. Returns -1 so
// that `return jb_err_set(...)` reads naturally.
int jb_err_set(jb_err_t *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

// Prefix an existing message: "context: old message". Keeps the code. Returns -1.
int jb_err_prefix(jb_err_t *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

// Clear to JB_OK / "".
void jb_err_clear(jb_err_t *err);

// Short name of a code ("format", "io", ...).
const char *jb_err_name(int code);

// sysexits value for a code (see the table above).
int jb_err_exit_code(int code);

#endif
