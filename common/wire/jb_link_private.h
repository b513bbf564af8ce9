// jb_link_private.h: the state the files of the link share (jb_link.c, jb_link_producer.c,
// jb_link_consumer.c, jb_link_status.c). Not a public header: see jb_link.h and
// docs/reliability.md. Everything here is used with the link's mutex held unless said.
#ifndef JB_LINK_PRIVATE_H
#define JB_LINK_PRIVATE_H

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

// ---------------------------------------------------------------- small helpers

static inline int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline const char *role_name(int r) {
    return r == JB_LINK_PRODUCER ? "producer" : r == JB_LINK_CONSUMER ? "consumer" : "control";
}

static inline const char *peer_label(const peer_t *p) {
    return p->name[0] ? p->name : "(unnamed peer)";
}

static inline bool is_consumer_peer(const peer_t *p) {
    return p->used && !strcmp(p->role, "consumer");
}

static inline bool in_ring(char (*ring)[JB_WIRE_JOB_ID_MAX + 1], int n, const char *id) {
    int k = n < RING ? n : RING;
    for (int i = 0; i < k; i++)
        if (!strcmp(ring[i], id)) return true;
    return false;
}

static inline void ring_add(char (*ring)[JB_WIRE_JOB_ID_MAX + 1], int *n, const char *id) {
    snprintf(ring[*n % RING], JB_WIRE_JOB_ID_MAX + 1, "%s", id);
    (*n)++;
}

static inline pjob_t *find_pjob(jb_link_t *l, const char *id) {
    for (pjob_t *j = l->pjobs; j; j = j->next)
        if (!strcmp(j->id, id)) return j;
    return NULL;
}

static inline cjob_t *find_cjob(jb_link_t *l, const char *id) {
    for (cjob_t *j = l->cjobs; j; j = j->next)
        if (!strcmp(j->id, id)) return j;
    return NULL;
}

// What a queued message costs against the byte budget: its decompressed payload and its
// strings (the rest is a fixed few hundred bytes).
static inline int64_t msg_bytes(const jb_msg_t *m) {
    return (int64_t)jb_msg_payload_elems(m) * 4 + (m->spec ? (int64_t)strlen(m->spec) : 0) +
           (m->text ? (int64_t)strlen(m->text) : 0);
}

static inline bool stopped(const jb_link_t *l) { return l->o.stop && *l->o.stop; }

static inline void wait_slice(jb_link_t *l, int ms) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += (long)ms * 1000000L;
    ts.tv_sec += ts.tv_nsec / 1000000000L;
    ts.tv_nsec %= 1000000000L;
    pthread_cond_timedwait(&l->cv, &l->mu, &ts);
}

// Shared between the files (one definition each, in the file named; the others of each
// file stay static there). Not part of the API: the jbl_ prefix keeps them out of the
// library users' way (they were static before the split).
// jb_link.c.
void jbl_wake(jb_link_t *l);
void jbl_note_error(jb_link_t *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int jbl_zsend(void *sock, const uint8_t *rid, size_t rid_len, const jb_bytes_t *hdr,
              const jb_bytes_t *pl);
int jbl_send_peer(jb_link_t *l, int pi, const jb_bytes_t *hdr, const jb_bytes_t *pl);
int jbl_send_ctl(jb_link_t *l, int pi, int type, const char *job, int64_t seq,
                 const char *info);
void jbl_send_hello(jb_link_t *l, int pi, int want);
void jbl_outbox(jb_link_t *l, int pi, int type, const char *job);

// jb_link_producer.c.
void jbl_pjob_free(pjob_t *j);
void jbl_unassign(jb_link_t *l, pjob_t *j, bool remember);
void jbl_producer_pump(jb_link_t *l);
void jbl_producer_on_hello(jb_link_t *l, int pi);
void jbl_producer_on_ack(jb_link_t *l, int pi, const jb_msg_t *m);
void jbl_producer_on_done(jb_link_t *l, int pi, const jb_msg_t *m, char *done_id);
void jbl_producer_on_release(jb_link_t *l, int pi, const jb_msg_t *m);

// jb_link_consumer.c.
void jbl_consumer_on_dead(jb_link_t *l, int pi);
void jbl_consumer_on_data(jb_link_t *l, int pi, jb_msg_t *m);
void jbl_refused_data(jb_link_t *l, int pi, const jb_msg_t *bad, const jb_err_t *why);
void jbl_consumer_void_preloaded(jb_link_t *l, int pi, const char *name, const char *epoch);
void jbl_consumer_on_replaced(jb_link_t *l, int pi, bool renamed);
void jbl_consumer_on_cancel(jb_link_t *l, int pi, const jb_msg_t *m);
int64_t jbl_my_credit(const jb_link_t *l);

// jb_link_status.c.
char *jbl_status_text(jb_link_t *l);

#endif
