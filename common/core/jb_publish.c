// jb_publish.c: see jb_publish.h.
#include "jb_publish.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static atomic_uint publish_counter;

static int write_error(jb_err_t *err, int e, const char *what, const char *path) {
    return jb_err_set(err, JB_EIO, "%s: %s: %s", path, what, strerror(e));
}

int jb_publish_open(jb_publish_t *p, const char *path, jb_err_t *err) {
    memset(p, 0, sizeof *p);
    p->fd = -1;
    size_t n = strlen(path) + 48;
    p->path = strdup(path);
    p->tmp = malloc(n);
    if (!p->path || !p->tmp) {
        free(p->path), free(p->tmp);
        p->path = p->tmp = NULL;
        return jb_err_set(err, JB_ENOMEM, "%s: out of memory", path);
    }
    for (int tries = 0; tries < 100; tries++) {
        snprintf(p->tmp, n, "%s.tmp.%ld.%u", path, (long)getpid(),
                 atomic_fetch_add(&publish_counter, 1));
        p->fd = open(p->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (p->fd >= 0 || errno != EEXIST) break;
    }
    if (p->fd < 0) {
        int e = errno;
        free(p->path), free(p->tmp);
        p->path = p->tmp = NULL;
        write_error(err, e, "cannot create a temporary file beside it", path);
        errno = e;   // for a caller that tells a missing directory apart (jb_publish.h)
        return -1;
    }
    return 0;
}

FILE *jb_publish_stream(jb_publish_t *p, jb_err_t *err) {
    if (!p->f && p->fd >= 0) {
        p->f = fdopen(p->fd, "wb");
        if (!p->f) write_error(err, errno, "cannot open a stream", p->path);
    }
    return p->f;
}

int jb_publish_sync_dir(const char *path, jb_err_t *err) {
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    if (!dir) return jb_err_set(err, JB_ENOMEM, "%s: out of memory", path);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int e = fd < 0 ? errno : 0;
    if (fd >= 0 && fsync(fd) != 0 && errno != EINVAL) e = errno;
    if (fd >= 0) close(fd);
    int rc = e ? write_error(err, e, "cannot sync the directory", dir) : 0;
    free(dir);
    return rc;
}

static void release(jb_publish_t *p) {
    free(p->path), free(p->tmp);
    p->path = p->tmp = NULL;
    p->f = NULL;
    p->fd = -1;
}

int jb_publish_commit(jb_publish_t *p, jb_err_t *err) {
    if (!p->tmp) return jb_err_set(err, JB_EINVAL, "jb_publish_commit: nothing open");
    int e = 0;
    if (p->f && fflush(p->f) != 0) e = errno ? errno : EIO;
    if (!e && fsync(p->fd) != 0) e = errno;
    int c = p->f ? fclose(p->f) : close(p->fd);
    if (c != 0 && !e) e = errno ? errno : EIO;
    p->f = NULL, p->fd = -1;
    if (!e && rename(p->tmp, p->path) != 0) e = errno;
    if (e) {
        unlink(p->tmp);
        int rc = write_error(err, e, "write failed", p->path);
        release(p);
        return rc;
    }
    int rc = jb_publish_sync_dir(p->path, err);
    release(p);
    return rc;
}

void jb_publish_abort(jb_publish_t *p) {
    if (!p->tmp) return;
    if (p->f) fclose(p->f);
    else if (p->fd >= 0) close(p->fd);
    unlink(p->tmp);
    release(p);
}

int jb_publish_bytes(const char *path, const void *data, size_t n, jb_err_t *err) {
    jb_publish_t p;
    if (jb_publish_open(&p, path, err)) return -1;
    const char *b = data;
    while (n > 0) {
        ssize_t w = write(p.fd, b, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            int e = w < 0 ? errno : EIO;
            jb_publish_abort(&p);
            return write_error(err, e, "write failed", path);
        }
        b += w;
        n -= (size_t)w;
    }
    return jb_publish_commit(&p, err);
}

int jb_publish_mkdirs(const char *dir, jb_err_t *err) {
    char p[4096];
    if (!dir || !*dir || snprintf(p, sizeof p, "%s", dir) >= (int)sizeof p) {
        errno = ENAMETOOLONG;
        return jb_err_set(err, JB_EIO, "%.200s: cannot create: name too long", dir ? dir : "");
    }
    for (char *c = p + 1; *c; c++) {   // each parent, then the directory itself
        if (*c != '/') continue;
        *c = '\0';
        if (mkdir(p, 0777) && errno != EEXIST) break;
        *c = '/';
    }
    if (mkdir(p, 0777) && errno != EEXIST) {
        int e = errno;
        jb_err_set(err, JB_EIO, "%s: cannot create: %s", p, strerror(e));
        errno = e;
        return -1;
    }
    struct stat st;
    if (stat(dir, &st) || !S_ISDIR(st.st_mode)) {
        errno = ENOTDIR;
        return jb_err_set(err, JB_EIO, "%s: cannot create: not a directory", dir);
    }
    return 0;
}
