// jb_link_producer.c: the producer role: retention, assignment, the pump, reassign/unassign,
// ACK/DONE/RELEASE handling, and its API (send, cancel, flush).
// See jb_link.h and docs/reliability.md; the shared state: jb_link_private.h.
#include "jb_link_private.h"

// ---------------------------------------------------------------- producer (I/O thread)

void jbl_pjob_free(pjob_t *j) {
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
            jbl_pjob_free(j);
            return;
        }
}

// Takes a job from its consumer (death or RELEASE): resent from seq 0 to another.
void jbl_unassign(jb_link_t *l, pjob_t *j, bool remember) {
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

void jbl_producer_pump(jb_link_t *l) {
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
            jbl_unassign(l, j, true);
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
            if (jbl_send_peer(l, j->peer, &j->m[j->n - 1].hdr, &j->m[j->n - 1].pl) == 0) {
                l->st.resent++;
                j->last_tx = t;
            }
        }
        while (j->sent < j->n && p->credit - unacked[j->peer] > 0) {
            if (j->sent == 0 && j->recancel && !(j->recancelled >> j->peer & 1)) {
                jbl_send_ctl(l, j->peer, JB_MSG_CANCEL, j->id, -1, NULL);   // before seq 0
                j->recancelled |= UINT64_C(1) << j->peer;
                l->st.cancels_tx++;
            }
            if (jbl_send_peer(l, j->peer, &j->m[j->sent].hdr, &j->m[j->sent].pl)) break;
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

void jbl_producer_on_hello(jb_link_t *l, int pi) {
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
                jbl_send_ctl(l, pi, JB_MSG_CANCEL, j->id, -1, NULL);
                l->st.cancels_tx++;
                memmove(j->prev[i], j->prev[i + 1], (size_t)(j->n_prev - i - 1) * NAME_LEN);
                j->n_prev--;
                break;
            }
    }
}

// ACK from consumer pi (with its credit).
void jbl_producer_on_ack(jb_link_t *l, int pi, const jb_msg_t *m) {
    if (m->credit >= 0) l->peers[pi].credit = m->credit;
    l->st.acks_rx++;
    pjob_t *j = find_pjob(l, m->job_id);
    if (j && j->peer == pi && m->seq >= j->acked && m->seq < j->sent) {
        j->acked = (int)m->seq + 1;
        pthread_cond_broadcast(&l->cv);
    }
}

// DONE from consumer pi: the job is finished; its id goes to done_id for on_done.
void jbl_producer_on_done(jb_link_t *l, int pi, const jb_msg_t *m, char *done_id) {
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
void jbl_producer_on_release(jb_link_t *l, int pi, const jb_msg_t *m) {
    l->st.releases_rx++;
    pjob_t *j = find_pjob(l, m->job_id);
    if (j && j->peer == pi) {
        jb_log(JB_INFO, "link %s: job=%s handed back by %s", l->name, j->id, l->peers[pi].name);
        jbl_unassign(l, j, false);
        j->released_by = pi;
    }
}

// ---------------------------------------------------------------- API (producer)

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
    jbl_wake(l);
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
            jbl_outbox(l, j->peer, JB_MSG_CANCEL, job_id);
            l->st.cancels_tx++;
        }
        if (!in_ring(l->cancel_ring, l->n_cancel, job_id))
            ring_add(l->cancel_ring, &l->n_cancel, job_id);
        unlink_pjob(l, j);
        pthread_cond_broadcast(&l->cv);
    }
    pthread_mutex_unlock(&l->mu);
    jbl_wake(l);
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
