// jb_spool.c: see jb_spool.h.
#include "jb_spool.h"

#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "jb_publish.h"

static const char *const k_file[2] = {"in.jbc", "out.jbc"};

typedef struct {
    char id[JB_WIRE_JOB_ID_MAX + 1];
    int fd[2];          // open for appending, -1 until first used
    int64_t count[2];   // messages in each file
    int64_t size[2];    // bytes in each file (whole frames)
} sjob_t;

struct jb_spool {
    char *dir;
    int lock_fd;
    sjob_t *jobs;
    int n_jobs, cap_jobs;
    char **warnings;
    int n_warnings;
    unsigned trash_n;
    jb_bytes_t hdr, payload;   // encode scratch
    pthread_mutex_t mu;        // append / read / remove / count from several threads
};

const char *jb_spool_dir(const jb_spool_t *sp) { return sp->dir; }

char *jb_spool_instance_name(const jb_spool_t *sp, char *buf, size_t n) {
    char host[256] = "host", *abs = realpath(sp->dir, NULL);
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = '\0';
    snprintf(buf, n, "%s:%s", host, abs ? abs : sp->dir);
    free(abs);
    return buf;
}
int jb_spool_n_jobs(const jb_spool_t *sp) { return sp->n_jobs; }
const char *jb_spool_job_id(const jb_spool_t *sp, int i) {
    return i >= 0 && i < sp->n_jobs ? sp->jobs[i].id : NULL;
}
int jb_spool_n_warnings(const jb_spool_t *sp) { return sp->n_warnings; }
const char *jb_spool_warning(const jb_spool_t *sp, int i) {
    return i >= 0 && i < sp->n_warnings ? sp->warnings[i] : NULL;
}

static sjob_t *find(const jb_spool_t *sp, const char *id) {
    for (int i = 0; i < sp->n_jobs; i++)
        if (!strcmp(sp->jobs[i].id, id)) return &sp->jobs[i];
    return NULL;
}

int jb_spool_has(const jb_spool_t *sp, const char *job_id) {
    jb_spool_t *w = (jb_spool_t *)sp;
    pthread_mutex_lock(&w->mu);
    int r = find(sp, job_id) != NULL;
    pthread_mutex_unlock(&w->mu);
    return r;
}

int64_t jb_spool_count(const jb_spool_t *sp, const char *job_id, jb_spool_file_t which) {
    jb_spool_t *w = (jb_spool_t *)sp;
    pthread_mutex_lock(&w->mu);
    const sjob_t *j = find(sp, job_id);
    int64_t n = j ? j->count[which] : 0;
    pthread_mutex_unlock(&w->mu);
    return n;
}

static int fsync_dir(const char *path, jb_err_t *err) {
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync(fd)) {
        int e = errno;
        if (fd >= 0) close(fd);
        return jb_err_set(err, JB_EIO, "spool %s: fsync of the directory: %s", path, strerror(e));
    }
    close(fd);
    return 0;
}

static int add_warning(jb_spool_t *sp, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int add_warning(jb_spool_t *sp, const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    char **w = realloc(sp->warnings, sizeof *w * (size_t)(sp->n_warnings + 1));
    if (!w) return -1;
    sp->warnings = w;
    if (!(w[sp->n_warnings] = strdup(buf))) return -1;
    sp->n_warnings++;
    return 0;
}

static sjob_t *add_job(jb_spool_t *sp, const char *id, jb_err_t *err) {
    if (sp->n_jobs == sp->cap_jobs) {
        int cap = sp->cap_jobs ? sp->cap_jobs * 2 : 16;
        sjob_t *j = realloc(sp->jobs, sizeof *j * (size_t)cap);
        if (!j) {
            jb_err_set(err, JB_ENOMEM, "spool %s: out of memory", sp->dir);
            return NULL;
        }
        sp->jobs = j;
        sp->cap_jobs = cap;
    }
    sjob_t *j = &sp->jobs[sp->n_jobs++];
    memset(j, 0, sizeof *j);
    snprintf(j->id, sizeof j->id, "%s", id);
    j->fd[0] = j->fd[1] = -1;
    return j;
}

static void close_job(sjob_t *j) {
    for (int w = 0; w < 2; w++)
        if (j->fd[w] >= 0) {
            close(j->fd[w]);
            j->fd[w] = -1;
        }
}

// Reads a whole file into *buf (malloc'd; *len bytes). 1 = read, 0 = no such file.
static int read_file(const char *path, uint8_t **buf, size_t *len, jb_err_t *err) {
    *buf = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) return 0;
        return jb_err_set(err, JB_EIO, "spool: %s: %s", path, strerror(errno));
    }
    struct stat st;
    if (fstat(fd, &st)) {
        int e = errno;
        close(fd);
        return jb_err_set(err, JB_EIO, "spool: %s: %s", path, strerror(e));
    }
    size_t n = (size_t)st.st_size;
    uint8_t *b = malloc(n ? n : 1);
    if (!b) {
        close(fd);
        return jb_err_set(err, JB_ENOMEM, "spool: %s: out of memory for %zu bytes", path, n);
    }
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, b + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            int e = r < 0 ? errno : EIO;
            free(b);
            close(fd);
            return jb_err_set(err, JB_EIO, "spool: %s: read: %s", path, strerror(e));
        }
        got += (size_t)r;
    }
    close(fd);
    *buf = b;
    *len = n;
    return 1;
}

// Counts the whole, valid frames of one file and cuts off what follows the last
// of them (a write a crash interrupted, or bytes that do not check).
static int scan_file(jb_spool_t *sp, sjob_t *j, int which, jb_err_t *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s/%s", sp->dir, j->id, k_file[which]);
    uint8_t *buf;
    size_t len;
    int r = read_file(path, &buf, &len, err);
    if (r <= 0) return r;
    size_t at = 0;
    int64_t count = 0;
    jb_err_t why = {0};
    while (at < len) {
        jb_frame_t f;
        size_t need = 0;
        int pr = jb_frame_parse(buf + at, len - at, at, &f, &need, &why);
        if (pr == 0) {
            jb_err_set(&why, JB_EFORMAT, "torn frame (%zu of %zu bytes)", len - at, need);
            break;
        }
        if (pr < 0) break;
        jb_msg_t m;
        jb_msg_init(&m);
        int bad = jb_wire_decode(f.hdr, f.hdr_len, f.payload, f.payload_len, -1, &m, &why);
        int other = !bad && strcmp(m.job_id, j->id) != 0;
        if (other) jb_err_set(&why, JB_EFORMAT, "a message of job '%s'", m.job_id);
        jb_msg_clear(&m);
        if (bad || other) break;
        at += f.size;
        count++;
    }
    free(buf);
    if (at < len) {
        if (truncate(path, (off_t)at))
            return jb_err_set(err, JB_EIO, "spool: %s: cannot cut the torn tail at byte %zu: %s",
                              path, at, strerror(errno));
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0 || fsync(fd)) {
            int e = errno;
            if (fd >= 0) close(fd);
            return jb_err_set(err, JB_EIO, "spool: %s: fsync: %s", path, strerror(e));
        }
        close(fd);
        if (add_warning(sp, "spool %s: job %s: %s: %zu byte(s) cut off at byte %zu after %" PRId64
                        " whole message(s): %s", sp->dir, j->id, k_file[which], len - at, at,
                        count, why.msg))
            return jb_err_set(err, JB_ENOMEM, "spool: out of memory");
    }
    j->count[which] = count;
    j->size[which] = (int64_t)at;
    return 0;
}

// rm -r of a trash directory (only the files a spool writes: one level deep).
static void delete_tree(const char *path) {
    DIR *d = opendir(path);
    if (d) {
        struct dirent *e;
        char p[4096];
        while ((e = readdir(d)))
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
                snprintf(p, sizeof p, "%s/%s", path, e->d_name);
                unlink(p);
            }
        closedir(d);
    }
    rmdir(path);
}

static int cmp_job(const void *a, const void *b) {
    return strcmp(((const sjob_t *)a)->id, ((const sjob_t *)b)->id);
}

jb_spool_t *jb_spool_open(const char *dir, jb_err_t *err) {
    if (!dir || !*dir || strlen(dir) > 3000) {
        jb_err_set(err, JB_EINVAL, "spool: bad directory name");
        return NULL;
    }
    jb_spool_t *sp = calloc(1, sizeof *sp);
    if (!sp || !(sp->dir = strdup(dir))) {
        free(sp);
        jb_err_set(err, JB_ENOMEM, "spool %s: out of memory", dir);
        return NULL;
    }
    sp->lock_fd = -1;
    pthread_mutex_init(&sp->mu, NULL);
    // A file size limit (ulimit -f) must be a write error (EFBIG: reported, exit 74) like
    // a full disk, not SIGXFSZ killing the process in the middle of an append.
    signal(SIGXFSZ, SIG_IGN);
    DIR *d = NULL;
    if (jb_publish_mkdirs(dir, err)) {
        jb_err_prefix(err, "spool %s", dir);
        goto fail;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/lock", dir);
    sp->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (sp->lock_fd < 0) {
        jb_err_set(err, JB_EIO, "spool %s: cannot open %s: %s", dir, path, strerror(errno));
        goto fail;
    }
    if (flock(sp->lock_fd, LOCK_EX | LOCK_NB)) {
        if (errno == EWOULDBLOCK) {
            char pid[32] = "";
            ssize_t n = pread(sp->lock_fd, pid, sizeof pid - 1, 0);
            pid[n > 0 ? n : 0] = '\0';
            pid[strcspn(pid, "\n")] = '\0';
            jb_err_set(err, JB_EUNAVAIL, "spool %s is in use by another instance (pid %s); "
                       "each instance needs its own spool directory", dir, pid[0] ? pid : "?");
        } else {
            jb_err_set(err, JB_EIO, "spool %s: cannot lock %s: %s", dir, path, strerror(errno));
        }
        goto fail;
    }
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(sp->lock_fd, 0) || pwrite(sp->lock_fd, pid, (size_t)n, 0) != n) {
        jb_err_set(err, JB_EIO, "spool %s: cannot write %s: %s", dir, path, strerror(errno));
        goto fail;
    }
    d = opendir(dir);
    if (!d) {
        jb_err_set(err, JB_EIO, "spool %s: cannot list: %s", dir, strerror(errno));
        goto fail;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (!strncmp(e->d_name, ".trash.", 7)) {   // a removal a crash interrupted
            delete_tree(path);
            continue;
        }
        struct stat st;
        if (e->d_name[0] == '.' || !jb_wire_job_id_ok(e->d_name) || stat(path, &st) ||
            !S_ISDIR(st.st_mode))
            continue;
        if (!add_job(sp, e->d_name, err)) goto fail;
    }
    closedir(d);
    d = NULL;
    if (sp->n_jobs > 1)   // (jobs is NULL in an empty spool: no qsort of it)
        qsort(sp->jobs, (size_t)sp->n_jobs, sizeof *sp->jobs, cmp_job);
    for (int i = 0; i < sp->n_jobs; i++)
        for (int w = 0; w < 2; w++)
            if (scan_file(sp, &sp->jobs[i], w, err)) goto fail;
    return sp;
fail:
    if (d) closedir(d);
    jb_spool_destroy(&sp);
    return NULL;
}

void jb_spool_destroy(jb_spool_t **sp_p) {
    if (!sp_p || !*sp_p) return;
    jb_spool_t *sp = *sp_p;
    for (int i = 0; i < sp->n_jobs; i++) close_job(&sp->jobs[i]);
    free(sp->jobs);
    for (int i = 0; i < sp->n_warnings; i++) free(sp->warnings[i]);
    free(sp->warnings);
    if (sp->lock_fd >= 0) close(sp->lock_fd);   // releases the flock
    jb_bytes_free(&sp->hdr);
    jb_bytes_free(&sp->payload);
    free(sp->dir);
    pthread_mutex_destroy(&sp->mu);
    free(sp);
    *sp_p = NULL;
}

static int id_ok(const char *id, jb_err_t *err) {
    if (!id || !jb_wire_job_id_ok(id) || id[0] == '.')
        return jb_err_set(err, JB_EINVAL, "spool: job id '%s' cannot name a spool directory",
                          id ? id : "");
    return 0;
}

// Opens (creating) the job's file for appending; fsyncs the directories it created.
static int open_file(jb_spool_t *sp, sjob_t **jp, const char *id, int which, jb_err_t *err) {
    char jdir[4096], path[4200];
    snprintf(jdir, sizeof jdir, "%s/%s", sp->dir, id);
    sjob_t *j = find(sp, id);
    if (!j) {
        if (mkdir(jdir, 0777) && errno != EEXIST)
            return jb_err_set(err, JB_EIO, "spool %s: job %s: cannot create %s: %s", sp->dir, id,
                              jdir, strerror(errno));
        if (fsync_dir(sp->dir, err)) return -1;
        if (!(j = add_job(sp, id, err))) return -1;
    }
    *jp = j;
    if (j->fd[which] >= 0) return 0;
    snprintf(path, sizeof path, "%s/%s", jdir, k_file[which]);
    int created = access(path, F_OK) != 0;
    j->fd[which] = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0666);
    if (j->fd[which] < 0)
        return jb_err_set(err, JB_EIO, "spool %s: job %s: cannot open %s: %s", sp->dir, id, path,
                          strerror(errno));
    if (created && fsync_dir(jdir, err)) return -1;
    return 0;
}

static int append_locked(jb_spool_t *sp, const char *job_id, jb_spool_file_t which,
                         const jb_msg_t *msg, jb_err_t *err);

int jb_spool_append(jb_spool_t *sp, const char *job_id, jb_spool_file_t which,
                    const jb_msg_t *msg, jb_err_t *err) {
    pthread_mutex_lock(&sp->mu);
    int rc = append_locked(sp, job_id, which, msg, err);
    pthread_mutex_unlock(&sp->mu);
    return rc;
}

static int append_locked(jb_spool_t *sp, const char *job_id, jb_spool_file_t which,
                         const jb_msg_t *msg, jb_err_t *err) {
    if (id_ok(job_id, err)) return -1;
    if (which != JB_SPOOL_IN && which != JB_SPOOL_OUT)
        return jb_err_set(err, JB_EINVAL, "spool: bad file");
    if (jb_wire_encode(msg, &sp->hdr, &sp->payload, err))
        return jb_err_prefix(err, "spool %s: job %s", sp->dir, job_id);
    uint8_t prefix[JB_FRAME_PREFIX];
    if (jb_frame_prefix(prefix, sp->hdr.data, sp->hdr.len, sp->payload.data, sp->payload.len,
                        err))
        return jb_err_prefix(err, "spool %s: job %s", sp->dir, job_id);
    sjob_t *j;
    if (open_file(sp, &j, job_id, which, err)) return -1;
    struct iovec iov[3] = {
        {prefix, JB_FRAME_PREFIX}, {sp->hdr.data, sp->hdr.len},
        {sp->payload.data, sp->payload.len},
    };
    int n_iov = sp->payload.len ? 3 : 2;
    size_t total = JB_FRAME_PREFIX + sp->hdr.len + sp->payload.len, done = 0;
    int e = 0;
    while (done < total) {
        ssize_t w = writev(j->fd[which], iov, n_iov);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            e = w < 0 ? errno : EIO;
            break;
        }
        done += (size_t)w;
        while (n_iov > 0 && (size_t)w >= iov[0].iov_len) {
            w -= (ssize_t)iov[0].iov_len;
            memmove(iov, iov + 1, sizeof iov[0] * (size_t)--n_iov);
        }
        if (n_iov > 0) {
            iov[0].iov_base = (char *)iov[0].iov_base + w;
            iov[0].iov_len -= (size_t)w;
        }
    }
    if (!e && fdatasync(j->fd[which])) e = errno;
    if (e) {
        // Nothing of this message may survive: cut the file back to its last whole frame.
        // The fd is reopened on the next append.
        int cut = ftruncate(j->fd[which], (off_t)j->size[which]);
        close(j->fd[which]);
        j->fd[which] = -1;
        return jb_err_set(err, JB_EIO, "spool %s: job %s: writing %s failed at byte %" PRId64
                          ": %s%s%s", sp->dir, job_id, k_file[which], j->size[which],
                          strerror(e), e == ENOSPC ? " (disk full)" : "",
                          cut ? "; the partial frame could not be cut off (it will be on the "
                                "next open)" : "");
    }
    j->size[which] += (int64_t)total;
    j->count[which]++;
    return 0;
}

int jb_spool_read(const jb_spool_t *sp, const char *job_id, jb_spool_file_t which,
                  jb_frame_msg_fn fn, void *user, jb_err_t *err) {
    if (id_ok(job_id, err)) return -1;
    jb_spool_t *w = (jb_spool_t *)sp;
    pthread_mutex_lock(&w->mu);
    const sjob_t *j = find(sp, job_id);
    int64_t size = j ? j->size[which] : 0;
    pthread_mutex_unlock(&w->mu);
    if (!j) return 0;
    char path[4200];
    snprintf(path, sizeof path, "%s/%s/%s", sp->dir, job_id, k_file[which]);
    uint8_t *buf;
    size_t len;
    int r = read_file(path, &buf, &len, err);
    if (r <= 0) return r;
    // Only the whole frames this spool counted (a failed append may have left a tail).
    if (len > (size_t)size) len = (size_t)size;
    r = jb_frame_decode_all(buf, len, -1, fn, user, err);
    free(buf);
    if (r < 0) jb_err_prefix(err, "spool: %s", path);
    return r;
}

static int remove_locked(jb_spool_t *sp, const char *job_id, jb_err_t *err);

int jb_spool_remove(jb_spool_t *sp, const char *job_id, jb_err_t *err) {
    if (id_ok(job_id, err)) return -1;
    pthread_mutex_lock(&sp->mu);
    int rc = remove_locked(sp, job_id, err);
    pthread_mutex_unlock(&sp->mu);
    return rc;
}

static int remove_locked(jb_spool_t *sp, const char *job_id, jb_err_t *err) {
    sjob_t *j = find(sp, job_id);
    if (!j) return 0;
    close_job(j);
    char from[4096], to[4200];
    snprintf(from, sizeof from, "%s/%s", sp->dir, job_id);
    snprintf(to, sizeof to, "%s/.trash.%s.%ld.%u", sp->dir, job_id, (long)getpid(), sp->trash_n++);
    if (rename(from, to) && errno != ENOENT)
        return jb_err_set(err, JB_EIO, "spool %s: job %s: cannot remove (rename to %s): %s",
                          sp->dir, job_id, to, strerror(errno));
    int rc = fsync_dir(sp->dir, err);
    delete_tree(to);
    int i = (int)(j - sp->jobs);
    memmove(j, j + 1, sizeof *j * (size_t)(sp->n_jobs - i - 1));
    sp->n_jobs--;
    return rc;
}

// ---- notes: small text files beside a job's messages (or the spool's own) -------------

static int note_key_ok(const char *key) {
    if (!key || !*key || key[0] == '.' || strlen(key) > 64) return 0;
    for (const char *c = key; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_')) return 0;
    return strcmp(key, "lock") && strcmp(key, "in") && strcmp(key, "out");
}

static int put_note_locked(jb_spool_t *sp, const char *job_id, const char *key, const char *text,
                           jb_err_t *err) {
    char dir[4096], path[4200];
    if (job_id) {
        snprintf(dir, sizeof dir, "%s/%s", sp->dir, job_id);
        if (!find(sp, job_id)) {
            if (mkdir(dir, 0777) && errno != EEXIST)
                return jb_err_set(err, JB_EIO, "spool %s: job %s: cannot create %s: %s", sp->dir,
                                  job_id, dir, strerror(errno));
            if (fsync_dir(sp->dir, err) || !add_job(sp, job_id, err)) return -1;
        }
    } else {
        snprintf(dir, sizeof dir, "%s", sp->dir);
    }
    snprintf(path, sizeof path, "%s/%s", dir, key);
    // A temporary left by a crash is harmless: a job's directory goes as a whole, and
    // the spool's own directory lists only directories as jobs.
    if (jb_publish_bytes(path, text, strlen(text), err)) {
        jb_err_t e = *err;
        return jb_err_set(err, JB_EIO, "spool %s: %s%s", sp->dir, e.msg,
                          strstr(e.msg, strerror(ENOSPC)) ? " (disk full)" : "");
    }
    return 0;
}

int jb_spool_put_note(jb_spool_t *sp, const char *job_id, const char *key, const char *text,
                      jb_err_t *err) {
    if (job_id && id_ok(job_id, err)) return -1;
    if (!note_key_ok(key) || !text)
        return jb_err_set(err, JB_EINVAL, "spool: bad note name '%s'", key ? key : "");
    pthread_mutex_lock(&sp->mu);
    int rc = put_note_locked(sp, job_id, key, text, err);
    pthread_mutex_unlock(&sp->mu);
    return rc;
}

int jb_spool_get_note(const jb_spool_t *sp, const char *job_id, const char *key, char *buf,
                      size_t n) {
    if (!n || (job_id && (!jb_wire_job_id_ok(job_id) || job_id[0] == '.')) ||
        !note_key_ok(key))
        return -1;
    char path[4200];
    if (job_id) snprintf(path, sizeof path, "%s/%s/%s", sp->dir, job_id, key);
    else snprintf(path, sizeof path, "%s/%s", sp->dir, key);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    size_t got = 0;
    while (got + 1 < n) {
        ssize_t r = read(fd, buf + got, n - 1 - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += (size_t)r;
    }
    close(fd);
    buf[got] = '\0';
    return (int)got;
}
