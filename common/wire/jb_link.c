// jb_link.c: open/close, the I/O thread (receiving, heartbeats, the dispatcher of a received
// message), peers, sending.
// See jb_link.h and docs/reliability.md; the shared state: jb_link_private.h.
#include "jb_link_private.h"

#include <sys/socket.h>
#include <sys/un.h>

void jb_link_default_opts(jb_link_opts_t *o) {
    memset(o, 0, sizeof *o);
    o->role = JB_LINK_CONSUMER;
    o->heartbeat_ms = 1000;
    o->peer_timeout_ms = 5000;
    o->credit = 16;
    o->backlog = 16;
    o->codebook = -1;
    o->credit_bytes = JB_LINK_CREDIT_BYTES;
    o->send_timeout_ms = -1;
}

const char *jb_link_address(const jb_link_t *l) { return l->address[0] ? l->address : l->spec; }

const char *jb_link_name(const jb_link_t *l) { return l->name; }

void jbl_wake(jb_link_t *l) {
    char c = 1;
    ssize_t r = write(l->wake[1], &c, 1);
    (void)r;   // a full pipe already wakes the thread
}

// Records the last error for status (lock held).
void jbl_note_error(jb_link_t *l, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(l->last_error, sizeof l->last_error, fmt, ap);
    va_end(ap);
    l->last_error_ms = now_ms();
}

// ---------------------------------------------------------------- sending (I/O thread)

int jbl_zsend(void *sock, const uint8_t *rid, size_t rid_len, const jb_bytes_t *hdr,
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

int jbl_send_peer(jb_link_t *l, int pi, const jb_bytes_t *hdr, const jb_bytes_t *pl) {
    peer_t *p = &l->peers[pi];
    void *sock = p->sock < 0 ? l->router : l->dealer[p->sock];
    if (jbl_zsend(sock, p->sock < 0 ? p->rid : NULL, p->rid_len, hdr, pl)) return -1;
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
    if (rc) jbl_note_error(l, "encoding %s: %s", jb_msg_type_name(type), err.msg);
    return rc;
}

int jbl_send_ctl(jb_link_t *l, int pi, int type, const char *job, int64_t seq,
                 const char *info) {
    int64_t credit = (type == JB_MSG_ACK || type == JB_MSG_HEARTBEAT || type == JB_MSG_HELLO) &&
                     l->o.role == JB_LINK_CONSUMER ? jbl_my_credit(l) : -1;
    if (enc_ctl(l, &l->ehdr, type, job, seq, credit, info)) return -1;
    return jbl_send_peer(l, pi, &l->ehdr, NULL);
}

void jbl_send_hello(jb_link_t *l, int pi, int want) {
    json_t *o = json_pack("{s:s,s:s,s:s,s:i,s:s}", "name", l->name, "role",
                          role_name(l->o.role), "stage", l->stage, "want", want, "epoch",
                          l->epoch);
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (s) jbl_send_ctl(l, pi, JB_MSG_HELLO, NULL, -1, s);
    free(s);
    l->peers[pi].last_hello = now_ms();
}

// Queues a control message for the I/O thread (lock held).
void jbl_outbox(jb_link_t *l, int pi, int type, const char *job) {
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

static void reply_raw(jb_link_t *l, void *sock, const uint8_t *rid, size_t rid_len,
                      jb_bytes_t *hdr) {
    jbl_zsend(sock, rid, rid_len, hdr, NULL);
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
    char *s = jbl_status_text(l);
    pthread_mutex_lock(&l->mu);
    jb_bytes_t hb = {0};
    if (s && !enc_ctl(l, &hb, JB_MSG_STATUS, NULL, -1, -1, s))
        reply_raw(l, sock, rid, rid_len, &hb);
    jb_bytes_free(&hb);
    free(s);
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
            if (j->peer == pi) jbl_unassign(l, j, false);
    }
    if (l->o.role == JB_LINK_CONSUMER && epoch && !renamed)
        jbl_consumer_void_preloaded(l, pi, name, epoch);
    if ((renamed || restarted) && l->o.role == JB_LINK_CONSUMER)
        jbl_consumer_on_replaced(l, pi, renamed);
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
    if (want) jbl_send_hello(l, pi, 0);
    if (l->o.role == JB_LINK_PRODUCER) jbl_producer_on_hello(l, pi);
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
        int64_t cr = l->o.role == JB_LINK_CONSUMER ? jbl_my_credit(l) : -1;
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
        jbl_send_hello(l, pi, 1);
    }
}

static void on_heartbeat(peer_t *p, const jb_msg_t *m) {
    if (m->credit >= 0) p->credit = m->credit;
    free(p->info);
    p->info = m->text ? strdup(m->text) : NULL;
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
        jbl_note_error(l, "from %s: %s", who, err.msg);
        jb_log(JB_WARN, "link %s: rejected a message from %s: %s", l->name, who, err.msg);
        jbl_refused_data(l, pi, &m, &err);
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
    case JB_MSG_ACK: if (!producer) goto bad; jbl_producer_on_ack(l, pi, &m); break;
    case JB_MSG_DONE: if (!producer) goto bad; jbl_producer_on_done(l, pi, &m, done_id); break;
    case JB_MSG_RELEASE: if (!producer) goto bad; jbl_producer_on_release(l, pi, &m); break;
    case JB_MSG_CANCEL: if (!consumer) goto bad; jbl_consumer_on_cancel(l, pi, &m); break;
    case JB_MSG_JOB:
    case JB_MSG_CODES:
    case JB_MSG_END:
    case JB_MSG_ERROR:
    case JB_MSG_ALIGN:
        if (!consumer) goto bad;
        jbl_consumer_on_data(l, pi, &m);
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
            char who[160];   // its name when it said hello, else its routing id; the address
            int pi = rid ? find_rid(l, rid, rid_len) : -1;
            if (rid || from) peer_who(l, pi, sock_i, rid, rid_len, from, who, sizeof who);
            else snprintf(who, sizeof who, "a peer");
            jb_log(JB_WARN, "link %s: a message of %d part%s from %s dropped (expected header, "
                   "payload)", l->name, n - base, n - base == 1 ? "" : "s", who);
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
                jbl_send_hello(l, i, 1);
                if (p->hello_gap < 8 * (int64_t)l->o.heartbeat_ms) p->hello_gap *= 2;
            }
            continue;
        }
        if (t - p->last_seen > l->o.peer_timeout_ms) {
            p->alive = false;
            jb_log(JB_WARN, "link %s: %s %s silent for %lld ms: dead", l->name, p->role,
                   peer_label(p), (long long)(t - p->last_seen));
            if (l->o.role == JB_LINK_CONSUMER) jbl_consumer_on_dead(l, i);
            continue;
        }
        if (t - p->last_sent >= l->o.heartbeat_ms) {
            char info[128];
            int jobs = 0, backlog = 0;
            for (pjob_t *j = l->pjobs; j; j = j->next, jobs++) backlog += j->n - j->sent;
            for (cjob_t *c = l->cjobs; c; c = c->next) jobs++;
            snprintf(info, sizeof info, "{\"jobs\":%d,\"queue\":%d,\"backlog\":%d}", jobs,
                     l->qlen, backlog);
            jbl_send_ctl(l, i, JB_MSG_HEARTBEAT, NULL, -1, info);
        }
    }
    while (l->obox) {
        obox_t *b = l->obox;
        if (b->peer >= 0 && l->peers[b->peer].used) jbl_send_peer(l, b->peer, &b->hdr, NULL);
        l->obox = b->next;
        jb_bytes_free(&b->hdr);
        free(b);
    }
    if (l->o.role == JB_LINK_PRODUCER) jbl_producer_pump(l);
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


// ZeroMQ binds an ipc:// path by replacing whatever socket file is there, so a second
// instance would take a live instance's endpoint silently (over tcp the bind fails with
// EADDRINUSE). A path that accepts a connection is in use; a stale file is replaced.
static int ipc_in_use(const char *path) {
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path) return 0;
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return 0;
    int busy = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(fd);
    return busy;
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
    if (bind && !strncmp(addr, "ipc://", 6) && addr[6] != '@' && ipc_in_use(addr + 6))
        return jb_err_set(err, JB_EUNAVAIL, "%s: cannot bind: %s is in use (a process listens "
                          "there)", spec, addr + 6);
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
        jbl_pjob_free(j);
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
        jbl_wake(l);
        pthread_join(l->th, NULL);
        // What libzmq still holds for sending gets the rest of the time.
        int linger = timeout_ms > 0 ? timeout_ms : 0;
        for (int i = 0; i < l->n_dealers; i++)
            zmq_setsockopt(l->dealer[i], ZMQ_LINGER, &linger, sizeof linger);
        if (l->router) zmq_setsockopt(l->router, ZMQ_LINGER, &linger, sizeof linger);
    }
    free_all(l);
}
