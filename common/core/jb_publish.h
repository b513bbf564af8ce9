// jb_publish.h: publishing a file atomically. A reader of the path sees the old file (or none)
// or the whole new one, never a part of it, also after a crash or a power cut.
//
//   jb_publish_t p;
//   if (jb_publish_open(&p, "out/model.safetensors", &err)) return -1;
//   ... write(p.fd, ...)   or   fprintf(jb_publish_stream(&p, &err), ...) ...
//   if (jb_publish_commit(&p, &err)) return -1;       // the temporary is gone on failure
//   (jb_publish_abort(&p) gives up: the temporary is removed, the path left as it was)
//
//   jb_publish_bytes("run/pid", buf, n, &err);        // all of it for one buffer
//
// The steps: a temporary file beside the target, "PATH.tmp.PID.N" (same directory, so the
// rename stays on one file system; created O_EXCL with mode 0666 less the umask, as creat()
// would), the writes, fsync of the file, close, rename over the path, fsync of the directory
// (so that the new name, not only the data, survives a crash; file systems that cannot fsync
// a directory are not an error).
//
// Errors (jb_err_t): JB_EIO (exit 74) for every failure, a missing directory included (an
// output that cannot be written, not an input that is missing), with the path and strerror. Thread rules: a jb_publish_t belongs to one thread;
// different ones may publish in parallel (the temporary names are unique in the process).
#ifndef JB_PUBLISH_H
#define JB_PUBLISH_H

#include <stddef.h>
#include <stdio.h>

#include "jb_err.h"

typedef struct {
    int fd;       // the temporary file, open for writing; -1 once committed or aborted
    FILE *f;      // jb_publish_stream's stream over fd, or NULL
    char *path;   // the target
    char *tmp;    // the temporary beside it
} jb_publish_t;

// Creates the temporary. On failure nothing is left behind and p needs no abort, and errno
// is the failing call's (ENOENT: the directory is missing).
int jb_publish_open(jb_publish_t *p, const char *path, jb_err_t *err);
// A stdio stream over p->fd (made once; closed by commit or abort). NULL with err on failure.
FILE *jb_publish_stream(jb_publish_t *p, jb_err_t *err);
// Flushes the stream, fsyncs, closes, renames over the path, fsyncs the directory. On failure
// before the rename the temporary is removed and the path is as it was.
int jb_publish_commit(jb_publish_t *p, jb_err_t *err);
// Closes and removes the temporary; the path is as it was. Safe after commit (no-op).
void jb_publish_abort(jb_publish_t *p);
// The whole sequence for n bytes.
int jb_publish_bytes(const char *path, const void *data, size_t n, jb_err_t *err);
// fsync of the directory that holds path (after a rename or unlink in it). EINVAL (a file
// system that cannot do it) is not an error.
int jb_publish_sync_dir(const char *path, jb_err_t *err);
// mkdir -p: dir and every missing directory above it (mode 0777 less the umask). A path
// part that exists and is not a directory fails (ENOTDIR). 0, or -1 with err (JB_EIO, the
// path and strerror) and errno set.
int jb_publish_mkdirs(const char *dir, jb_err_t *err);

#endif
