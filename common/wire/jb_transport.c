// jb_transport.c: see jb_transport.h.
#include "jb_transport.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "jb_link.h"
#include "jb_publish.h"

#define READ_CHUNK (64 * 1024)

typedef enum { EP_STREAM, EP_ZMQ } ep_kind_t;

struct jb_endpoint {
    ep_kind_t kind;
    bool is_out;
    char *name;             // the spec, for messages
    jb_endpoint_opts_t opts;
    jb_bytes_t hdr, payload;  // encode scratch
    bool broken;            // a stream that failed: every later call fails
    jb_err_t broken_err;
    // stream
    int fd;
    bool owns_fd;
    bool eof;
    jb_bytes_t in;          // input buffer: bytes [in_start, in.len) not yet parsed
    size_t in_start;
    uint64_t in_base;       // stream offset of in.data[in_start]
    uint64_t out_bytes;     // bytes written so far
    jb_publish_t publish;   // output file: written under a temporary name, published on
    bool publishing;        // a clean close (jb_publish.h); fd is publish.fd
    jb_admit_t *admit;      // stream input: per-job bounds before decompression
    // ZeroMQ
    jb_link_t *link;
    char address[256];
    jb_link_done_fn user_done;   // the link template's on_done hook (after opts.upstream)
    void *user_done_arg;
};

void jb_endpoint_default_opts(jb_endpoint_opts_t *opts) {
    opts->hwm = 16;
    opts->send_timeout_ms = -1;
    opts->linger_ms = 10000;
    opts->codebook = -1;
    opts->link = NULL;
    opts->upstream = NULL;
}

const char *jb_endpoint_address(const jb_endpoint_t *ep) {
    return ep->kind == EP_ZMQ && ep->address[0] ? ep->address : ep->name;
}

static jb_endpoint_t *ep_alloc(const char *name, bool is_out, const jb_endpoint_opts_t *opts,
                               jb_err_t *err) {
    jb_endpoint_t *ep = calloc(1, sizeof *ep);
    if (!ep || !(ep->name = strdup(name))) {
        free(ep);
        jb_err_set(err, JB_ENOMEM, "%s: out of memory", name);
        return NULL;
    }
    ep->is_out = is_out;
    ep->fd = -1;
    if (opts) ep->opts = *opts;
    else jb_endpoint_default_opts(&ep->opts);
    return ep;
}

static int ep_fail(jb_endpoint_t *ep, jb_err_t *err) {
    ep->broken = true;
    ep->broken_err = *err;
    return -1;
}

void jb_endpoint_destroy(jb_endpoint_t **ep_p) {
    if (!ep_p || !*ep_p) return;
    jb_endpoint_t *ep = *ep_p;
    jb_link_close(&ep->link, ep->is_out ? 0 : 1000);   // removes a bound ipc file
    if (ep->owns_fd && ep->fd >= 0) close(ep->fd);
    if (ep->publishing) jb_publish_abort(&ep->publish);   // closes fd, removes the temporary
    free(ep->name);
    jb_bytes_free(&ep->hdr);
    jb_bytes_free(&ep->payload);
    jb_bytes_free(&ep->in);
    jb_admit_destroy(&ep->admit);
    free(ep);
    *ep_p = NULL;
}

// ---------------------------------------------------------------- ZeroMQ

static bool is_zmq_spec(const char *s) {
    if (*s == '@' || *s == '>') s++;
    return strncmp(s, "tcp://", 6) == 0 || strncmp(s, "ipc://", 6) == 0;
}

// An output link's consumer reported a job DONE (on the link's I/O thread).
static void link_on_done(void *user, const char *job_id) {
    jb_endpoint_t *ep = user;
    jb_endpoint_done(ep->opts.upstream, job_id);
    if (ep->user_done) ep->user_done(ep->user_done_arg, job_id);
}

static jb_endpoint_t *open_zmq(const char *spec, bool is_out, const jb_endpoint_opts_t *opts,
                               jb_err_t *err) {
    jb_endpoint_t *ep = ep_alloc(spec, is_out, opts, err);
    if (!ep) return NULL;
    ep->kind = EP_ZMQ;
    if (ep->opts.hwm < 1) {
        jb_err_set(err, JB_EINVAL, "%s: hwm must be at least 1", spec);
        goto fail;
    }
    jb_link_opts_t lo;
    if (ep->opts.link) lo = *ep->opts.link;
    else jb_link_default_opts(&lo);
    lo.role = is_out ? JB_LINK_PRODUCER : JB_LINK_CONSUMER;
    if (!ep->opts.link || lo.credit <= 0) lo.credit = ep->opts.hwm;
    if (!ep->opts.link || lo.backlog <= 0) lo.backlog = ep->opts.hwm;
    if (!ep->opts.link || lo.codebook < 0) lo.codebook = ep->opts.codebook;
    if (!ep->opts.link || lo.admit.levels <= 0) lo.admit = ep->opts.admit;
    if (!ep->opts.link) lo.send_timeout_ms = ep->opts.send_timeout_ms;
    if (is_out) {   // a consumer's DONE passes on upstream first, then to the caller's hook
        ep->user_done = lo.on_done;
        ep->user_done_arg = lo.done_user;
        lo.on_done = ep->opts.upstream || lo.on_done ? link_on_done : NULL;
        lo.done_user = ep;
    }
    ep->link = jb_link_open(spec, &lo, err);
    if (!ep->link) goto fail;
    snprintf(ep->address, sizeof ep->address, "%s", jb_link_address(ep->link));
    return ep;
fail:
    jb_endpoint_destroy(&ep);
    return NULL;
}

static int zmq_send_msg(jb_endpoint_t *ep, const jb_msg_t *msg, jb_err_t *err) {
    return jb_link_send(ep->link, msg, err);
}

static jb_recv_t zmq_recv_msg(jb_endpoint_t *ep, jb_msg_t *msg, int timeout_ms,
                              jb_err_t *err) {
    return jb_link_recv(ep->link, msg, timeout_ms, err);
}

int jb_endpoint_spec_is_link(const char *spec) { return spec && is_zmq_spec(spec); }

// ---------------------------------------------------------------- link-only operations

// The endpoint's link, NULL for a stream (or a link already closed).
static jb_link_t *link_of(const jb_endpoint_t *ep) {
    return ep && ep->kind == EP_ZMQ ? ep->link : NULL;
}

int jb_endpoint_records_input(const jb_endpoint_t *in) { return in && in->kind == EP_ZMQ; }
int jb_endpoint_confirms(const jb_endpoint_t *out) { return out && out->kind == EP_ZMQ; }

void jb_endpoint_done(jb_endpoint_t *in, const char *job_id) {
    if (link_of(in)) jb_link_done(in->link, job_id);
}

int jb_endpoint_release(jb_endpoint_t *in, const char *job_id) {
    return link_of(in) ? (jb_link_release(in->link, job_id), 1) : 0;
}

void jb_endpoint_pause(jb_endpoint_t *in) {
    if (link_of(in)) jb_link_pause(in->link);
}

int jb_endpoint_preload(jb_endpoint_t *in, const char *job_id, int64_t next_seq,
                        const char *producer, const char *epoch, jb_err_t *err) {
    if (!link_of(in)) return 0;
    return jb_link_preload_from(in->link, job_id, next_seq, producer, epoch, err);
}

int jb_endpoint_owner(jb_endpoint_t *in, const char *job_id, char *name, size_t n_name,
                      char *epoch, size_t n_epoch) {
    if (!link_of(in)) return -1;
    return jb_link_owner(in->link, job_id, name, n_name, epoch, n_epoch);
}

int jb_endpoint_cancel(jb_endpoint_t *out, const char *job_id) {
    return link_of(out) ? (jb_link_cancel(out->link, job_id), 1) : 0;
}

void jb_endpoint_finished(jb_endpoint_t *out, const char *job_id) {
    // A link: its consumer's DONE comes later (link_on_done). A stream: the reader has it.
    if (out && !link_of(out)) jb_endpoint_done(out->opts.upstream, job_id);
}

int jb_endpoint_flush(jb_endpoint_t *out, int timeout_ms, int want_done, jb_err_t *err) {
    return link_of(out) ? jb_link_flush(out->link, timeout_ms, want_done, err) : 0;
}

char *jb_endpoint_status_json(jb_endpoint_t *ep) {
    return link_of(ep) ? jb_link_status_json(ep->link) : NULL;
}

int jb_endpoint_stats(jb_endpoint_t *ep, struct jb_link_stats *st) {
    if (!link_of(ep)) return -1;
    jb_link_stats(ep->link, st);
    return 0;
}

// ---------------------------------------------------------------- streams

jb_endpoint_t *jb_endpoint_from_fd(int fd, int is_out, int owns, const char *name,
                                   const jb_endpoint_opts_t *opts, jb_err_t *err) {
    jb_endpoint_t *ep = ep_alloc(name, is_out, opts, err);
    if (!ep) {
        if (owns) close(fd);
        return NULL;
    }
    ep->kind = EP_STREAM;
    ep->fd = fd;
    ep->owns_fd = owns;
    return ep;
}

jb_endpoint_t *jb_endpoint_open_in(const char *spec, const jb_endpoint_opts_t *opts,
                                   jb_err_t *err) {
    if (!spec || !*spec) {
        jb_err_set(err, JB_EINVAL, "input endpoint: empty name");
        return NULL;
    }
    if (is_zmq_spec(spec)) return open_zmq(spec, false, opts, err);
    if (strcmp(spec, "-") == 0) return jb_endpoint_from_fd(0, 0, 0, "stdin", opts, err);
    int fd = open(spec, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        jb_err_set(err, errno == ENOENT ? JB_ENOENT : JB_EIO, "%s: %s", spec, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (!fstat(fd, &st) && S_ISDIR(st.st_mode)) {   // an input that is not there: 66
        close(fd);
        jb_err_set(err, JB_ENOENT, "%s: is a directory, not a file", spec);
        return NULL;
    }
    return jb_endpoint_from_fd(fd, 0, 1, spec, opts, err);
}

jb_endpoint_t *jb_endpoint_open_out(const char *spec, const jb_endpoint_opts_t *opts,
                                    jb_err_t *err) {
    if (!spec || !*spec) {
        jb_err_set(err, JB_EINVAL, "output endpoint: empty name");
        return NULL;
    }
    if (is_zmq_spec(spec)) return open_zmq(spec, true, opts, err);
    if (strcmp(spec, "-") == 0) return jb_endpoint_from_fd(1, 1, 0, "stdout", opts, err);
    jb_endpoint_t *ep = jb_endpoint_from_fd(-1, 1, 0, spec, opts, err);
    if (!ep) return NULL;
    if (jb_publish_open(&ep->publish, spec, err)) {   // JB_EIO, a missing directory too: 74
        jb_endpoint_destroy(&ep);
        return NULL;
    }
    ep->publishing = true;
    ep->fd = ep->publish.fd;
    return ep;
}

// Writes all of iov, retrying short writes and EINTR. SIGPIPE is blocked for
// this thread during the write, and a SIGPIPE it raised is consumed, so a
// vanished reader shows up as EPIPE rather than killing the process.
static int write_all(jb_endpoint_t *ep, struct iovec *iov, int n_iov, jb_err_t *err) {
    sigset_t pipe_set, old;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    sigset_t pending;
    sigpending(&pending);
    bool was_pending = sigismember(&pending, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
    int rc = 0, e = 0;
    while (n_iov > 0) {
        ssize_t w = writev(ep->fd, iov, n_iov);
        if (w < 0) {
            if (errno == EINTR) continue;
            e = errno;
            rc = -1;
            break;
        }
        ep->out_bytes += (uint64_t)w;
        while (n_iov > 0 && (size_t)w >= iov->iov_len) {
            w -= (ssize_t)iov->iov_len;
            iov++;
            n_iov--;
        }
        if (n_iov > 0) {
            iov->iov_base = (char *)iov->iov_base + w;
            iov->iov_len -= (size_t)w;
        }
    }
    if (e == EPIPE && !was_pending) {
        struct timespec zero = {0, 0};
        sigtimedwait(&pipe_set, NULL, &zero);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc) {
        if (e == EPIPE)
            jb_err_set(err, JB_EUNAVAIL, "%s: the reader is gone (byte %" PRIu64 ")", ep->name,
                       ep->out_bytes);
        else
            jb_err_set(err, JB_EIO, "%s: write failed at byte %" PRIu64 ": %s", ep->name,
                       ep->out_bytes, strerror(e));
        return ep_fail(ep, err);
    }
    return 0;
}

static int stream_send(jb_endpoint_t *ep, jb_err_t *err) {
    uint8_t prefix[JB_FRAME_PREFIX];
    if (jb_frame_prefix(prefix, ep->hdr.data, ep->hdr.len, ep->payload.data, ep->payload.len,
                        err))
        return -1;
    struct iovec iov[3] = {
        {prefix, JB_FRAME_PREFIX}, {ep->hdr.data, ep->hdr.len},
        {ep->payload.data, ep->payload.len},
    };
    return write_all(ep, iov, ep->payload.len ? 3 : 2, err);
}

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static jb_recv_t stream_recv(jb_endpoint_t *ep, jb_msg_t *msg, int timeout_ms, jb_err_t *err) {
    int64_t deadline = timeout_ms >= 0 ? now_ms() + timeout_ms : -1;
    for (;;) {
        size_t have = ep->in.len - ep->in_start;
        jb_frame_t f;
        size_t need = JB_FRAME_PREFIX;
        if (have) {
            int r = jb_frame_parse(ep->in.data + ep->in_start, have, ep->in_base, &f, &need, err);
            if (r < 0) {
                jb_err_prefix(err, "%s", ep->name);
                ep_fail(ep, err);
                return JB_RECV_ERROR;
            }
            if (r == 1) {
                uint64_t at = ep->in_base;
                ep->in_start += f.size;
                ep->in_base += f.size;
                if (!ep->admit && !(ep->admit = jb_admit_new(&ep->opts.admit, err))) {
                    ep_fail(ep, err);
                    return JB_RECV_ERROR;
                }
                if (jb_wire_decode_admit(f.hdr, f.hdr_len, f.payload, f.payload_len,
                                         ep->opts.codebook, jb_admit_check, ep->admit, msg,
                                         err)) {
                    jb_err_prefix(err, "%s byte %" PRIu64, ep->name, at);
                    return JB_RECV_BAD;
                }
                return JB_RECV_MSG;
            }
        }
        if (ep->eof) {
            if (have == 0) return JB_RECV_EOF;
            jb_err_set(err, JB_EFORMAT, "%s byte %" PRIu64 ": truncated frame (stream ends "
                       "after %zu of %zu bytes)", ep->name, ep->in_base, have, need);
            ep_fail(ep, err);
            return JB_RECV_ERROR;
        }
        // Make room: drop parsed bytes, then grow towards the frame's size by
        // doubling, so memory follows the bytes that really arrived, not a length
        // a peer claims (a 16-byte prefix cannot make us allocate a gigabyte).
        if (ep->in_start) {
            memmove(ep->in.data, ep->in.data + ep->in_start, have);
            ep->in.len = have;
            ep->in_start = 0;
        }
        if (ep->in.cap - ep->in.len < READ_CHUNK) {
            size_t cap = ep->in.cap * 2 < need ? ep->in.cap * 2 : need;
            if (cap < ep->in.len + READ_CHUNK) cap = ep->in.len + READ_CHUNK;
            uint8_t *p = realloc(ep->in.data, cap);
            if (!p) {
                jb_err_set(err, JB_ENOMEM, "%s byte %" PRIu64 ": out of memory for a %zu-byte "
                           "frame", ep->name, ep->in_base, need);
                ep_fail(ep, err);
                return JB_RECV_ERROR;
            }
            ep->in.data = p;
            ep->in.cap = cap;
        }
        if (deadline >= 0 || timeout_ms < 0) {
            int wait = -1;
            if (deadline >= 0) {
                int64_t left = deadline - now_ms();
                wait = left < 0 ? 0 : left > INT32_MAX ? INT32_MAX : (int)left;
            }
            struct pollfd pfd = {.fd = ep->fd, .events = POLLIN};
            int pr = poll(&pfd, 1, wait);
            if (pr < 0) {
                if (errno == EINTR) return JB_RECV_TIMEOUT;
                jb_err_set(err, JB_EIO, "%s: poll: %s", ep->name, strerror(errno));
                ep_fail(ep, err);
                return JB_RECV_ERROR;
            }
            if (pr == 0) return JB_RECV_TIMEOUT;
        }
        ssize_t got = read(ep->fd, ep->in.data + ep->in.len, ep->in.cap - ep->in.len);
        if (got < 0) {
            if (errno == EINTR) return JB_RECV_TIMEOUT;
            if (errno == EAGAIN) continue;
            jb_err_set(err, JB_EIO, "%s byte %" PRIu64 ": read: %s", ep->name,
                       ep->in_base + have, strerror(errno));
            ep_fail(ep, err);
            return JB_RECV_ERROR;
        }
        if (got == 0) ep->eof = true;
        ep->in.len += (size_t)got;
    }
}

// ---------------------------------------------------------------- common

int jb_endpoint_send(jb_endpoint_t *ep, const jb_msg_t *msg, jb_err_t *err) {
    if (!ep->is_out) return jb_err_set(err, JB_EINVAL, "%s: send on an input", ep->name);
    if (ep->broken) {
        *err = ep->broken_err;
        return -1;
    }
    if (ep->kind == EP_ZMQ) return zmq_send_msg(ep, msg, err);   // the link encodes
    if (jb_wire_encode(msg, &ep->hdr, &ep->payload, err))
        return jb_err_prefix(err, "%s", ep->name);
    return stream_send(ep, err);
}

jb_recv_t jb_endpoint_recv(jb_endpoint_t *ep, jb_msg_t *msg, int timeout_ms, jb_err_t *err) {
    jb_msg_clear(msg);
    if (ep->is_out) {
        jb_err_set(err, JB_EINVAL, "%s: recv on an output", ep->name);
        return JB_RECV_ERROR;
    }
    if (ep->broken) {
        *err = ep->broken_err;
        return JB_RECV_ERROR;
    }
    return ep->kind == EP_ZMQ ? zmq_recv_msg(ep, msg, timeout_ms, err)
                              : stream_recv(ep, msg, timeout_ms, err);
}

int jb_endpoint_unread(jb_endpoint_t *ep, int64_t *bytes) {
    *bytes = 0;
    if (ep->kind != EP_STREAM || !ep->is_out || ep->fd < 0) return 0;
    struct stat st;
    if (fstat(ep->fd, &st) || !S_ISFIFO(st.st_mode)) return 0;
    struct pollfd pfd = {.fd = ep->fd, .events = POLLOUT};
    if (poll(&pfd, 1, 0) == 1 && (pfd.revents & POLLERR)) return -1;   // no reader left
    int n = 0;
    if (ioctl(ep->fd, FIONREAD, &n)) return 0;
    *bytes = n;
    return 1;
}

int jb_endpoint_close(jb_endpoint_t **ep_p, jb_err_t *err) {
    jb_endpoint_t *ep = *ep_p;
    if (!ep) return 0;
    int rc = 0;
    if (ep->is_out && ep->broken) {
        *err = ep->broken_err;
        rc = -1;
    } else if (ep->link) {
        if (ep->is_out && jb_link_flush(ep->link, ep->opts.linger_ms, 0, err)) rc = -1;
        jb_link_close(&ep->link, 1000);
    } else if (ep->publishing) {
        ep->publishing = false;   // closed and, on failure, removed by the commit
        ep->fd = -1;
        if (jb_publish_commit(&ep->publish, err)) rc = -1;
    }
    jb_endpoint_destroy(ep_p);
    return rc;
}
