// jb_link_consumer.c: the consumer role: data intake, ownership, voiding, take-over, credit,
// CANCEL handling, and its API (recv, done, release, pause, preload, owner).
// See jb_link.h and docs/reliability.md; the shared state: jb_link_private.h.
#include "jb_link_private.h"

// ---------------------------------------------------------------- consumer (I/O thread)

static void remove_cjob(jb_link_t *l, cjob_t *c) {
    for (cjob_t **p = &l->cjobs; *p; p = &(*p)->next)
        if (*p == c) {
            *p = c->next;
            free(c);
            return;
        }
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
    jbl_send_hello(l, q, 0);   // makes q resend its jobs for us from seq 0
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

void jbl_consumer_on_dead(jb_link_t *l, int pi) {
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
void jbl_consumer_on_data(jb_link_t *l, int pi, jb_msg_t *m) {
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
        // A job id used again (a resubmission, or a resend whose DONE was lost): it is
        // done, and nothing is made again. Said once a submission (seq 0): a user who
        // sent the same job again waits for output that will not come.
        if (m->seq == 0)
            jb_log(JB_WARN, "link %s: job=%s from %s is already done here: answered DONE, "
                   "nothing made again (a new job needs another id: another seed or --id)",
                   l->name, m->job_id, peer_label(p));
        jbl_send_ctl(l, pi, JB_MSG_ACK, m->job_id, m->seq, NULL);
        jbl_send_ctl(l, pi, JB_MSG_DONE, m->job_id, -1, NULL);
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
                jbl_send_hello(l, pi, 0);   // resend from seq 0 once the stage dropped the old
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
            jbl_send_ctl(l, pi, JB_MSG_ACK, m->job_id, m->seq, NULL);
            l->st.dups++;
            return;
        }
    }
    if (m->seq < c->next_seq) {
        jbl_send_ctl(l, pi, JB_MSG_ACK, m->job_id, m->seq, NULL);
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
            jbl_note_error(l, "job %s seq %lld not accepted: %s", id, (long long)seq, err.msg);
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
    jbl_send_ctl(l, pi, JB_MSG_ACK, q->msg.job_id, q->msg.seq, NULL);
}

// A data message of a live producer's job that this consumer cannot take (malformed, over
// the job's bounds): dropped unacked, its producer would resend it forever and the job
// would never end. It stands instead as an ERROR of the job at the same seq (wire.md 8.3):
// taken, persisted and acked like the message, so the stage fails the job (an error record
// at the decoder, DONE upstream).
void jbl_refused_data(jb_link_t *l, int pi, const jb_msg_t *bad, const jb_err_t *why) {
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
    if (jb_msg_set_text(&e, text, &err) == 0) jbl_consumer_on_data(l, pi, &e);
    jb_msg_clear(&e);
}

// HELLO of producer pi (name, run epoch), not renamed.
void jbl_consumer_void_preloaded(jb_link_t *l, int pi, const char *name, const char *epoch) {
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
void jbl_consumer_on_replaced(jb_link_t *l, int pi, bool renamed) {
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

// CANCEL from producer pi.
void jbl_consumer_on_cancel(jb_link_t *l, int pi, const jb_msg_t *m) {
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

int64_t jbl_my_credit(const jb_link_t *l) {
    if (l->o.role != JB_LINK_CONSUMER || l->paused || l->qbytes >= l->o.credit_bytes) return 0;
    int c = l->o.credit - l->qlen;
    return c > 0 ? c : 0;
}

// ---------------------------------------------------------------- API (consumer)

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
    int before = jbl_my_credit(l);
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
        jbl_wake(l);
    }
    return JB_RECV_MSG;
}

int jb_link_done(jb_link_t *l, const char *job_id) {
    pthread_mutex_lock(&l->mu);
    cjob_t *c = find_cjob(l, job_id);
    if (c) {
        for (int i = 0; i < MAX_PEERS; i++)
            if (c->senders >> i & 1) {
                jbl_outbox(l, i, JB_MSG_DONE, job_id);
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
    jbl_wake(l);
    return 0;
}

int jb_link_release(jb_link_t *l, const char *job_id) {
    pthread_mutex_lock(&l->mu);
    cjob_t *c = find_cjob(l, job_id);
    if (c) {
        if (c->owner >= 0) jbl_outbox(l, c->owner, JB_MSG_RELEASE, job_id);
        remove_cjob(l, c);
    }
    ring_add(l->rel_ring, &l->n_rel, job_id);
    pthread_mutex_unlock(&l->mu);
    jbl_wake(l);
    return 0;
}

void jb_link_pause(jb_link_t *l) {
    pthread_mutex_lock(&l->mu);
    l->paused = true;
    for (int i = 0; i < MAX_PEERS; i++)
        if (l->peers[i].used && l->peers[i].alive) l->peers[i].last_sent = 0;   // tell now
    pthread_mutex_unlock(&l->mu);
    jbl_wake(l);
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
