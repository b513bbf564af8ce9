// jb_link.c: see jb_link.h and docs/reliability.md.
#include "jb_link.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#include "jb_log.h"

#define MAX_PEERS 64
#define MAX_DEALERS 16
#define NAME_LEN 128
#define RING 256          // recently finished / released job ids (consumer)
#define MAX_VOIDING 64    // jobs whose CANCEL the stage has not finished handling (consumer)
#define N_PREV 4          // consumers a job was taken from (producer, for CANCEL)
#define RECV_BATCH 256    // messages read from one socket per loop

typedef struct {
    bool used;
    int sock;                  // -1: the ROUTER (rid); >= 0: DEALER index
    uint8_t rid[256];
    size_t rid_len;
    char name[NAME_LEN];       // from HELLO
    char epoch[40];            // from HELLO: which run of that instance
    char role[16], stage[32];
    bool alive;                // a HELLO seen and not silent since
    int64_t last_seen, last_sent, last_hello;
    int64_t hello_gap;         // while not alive: ms between HELLOs (doubles, capped)
    int64_t credit;            // last announced by it (consumer peers)
    char *info;                // its heartbeat summary (JSON text) or NULL
} peer_t;

typedef struct {
    jb_bytes_t hdr, pl;
} rmsg_t;

typedef struct pjob {
    struct pjob *next;
    char id[JB_WIRE_JOB_ID_MAX + 1];
    int peer;                  // consumer it is assigned to, -1 none
    int released_by;           // peer that handed it back (avoided when possible), -1
    rmsg_t *m;
    int n, cap;
    int sent, acked;           // [0, sent) sent to peer, [0, acked) acked by it
    int hi;                    // [0, hi) sent at least once (to anyone)
    int64_t last_tx;
    char prev[N_PREV][NAME_LEN];   // consumers it was taken from
    int n_prev;
    int64_t bytes;
    // This producer cancelled the job before (jb_link_cancel) and now sends it again: a
    // consumer may still hold the old stream (the CANCEL was lost, e.g. it was down), and
    // this one is numbered from 0 again, so a CANCEL goes to each consumer before seq 0.
    bool recancel;
    uint64_t recancelled;      // consumers (bit = peer index) that got that CANCEL
} pjob_t;

typedef struct cjob {
    struct cjob *next;
    char id[JB_WIRE_JOB_ID_MAX + 1];
    int owner;                 // producer whose copy is processed, -1 (preloaded) none yet
    int64_t next_seq;
    // Preloaded (spool): the producer (name, epoch) whose stream the held messages are,
    // "" when the spool did not say. Only that stream continues at next_seq.
    char pre_name[NAME_LEN], pre_epoch[40];
    uint64_t senders;          // producers that sent it (bit = peer index)
} cjob_t;

typedef struct qitem {
    struct qitem *next;
    jb_msg_t msg;
} qitem_t;

typedef struct obox {
    struct obox *next;
    int peer;
    jb_bytes_t hdr;
} obox_t;

struct jb_link {
    jb_link_opts_t o;
    char name[NAME_LEN], stage[32];
    char epoch[40];
    char *spec;
    char address[256];
    char *ipc_files[MAX_DEALERS];   // bound ipc paths to unlink
    int n_ipc;
    void *ctx, *router;
    void *dealer[MAX_DEALERS];
    int n_dealers;
    int wake[2];
    pthread_t th;
    bool th_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool quit;
    int64_t quit_at;
    bool paused;
    peer_t peers[MAX_PEERS];
    pjob_t *pjobs;
    cjob_t *cjobs;
    // Jobs voided by a CANCEL that the stage has not finished handling (it drops the
    // job's state and spool when it does). A new stream of such a job is refused (not
    // acked: the producer retransmits) until then, so that its messages are not spooled
    // into the old stream's spool and removed with it. handed: the CANCEL was given to
    // the stage; its next jb_link_recv means it has handled it.
    struct { char id[JB_WIRE_JOB_ID_MAX + 1]; bool handed; } voiding[MAX_VOIDING];
    int n_voiding;
    qitem_t *qhead, *qtail;
    int qlen;
    int64_t qbytes;            // msg_bytes of the queued messages (o.credit_bytes bounds it)
    jb_admit_t *admit;         // consumer: per-job bounds, before decompression (I/O thread)
    obox_t *obox;
    char done_ring[RING][JB_WIRE_JOB_ID_MAX + 1];
    int n_done;
    char rel_ring[RING][JB_WIRE_JOB_ID_MAX + 1];
    int n_rel;
    char cancel_ring[RING][JB_WIRE_JOB_ID_MAX + 1];   // producer: jobs it cancelled
    int n_cancel;
    // CANCELs of jobs not held (yet): a job the stage preloads from its spool after its
    // producer already cancelled it (the CANCEL came before the replay) is void at once.
    struct { char id[JB_WIRE_JOB_ID_MAX + 1]; char from[NAME_LEN]; } early_cancel[32];
    int n_early;
    jb_link_stats_t st;
    int64_t t0;
    char last_error[256];
    int64_t last_error_ms;
    jb_bytes_t ehdr, epl;      // encode scratch (I/O thread)
    char done_ids[RECV_BATCH][JB_WIRE_JOB_ID_MAX + 1];   // I/O thread: DONEs to report
};

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *role_name(int r) {
    return r == JB_LINK_PRODUCER ? "producer" : r == JB_LINK_CONSUMER ? "consumer" : "control";
}

void jb_link_default_opts(jb_link_opts_t *o) {
    memset(o, 0, sizeof *o);
    o->role = JB_LINK_CONSUMER;
    o->heartbeat_ms = 1000;
    o->peer_timeout_ms = 5000;
    o->credit = 16;
    o->backlog = 64;
    o->codebook = -1;
    o->credit_bytes = JB_LINK_CREDIT_BYTES;
    o->send_timeout_ms = -1;
}

const char *jb_link_address(const jb_link_t *l) { return l->address[0] ? l->address : l->spec; }
const char *jb_link_name(const jb_link_t *l) { return l->name; }

static void wake(jb_link_t *l) {
    char c = 1;
    ssize_t r = write(l->wake[1], &c, 1);
    (void)r;   // a full pipe already wakes the thread
}

static const char *peer_label(const peer_t *p) {
    return p->name[0] ? p->name : "(unnamed peer)";
}

// Records the last error for status (lock held).
static void note_error(jb_link_t *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note_error(jb_link_t *l, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(l->last_error, sizeof l->last_error, fmt, ap);
    va_end(ap);
    l->last_error_ms = now_ms();
}

// ---------------------------------------------------------------- sending (I/O thread)

static int zsend(void *sock, const uint8_t *rid, size_t rid_len, const jb_bytes_t *hdr,
                 const jb_bytes_t *pl) {
    if (rid && zmq_send(sock, rid, rid_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) return -1;
    if (zmq_send(sock, hdr->data, hdr->len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) return -1;
    const void *p = pl && pl->len ? (const void *)pl->data : (const void *)"";
    size_t n = pl ? pl->len : 0;
    int r;
    do r = zmq_send(sock, p, n, 0);   // atomic after the first part
    while (r < 0 && errno == EINTR);
    return r < 0 ? -1 : 0;
}

static int send_peer(jb_link_t *l, int pi, const jb_bytes_t *hdr, const jb_bytes_t *pl) {
    peer_t *p = &l->peers[pi];
    void *sock = p->sock < 0 ? l->router : l->dealer[p->sock];
    if (zsend(sock, p->sock < 0 ? p->rid : NULL, p->rid_len, hdr, pl)) return -1;
    p->last_sent = now_ms();
    return 0;
}

// Encodes a link message into l->ehdr (I/O thread). info may be NULL.
static int enc_ctl(jb_link_t *l, jb_bytes_t *out, int type, const char *job, int64_t seq,
                   int64_t credit, const char *info) {
    jb_msg_t m;
    jb_msg_init(&m);
    m.type = type;
    if (job) snprintf(m.job_id, sizeof m.job_id, "%s", job);
    m.seq = seq;
    m.credit = credit;
    m.text = (char *)info;
    jb_err_t err = {0};
    jb_bytes_t pl = {0};
    int rc = jb_wire_encode(&m, out, &pl, &err);
    jb_bytes_free(&pl);
    if (rc) note_error(l, "encoding %s: %s", jb_msg_type_name(type), err.msg);
    return rc;
}

// What a queued message costs against the byte budget: its decompressed payload and its
// strings (the rest is a fixed few hundred bytes).
static int64_t msg_bytes(const jb_msg_t *m) {
    return (int64_t)jb_msg_payload_elems(m) * 4 + (m->spec ? (int64_t)strlen(m->spec) : 0) +
           (m->text ? (int64_t)strlen(m->text) : 0);
}

static int64_t my_credit(const jb_link_t *l) {
    if (l->o.role != JB_LINK_CONSUMER || l->paused || l->qbytes >= l->o.credit_bytes) return 0;
    int c = l->o.credit - l->qlen;
    return c > 0 ? c : 0;
}

static int send_ctl(jb_link_t *l, int pi, int type, const char *job, int64_t seq,
                    const char *info) {
    int64_t credit = (type == JB_MSG_ACK || type == JB_MSG_HEARTBEAT || type == JB_MSG_HELLO) &&
                     l->o.role == JB_LINK_CONSUMER ? my_credit(l) : -1;
    if (enc_ctl(l, &l->ehdr, type, job, seq, credit, info)) return -1;
    return send_peer(l, pi, &l->ehdr, NULL);
}

static void send_hello(jb_link_t *l, int pi, int want) {
    json_t *o = json_pack("{s:s,s:s,s:s,s:i,s:s}", "name", l->name, "role",
                          role_name(l->o.role), "stage", l->stage, "want", want, "epoch",
                          l->epoch);
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (s) send_ctl(l, pi, JB_MSG_HELLO, NULL, -1, s);
    free(s);
    l->peers[pi].last_hello = now_ms();
}

// Queues a control message for the I/O thread (lock held).
static void outbox(jb_link_t *l, int pi, int type, const char *job) {
    obox_t *b = calloc(1, sizeof *b);
    if (!b) return;
    if (enc_ctl(l, &b->hdr, type, job, -1, -1, NULL)) {
        free(b);
        return;
    }
    b->peer = pi;
    obox_t **t = &l->obox;
    while (*t) t = &(*t)->next;
    *t = b;
}

// ---------------------------------------------------------------- producer

static pjob_t *find_pjob(jb_link_t *l, const char *id) {
    for (pjob_t *j = l->pjobs; j; j = j->next)
        if (!strcmp(j->id, id)) return j;
    return NULL;
}

static void pjob_free(pjob_t *j) {
    for (int i = 0; i < j->n; i++) {
        jb_bytes_free(&j->m[i].hdr);
        jb_bytes_free(&j->m[i].pl);
    }
    free(j->m);
    free(j);
}

static void unlink_pjob(jb_link_t *l, pjob_t *j) {
    for (pjob_t **p = &l->pjobs; *p; p = &(*p)->next)
        if (*p == j) {
            *p = j->next;
            l->st.retained_bytes -= j->bytes;
            pjob_free(j);
            return;
        }
}

static bool is_consumer_peer(const peer_t *p) { return p->used && !strcmp(p->role, "consumer"); }

// Takes a job from its consumer (death or RELEASE): resent from seq 0 to another.
static void unassign(jb_link_t *l, pjob_t *j, bool remember) {
    if (j->peer >= 0 && remember) {
        const char *nm = l->peers[j->peer].name;
        bool have = false;
        for (int i = 0; i < j->n_prev; i++) have = have || !strcmp(j->prev[i], nm);
        if (!have) snprintf(j->prev[j->n_prev < N_PREV ? j->n_prev++ : N_PREV - 1], NAME_LEN,
                            "%s", nm);
    }
    if (j->peer >= 0) l->st.reassigned++;
    j->peer = -1;
    j->sent = j->acked = 0;
}

static void producer_pump(jb_link_t *l) {
    int64_t t = now_ms();
    int64_t unacked[MAX_PEERS] = {0};
    int njobs[MAX_PEERS] = {0};
    int alive_consumers = 0;
    for (int i = 0; i < MAX_PEERS; i++)
        if (is_consumer_peer(&l->peers[i]) && l->peers[i].alive) alive_consumers++;
    for (pjob_t *j = l->pjobs; j; j = j->next)
        if (j->peer >= 0) {
            unacked[j->peer] += j->sent - j->acked;
            njobs[j->peer]++;
        }
    bool progressed = false;
    const int retransmit = l->o.peer_timeout_ms / 2 > 2 * l->o.heartbeat_ms
                               ? l->o.peer_timeout_ms / 2 : 2 * l->o.heartbeat_ms;
    for (pjob_t *j = l->pjobs; j; j = j->next) {
        if (j->peer >= 0 && !l->peers[j->peer].alive && alive_consumers > 0) {
            jb_log(JB_WARN, "link %s: job=%s: consumer %s is gone; the job goes to another one",
                   l->name, j->id, peer_label(&l->peers[j->peer]));
            unacked[j->peer] -= j->sent - j->acked;
            njobs[j->peer]--;
            unassign(l, j, true);
        }
        if (j->peer < 0 && j->n > 0) {
            int best = -1;
            int64_t best_av = 0;
            for (int pass = 0; pass < 2 && best < 0; pass++)
                for (int i = 0; i < MAX_PEERS; i++) {
                    peer_t *p = &l->peers[i];
                    if (!is_consumer_peer(p) || !p->alive) continue;
                    if (pass == 0 && i == j->released_by) continue;
                    int64_t av = p->credit - unacked[i];
                    if (av <= 0) continue;
                    // Fewest jobs first: credit is flow control, not load (a consumer whose
                    // stage has taken every message off its queue announces full credit
                    // however many jobs it holds). Ties: the most credit left.
                    if (best < 0 || njobs[i] < njobs[best] ||
                        (njobs[i] == njobs[best] && av > best_av)) {
                        best = i;
                        best_av = av;
                    }
                }
            if (best >= 0) {
                j->peer = best;
                j->sent = j->acked = 0;
                njobs[best]++;
                jb_log(JB_DEBUG, "link %s: job=%s assigned to %s", l->name, j->id,
                       peer_label(&l->peers[best]));
            }
        }
        if (j->peer < 0 || !l->peers[j->peer].alive) continue;
        peer_t *p = &l->peers[j->peer];
        if (j->acked < j->sent && t - j->last_tx > retransmit) {   // lost on the way: again
            unacked[j->peer] -= j->sent - j->acked;
            j->sent = j->acked;
        }
        if (j->n > 0 && j->acked == j->n && j->sent == j->n &&
            t - j->last_tx > l->o.peer_timeout_ms) {
            // Everything acked, no DONE yet: offer the last message again. The consumer
            // acks it as held, or answers DONE when the job is finished (a DONE lost
            // on a reconnecting connection is not waited for forever).
            if (send_peer(l, j->peer, &j->m[j->n - 1].hdr, &j->m[j->n - 1].pl) == 0) {
                l->st.resent++;
                j->last_tx = t;
            }
        }
        while (j->sent < j->n && p->credit - unacked[j->peer] > 0) {
            if (j->sent == 0 && j->recancel && !(j->recancelled >> j->peer & 1)) {
                send_ctl(l, j->peer, JB_MSG_CANCEL, j->id, -1, NULL);   // before seq 0
                j->recancelled |= UINT64_C(1) << j->peer;
                l->st.cancels_tx++;
            }
            if (send_peer(l, j->peer, &j->m[j->sent].hdr, &j->m[j->sent].pl)) break;
            if (j->sent < j->hi) l->st.resent++;
            else {
                l->st.tx++;
                j->hi++;
            }
            j->sent++;
            unacked[j->peer]++;
            j->last_tx = t;
            progressed = true;
        }
    }
    if (progressed) pthread_cond_broadcast(&l->cv);
}

static void producer_on_hello(jb_link_t *l, int pi) {
    peer_t *p = &l->peers[pi];
    for (pjob_t *j = l->pjobs; j; j = j->next) {
        if (j->peer == pi) {   // resent whole: the consumer drops what it has
            if (j->sent) l->st.resent += j->sent;
            j->sent = j->acked = 0;
            continue;
        }
        for (int i = 0; i < j->n_prev; i++)
            if (!strcmp(j->prev[i], p->name)) {
                jb_log(JB_INFO, "link %s: job=%s went elsewhere; CANCEL to returning %s",
                       l->name, j->id, p->name);
                send_ctl(l, pi, JB_MSG_CANCEL, j->id, -1, NULL);
                l->st.cancels_tx++;
                memmove(j->prev[i], j->prev[i + 1], (size_t)(j->n_prev - i - 1) * NAME_LEN);
                j->n_prev--;
                break;
            }
    }
}

// ---------------------------------------------------------------- consumer

static cjob_t *find_cjob(jb_link_t *l, const char *id) {
    for (cjob_t *j = l->cjobs; j; j = j->next)
        if (!strcmp(j->id, id)) return j;
    return NULL;
}

static void remove_cjob(jb_link_t *l, cjob_t *c) {
    for (cjob_t **p = &l->cjobs; *p; p = &(*p)->next)
        if (*p == c) {
            *p = c->next;
            free(c);
            return;
        }
}

static void ring_add(char (*ring)[JB_WIRE_JOB_ID_MAX + 1], int *n, const char *id);

static bool in_ring(char (*ring)[JB_WIRE_JOB_ID_MAX + 1], int n, const char *id) {
    int k = n < RING ? n : RING;
    for (int i = 0; i < k; i++)
        if (!strcmp(ring[i], id)) return true;
    return false;
}

static void enqueue(jb_link_t *l, qitem_t *q) {
    if (l->qtail) l->qtail->next = q;
    else l->qhead = q;
    l->qtail = q;
    l->qlen++;
    l->qbytes += msg_bytes(&q->msg);
    pthread_cond_broadcast(&l->cv);
}

static bool is_voiding(const jb_link_t *l, const char *id) {
    for (int i = 0; i < l->n_voiding; i++)
        if (!strcmp(l->voiding[i].id, id)) return true;
    return false;
}

static void enqueue_cancel(jb_link_t *l, const char *id) {
    qitem_t *q = calloc(1, sizeof *q);
    if (!q) return;
    if (l->n_voiding < MAX_VOIDING) {
        snprintf(l->voiding[l->n_voiding].id, sizeof l->voiding[0].id, "%s", id);
        l->voiding[l->n_voiding++].handed = false;
    }
    jb_msg_init(&q->msg);
    q->msg.type = JB_MSG_CANCEL;
    snprintf(q->msg.job_id, sizeof q->msg.job_id, "%s", id);
    enqueue(l, q);
}

// The owner of c is gone (or cancelled it) and producer q sent the job too: q's copy
// takes over.
static void take_over(jb_link_t *l, cjob_t *c, int q) {
    jb_log(JB_WARN, "link %s: job=%s: its producer %s is gone or cancelled it; the copy from "
           "%s takes over", l->name, c->id,
           c->owner >= 0 ? peer_label(&l->peers[c->owner]) : "?", peer_label(&l->peers[q]));
    if (c->owner >= 0 && c->next_seq > 0) enqueue_cancel(l, c->id);
    c->owner = q;
    c->next_seq = 0;
    send_hello(l, q, 0);   // makes q resend its jobs for us from seq 0
}

static void consumer_on_dead(jb_link_t *l, int pi) {
    for (cjob_t *c = l->cjobs; c; c = c->next) {
        if (c->owner != pi) continue;
        for (int q = 0; q < MAX_PEERS; q++)
            if (q != pi && (c->senders >> q & 1) && l->peers[q].alive) {
                take_over(l, c, q);
                break;
            }
    }
}

// A data message from producer pi (lock held; may drop it to call persist).
// Takes msg's contents when it is queued.
static void consumer_on_data(jb_link_t *l, int pi, jb_msg_t *m) {
    peer_t *p = &l->peers[pi];
    if (m->seq < 0) {
        l->st.bad++;
        jb_log(JB_WARN, "link %s: from %s: %s of job %s without seq; dropped", l->name,
               peer_label(p), jb_msg_type_name(m->type), m->job_id);
        return;
    }
    if (in_ring(l->rel_ring, l->n_rel, m->job_id)) return;   // handed back: not ours
    if (is_voiding(l, m->job_id)) return;   // the stage is still dropping the old stream
    cjob_t *c = find_cjob(l, m->job_id);
    if (!c && in_ring(l->done_ring, l->n_done, m->job_id)) {
        send_ctl(l, pi, JB_MSG_ACK, m->job_id, m->seq, NULL);
        send_ctl(l, pi, JB_MSG_DONE, m->job_id, -1, NULL);
        l->st.dups++;
        return;
    }
    if (!c) {
        if (m->seq != 0) return;   // the middle of a stream we do not hold: wait for seq 0
        if (l->paused) return;     // taking no new jobs
        c = calloc(1, sizeof *c);
        if (!c) return;
        snprintf(c->id, sizeof c->id, "%s", m->job_id);
        c->owner = pi;
        c->next = l->cjobs;
        l->cjobs = c;
    }
    c->senders |= UINT64_C(1) << pi;
    if (c->owner < 0) {
        // Preloaded (spool): the held messages continue only the stream they came from
        // (same producer, same run). Any other stream is another numbering: the held
        // messages are void (CANCEL to the stage) and this one is taken from seq 0.
        bool same = c->pre_name[0] && !strcmp(c->pre_name, p->name) && p->epoch[0] &&
                    !strcmp(c->pre_epoch, p->epoch);
        c->owner = pi;
        if (!same) {
            jb_log(JB_WARN, "link %s: job=%s: the spool holds %lld message(s) of %s%s%s; the "
                   "stream of %s (run %s) is another one: those are void, the job is taken "
                   "from seq 0", l->name, c->id, (long long)c->next_seq,
                   c->pre_name[0] ? c->pre_name : "an unrecorded producer",
                   c->pre_name[0] ? " run " : "", c->pre_epoch, p->name, p->epoch);
            if (c->next_seq > 0) {
                enqueue_cancel(l, c->id);
                c->next_seq = 0;
                send_hello(l, pi, 0);   // resend from seq 0 once the stage dropped the old
                return;
            }
        }
    }
    if (c->owner != pi) {
        if (!l->peers[c->owner].alive) {
            take_over(l, c, pi);
            // The old stream is being voided (CANCEL queued): nothing of this one may be
            // persisted before the stage took that CANCEL, or dropping the old stream's
            // spool would drop this message with it. pi resends from seq 0 (HELLO above,
            // then its retransmit), and is_voiding() drops it until then.
            if (is_voiding(l, m->job_id)) return;
        } else {   // a duplicate copy: acked, not processed (DONE goes to it too)
            send_ctl(l, pi, JB_MSG_ACK, m->job_id, m->seq, NULL);
            l->st.dups++;
            return;
        }
    }
    if (m->seq < c->next_seq) {
        send_ctl(l, pi, JB_MSG_ACK, m->job_id, m->seq, NULL);
        l->st.dups++;
        return;
    }
    if (m->seq > c->next_seq) return;   // a gap: the producer resends from the missing one
    if (l->qlen >= 4 * (l->o.credit > 0 ? l->o.credit : 1)) return;   // over the bound: later
    if (l->qlen > 0 && l->qbytes + msg_bytes(m) > l->o.credit_bytes) {   // over the bytes
        l->st.over_bytes++;
        return;
    }
    if (l->o.persist) {
        char id[JB_WIRE_JOB_ID_MAX + 1];
        snprintf(id, sizeof id, "%s", m->job_id);
        int64_t seq = m->seq;
        jb_err_t err = {0};
        pthread_mutex_unlock(&l->mu);
        int rc = l->o.persist(l->o.persist_user, m, &err);
        pthread_mutex_lock(&l->mu);
        if (rc) {
            note_error(l, "job %s seq %lld not accepted: %s", id, (long long)seq, err.msg);
            jb_log(JB_WARN, "link %s: job=%s seq=%lld not accepted: %s", l->name, id,
                   (long long)seq, err.msg);
            return;
        }
        c = find_cjob(l, id);
        if (!c || c->owner != pi || c->next_seq != seq) return;
    }
    qitem_t *q = calloc(1, sizeof *q);
    if (!q) return;
    q->msg = *m;
    jb_msg_init(m);
    c->next_seq++;
    l->st.rx++;
    enqueue(l, q);
    send_ctl(l, pi, JB_MSG_ACK, q->msg.job_id, q->msg.seq, NULL);
}

// ---------------------------------------------------------------- status

static json_t *peer_json(const jb_link_t *l, const peer_t *p, int64_t t) {
    json_t *o = json_pack("{s:s,s:s,s:s,s:b,s:I,s:I}", "name", p->name, "role", p->role,
                          "stage", p->stage, "alive", p->alive, "credit", (json_int_t)p->credit,
                          "last_seen_ms", (json_int_t)(p->last_seen ? t - p->last_seen : -1));
    (void)l;
    if (o && p->info) {
        json_t *i = json_loads(p->info, 0, NULL);
        if (i) json_object_set_new(o, "info", i);
    }
    return o;
}

static json_t *status_locked(jb_link_t *l) {
    int64_t t = now_ms();
    json_t *o = json_object();
    if (!o) return NULL;
    json_object_set_new(o, "instance", json_string(l->name));
    json_object_set_new(o, "role", json_string(role_name(l->o.role)));
    json_object_set_new(o, "address", json_string(jb_link_address(l)));
    json_object_set_new(o, "pid", json_integer(getpid()));
    json_object_set_new(o, "uptime_s", json_real((double)(t - l->t0) / 1000.0));
    json_t *jobs = json_array();
    int backlog = 0;
    for (pjob_t *j = l->pjobs; j; j = j->next) {
        backlog += j->n - j->sent;
        json_array_append_new(jobs, json_pack("{s:s,s:s,s:i,s:i,s:i}", "id", j->id, "peer",
                                              j->peer >= 0 ? l->peers[j->peer].name : "",
                                              "messages", j->n, "sent", j->sent, "acked",
                                              j->acked));
    }
    for (cjob_t *c = l->cjobs; c; c = c->next)
        json_array_append_new(jobs, json_pack("{s:s,s:s,s:I}", "id", c->id, "peer",
                                              c->owner >= 0 ? l->peers[c->owner].name : "",
                                              "next_seq", (json_int_t)c->next_seq));
    json_object_set_new(o, "jobs", jobs);
    json_object_set_new(o, "queue", json_integer(l->qlen));
    json_object_set_new(o, "backlog", json_integer(backlog));
    json_object_set_new(o, "credit", json_integer(my_credit(l)));
    json_object_set_new(o, "paused", json_boolean(l->paused));
    json_t *st = json_pack(
        "{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "rx", (json_int_t)l->st.rx,
        "tx", (json_int_t)l->st.tx, "resent", (json_int_t)l->st.resent, "acks_rx",
        (json_int_t)l->st.acks_rx, "bad", (json_int_t)l->st.bad, "dups", (json_int_t)l->st.dups,
        "reassigned", (json_int_t)l->st.reassigned, "cancels_tx", (json_int_t)l->st.cancels_tx,
        "cancels_rx", (json_int_t)l->st.cancels_rx, "releases_rx",
        (json_int_t)l->st.releases_rx, "done_rx", (json_int_t)l->st.done_rx, "done_tx",
        (json_int_t)l->st.done_tx, "retained_bytes", (json_int_t)l->st.retained_bytes);
    json_object_set_new(o, "stats", st);
    if (l->last_error[0])
        json_object_set_new(o, "last_error",
                            json_pack("{s:s,s:I}", "text", l->last_error, "ago_ms",
                                      (json_int_t)(t - l->last_error_ms)));
    json_t *peers = json_array();
    for (int i = 0; i < MAX_PEERS; i++)
        if (l->peers[i].used && l->peers[i].name[0])
            json_array_append_new(peers, peer_json(l, &l->peers[i], t));
    json_object_set_new(o, "peers", peers);
    return o;
}

// Whole status (link + hook): called without the lock.
static char *status_text(jb_link_t *l) {
    pthread_mutex_lock(&l->mu);
    json_t *o = status_locked(l);
    pthread_mutex_unlock(&l->mu);
    if (!o) return NULL;
    if (l->o.status) {
        char *extra = l->o.status(l->o.status_user);
        json_t *e = extra ? json_loads(extra, 0, NULL) : NULL;
        if (json_is_object(e)) json_object_update(o, e);
        json_decref(e);
        free(extra);
    }
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

char *jb_link_status_json(jb_link_t *l) { return status_text(l); }

void jb_link_stats(jb_link_t *l, jb_link_stats_t *st) {
    pthread_mutex_lock(&l->mu);
    *st = l->st;
    st->peers_alive = st->peers_known = 0;
    for (int i = 0; i < MAX_PEERS; i++)
        if (l->peers[i].used && l->peers[i].name[0]) {
            st->peers_known++;
            st->peers_alive += l->peers[i].alive;
        }
    st->jobs = 0;
    st->backlog = 0;
    for (pjob_t *j = l->pjobs; j; j = j->next) {
        st->jobs++;
        st->backlog += j->n - j->sent;
    }
    for (cjob_t *c = l->cjobs; c; c = c->next) st->jobs++;
    st->queue = l->qlen;
    st->queue_bytes = l->qbytes;
    pthread_mutex_unlock(&l->mu);
}

// ---------------------------------------------------------------- receiving (I/O thread)

static int find_rid(jb_link_t *l, const uint8_t *rid, size_t n) {
    for (int i = 0; i < MAX_PEERS; i++)
        if (l->peers[i].used && l->peers[i].sock < 0 && l->peers[i].rid_len == n &&
            !memcmp(l->peers[i].rid, rid, n))
            return i;
    return -1;
}

static int new_peer(jb_link_t *l, int sock, const uint8_t *rid, size_t n) {
    int free_i = -1;
    for (int i = 0; i < MAX_PEERS && free_i < 0; i++)
        if (!l->peers[i].used) free_i = i;
    if (free_i < 0) {   // reuse the longest-dead ROUTER peer that holds no job
        for (int i = 0; i < MAX_PEERS && free_i < 0; i++) {
            peer_t *p = &l->peers[i];
            if (p->sock >= 0 || p->alive) continue;
            bool busy = false;
            for (pjob_t *j = l->pjobs; j && !busy; j = j->next) busy = j->peer == i;
            for (cjob_t *c = l->cjobs; c && !busy; c = c->next) busy = (c->senders >> i) & 1;
            if (!busy) free_i = i;
        }
        if (free_i < 0) return -1;
        free(l->peers[free_i].info);
    }
    peer_t *p = &l->peers[free_i];
    memset(p, 0, sizeof *p);
    p->used = true;
    p->sock = sock;
    if (rid) {
        memcpy(p->rid, rid, n);
        p->rid_len = n;
    }
    return free_i;
}

// A data message of a live producer's job that this consumer cannot take (malformed, over
// the job's bounds): dropped unacked, its producer would resend it forever and the job
// would never end. It stands instead as an ERROR of the job at the same seq (wire.md 8.3):
// taken, persisted and acked like the message, so the stage fails the job (an error record
// at the decoder, DONE upstream).
static void refused_data(jb_link_t *l, int pi, const jb_msg_t *bad, const jb_err_t *why) {
    if (l->o.role != JB_LINK_CONSUMER || pi < 0 || !l->peers[pi].alive || !bad->job_id[0] ||
        bad->seq < 0)
        return;
    switch (bad->type) {
    case JB_MSG_JOB: case JB_MSG_CODES: case JB_MSG_END: case JB_MSG_ALIGN: case JB_MSG_ERROR:
        break;
    default: return;
    }
    jb_msg_t e;
    jb_msg_init(&e);
    e.type = JB_MSG_ERROR;
    e.seq = bad->seq;
    e.code = jb_err_exit_code(why->code ? why->code : JB_EFORMAT);
    snprintf(e.job_id, sizeof e.job_id, "%s", bad->job_id);
    char text[900];
    snprintf(text, sizeof text, "%s: %s message seq %lld refused at %s: %s",
             bad->job_id, jb_msg_type_name(bad->type), (long long)bad->seq, l->name, why->msg);
    jb_err_t err = {0};
    if (jb_msg_set_text(&e, text, &err) == 0) consumer_on_data(l, pi, &e);
    jb_msg_clear(&e);
}

static void reply_raw(jb_link_t *l, void *sock, const uint8_t *rid, size_t rid_len,
                      jb_bytes_t *hdr) {
    zsend(sock, rid, rid_len, hdr, NULL);
}

// The peer a message came from: -1 not known (yet). sock_i: -1 ROUTER, else DEALER index.
static int find_peer(jb_link_t *l, int sock_i, const uint8_t *rid, size_t rid_len) {
    int pi = -1;
    if (sock_i < 0) pi = find_rid(l, rid, rid_len);
    else
        for (int i = 0; i < MAX_PEERS && pi < 0; i++)
            if (l->peers[i].used && l->peers[i].sock == sock_i) pi = i;
    return pi;
}

// Names the sender for log lines: its HELLO name, its routing id or the link's address,
// and its network address when libzmq gave one.
static void peer_who(const jb_link_t *l, int pi, int sock_i, const uint8_t *rid,
                     size_t rid_len, const char *from, char *who, size_t n_who) {
    if (pi >= 0 && l->peers[pi].name[0]) snprintf(who, n_who, "%s", l->peers[pi].name);
    else if (sock_i < 0) {
        size_t k = 0;
        for (size_t i = 0; i < rid_len && k + 4 < n_who; i++)
            k += (size_t)snprintf(who + k, n_who - k, rid[i] >= 32 && rid[i] < 127 ? "%c"
                                                                                : "\\x%02x",
                                  rid[i]);
        who[k] = '\0';
    } else snprintf(who, n_who, "peer at %s", l->address);
    if (from && *from && strlen(who) + strlen(from) + 8 < n_who)
        snprintf(who + strlen(who), n_who - strlen(who), " (from %s)", from);
}

// A STATUS request (from anyone): answered with the whole status. Lock held; dropped while
// the status hook runs.
static void on_status_request(jb_link_t *l, void *sock, const uint8_t *rid, size_t rid_len) {
    pthread_mutex_unlock(&l->mu);
    char *s = status_text(l);
    pthread_mutex_lock(&l->mu);
    jb_bytes_t hb = {0};
    if (s && !enc_ctl(l, &hb, JB_MSG_STATUS, NULL, -1, -1, s))
        reply_raw(l, sock, rid, rid_len, &hb);
    jb_bytes_free(&hb);
    free(s);
}

// c's stream is void: another live producer that sent the job takes over, or the job is
// dropped (a CANCEL to the stage when it holds some of it) until it comes again.
static void take_over_or_drop(jb_link_t *l, cjob_t *c) {
    int q = -1;
    for (int i = 0; i < MAX_PEERS && q < 0; i++)
        if ((c->senders >> i & 1) && l->peers[i].alive) q = i;
    if (q >= 0) {
        take_over(l, c, q);
    } else {
        if (c->next_seq > 0) enqueue_cancel(l, c->id);
        remove_cjob(l, c);
    }
}

// HELLO of producer pi (name, run epoch), not renamed.
static void consumer_void_preloaded(jb_link_t *l, int pi, const char *name, const char *epoch) {
    // Preloaded jobs (spool) of an earlier run of this producer: that stream is
    // void. Another producer's copy takes over, or the job is dropped until it
    // comes again.
    for (cjob_t *c = l->cjobs, *next; c; c = next) {
        next = c->next;
        if (c->owner >= 0 || strcmp(c->pre_name, name) || !strcmp(c->pre_epoch, epoch))
            continue;
        jb_log(JB_WARN, "link %s: job=%s: the spool holds %lld message(s) of %s run %s; "
               "it is back as run %s: they are void", l->name, c->id,
               (long long)c->next_seq, name, c->pre_epoch, epoch);
        c->senders &= ~(UINT64_C(1) << pi);
        take_over_or_drop(l, c);
    }
}

// Producer pi is another instance (renamed) or another run of it (restarted).
static void consumer_on_replaced(jb_link_t *l, int pi, bool renamed) {
    // Another producer instance (or another run of it): what the old one sent is
    // void (a regenerated stream interleaves differently). Another copy takes
    // over, or the job is dropped until it comes again.
    jb_log(JB_WARN, "link %s: %s %s", l->name, l->peers[pi].name,
           renamed ? "replaced by another instance" : "restarted");
    for (cjob_t *c = l->cjobs, *next; c; c = next) {
        next = c->next;
        c->senders &= ~(UINT64_C(1) << pi);
        if (c->owner != pi) continue;
        take_over_or_drop(l, c);
    }
}

// A HELLO: introduces (or re-introduces) a peer of the other role. pi: -1 not known yet.
static void on_hello(jb_link_t *l, int pi, const uint8_t *rid, size_t rid_len,
                     const jb_msg_t *m, const char *who, int64_t t) {
    json_t *o = m->text ? json_loads(m->text, 0, NULL) : NULL;
    const char *name = json_string_value(json_object_get(o, "name"));
    const char *role = json_string_value(json_object_get(o, "role"));
    const char *stage = json_string_value(json_object_get(o, "stage"));
    int want = (int)json_integer_value(json_object_get(o, "want"));
    const char *epoch = json_string_value(json_object_get(o, "epoch"));
    const char *need = l->o.role == JB_LINK_PRODUCER ? "consumer" : "producer";
    if (!name || !*name || !role || strcmp(role, need)) {
        l->st.bad++;
        jb_log(JB_WARN, "link %s: HELLO from %s refused: %s", l->name, who,
               !name || !*name ? "no name" : "a link of the same role (two outputs or two "
                                             "inputs connected together?)");
        json_decref(o);
        return;
    }
    if (pi < 0) pi = new_peer(l, -1, rid, rid_len);
    if (pi < 0) {
        jb_log(JB_WARN, "link %s: HELLO from %s: too many peers", l->name, who);
        json_decref(o);
        return;
    }
    peer_t *p = &l->peers[pi];
    bool renamed = p->name[0] && strcmp(p->name, name);
    // Same name, another run (restarted without a spool): its streams are new ones.
    bool restarted = !renamed && p->epoch[0] && epoch && strcmp(p->epoch, epoch);
    if (renamed && l->o.role == JB_LINK_PRODUCER) {
        // Another instance behind the same address: the old one is gone.
        for (pjob_t *j = l->pjobs; j; j = j->next)
            if (j->peer == pi) unassign(l, j, false);
    }
    if (l->o.role == JB_LINK_CONSUMER && epoch && !renamed)
        consumer_void_preloaded(l, pi, name, epoch);
    if ((renamed || restarted) && l->o.role == JB_LINK_CONSUMER)
        consumer_on_replaced(l, pi, renamed);
    bool was_alive = p->alive;
    snprintf(p->name, sizeof p->name, "%s", name);
    if (epoch) snprintf(p->epoch, sizeof p->epoch, "%s", epoch);
    snprintf(p->role, sizeof p->role, "%s", role);
    snprintf(p->stage, sizeof p->stage, "%s", stage ? stage : "");
    json_decref(o);
    p->alive = true;
    p->hello_gap = 0;
    p->last_seen = t;
    if (m->credit >= 0) p->credit = m->credit;
    if (!was_alive)
        jb_log(JB_INFO, "link %s: %s %s (%s) joined", l->name, p->role, p->name, p->stage);
    else if (restarted && l->o.role == JB_LINK_PRODUCER)
        jb_log(JB_INFO, "link %s: consumer %s restarted", l->name, p->name);
    if (want) send_hello(l, pi, 0);
    if (l->o.role == JB_LINK_PRODUCER) producer_on_hello(l, pi);
}

// A message other than HELLO from a peer not introduced (or declared dead): asks for a
// HELLO, drops the message.
static void on_unknown_peer(jb_link_t *l, int sock_i, int pi, void *sock, const uint8_t *rid,
                            size_t rid_len, const jb_msg_t *m, const char *who) {
    if (pi < 0 && sock_i < 0) {
        jb_bytes_t hb = {0};
        json_t *o = json_pack("{s:s,s:s,s:s,s:i,s:s}", "name", l->name, "role",
                              role_name(l->o.role), "stage", l->stage, "want", 1, "epoch",
                              l->epoch);
        char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
        json_decref(o);
        int64_t cr = l->o.role == JB_LINK_CONSUMER ? my_credit(l) : -1;
        if (s && !enc_ctl(l, &hb, JB_MSG_HELLO, NULL, -1, cr, s))
            reply_raw(l, sock, rid, rid_len, &hb);
        free(s);
        jb_bytes_free(&hb);
        if (m->type != JB_MSG_HEARTBEAT) {
            l->st.bad++;
            jb_log(JB_WARN, "link %s: %s message from unknown peer %s dropped", l->name,
                   jb_msg_type_name(m->type), who);
        }
    } else if (pi >= 0) {
        send_hello(l, pi, 1);
    }
}

static void on_heartbeat(peer_t *p, const jb_msg_t *m) {
    if (m->credit >= 0) p->credit = m->credit;
    free(p->info);
    p->info = m->text ? strdup(m->text) : NULL;
}

// ACK from consumer pi (with its credit).
static void producer_on_ack(jb_link_t *l, int pi, const jb_msg_t *m) {
    if (m->credit >= 0) l->peers[pi].credit = m->credit;
    l->st.acks_rx++;
    pjob_t *j = find_pjob(l, m->job_id);
    if (j && j->peer == pi && m->seq >= j->acked && m->seq < j->sent) {
        j->acked = (int)m->seq + 1;
        pthread_cond_broadcast(&l->cv);
    }
}

// DONE from consumer pi: the job is finished; its id goes to done_id for on_done.
static void producer_on_done(jb_link_t *l, int pi, const jb_msg_t *m, char *done_id) {
    l->st.done_rx++;
    pjob_t *j = find_pjob(l, m->job_id);
    if (j) {
        jb_log(JB_DEBUG, "link %s: job=%s DONE by %s", l->name, j->id, l->peers[pi].name);
        ring_add(l->done_ring, &l->n_done, j->id);   // later sends of it: dropped
        unlink_pjob(l, j);
        snprintf(done_id, JB_WIRE_JOB_ID_MAX + 1, "%s", m->job_id);
        pthread_cond_broadcast(&l->cv);
    }
}

// RELEASE from consumer pi: it hands the job back.
static void producer_on_release(jb_link_t *l, int pi, const jb_msg_t *m) {
    l->st.releases_rx++;
    pjob_t *j = find_pjob(l, m->job_id);
    if (j && j->peer == pi) {
        jb_log(JB_INFO, "link %s: job=%s handed back by %s", l->name, j->id, l->peers[pi].name);
        unassign(l, j, false);
        j->released_by = pi;
    }
}

// CANCEL from producer pi.
static void consumer_on_cancel(jb_link_t *l, int pi, const jb_msg_t *m) {
    peer_t *p = &l->peers[pi];
    l->st.cancels_rx++;
    cjob_t *c = find_cjob(l, m->job_id);
    if (c) c->senders &= ~(UINT64_C(1) << pi);
    int q = -1;   // another live producer that sent the job: its copy takes over
    for (int i = 0; c && i < MAX_PEERS && q < 0; i++)
        if ((c->senders >> i & 1) && l->peers[i].alive) q = i;
    // A preloaded job (held in the spool, no stream since the restart) is
    // cancelled by the producer the spool names, or by any when it names none.
    bool mine = c && (c->owner == pi ||
                      (c->owner < 0 && (!c->pre_name[0] || !strcmp(c->pre_name, p->name))));
    if (mine && q >= 0) {
        jb_log(JB_INFO, "link %s: job=%s cancelled by %s", l->name, c->id, p->name);
        take_over(l, c, q);
    } else if (mine) {
        jb_log(JB_INFO, "link %s: job=%s cancelled by %s", l->name, c->id, p->name);
        bool had = c->next_seq > 0;
        remove_cjob(l, c);
        if (had) enqueue_cancel(l, m->job_id);
    } else if (!c) {   // maybe in the spool, not preloaded yet
        int k = l->n_early++ % 32;
        snprintf(l->early_cancel[k].id, sizeof l->early_cancel[k].id, "%s", m->job_id);
        size_t nl = strnlen(p->name, NAME_LEN - 1);
        memcpy(l->early_cancel[k].from, p->name, nl);
        l->early_cancel[k].from[nl] = '\0';
    }
}

// One received message. sock_i: -1 ROUTER, else DEALER index. Lock held.
// Returns a job id to report DONE for in done_id (producer) or "".
static void handle(jb_link_t *l, int sock_i, const uint8_t *rid, size_t rid_len,
                   const uint8_t *h, size_t hn, const uint8_t *pl, size_t pn, const char *from,
                   char *done_id) {
    void *sock = sock_i < 0 ? l->router : l->dealer[sock_i];
    int pi = find_peer(l, sock_i, rid, rid_len);
    char who[300];
    peer_who(l, pi, sock_i, rid, rid_len, from, who, sizeof who);
    jb_msg_t m;
    jb_msg_init(&m);
    jb_err_t err = {0};
    if (jb_wire_decode_admit(h, hn, pl, pn, l->o.codebook, l->admit ? jb_admit_check : NULL,
                             l->admit, &m, &err)) {
        l->st.bad++;
        note_error(l, "from %s: %s", who, err.msg);
        jb_log(JB_WARN, "link %s: rejected a message from %s: %s", l->name, who, err.msg);
        refused_data(l, pi, &m, &err);
        return;
    }
    int64_t t = now_ms();
    if (m.type == JB_MSG_STATUS) {   // from anyone; a request has no info
        if (!m.text) on_status_request(l, sock, rid, rid_len);
        goto out;
    }
    if (l->o.role == JB_LINK_CONTROL) {
        l->st.bad++;
        jb_log(JB_WARN, "link %s: control endpoint: %s message from %s dropped", l->name,
               jb_msg_type_name(m.type), who);
        goto out;
    }
    if (m.type == JB_MSG_HELLO) {
        on_hello(l, pi, rid, rid_len, &m, who, t);
        goto out;
    }
    if (pi < 0 || !l->peers[pi].alive) {
        on_unknown_peer(l, sock_i, pi, sock, rid, rid_len, &m, who);
        goto out;
    }
    l->peers[pi].last_seen = t;
    bool producer = l->o.role == JB_LINK_PRODUCER, consumer = l->o.role == JB_LINK_CONSUMER;
    switch (m.type) {
    case JB_MSG_HEARTBEAT: on_heartbeat(&l->peers[pi], &m); break;
    case JB_MSG_ACK: if (!producer) goto bad; producer_on_ack(l, pi, &m); break;
    case JB_MSG_DONE: if (!producer) goto bad; producer_on_done(l, pi, &m, done_id); break;
    case JB_MSG_RELEASE: if (!producer) goto bad; producer_on_release(l, pi, &m); break;
    case JB_MSG_CANCEL: if (!consumer) goto bad; consumer_on_cancel(l, pi, &m); break;
    case JB_MSG_JOB:
    case JB_MSG_CODES:
    case JB_MSG_END:
    case JB_MSG_ERROR:
    case JB_MSG_ALIGN:
        if (!consumer) goto bad;
        consumer_on_data(l, pi, &m);
        break;
    default:
    bad:
        l->st.bad++;
        jb_log(JB_WARN, "link %s: unexpected %s message from %s dropped", l->name,
               jb_msg_type_name(m.type), who);
        break;
    }
out:
    jb_msg_clear(&m);
}

// Reads every waiting message of one socket. Lock held.
static void drain(jb_link_t *l, int sock_i, char done_ids[][JB_WIRE_JOB_ID_MAX + 1],
                  int *n_done) {
    void *sock = sock_i < 0 ? l->router : l->dealer[sock_i];
    for (int k = 0; k < RECV_BATCH; k++) {
        zmq_msg_t part[4];
        int n = 0, more = 1, r = 0;
        for (int i = 0; i < 4; i++) zmq_msg_init(&part[i]);
        while (more) {
            zmq_msg_t *p = &part[n < 3 ? n : 3];
            if (n >= 3) {   // a further part: dropped
                zmq_msg_close(p);
                zmq_msg_init(p);
            }
            do r = zmq_msg_recv(p, sock, n == 0 ? ZMQ_DONTWAIT : 0);
            while (r < 0 && errno == EINTR);
            if (r < 0) break;
            n++;
            more = zmq_msg_more(p);
        }
        if (r < 0 && n == 0) {
            for (int i = 0; i < 4; i++) zmq_msg_close(&part[i]);
            return;
        }
        int base = sock_i < 0 ? 1 : 0;   // a ROUTER message starts with the routing id
        const uint8_t *rid = sock_i < 0 ? zmq_msg_data(&part[0]) : NULL;
        size_t rid_len = sock_i < 0 ? zmq_msg_size(&part[0]) : 0;
        // The peer's network address, for log lines (libzmq metadata; may be absent).
        const char *from = n > 0 ? zmq_msg_gets(&part[n > 3 ? 3 : n - 1], "Peer-Address") : NULL;
        if (r < 0 || n != base + 2) {
            l->st.bad++;
            jb_log(JB_WARN, "link %s: a message of %d part%s from %s dropped (expected header, "
                   "payload)", l->name, n - base, n - base == 1 ? "" : "s",
                   from ? from : "a peer");
        } else {
            char done[JB_WIRE_JOB_ID_MAX + 1] = "";
            handle(l, sock_i, rid, rid_len, zmq_msg_data(&part[base]),
                   zmq_msg_size(&part[base]), zmq_msg_data(&part[base + 1]),
                   zmq_msg_size(&part[base + 1]), from, done);
            if (done[0] && *n_done < RECV_BATCH)
                snprintf(done_ids[(*n_done)++], JB_WIRE_JOB_ID_MAX + 1, "%s", done);
        }
        for (int i = 0; i < 4; i++) zmq_msg_close(&part[i]);
    }
}

static void tick(jb_link_t *l) {
    int64_t t = now_ms();
    if (l->o.role == JB_LINK_CONTROL) return;
    for (int i = 0; i < MAX_PEERS; i++) {
        peer_t *p = &l->peers[i];
        if (!p->used) continue;
        if (!p->alive) {
            // HELLOs to an absent peer wait in the DEALER's pipe (ZMQ_IMMEDIATE is off) and
            // the first arrives as soon as it connects, so they can grow rarer.
            if (p->hello_gap < l->o.heartbeat_ms) p->hello_gap = l->o.heartbeat_ms;
            if (p->sock >= 0 && t - p->last_hello >= p->hello_gap) {
                send_hello(l, i, 1);
                if (p->hello_gap < 8 * (int64_t)l->o.heartbeat_ms) p->hello_gap *= 2;
            }
            continue;
        }
        if (t - p->last_seen > l->o.peer_timeout_ms) {
            p->alive = false;
            jb_log(JB_WARN, "link %s: %s %s silent for %lld ms: dead", l->name, p->role,
                   peer_label(p), (long long)(t - p->last_seen));
            if (l->o.role == JB_LINK_CONSUMER) consumer_on_dead(l, i);
            continue;
        }
        if (t - p->last_sent >= l->o.heartbeat_ms) {
            char info[128];
            int jobs = 0, backlog = 0;
            for (pjob_t *j = l->pjobs; j; j = j->next, jobs++) backlog += j->n - j->sent;
            for (cjob_t *c = l->cjobs; c; c = c->next) jobs++;
            snprintf(info, sizeof info, "{\"jobs\":%d,\"queue\":%d,\"backlog\":%d}", jobs,
                     l->qlen, backlog);
            send_ctl(l, i, JB_MSG_HEARTBEAT, NULL, -1, info);
        }
    }
    while (l->obox) {
        obox_t *b = l->obox;
        if (b->peer >= 0 && l->peers[b->peer].used) send_peer(l, b->peer, &b->hdr, NULL);
        l->obox = b->next;
        jb_bytes_free(&b->hdr);
        free(b);
    }
    if (l->o.role == JB_LINK_PRODUCER) producer_pump(l);
}

static void *io_main(void *arg) {
    jb_link_t *l = arg;
    zmq_pollitem_t items[MAX_DEALERS + 2];
    int n = 0;
    items[n++] = (zmq_pollitem_t){.fd = l->wake[0], .events = ZMQ_POLLIN};
    if (l->router) items[n++] = (zmq_pollitem_t){.socket = l->router, .events = ZMQ_POLLIN};
    for (int i = 0; i < l->n_dealers; i++)
        items[n++] = (zmq_pollitem_t){.socket = l->dealer[i], .events = ZMQ_POLLIN};
    int slice = l->o.heartbeat_ms / 4;
    if (slice > 50) slice = 50;
    if (slice < 1) slice = 1;
    char(*dids)[JB_WIRE_JOB_ID_MAX + 1] = l->done_ids;
    for (;;) {
        pthread_mutex_lock(&l->mu);
        bool q = l->quit && (!l->obox || now_ms() >= l->quit_at);
        pthread_mutex_unlock(&l->mu);
        if (q) break;
        int r = zmq_poll(items, n, slice);
        if (r < 0 && errno != EINTR) break;
        if (items[0].revents & ZMQ_POLLIN) {
            char buf[64];
            while (read(l->wake[0], buf, sizeof buf) > 0) {}
        }
        int n_done = 0;
        pthread_mutex_lock(&l->mu);
        for (int i = 1; i < n; i++)
            if (items[i].revents & ZMQ_POLLIN)
                drain(l, l->router ? i - 2 : i - 1, dids, &n_done);
        tick(l);
        pthread_mutex_unlock(&l->mu);
        for (int i = 0; i < n_done && l->o.on_done; i++)
            l->o.on_done(l->o.done_user, dids[i]);
    }
    return NULL;
}

// ---------------------------------------------------------------- open / close

void jb_link_dealer_setup(void *dealer) {
    // ZMQ_IMMEDIATE stays off. With it on, libzmq 4.3.4 ends the socket's pipe when the
    // connection drops ("hiccup"); if that is processed between the two frames of a
    // message (libzmq looks at its command queue every 100th receive), the next frame
    // read fails and libzmq aborts: "Assertion failed: !_more (src/fq.cpp:112)". This
    // killed the decoder when a bottom upsampler it read from was kill -9'ed. With it
    // off the pipe lives as long as the socket: messages sent while the peer is away
    // wait in it (bounded by ZMQ_SNDHWM) and go out on reconnection, where a restarted
    // peer drops them (unknown until its HELLO) and a surviving one treats them as late
    // duplicates. tests/test_jb_link_peer_death.c reproduces the abort.
    int zero = 0, ivl = 100, ivl_max = 1000;
    zmq_setsockopt(dealer, ZMQ_IMMEDIATE, &zero, sizeof zero);
    zmq_setsockopt(dealer, ZMQ_RECONNECT_IVL, &ivl, sizeof ivl);
    zmq_setsockopt(dealer, ZMQ_RECONNECT_IVL_MAX, &ivl_max, sizeof ivl_max);
}

static int add_endpoint(jb_link_t *l, const char *spec, jb_err_t *err) {
    bool bind = l->o.role != JB_LINK_PRODUCER;
    const char *addr = spec;
    if (*addr == '@' || *addr == '>') bind = *addr++ == '@';
    if (strncmp(addr, "tcp://", 6) && strncmp(addr, "ipc://", 6) && strncmp(addr, "inproc://", 9))
        return jb_err_set(err, JB_EINVAL, "%s: expected tcp://, ipc:// or inproc://", spec);
    int linger = 0, one = 1;
    int64_t maxmsg = JB_WIRE_MAX_PAYLOAD > JB_WIRE_MAX_HEADER ? JB_WIRE_MAX_PAYLOAD
                                                              : JB_WIRE_MAX_HEADER;
    int hwm = 10000;
    void *s;
    if (bind) {
        if (!l->router) {
            if (!(l->router = zmq_socket(l->ctx, ZMQ_ROUTER)))
                return jb_err_set(err, JB_EUNAVAIL, "%s: zmq_socket: %s", spec,
                                  zmq_strerror(errno));
            zmq_setsockopt(l->router, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
            zmq_setsockopt(l->router, ZMQ_ROUTER_HANDOVER, &one, sizeof one);
        }
        s = l->router;
    } else {
        if (l->n_dealers >= MAX_DEALERS)
            return jb_err_set(err, JB_EINVAL, "%s: more than %d endpoints", spec, MAX_DEALERS);
        if (!(s = zmq_socket(l->ctx, ZMQ_DEALER)))
            return jb_err_set(err, JB_EUNAVAIL, "%s: zmq_socket: %s", spec, zmq_strerror(errno));
        l->dealer[l->n_dealers++] = s;
        zmq_setsockopt(s, ZMQ_ROUTING_ID, l->name, strlen(l->name));
        jb_link_dealer_setup(s);
    }
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof hwm);
    if ((bind ? zmq_bind : zmq_connect)(s, addr))
        return jb_err_set(err, errno == EINVAL || errno == EPROTONOSUPPORT ? JB_EINVAL
                                                                          : JB_EUNAVAIL,
                          "%s: cannot %s: %s", spec, bind ? "bind" : "connect",
                          zmq_strerror(errno));
    if (bind) {
        char a[256] = "";
        size_t alen = sizeof a;
        if (zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, a, &alen) || !a[0]) snprintf(a, sizeof a, "%s", addr);
        if (!l->address[0]) snprintf(l->address, sizeof l->address, "%s", a);
        if (!strncmp(a, "ipc://", 6) && a[6] != '@' && l->n_ipc < MAX_DEALERS)
            l->ipc_files[l->n_ipc++] = strdup(a + 6);
    } else {
        int pi = new_peer(l, l->n_dealers - 1, NULL, 0);
        if (pi < 0) return jb_err_set(err, JB_EINVAL, "%s: too many peers", spec);
    }
    return 0;
}

static void free_all(jb_link_t *l) {
    for (int i = 0; i < l->n_dealers; i++) zmq_close(l->dealer[i]);
    if (l->router) zmq_close(l->router);
    if (l->ctx) zmq_ctx_term(l->ctx);
    for (int i = 0; i < l->n_ipc; i++) {
        unlink(l->ipc_files[i]);
        free(l->ipc_files[i]);
    }
    if (l->wake[0] >= 0) close(l->wake[0]);
    if (l->wake[1] >= 0) close(l->wake[1]);
    while (l->pjobs) {
        pjob_t *j = l->pjobs;
        l->pjobs = j->next;
        pjob_free(j);
    }
    while (l->cjobs) {
        cjob_t *c = l->cjobs;
        l->cjobs = c->next;
        free(c);
    }
    while (l->qhead) {
        qitem_t *q = l->qhead;
        l->qhead = q->next;
        jb_msg_clear(&q->msg);
        free(q);
    }
    while (l->obox) {
        obox_t *b = l->obox;
        l->obox = b->next;
        jb_bytes_free(&b->hdr);
        free(b);
    }
    for (int i = 0; i < MAX_PEERS; i++) free(l->peers[i].info);
    jb_bytes_free(&l->ehdr);
    jb_bytes_free(&l->epl);
    jb_admit_destroy(&l->admit);
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cv);
    free(l->spec);
    free(l);
}

jb_link_t *jb_link_open(const char *spec, const jb_link_opts_t *o, jb_err_t *err) {
    jb_link_t *l = calloc(1, sizeof *l);
    if (!l) {
        jb_err_set(err, JB_ENOMEM, "out of memory");
        return NULL;
    }
    l->wake[0] = l->wake[1] = -1;
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    if (o) l->o = *o;
    else jb_link_default_opts(&l->o);
    l->t0 = now_ms();
    if (!spec || !*spec) {
        jb_err_set(err, JB_EINVAL, "link: empty endpoint");
        goto fail;
    }
    if (l->o.credit_bytes <= 0) l->o.credit_bytes = JB_LINK_CREDIT_BYTES;
    if (l->o.role == JB_LINK_CONSUMER && !(l->admit = jb_admit_new(&l->o.admit, err)))
        goto fail;
    if (l->o.heartbeat_ms < 1 || l->o.peer_timeout_ms <= l->o.heartbeat_ms || l->o.credit < 1 ||
        l->o.backlog < 1) {
        jb_err_set(err, JB_EINVAL, "%s: need heartbeat >= 1 ms, peer timeout > heartbeat, "
                   "credit >= 1, backlog >= 1", spec);
        goto fail;
    }
    l->o.name = NULL;
    l->o.stage = NULL;
    if (o && o->name && *o->name) {
        if (strlen(o->name) >= NAME_LEN) {
            jb_err_set(err, JB_EINVAL, "--name: at most %d bytes", NAME_LEN - 1);
            goto fail;
        }
        snprintf(l->name, sizeof l->name, "%s", o->name);
    } else {
        char host[64] = "host";
        gethostname(host, sizeof host - 1);
        host[sizeof host - 1] = '\0';
        snprintf(l->name, sizeof l->name, "%s-%ld", host, (long)getpid());
    }
    snprintf(l->stage, sizeof l->stage, "%s", o && o->stage ? o->stage : "");
    if (o && o->epoch && *o->epoch) {
        snprintf(l->epoch, sizeof l->epoch, "%s", o->epoch);
    } else {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        snprintf(l->epoch, sizeof l->epoch, "%lx.%lx.%lx", (unsigned long)ts.tv_sec,
                 (unsigned long)ts.tv_nsec, (unsigned long)getpid());
    }
    l->o.epoch = NULL;
    if (!(l->spec = strdup(spec)) || pipe(l->wake)) {
        jb_err_set(err, JB_ENOMEM, "%s: out of memory or descriptors", spec);
        goto fail;
    }
    fcntl(l->wake[0], F_SETFL, O_NONBLOCK);
    fcntl(l->wake[1], F_SETFL, O_NONBLOCK);
    fcntl(l->wake[0], F_SETFD, FD_CLOEXEC);
    fcntl(l->wake[1], F_SETFD, FD_CLOEXEC);
    if (!(l->ctx = zmq_ctx_new())) {
        jb_err_set(err, JB_EUNAVAIL, "%s: zmq_ctx_new: %s", spec, zmq_strerror(errno));
        goto fail;
    }
    char *list = strdup(spec), *save = NULL;
    if (!list) {
        jb_err_set(err, JB_ENOMEM, "out of memory");
        goto fail;
    }
    for (char *e = strtok_r(list, ",", &save); e; e = strtok_r(NULL, ",", &save)) {
        while (*e == ' ') e++;
        if (*e && add_endpoint(l, e, err)) {
            free(list);
            goto fail;
        }
    }
    free(list);
    if (!l->router && !l->n_dealers) {
        jb_err_set(err, JB_EINVAL, "link: no endpoint in '%s'", spec);
        goto fail;
    }
    if (pthread_create(&l->th, NULL, io_main, l)) {
        jb_err_set(err, JB_EUNAVAIL, "%s: cannot start the I/O thread", spec);
        goto fail;
    }
    l->th_started = true;
    return l;
fail:
    free_all(l);
    return NULL;
}

void jb_link_close(jb_link_t **lp, int timeout_ms) {
    if (!lp || !*lp) return;
    jb_link_t *l = *lp;
    *lp = NULL;
    if (l->th_started) {
        pthread_mutex_lock(&l->mu);
        l->quit = true;
        l->quit_at = now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
        pthread_mutex_unlock(&l->mu);
        wake(l);
        pthread_join(l->th, NULL);
        // What libzmq still holds for sending gets the rest of the time.
        int linger = timeout_ms > 0 ? timeout_ms : 0;
        for (int i = 0; i < l->n_dealers; i++)
            zmq_setsockopt(l->dealer[i], ZMQ_LINGER, &linger, sizeof linger);
        if (l->router) zmq_setsockopt(l->router, ZMQ_LINGER, &linger, sizeof linger);
    }
    free_all(l);
}

// ---------------------------------------------------------------- API

static bool stopped(const jb_link_t *l) { return l->o.stop && *l->o.stop; }

static void wait_slice(jb_link_t *l, int ms) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += (long)ms * 1000000L;
    ts.tv_sec += ts.tv_nsec / 1000000000L;
    ts.tv_nsec %= 1000000000L;
    pthread_cond_timedwait(&l->cv, &l->mu, &ts);
}

static int backlog_locked(const jb_link_t *l) {
    int b = 0;
    for (pjob_t *j = l->pjobs; j; j = j->next) b += j->n - j->sent;
    return b;
}

int jb_link_send(jb_link_t *l, const jb_msg_t *msg, jb_err_t *err) {
    if (l->o.role != JB_LINK_PRODUCER)
        return jb_err_set(err, JB_EINVAL, "link %s: send on a %s link", l->name,
                          role_name(l->o.role));
    if (!msg->job_id[0] || msg->type == JB_MSG_ACK || msg->type == JB_MSG_HEARTBEAT ||
        msg->type == JB_MSG_STATUS || msg->type >= JB_MSG_HELLO)
        return jb_err_set(err, JB_EINVAL, "link %s: only job stream messages with a job id "
                          "are sent (got %s)", l->name, jb_msg_type_name(msg->type));
    pthread_mutex_lock(&l->mu);
    int64_t give_up = l->o.send_timeout_ms < 0 ? INT64_MAX : now_ms() + l->o.send_timeout_ms;
    while (backlog_locked(l) >= l->o.backlog) {
        if (stopped(l)) {
            pthread_mutex_unlock(&l->mu);
            return jb_err_set(err, JB_ECANCEL, "link %s: stopped while waiting to send",
                              l->name);
        }
        if (now_ms() >= give_up) {
            pthread_mutex_unlock(&l->mu);
            return jb_err_set(err, JB_EUNAVAIL, "%s: no consumer took the messages within %d ms",
                              jb_link_address(l), l->o.send_timeout_ms);
        }
        wait_slice(l, 20);
    }
    pjob_t *j = find_pjob(l, msg->job_id);
    if (!j && in_ring(l->done_ring, l->n_done, msg->job_id)) {
        // DONE already came back for it (a copy elsewhere got there first) while the
        // stage was still making it: the rest is not sent. As a new stream it would
        // start with this message at seq 0 at a consumer that never had the job.
        pthread_mutex_unlock(&l->mu);
        jb_log(JB_DEBUG, "link %s: job=%s is DONE; %s not sent", l->name, msg->job_id,
               jb_msg_type_name(msg->type));
        return 0;
    }
    if (!j) {
        if (!(j = calloc(1, sizeof *j))) goto nomem;
        snprintf(j->id, sizeof j->id, "%s", msg->job_id);
        j->recancel = in_ring(l->cancel_ring, l->n_cancel, msg->job_id);
        j->peer = -1;
        j->released_by = -1;
        pjob_t **t = &l->pjobs;
        while (*t) t = &(*t)->next;
        *t = j;
    }
    if (j->n == j->cap) {
        int cap = j->cap ? 2 * j->cap : 16;
        rmsg_t *m = realloc(j->m, sizeof *m * (size_t)cap);
        if (!m) goto nomem;
        memset(m + j->cap, 0, sizeof *m * (size_t)(cap - j->cap));
        j->m = m;
        j->cap = cap;
    }
    jb_msg_t c = *msg;   // shallow: only seq differs
    c.seq = j->n;
    rmsg_t *r = &j->m[j->n];
    if (jb_wire_encode(&c, &r->hdr, &r->pl, err)) {
        pthread_mutex_unlock(&l->mu);
        return jb_err_prefix(err, "link %s", l->name);
    }
    j->n++;
    j->bytes += (int64_t)(r->hdr.len + r->pl.len);
    l->st.retained_bytes += (int64_t)(r->hdr.len + r->pl.len);
    pthread_mutex_unlock(&l->mu);
    wake(l);
    return 0;
nomem:
    pthread_mutex_unlock(&l->mu);
    return jb_err_set(err, JB_ENOMEM, "link %s: out of memory", l->name);
}

int jb_link_cancel(jb_link_t *l, const char *job_id) {
    pthread_mutex_lock(&l->mu);
    pjob_t *j = find_pjob(l, job_id);
    if (j) {
        if (j->peer >= 0) {
            outbox(l, j->peer, JB_MSG_CANCEL, job_id);
            l->st.cancels_tx++;
        }
        if (!in_ring(l->cancel_ring, l->n_cancel, job_id))
            ring_add(l->cancel_ring, &l->n_cancel, job_id);
        unlink_pjob(l, j);
        pthread_cond_broadcast(&l->cv);
    }
    pthread_mutex_unlock(&l->mu);
    wake(l);
    return 0;
}

int jb_link_flush(jb_link_t *l, int timeout_ms, int want_done, jb_err_t *err) {
    int64_t end = timeout_ms < 0 ? INT64_MAX : now_ms() + timeout_ms;
    pthread_mutex_lock(&l->mu);
    for (;;) {
        int open = 0, jobs = 0;
        for (pjob_t *j = l->pjobs; j; j = j->next) {
            open += j->n - j->acked;
            jobs++;
        }
        if (want_done ? jobs == 0 : open == 0) break;
        if (stopped(l)) {
            pthread_mutex_unlock(&l->mu);
            return jb_err_set(err, JB_ECANCEL, "link %s: stopped while waiting", l->name);
        }
        if (now_ms() >= end) {
            bool seen = false;
            for (int i = 0; i < MAX_PEERS; i++) seen = seen || is_consumer_peer(&l->peers[i]);
            pthread_mutex_unlock(&l->mu);
            if (!seen)
                return jb_err_set(err, JB_EUNAVAIL, "%s: no stage answered within %d ms",
                                  jb_link_address(l), timeout_ms);
            return jb_err_set(err, JB_EUNAVAIL, "%s: %s within %d ms (%d job(s) open)",
                              jb_link_address(l), want_done ? "jobs not done"
                                                            : "messages not acknowledged",
                              timeout_ms, jobs);
        }
        wait_slice(l, 50);
    }
    pthread_mutex_unlock(&l->mu);
    return 0;
}

jb_recv_t jb_link_recv(jb_link_t *l, jb_msg_t *msg, int timeout_ms, jb_err_t *err) {
    (void)err;
    int64_t end = timeout_ms < 0 ? INT64_MAX : now_ms() + timeout_ms;
    pthread_mutex_lock(&l->mu);
    // The stage is back for more: the CANCELs it was given are handled.
    int kept = 0;
    for (int i = 0; i < l->n_voiding; i++)
        if (!l->voiding[i].handed) l->voiding[kept++] = l->voiding[i];
    l->n_voiding = kept;
    while (!l->qhead) {
        int64_t left = end - now_ms();
        if (left <= 0 || stopped(l)) {
            pthread_mutex_unlock(&l->mu);
            return JB_RECV_TIMEOUT;
        }
        wait_slice(l, left < 100 ? (int)left : 100);
    }
    qitem_t *q = l->qhead;
    l->qhead = q->next;
    if (!l->qhead) l->qtail = NULL;
    if (q->msg.type == JB_MSG_CANCEL)
        for (int i = 0; i < l->n_voiding; i++)
            if (!strcmp(l->voiding[i].id, q->msg.job_id)) l->voiding[i].handed = true;
    int before = my_credit(l);
    l->qlen--;
    l->qbytes -= msg_bytes(&q->msg);
    pthread_mutex_unlock(&l->mu);
    jb_msg_clear(msg);
    *msg = q->msg;
    free(q);
    if (before == 0) {   // credit back from 0: tell the producers now, not at the heartbeat
        pthread_mutex_lock(&l->mu);
        for (int i = 0; i < MAX_PEERS; i++)
            if (l->peers[i].used && l->peers[i].alive) l->peers[i].last_sent = 0;
        pthread_mutex_unlock(&l->mu);
        wake(l);
    }
    return JB_RECV_MSG;
}

static void ring_add(char (*ring)[JB_WIRE_JOB_ID_MAX + 1], int *n, const char *id) {
    snprintf(ring[*n % RING], JB_WIRE_JOB_ID_MAX + 1, "%s", id);
    (*n)++;
}

int jb_link_done(jb_link_t *l, const char *job_id) {
    pthread_mutex_lock(&l->mu);
    cjob_t *c = find_cjob(l, job_id);
    if (c) {
        for (int i = 0; i < MAX_PEERS; i++)
            if (c->senders >> i & 1) {
                outbox(l, i, JB_MSG_DONE, job_id);
                l->st.done_tx++;
            }
        remove_cjob(l, c);
    }
    if (!in_ring(l->done_ring, l->n_done, job_id)) ring_add(l->done_ring, &l->n_done, job_id);
    // Messages of the job still queued (a stream of a job the decoder finds already
    // written: its first message says so, the next ones wait behind it) are not
    // delivered: after DONE nothing of the job comes out of the link.
    int dropped = 0;
    for (qitem_t **qp = &l->qhead, *prev = NULL; *qp;) {
        qitem_t *q = *qp;
        if (q->msg.type != JB_MSG_CANCEL && !strcmp(q->msg.job_id, job_id)) {
            *qp = q->next;
            if (l->qtail == q) l->qtail = prev;
            l->qlen--;
            jb_msg_clear(&q->msg);
            free(q);
            dropped++;
        } else {
            prev = q;
            qp = &q->next;
        }
    }
    if (dropped)
        jb_log(JB_DEBUG, "link %s: job=%s done: %d queued message(s) of it dropped", l->name,
               job_id, dropped);
    pthread_mutex_unlock(&l->mu);
    wake(l);
    return 0;
}

int jb_link_release(jb_link_t *l, const char *job_id) {
    pthread_mutex_lock(&l->mu);
    cjob_t *c = find_cjob(l, job_id);
    if (c) {
        if (c->owner >= 0) outbox(l, c->owner, JB_MSG_RELEASE, job_id);
        remove_cjob(l, c);
    }
    ring_add(l->rel_ring, &l->n_rel, job_id);
    pthread_mutex_unlock(&l->mu);
    wake(l);
    return 0;
}

void jb_link_pause(jb_link_t *l) {
    pthread_mutex_lock(&l->mu);
    l->paused = true;
    for (int i = 0; i < MAX_PEERS; i++)
        if (l->peers[i].used && l->peers[i].alive) l->peers[i].last_sent = 0;   // tell now
    pthread_mutex_unlock(&l->mu);
    wake(l);
}

int jb_link_preload(jb_link_t *l, const char *job_id, int64_t next_seq, jb_err_t *err) {
    return jb_link_preload_from(l, job_id, next_seq, NULL, NULL, err);
}

int jb_link_preload_from(jb_link_t *l, const char *job_id, int64_t next_seq,
                         const char *producer, const char *epoch, jb_err_t *err) {
    if (!jb_wire_job_id_ok(job_id) || next_seq < 0)
        return jb_err_set(err, JB_EINVAL, "link %s: preload: bad job id or seq", l->name);
    pthread_mutex_lock(&l->mu);
    bool known = producer && epoch && *producer;
    // Voided already: its producer cancelled it, or is back as another run, before the
    // stage got to its spool (the link was open while the stage replayed).
    const char *why = NULL;
    for (int i = 0; i < 32 && i < l->n_early && !why; i++)
        if (!strcmp(l->early_cancel[i].id, job_id) &&
            (!known || !strcmp(l->early_cancel[i].from, producer)))
            why = "its producer cancelled it";
    for (int i = 0; i < MAX_PEERS && known && !why; i++) {
        const peer_t *p = &l->peers[i];
        if (p->used && p->epoch[0] && !strcmp(p->name, producer) && strcmp(p->epoch, epoch))
            why = "its producer is back as another run";
    }
    cjob_t *c = find_cjob(l, job_id);
    if (why) {
        jb_log(JB_INFO, "link %s: job=%s: the %lld message(s) held in the spool are void: %s",
               l->name, job_id, (long long)next_seq, why);
        if (c) remove_cjob(l, c);
        if (next_seq > 0) enqueue_cancel(l, job_id);
        pthread_mutex_unlock(&l->mu);
        return 0;
    }
    if (!c && (c = calloc(1, sizeof *c))) {
        snprintf(c->id, sizeof c->id, "%s", job_id);
        c->next = l->cjobs;
        l->cjobs = c;
    }
    if (c) {
        // Held: no stream since the restart. A stream that began before this call (its
        // seq 0 was refused while the spool replayed) is judged again by the held rules.
        c->owner = -1;
        c->next_seq = next_seq;
        snprintf(c->pre_name, sizeof c->pre_name, "%s", producer && epoch ? producer : "");
        snprintf(c->pre_epoch, sizeof c->pre_epoch, "%s", producer && epoch ? epoch : "");
    }
    pthread_mutex_unlock(&l->mu);
    return c ? 0 : jb_err_set(err, JB_ENOMEM, "out of memory");
}

int jb_link_owner(jb_link_t *l, const char *job_id, char *name, size_t n_name, char *epoch,
                  size_t n_epoch) {
    int rc = -1;
    pthread_mutex_lock(&l->mu);
    cjob_t *c = find_cjob(l, job_id);
    if (c && c->owner >= 0) {
        snprintf(name, n_name, "%s", l->peers[c->owner].name);
        snprintf(epoch, n_epoch, "%s", l->peers[c->owner].epoch);
        rc = 0;
    }
    pthread_mutex_unlock(&l->mu);
    return rc;
}

int jb_link_query_status(const char *endpoint, int timeout_ms, char **info, jb_err_t *err) {
    *info = NULL;
    const char *addr = endpoint;
    if (*addr == '>' || *addr == '@') addr++;
    void *ctx = zmq_ctx_new();
    void *s = ctx ? zmq_socket(ctx, ZMQ_DEALER) : NULL;
    int rc = -1, linger = 0;
    jb_bytes_t hdr = {0}, pl = {0};
    if (!s) {
        jb_err_set(err, JB_EUNAVAIL, "%s: zmq: %s", endpoint, zmq_strerror(errno));
        goto done;
    }
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    if (zmq_connect(s, addr)) {
        jb_err_set(err, JB_EINVAL, "%s: cannot connect: %s", endpoint, zmq_strerror(errno));
        goto done;
    }
    jb_msg_t m;
    jb_msg_init(&m);
    m.type = JB_MSG_STATUS;
    if (jb_wire_encode(&m, &hdr, &pl, err)) goto done;
    if (zsend(s, NULL, 0, &hdr, &pl)) {
        jb_err_set(err, JB_EUNAVAIL, "%s: send: %s", endpoint, zmq_strerror(errno));
        goto done;
    }
    int64_t end = now_ms() + (timeout_ms < 0 ? 3600000 : timeout_ms);
    for (;;) {
        int64_t left = end - now_ms();
        zmq_pollitem_t it = {.socket = s, .events = ZMQ_POLLIN};
        if (left <= 0 || zmq_poll(&it, 1, (long)left) <= 0) {
            jb_err_set(err, JB_EUNAVAIL, "%s: no status reply within %d ms", endpoint,
                       timeout_ms);
            goto done;
        }
        zmq_msg_t a, b;
        zmq_msg_init(&a);
        zmq_msg_init(&b);
        int ok = zmq_msg_recv(&a, s, 0) >= 0 && zmq_msg_more(&a) && zmq_msg_recv(&b, s, 0) >= 0;
        jb_msg_t r;
        jb_msg_init(&r);
        jb_err_t e2 = {0};
        if (ok && !jb_wire_decode(zmq_msg_data(&a), zmq_msg_size(&a), zmq_msg_data(&b),
                                  zmq_msg_size(&b), -1, &r, &e2) &&
            r.type == JB_MSG_STATUS && r.text) {
            *info = r.text;
            r.text = NULL;
            rc = 0;
        }
        while (zmq_msg_more(&b) && zmq_msg_recv(&b, s, 0) >= 0) {}
        jb_msg_clear(&r);
        zmq_msg_close(&a);
        zmq_msg_close(&b);
        if (rc == 0) break;   // anything else (a HELLO asking who we are) is skipped
    }
done:
    jb_bytes_free(&hdr);
    jb_bytes_free(&pl);
    if (s) zmq_close(s);
    if (ctx) zmq_ctx_term(ctx);
    return rc;
}
