// jb_link_status.c: the STATUS reply, stats, and querying another link's status.
// See jb_link.h and docs/reliability.md; the shared state: jb_link_private.h.
#include "jb_link_private.h"

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
    json_object_set_new(o, "credit", json_integer(jbl_my_credit(l)));
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
char *jbl_status_text(jb_link_t *l) {
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

char *jb_link_status_json(jb_link_t *l) { return jbl_status_text(l); }

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
    if (jbl_zsend(s, NULL, 0, &hdr, &pl)) {
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
