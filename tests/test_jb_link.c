// test_jb_link.c: the reliable link (common/jb_link.h) in-process over ipc:// in a
// temporary directory, with short heartbeats: credit, job affinity, acks and
// retention until DONE, reassignment of a silent consumer's jobs, CANCEL to a returning
// consumer (a child process stopped with SIGSTOP and continued), RELEASE, duplicates
// from two producers, take-over when a job's producer dies, garbage dropped, status
// reply, a bounded send that blocks and unblocks (and honours the stop flag).
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#include "jb_link.h"
#include "jb_log.h"
#include "jb_test.h"
#include "jb_wire.h"

// Heartbeat and peer timeout (ms). Under valgrind (JB_TEST_VALGRIND, ~30x slower) a
// busy machine can starve an I/O thread for longer than 300 ms, which would declare a
// healthy peer dead mid-check: both scale by 4 there.
static int HB = 40, TIMEOUT = 300;

static char g_dir[256];
static int g_n;

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) && errno == EINTR) {}
}

static const char *ep(const char *name) {
    static char buf[8][320];
    char *b = buf[g_n++ % 8];
    snprintf(b, 320, "ipc://%s/%s", g_dir, name);
    return b;
}

// on_done hook: records the job ids reported DONE.
typedef struct {
    pthread_mutex_t mu;
    char ids[32][64];
    int n;
} done_log_t;

static void on_done(void *user, const char *id) {
    done_log_t *d = user;
    pthread_mutex_lock(&d->mu);
    if (d->n < 32) snprintf(d->ids[d->n++], 64, "%s", id);
    pthread_mutex_unlock(&d->mu);
}

static int done_count(done_log_t *d, const char *id) {
    pthread_mutex_lock(&d->mu);
    int k = 0;
    for (int i = 0; i < d->n; i++) k += !strcmp(d->ids[i], id);
    pthread_mutex_unlock(&d->mu);
    return k;
}

static jb_link_t *open_link(const char *spec, jb_link_role_t role, const char *name, int credit,
                            int backlog, done_log_t *d) {
    jb_link_opts_t o;
    jb_link_default_opts(&o);
    o.role = role;
    o.name = name;
    o.stage = "test";
    o.heartbeat_ms = HB;
    o.peer_timeout_ms = TIMEOUT;
    if (credit) o.credit = credit;
    if (backlog) o.backlog = backlog;
    if (d) {
        o.on_done = on_done;
        o.done_user = d;
    }
    jb_err_t err = {0};
    jb_link_t *l = jb_link_open(spec, &o, &err);
    if (!l) printf("  open %s: %s\n", spec, err.msg);
    return l;
}

static int send_job(jb_link_t *p, const char *id, int n_msgs) {
    jb_err_t err = {0};
    for (int i = 0; i < n_msgs; i++) {
        jb_msg_t m;
        jb_msg_init(&m);
        m.type = i == 0 ? JB_MSG_JOB : i == n_msgs - 1 ? JB_MSG_END : JB_MSG_CODES;
        int rc = jb_msg_set_job_id(&m, id, &err);
        if (m.type == JB_MSG_JOB) rc = rc || jb_msg_set_spec(&m, "{}", &err);
        if (m.type == JB_MSG_CODES) {
            int32_t c[2] = {i, i + 1};
            m.level = 0;
            m.offset = 2 * (i - 1);
            rc = rc || jb_msg_set_codes(&m, c, 1, 2, &err);
        }
        rc = rc || jb_link_send(p, &m, &err);
        jb_msg_clear(&m);
        if (rc) {
            printf("  send %s: %s\n", id, err.msg);
            return -1;
        }
    }
    return 0;
}

// Receives until want messages came or ms passed. Records (job, seq, type) strings.
typedef struct {
    char job[64];
    int64_t seq;
    int type;
} got_t;

static int recv_n(jb_link_t *c, got_t *g, int cap, int want, int ms) {
    int n = 0;
    int64_t end = now_ms() + ms;
    jb_msg_t m;
    jb_msg_init(&m);
    while (n < want && now_ms() < end) {
        jb_err_t err = {0};
        if (jb_link_recv(c, &m, 20, &err) != JB_RECV_MSG) continue;
        if (n < cap) {
            snprintf(g[n].job, 64, "%s", m.job_id);
            g[n].seq = m.seq;
            g[n].type = m.type;
        }
        n++;
    }
    jb_msg_clear(&m);
    return n;
}

static int wait_until(int (*cond)(void *), void *arg, int ms) {
    int64_t end = now_ms() + ms;
    while (now_ms() < end) {
        if (cond(arg)) return 1;
        sleep_ms(10);
    }
    return cond(arg);
}

static int peers_alive_2(void *a) {
    jb_link_stats_t st;
    jb_link_stats(a, &st);
    return st.peers_alive >= 2;
}
static int peers_alive_1(void *a) {
    jb_link_stats_t st;
    jb_link_stats(a, &st);
    return st.peers_alive >= 1;
}

// ---------------------------------------------------------------- tests

static void test_credit_affinity_acks_done(void) {
    done_log_t d = {.mu = PTHREAD_MUTEX_INITIALIZER};
    const char *pe = ep("p1");
    char at[400];
    snprintf(at, sizeof at, "@%s", pe);
    jb_link_t *p = open_link(at, JB_LINK_PRODUCER, "prod", 0, 0, &d);
    snprintf(at, sizeof at, ">%s", pe);
    jb_link_t *c1 = open_link(at, JB_LINK_CONSUMER, "c1", 3, 0, NULL);
    jb_link_t *c2 = open_link(at, JB_LINK_CONSUMER, "c2", 3, 0, NULL);
    JB_CHECK(p && c1 && c2, "links open");
    if (!p || !c1 || !c2) goto out;
    JB_CHECK(wait_until(peers_alive_2, p, 2000), "producer sees both consumers");
    // Credit: 4 jobs of 4 messages; nobody reads: each consumer gets at most its credit.
    const char *jobs[4] = {"ja", "jb", "jc", "jd"};
    for (int i = 0; i < 4; i++) send_job(p, jobs[i], 4);
    // Settled once both consumers hold work and nothing is on the way: what they hold
    // plus what waits adds up to 16 (under valgrind that can take longer than 300 ms).
    jb_link_stats_t s1, s2, sp;
    int64_t settle = now_ms() + 5000;
    sleep_ms(200);
    do {
        sleep_ms(100);
        jb_link_stats(c1, &s1);
        jb_link_stats(c2, &s2);
        jb_link_stats(p, &sp);
    } while ((sp.backlog != 16 - s1.queue - s2.queue || !s1.queue || !s2.queue) &&
             now_ms() < settle);
    JB_CHECK(s1.queue <= 3 && s2.queue <= 3, "credit respected: queues %d, %d <= 3", s1.queue,
             s2.queue);
    JB_CHECK(s1.queue >= 1 && s2.queue >= 1, "both consumers got work (%d, %d)", s1.queue,
             s2.queue);
    JB_CHECK(sp.backlog == 16 - s1.queue - s2.queue,
             "the rest waits at the producer (%d, queues %d + %d, resent %lld, reassigned "
             "%lld)", sp.backlog, s1.queue, s2.queue, (long long)sp.resent,
             (long long)sp.reassigned);
    // Read everything: affinity (each job on one consumer), order, both busy.
    got_t g1[32], g2[32];
    int n1 = 0, n2 = 0;
    int64_t end = now_ms() + 3000;
    while (n1 + n2 < 16 && now_ms() < end) {
        n1 += recv_n(c1, g1 + n1, 32 - n1, 16, 20);
        n2 += recv_n(c2, g2 + n2, 32 - n2, 16, 20);
    }
    JB_CHECK(n1 + n2 == 16, "all 16 messages delivered once (%d + %d)", n1, n2);
    int where[4] = {0, 0, 0, 0}, ok_order = 1;
    int64_t next[4] = {0, 0, 0, 0};
    for (int k = 0; k < n1 + n2; k++) {
        got_t *g = k < n1 ? &g1[k] : &g2[k - n1];
        int who = k < n1 ? 1 : 2;
        for (int i = 0; i < 4; i++)
            if (!strcmp(g->job, jobs[i])) {
                if (where[i] && where[i] != who) where[i] = -1;
                else if (!where[i]) where[i] = who;
                if (g->seq != next[i]++) ok_order = 0;
            }
    }
    JB_CHECK(where[0] > 0 && where[1] > 0 && where[2] > 0 && where[3] > 0,
             "job affinity: every job on one consumer (%d %d %d %d)", where[0], where[1],
             where[2], where[3]);
    JB_CHECK(ok_order, "each job's messages in seq order 0, 1, 2, 3");
    JB_CHECK(n1 >= 4 && n2 >= 4, "both consumers got jobs (%d, %d messages)", n1, n2);
    jb_err_t err = {0};
    JB_CHECK(jb_link_flush(p, 2000, 0, &err) == 0, "every message acked (%s)", err.msg);
    jb_link_stats(p, &sp);
    JB_CHECK(sp.jobs == 4 && sp.retained_bytes > 0, "retained until DONE (%d jobs, %lld bytes)",
             sp.jobs, (long long)sp.retained_bytes);
    JB_CHECK(jb_link_flush(p, 150, 1, &err) == -1 && err.code == JB_EUNAVAIL,
             "flush for DONE times out while jobs are open");
    // DONE frees retention and reaches the hook.
    for (int i = 0; i < 4; i++) jb_link_done(where[i] == 1 ? c1 : c2, jobs[i]);
    JB_CHECK(jb_link_flush(p, 2000, 1, &err) == 0, "DONE of every job reaches the producer");
    jb_link_stats(p, &sp);
    JB_CHECK(sp.jobs == 0 && sp.retained_bytes == 0, "nothing retained after DONE");
    for (int i = 0; i < 50 && d.n < 4; i++) sleep_ms(10);
    JB_CHECK(done_count(&d, "ja") == 1 && done_count(&d, "jd") == 1, "on_done called per job");
    // Status reply.
    char *info = NULL;
    JB_CHECK(jb_link_query_status(pe, 2000, &info, &err) == 0, "status reply (%s)", err.msg);
    json_t *o = info ? json_loads(info, 0, NULL) : NULL;
    JB_CHECK(o && !strcmp(json_string_value(json_object_get(o, "instance")), "prod") &&
                 !strcmp(json_string_value(json_object_get(o, "role")), "producer"),
             "status names the instance and role");
    json_t *peers = json_object_get(o, "peers");
    int seen = 0;
    for (size_t i = 0; i < json_array_size(peers); i++) {
        const char *nm = json_string_value(json_object_get(json_array_get(peers, i), "name"));
        seen += nm && (!strcmp(nm, "c1") || !strcmp(nm, "c2"));
    }
    JB_CHECK(seen == 2, "status lists both consumers as peers");
    JB_CHECK(json_integer_value(json_object_get(json_object_get(o, "stats"), "done_rx")) == 4,
             "status counts 4 DONE");
    json_decref(o);
    free(info);
out:
    jb_link_close(&c1, 0);
    jb_link_close(&c2, 0);
    jb_link_close(&p, 0);
}

// Load balance: jobs go to the consumer holding the fewest of them, not the one with
// the most credit. c1 takes every message off its queue at once (as a stage does long
// before it finishes a job: full credit all along); c2 reads nothing. Six jobs sent one
// after another split 3 and 3 (by credit alone c1 would get five or six).
static void test_balance_by_jobs(void) {
    const char *pe = ep("pb");
    char at[400];
    snprintf(at, sizeof at, "@%s", pe);
    jb_link_t *p = open_link(at, JB_LINK_PRODUCER, "prod", 0, 0, NULL);
    snprintf(at, sizeof at, ">%s", pe);
    jb_link_t *c1 = open_link(at, JB_LINK_CONSUMER, "c1", 16, 0, NULL);
    jb_link_t *c2 = open_link(at, JB_LINK_CONSUMER, "c2", 16, 0, NULL);
    JB_CHECK(p && c1 && c2, "balance: links open");
    if (!p || !c1 || !c2) goto out;
    JB_CHECK(wait_until(peers_alive_2, p, 2000), "balance: producer sees both consumers");
    got_t g1[32];
    int n1 = 0, acked = 1;
    for (int k = 0; k < 6; k++) {
        char id[16];
        snprintf(id, sizeof id, "b%d", k);
        send_job(p, id, 2);
        // Until every message is acked, c1 reading what it gets meanwhile.
        jb_err_t err = {0};
        int64_t end = now_ms() + 5000;
        int ok = 0;
        while (!ok && now_ms() < end) {
            n1 += recv_n(c1, g1 + n1, 32 - n1, 32, 20);
            ok = jb_link_flush(p, 20, 0, &err) == 0;
        }
        acked = acked && ok;
        n1 += recv_n(c1, g1 + n1, 32 - n1, 32, 20);   // c1 empties its queue again
    }
    JB_CHECK(acked, "balance: every job acked");
    jb_link_stats_t s2;
    jb_link_stats(c2, &s2);
    JB_CHECK(n1 == 6 && s2.queue == 6, "balance: 3 jobs each (c1 read %d messages, c2 holds %d)",
             n1, s2.queue);
out:
    jb_link_close(&c1, 0);
    jb_link_close(&c2, 0);
    jb_link_close(&p, 0);
}

// A consumer in a child process: receives, reports on a pipe, can be SIGSTOPped.
// Writes one line per message: "<type> <job> <seq>\n".
static pid_t spawn_consumer(const char *spec, const char *name, int fd_out) {
    pid_t pid = fork();
    if (pid != 0) return pid;
    jb_link_t *c = open_link(spec, JB_LINK_CONSUMER, name, 16, 0, NULL);
    if (!c) _exit(2);
    jb_msg_t m;
    jb_msg_init(&m);
    for (;;) {
        jb_err_t err = {0};
        if (jb_link_recv(c, &m, 100, &err) != JB_RECV_MSG) continue;
        char line[128];
        int n = snprintf(line, sizeof line, "%s %s %lld\n", jb_msg_type_name(m.type), m.job_id,
                         (long long)m.seq);
        if (write(fd_out, line, (size_t)n) < 0) _exit(3);
    }
}

static void test_silent_consumer_and_return(void) {
    const char *pe = ep("p2");
    char at[400], to[400];
    snprintf(at, sizeof at, "@%s", pe);
    snprintf(to, sizeof to, ">%s", pe);
    int fds[2];
    if (pipe(fds)) return;
    pid_t child = spawn_consumer(to, "c-child", fds[1]);
    close(fds[1]);
    fcntl(fds[0], F_SETFL, O_NONBLOCK);   // every wait below is bounded
    jb_link_t *p = open_link(at, JB_LINK_PRODUCER, "prod2", 0, 0, NULL);
    JB_CHECK(p != NULL, "producer open");
    if (!p) goto out;
    JB_CHECK(wait_until(peers_alive_1, p, 3000), "child consumer joined");
    send_job(p, "js", 3);
    char buf[512] = "";
    ssize_t k = 0;
    int64_t end = now_ms() + 2000;
    while (now_ms() < end) {
        ssize_t r = read(fds[0], buf + k, sizeof buf - 1 - (size_t)k);
        if (r > 0) k += r;
        else sleep_ms(5);
        buf[k] = '\0';
        if (strstr(buf, "end js 2")) break;
    }
    buf[k] = '\0';
    JB_CHECK(strstr(buf, "job js 0") && strstr(buf, "end js 2"), "child got the job");
    kill(child, SIGSTOP);
    jb_link_t *c2 = open_link(to, JB_LINK_CONSUMER, "c-twin", 16, 0, NULL);
    int64_t t0 = now_ms();
    got_t g[8];
    int n = recv_n(c2, g, 8, 3, 3000);
    int64_t dt = now_ms() - t0;
    JB_CHECK(n == 3 && g[0].seq == 0 && g[2].seq == 2 && !strcmp(g[0].job, "js"),
             "silent consumer's job resent whole to its twin (%d messages in %lld ms)", n,
             (long long)dt);
    JB_CHECK(dt >= TIMEOUT / 2, "not before the peer timeout (%lld ms)", (long long)dt);
    // The stopped consumer comes back: its job went elsewhere, so it gets CANCEL.
    kill(child, SIGCONT);
    k = 0;
    buf[0] = '\0';
    end = now_ms() + 3000;
    while (now_ms() < end && !strstr(buf, "cancel js")) {
        ssize_t r = read(fds[0], buf + k, sizeof buf - 1 - (size_t)k);
        if (r > 0) {
            k += r;
            buf[k] = '\0';
        } else {
            sleep_ms(5);
        }
    }
    JB_CHECK(strstr(buf, "cancel js") != NULL, "the returning consumer gets CANCEL of its job");
    jb_link_stats_t st;
    jb_link_stats(p, &st);
    JB_CHECK(st.reassigned >= 1 && st.cancels_tx >= 1, "producer counts reassignment and cancel");
    jb_link_close(&c2, 0);
    jb_link_close(&p, 0);
out:
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    close(fds[0]);
}

static void test_release(void) {
    const char *pe = ep("p3");
    char at[400], to[400];
    snprintf(at, sizeof at, "@%s", pe);
    snprintf(to, sizeof to, ">%s", pe);
    jb_link_t *p = open_link(at, JB_LINK_PRODUCER, "prod3", 0, 0, NULL);
    jb_link_t *c1 = open_link(to, JB_LINK_CONSUMER, "r1", 16, 0, NULL);
    JB_CHECK(p && c1, "links open");
    if (!p || !c1) goto out;
    JB_CHECK(wait_until(peers_alive_1, p, 2000), "consumer joined");
    send_job(p, "rel", 3);
    got_t g[8];
    JB_CHECK(recv_n(c1, g, 8, 3, 2000) == 3, "first consumer got the job");
    jb_link_t *c2 = open_link(to, JB_LINK_CONSUMER, "r2", 16, 0, NULL);
    JB_CHECK(wait_until(peers_alive_2, p, 2000), "second consumer joined");
    jb_link_pause(c1);
    sleep_ms(2 * HB);
    int64_t t0 = now_ms();
    jb_link_release(c1, "rel");
    int n = recv_n(c2, g, 8, 3, 2000);
    int64_t dt = now_ms() - t0;
    JB_CHECK(n == 3 && g[0].seq == 0, "released job resent whole to the other consumer");
    JB_CHECK(dt < TIMEOUT, "at once, before any timeout (%lld ms)", (long long)dt);
    jb_link_close(&c2, 0);
out:
    jb_link_close(&c1, 0);
    jb_link_close(&p, 0);
}

// Two producers send the same job (after a partition both worked on it): one copy is
// processed, DONE goes to both. Then a producer that dies mid-job: the other's copy
// takes over (CANCEL delivered, then the job from seq 0).
static void test_duplicates_and_takeover(void) {
    done_log_t d1 = {.mu = PTHREAD_MUTEX_INITIALIZER}, d2 = {.mu = PTHREAD_MUTEX_INITIALIZER};
    const char *e1 = ep("q1"), *e2 = ep("q2");
    char a1[400], a2[400], both[820];
    snprintf(a1, sizeof a1, "@%s", e1);
    snprintf(a2, sizeof a2, "@%s", e2);
    snprintf(both, sizeof both, ">%s,>%s", e1, e2);
    jb_link_t *p1 = open_link(a1, JB_LINK_PRODUCER, "up1", 0, 0, &d1);
    jb_link_t *p2 = open_link(a2, JB_LINK_PRODUCER, "up2", 0, 0, &d2);
    jb_link_t *c = open_link(both, JB_LINK_CONSUMER, "down", 16, 0, NULL);
    JB_CHECK(p1 && p2 && c, "links open");
    if (!p1 || !p2 || !c) goto out;
    JB_CHECK(wait_until(peers_alive_1, p1, 2000) && wait_until(peers_alive_1, p2, 2000),
             "consumer connected to both producers");
    send_job(p1, "dup", 3);
    got_t g[16];
    int n = recv_n(c, g, 16, 3, 2000);
    send_job(p2, "dup", 3);
    n += recv_n(c, g + n, 16 - n, 6, 400);
    JB_CHECK(n == 3, "a job from two producers is delivered once (%d messages)", n);
    jb_err_t err = {0};
    JB_CHECK(jb_link_flush(p2, 2000, 0, &err) == 0, "the duplicate copy is acked");
    jb_link_done(c, "dup");
    JB_CHECK(jb_link_flush(p1, 2000, 1, &err) == 0 && jb_link_flush(p2, 2000, 1, &err) == 0,
             "DONE goes to both producers");
    for (int i = 0; i < 50 && done_count(&d1, "dup") + done_count(&d2, "dup") < 2; i++)
        sleep_ms(10);   // the hook runs on the I/O thread just after the job is forgotten
    JB_CHECK(done_count(&d1, "dup") == 1 && done_count(&d2, "dup") == 1, "both hooks called");
    // Take-over: p1 sends 2 of 3 messages, p2 the whole job, then p1 dies.
    send_job(p1, "tk", 2);   // job, end: as if the rest never came
    n = recv_n(c, g, 16, 2, 2000);
    JB_CHECK(n == 2, "first copy's messages delivered");
    send_job(p2, "tk", 3);
    sleep_ms(100);
    jb_link_close(&p1, 0);
    n = recv_n(c, g, 16, 4, 3000);
    JB_CHECK(n == 4 && g[0].type == JB_MSG_CANCEL && !strcmp(g[0].job, "tk") && g[1].seq == 0 &&
                 g[3].seq == 2,
             "producer died: CANCEL, then the other copy from seq 0 (%d messages)", n);
out:
    jb_link_close(&c, 0);
    jb_link_close(&p1, 0);
    jb_link_close(&p2, 0);
}

// A spool in memory: the persist hook appends (job, seq); the stage side clears a job's
// entries when it takes its CANCEL (as the stages and the decoder remove its spool).
typedef struct {
    pthread_mutex_t mu;
    char job[64][JB_WIRE_JOB_ID_MAX + 1];
    int64_t seq[64];
    int n;
} mem_spool_t;

static int mem_persist(void *user, const jb_msg_t *m, jb_err_t *err) {
    (void)err;
    mem_spool_t *sp = user;
    pthread_mutex_lock(&sp->mu);
    if (sp->n < 64) {
        snprintf(sp->job[sp->n], sizeof sp->job[0], "%s", m->job_id);
        sp->seq[sp->n++] = m->seq;
    }
    pthread_mutex_unlock(&sp->mu);
    return 0;
}

static void mem_spool_drop(mem_spool_t *sp, const char *job) {
    pthread_mutex_lock(&sp->mu);
    int k = 0;
    for (int i = 0; i < sp->n; i++)
        if (strcmp(sp->job[i], job)) {
            memmove(sp->job[k], sp->job[i], sizeof sp->job[0]);
            sp->seq[k++] = sp->seq[i];
        }
    sp->n = k;
    pthread_mutex_unlock(&sp->mu);
}

static int peers_alive_0(void *a) {
    jb_link_stats_t st;
    jb_link_stats(a, &st);
    return st.peers_alive == 0;
}

// The soak's spliced spool (issue 18): a job's owner is already declared dead when another
// producer's copy begins. Its seq 0 takes the job over (CANCEL to the stage for the old
// stream); nothing of the new stream may be persisted before the stage took that CANCEL,
// or the stage's removal of the old stream's spool removes the new seq 0 with it (the
// spool then held seq 1.. of a stream with no job message and no producer note).
static void test_takeover_spool_order(void) {
    const char *e1 = ep("t1"), *e2 = ep("t2");
    char a1[400], a2[400], both[820];
    snprintf(a1, sizeof a1, "@%s", e1);
    snprintf(a2, sizeof a2, "@%s", e2);
    snprintf(both, sizeof both, ">%s,>%s", e1, e2);
    mem_spool_t sp = {.mu = PTHREAD_MUTEX_INITIALIZER};
    jb_link_t *p1 = open_link(a1, JB_LINK_PRODUCER, "up1", 0, 0, NULL);
    jb_link_opts_t o;
    jb_link_default_opts(&o);
    o.role = JB_LINK_CONSUMER;
    o.name = "down";
    o.stage = "test";
    o.heartbeat_ms = HB;
    o.peer_timeout_ms = TIMEOUT;
    o.persist = mem_persist;
    o.persist_user = &sp;
    jb_err_t err = {0};
    jb_link_t *c = jb_link_open(both, &o, &err);
    JB_CHECK(p1 && c, "takeover spool: links open (%s)", err.msg);
    jb_link_t *p2 = NULL;
    if (!p1 || !c) goto out;
    JB_CHECK(wait_until(peers_alive_1, c, 2000), "takeover spool: up1 joined");
    send_job(p1, "sp", 2);   // job + one more: the rest never comes
    got_t g[32];
    int n = recv_n(c, g, 32, 2, 2000);
    JB_CHECK(n == 2, "takeover spool: the first copy's 2 messages delivered");
    jb_link_close(&p1, 0);
    JB_CHECK(wait_until(peers_alive_0, c, 5000), "takeover spool: up1 declared dead");
    p2 = open_link(a2, JB_LINK_PRODUCER, "up2", 0, 0, NULL);
    if (!p2) goto out;
    send_job(p2, "sp", 4);
    // The stage side: takes CANCEL (drops the job's spool) and the new stream's 4 messages.
    int got_cancel = 0, m = 0;
    int64_t end = now_ms() + 8000;
    while (m < 4 && now_ms() < end) {
        got_t one;
        if (recv_n(c, &one, 1, 1, 50) != 1 || strcmp(one.job, "sp")) continue;
        if (one.type == JB_MSG_CANCEL) {
            got_cancel++;
            mem_spool_drop(&sp, "sp");
        } else if (got_cancel) {
            g[m++] = one;
        }
    }
    JB_CHECK(got_cancel == 1 && m == 4 && g[0].seq == 0 && g[3].seq == 3,
             "takeover spool: CANCEL, then the new stream from seq 0 (%d cancel, %d messages)",
             got_cancel, m);
    pthread_mutex_lock(&sp.mu);
    int ok = sp.n == 4;
    for (int i = 0; i < sp.n && ok; i++) ok = sp.seq[i] == i;
    JB_CHECK(ok, "takeover spool: the spool holds the new stream whole, seq 0..3 (%d held, "
             "first seq %lld)", sp.n, sp.n ? (long long)sp.seq[0] : -1LL);
    pthread_mutex_unlock(&sp.mu);
out:
    jb_link_close(&c, 0);
    jb_link_close(&p1, 0);
    jb_link_close(&p2, 0);
}

// ---- a producer by hand (a raw ROUTER): what a well-behaved link never sends

typedef struct {
    void *ctx, *router;
    uint8_t rid[256];
    size_t rid_len;
} raw_prod_t;

// Sends one message (header + payload parts) to the consumer; corrupt: flips the payload.
static int raw_send(raw_prod_t *r, jb_msg_t *m, int corrupt) {
    jb_bytes_t h = {0}, pl = {0};
    jb_err_t err = {0};
    int rc = jb_wire_encode(m, &h, &pl, &err);
    if (!rc && corrupt && pl.len > 2)
        for (size_t i = 1; i < pl.len; i++) pl.data[i] ^= 0x5a;
    if (!rc) rc = zmq_send(r->router, r->rid, r->rid_len, ZMQ_SNDMORE) < 0 ||
                  zmq_send(r->router, h.data, h.len, ZMQ_SNDMORE) < 0 ||
                  zmq_send(r->router, pl.len ? (void *)pl.data : "", pl.len, 0) < 0;
    jb_bytes_free(&h);
    jb_bytes_free(&pl);
    return rc;
}

// Receives one message from the consumer within ms (0 when one came), decoded into m.
static int raw_recv(raw_prod_t *r, jb_msg_t *m, int ms) {
    zmq_pollitem_t it = {.socket = r->router, .events = ZMQ_POLLIN};
    if (zmq_poll(&it, 1, ms) <= 0) return -1;
    zmq_msg_t part[3];
    int n = 0, more = 1;
    while (more) {
        zmq_msg_t p;
        zmq_msg_init(&p);
        if (zmq_msg_recv(&p, r->router, 0) < 0) return -1;
        more = zmq_msg_more(&p);
        if (n < 3) part[n++] = p;
        else zmq_msg_close(&p);
    }
    int rc = -1;
    if (n == 3) {
        r->rid_len = zmq_msg_size(&part[0]) < sizeof r->rid ? zmq_msg_size(&part[0]) : 0;
        memcpy(r->rid, zmq_msg_data(&part[0]), r->rid_len);
        jb_err_t err = {0};
        rc = jb_wire_decode(zmq_msg_data(&part[1]), zmq_msg_size(&part[1]),
                            zmq_msg_data(&part[2]), zmq_msg_size(&part[2]), 0, m, &err);
    }
    for (int i = 0; i < n; i++) zmq_msg_close(&part[i]);
    return rc;
}

// Over a link, a data message the consumer refuses (a payload that is not LZ4) is taken
// as an ERROR of its job at its seq: acked (the producer stops resending it) and given to
// the stage, which fails the job. Before, it was dropped unacked: resent forever, the job
// never ended.
static void test_refused_data_fails_job(void) {
    const char *pe = ep("raw");
    char at[400];
    raw_prod_t r = {.ctx = zmq_ctx_new()};
    r.router = zmq_socket(r.ctx, ZMQ_ROUTER);
    snprintf(at, sizeof at, "%s", pe);
    JB_CHECK(r.router && zmq_bind(r.router, at) == 0, "refused: raw producer bound");
    snprintf(at, sizeof at, ">%s", pe);
    jb_link_t *c = open_link(at, JB_LINK_CONSUMER, "down", 16, 0, NULL);
    JB_CHECK(c != NULL, "refused: consumer open");
    if (!c) goto out;
    // The consumer's HELLO, then ours.
    jb_msg_t m;
    jb_msg_init(&m);
    int64_t end = now_ms() + 3000;
    int hello = 0;
    while (!hello && now_ms() < end)
        if (raw_recv(&r, &m, 100) == 0 && m.type == JB_MSG_HELLO) hello = 1;
    JB_CHECK(hello, "refused: the consumer says hello");
    jb_msg_clear(&m);
    jb_msg_init(&m);
    m.type = JB_MSG_HELLO;
    m.credit = -1;
    m.text = strdup("{\"name\":\"rawp\",\"role\":\"producer\",\"stage\":\"test\",\"want\":0,"
                    "\"epoch\":\"e1\"}");
    raw_send(&r, &m, 0);
    jb_msg_clear(&m);
    // seq 0: the job; seq 1: codes with a damaged payload.
    jb_err_t err = {0};
    jb_msg_init(&m);
    m.type = JB_MSG_JOB;
    m.seq = 0;
    jb_msg_set_job_id(&m, "rf", &err);
    jb_msg_set_spec(&m, "{}", &err);
    raw_send(&r, &m, 0);
    jb_msg_clear(&m);
    jb_msg_init(&m);
    m.type = JB_MSG_CODES;
    m.seq = 1;
    m.level = 0;
    m.offset = 0;
    int32_t codes[64];
    for (int i = 0; i < 64; i++) codes[i] = i;
    jb_msg_set_job_id(&m, "rf", &err);
    jb_msg_set_codes(&m, codes, 1, 64, &err);
    raw_send(&r, &m, 1);
    jb_msg_clear(&m);
    got_t g[4];
    int n = recv_n(c, g, 4, 2, 3000);
    JB_CHECK(n == 2 && g[0].type == JB_MSG_JOB && g[1].type == JB_MSG_ERROR && g[1].seq == 1 &&
                 !strcmp(g[1].job, "rf"),
             "refused: the stage gets the job, then an ERROR of it at seq 1 (%d messages)", n);
    int acked1 = 0;
    end = now_ms() + 3000;
    while (!acked1 && now_ms() < end) {
        jb_msg_init(&m);
        if (raw_recv(&r, &m, 100) == 0 && m.type == JB_MSG_ACK && !strcmp(m.job_id, "rf") &&
            m.seq == 1)
            acked1 = 1;
        jb_msg_clear(&m);
    }
    JB_CHECK(acked1, "refused: seq 1 is acked (the producer stops resending it)");
    jb_link_stats_t st;
    jb_link_stats(c, &st);
    JB_CHECK(st.bad >= 1, "refused: counted as bad (%lld)", (long long)st.bad);
out:
    jb_link_close(&c, 0);
    if (r.router) zmq_close(r.router);
    zmq_ctx_term(r.ctx);
}

// A job's owner cancels it (its own producer moved it, e.g. after a healed partition)
// while another producer's copy was held as a duplicate: that copy takes over.
static void test_cancel_hands_to_copy(void) {
    const char *e1 = ep("x1"), *e2 = ep("x2");
    char a1[400], a2[400], both[820];
    snprintf(a1, sizeof a1, "@%s", e1);
    snprintf(a2, sizeof a2, "@%s", e2);
    snprintf(both, sizeof both, ">%s,>%s", e1, e2);
    jb_link_t *p1 = open_link(a1, JB_LINK_PRODUCER, "xp1", 0, 0, NULL);
    jb_link_t *p2 = open_link(a2, JB_LINK_PRODUCER, "xp2", 0, 0, NULL);
    jb_link_t *c = open_link(both, JB_LINK_CONSUMER, "xc", 16, 0, NULL);
    JB_CHECK(p1 && p2 && c, "links open");
    if (!p1 || !p2 || !c) goto out;
    JB_CHECK(wait_until(peers_alive_1, p1, 2000) && wait_until(peers_alive_1, p2, 2000),
             "consumer connected to both producers");
    send_job(p1, "cx", 3);
    got_t g[16];
    int n = recv_n(c, g, 16, 3, 2000);
    send_job(p2, "cx", 3);
    jb_err_t err = {0};
    JB_CHECK(n == 3 && jb_link_flush(p2, 2000, 0, &err) == 0, "second copy held as duplicate");
    jb_link_cancel(p1, "cx");
    n = recv_n(c, g, 16, 4, 2000);
    JB_CHECK(n == 4 && g[0].type == JB_MSG_CANCEL && g[1].seq == 0 && g[1].type == JB_MSG_JOB &&
                 g[3].seq == 2,
             "CANCEL from the owner: the other copy is delivered from seq 0 (%d messages)", n);
    jb_link_done(c, "cx");
    JB_CHECK(jb_link_flush(p2, 2000, 1, &err) == 0, "DONE reaches the new owner");
out:
    jb_link_close(&c, 0);
    jb_link_close(&p1, 0);
    jb_link_close(&p2, 0);
}

// ---- ownership of a preloaded job (spool) across restarts: docs/reliability.md,
// "Ownership of a job across restarts" (the state table) ----

static jb_link_t *open_epoch(const char *spec, jb_link_role_t role, const char *name,
                             const char *epoch) {
    jb_link_opts_t o;
    jb_link_default_opts(&o);
    o.role = role;
    o.name = name;
    o.stage = "test";
    o.epoch = epoch;
    o.heartbeat_ms = HB;
    o.peer_timeout_ms = TIMEOUT;
    jb_err_t err = {0};
    jb_link_t *l = jb_link_open(spec, &o, &err);
    if (!l) printf("  open %s: %s\n", spec, err.msg);
    return l;
}

// A consumer restarted with a spool holds 2 messages of job J (preloaded, from producer
// pre_name run pre_epoch); producer `name` run `epoch` then sends J whole (3 messages).
// Returns the messages delivered as a string: "C" for a CANCEL, else the seq digits.
static void preload_case(const char *tag, const char *pre_name, const char *pre_epoch,
                         const char *name, const char *epoch, int want, char *out, size_t n) {
    const char *pe = ep(tag);
    char at[400], to[400];
    snprintf(at, sizeof at, "@%s", pe);
    snprintf(to, sizeof to, ">%s", pe);
    out[0] = '\0';
    jb_link_t *p = open_epoch(at, JB_LINK_PRODUCER, name, epoch);
    jb_link_t *c = open_epoch(to, JB_LINK_CONSUMER, "pc", NULL);
    jb_err_t err = {0};
    if (!p || !c ||
        jb_link_preload_from(c, "J", 2, pre_name, pre_epoch, &err) ||
        !wait_until(peers_alive_1, p, 2000) || send_job(p, "J", 3)) {
        snprintf(out, n, "setup failed");
        goto out;
    }
    // The expected messages (a CANCEL, handled by the next recv, then the resend), then
    // a few heartbeats more in which nothing else may come.
    got_t g[16];
    int k = recv_n(c, g, 16, want, 10 * TIMEOUT);
    k += recv_n(c, g + k, 16 - k, 16 - k, 3 * HB);
    for (int i = 0; i < k && i < 16 && strlen(out) + 2 < n; i++)
        snprintf(out + strlen(out), n - strlen(out), "%c",
                 g[i].type == JB_MSG_CANCEL ? 'C' : (char)('0' + g[i].seq));
out:
    jb_link_close(&c, 0);
    jb_link_close(&p, 0);
}

static void test_preload_streams(void) {
    char got[64];
    // Same producer, same run: the held messages continue its stream.
    preload_case("pl1", "pA", "E1", "pA", "E1", 1, got, sizeof got);
    JB_CHECK(!strcmp(got, "2"), "preloaded, same producer and run: only seq 2 is new (%s)", got);
    // Another producer: its numbering is another one (issue 18 B: seqs 0-1 were dropped
    // as held and seq 2 appended to the old stream). Void, then its stream from seq 0.
    preload_case("pl2", "pA", "E1", "pB", "E1", 4, got, sizeof got);
    JB_CHECK(!strcmp(got, "C012"), "preloaded, another producer: CANCEL, then seq 0 1 2 (%s)",
             got);
    // The same producer back as another run (restarted): the same.
    preload_case("pl3", "pA", "E1", "pA", "E2", 4, got, sizeof got);
    JB_CHECK(!strcmp(got, "C012"), "preloaded, same producer, another run: CANCEL, 0 1 2 (%s)",
             got);
    // The spool did not say whose stream (an older spool): taken afresh as well.
    preload_case("pl4", NULL, NULL, "pA", "E1", 4, got, sizeof got);
    JB_CHECK(!strcmp(got, "C012"), "preloaded, unknown producer: CANCEL, 0 1 2 (%s)", got);
}

// The preloaded job's producer comes back as another run and never sends the job again
// (it went elsewhere): the held messages are void at once (a CANCEL to the stage),
// instead of a job held at window 0 for ever (issue 18 A/D).
static void test_preload_producer_restarted(void) {
    const char *pe = ep("pr");
    char at[400], to[400];
    snprintf(at, sizeof at, "@%s", pe);
    snprintf(to, sizeof to, ">%s", pe);
    jb_link_t *p = open_epoch(at, JB_LINK_PRODUCER, "pA", "E2");
    jb_link_t *c = open_epoch(to, JB_LINK_CONSUMER, "pc", NULL);
    jb_err_t err = {0};
    JB_CHECK(p && c && !jb_link_preload_from(c, "K", 3, "pA", "E1", &err), "links open");
    if (!p || !c) goto out;
    got_t g[4];
    int n = recv_n(c, g, 4, 1, 4 * TIMEOUT);
    JB_CHECK(n == 1 && g[0].type == JB_MSG_CANCEL && !strcmp(g[0].job, "K"),
             "producer back as another run: CANCEL of its preloaded job (%d)", n);
    // Same run: nothing is voided.
    jb_link_preload_from(c, "K2", 3, "pA", "E2", &err);
    jb_link_close(&p, 0);
    p = open_epoch(at, JB_LINK_PRODUCER, "pA", "E2");
    n = recv_n(c, g, 4, 1, 4 * TIMEOUT);
    JB_CHECK(n == 0, "producer back as the same run: its preloaded job is kept (%d)", n);
out:
    jb_link_close(&c, 0);
    jb_link_close(&p, 0);
}

// Issue 18 A: a consumer killed while holding a job, restarted with its spool (the job
// preloaded), returns after its producer gave the job to another consumer: the
// producer's CANCEL must reach the stage (before: ignored, the job hung at window 0).
static void test_cancel_of_preloaded(void) {
    const char *pe = ep("cp");
    char at[400], to[400];
    snprintf(at, sizeof at, "@%s", pe);
    snprintf(to, sizeof to, ">%s", pe);
    jb_link_t *p = open_epoch(at, JB_LINK_PRODUCER, "cpA", "E1");
    jb_link_t *c1 = open_epoch(to, JB_LINK_CONSUMER, "cc1", NULL), *c2 = NULL;
    JB_CHECK(p && c1, "links open");
    if (!p || !c1) goto out;
    JB_CHECK(wait_until(peers_alive_1, p, 2000), "consumer joined");
    send_job(p, "L", 3);
    got_t g[8];
    int n = recv_n(c1, g, 8, 3, 2000);
    JB_CHECK(n == 3, "job delivered to the first consumer (%d)", n);
    jb_link_close(&c1, 0);   // dies holding it (its spool: 3 messages of cpA run E1)
    c2 = open_epoch(to, JB_LINK_CONSUMER, "cc2", NULL);
    n = c2 ? recv_n(c2, g, 8, 3, 6 * TIMEOUT) : 0;
    JB_CHECK(n == 3 && g[0].seq == 0, "its job went to the other consumer (%d)", n);
    c1 = open_epoch(to, JB_LINK_CONSUMER, "cc1", NULL);   // back, same name and spool
    jb_err_t err = {0};
    JB_CHECK(c1 && !jb_link_preload_from(c1, "L", 3, "cpA", "E1", &err), "restarted");
    n = c1 ? recv_n(c1, g, 8, 1, 4 * TIMEOUT) : 0;
    JB_CHECK(n == 1 && g[0].type == JB_MSG_CANCEL && !strcmp(g[0].job, "L"),
             "the returning consumer's preloaded job is cancelled (%d)", n);
out:
    jb_link_close(&c1, 0);
    jb_link_close(&c2, 0);
    jb_link_close(&p, 0);
}

// The same, when the CANCEL reaches the restarted consumer before the stage has
// preloaded the job (the link is open while the stage replays its spool).
static void test_cancel_before_preload(void) {
    const char *pe = ep("cb");
    char at[400], to[400];
    snprintf(at, sizeof at, "@%s", pe);
    snprintf(to, sizeof to, ">%s", pe);
    jb_link_t *p = open_epoch(at, JB_LINK_PRODUCER, "cbA", "E1");
    jb_link_t *c1 = open_epoch(to, JB_LINK_CONSUMER, "cb1", NULL), *c2 = NULL;
    got_t g[8];
    int n = 0;
    JB_CHECK(p && c1 && wait_until(peers_alive_1, p, 2000), "links open");
    if (!p || !c1) goto out;
    send_job(p, "M", 3);
    n = recv_n(c1, g, 8, 3, 2000);
    jb_link_close(&c1, 0);
    c2 = open_epoch(to, JB_LINK_CONSUMER, "cb2", NULL);
    n = c2 ? recv_n(c2, g, 8, 3, 6 * TIMEOUT) : 0;
    JB_CHECK(n == 3, "the job went to the other consumer (%d)", n);
    c1 = open_epoch(to, JB_LINK_CONSUMER, "cb1", NULL);
    jb_link_stats_t st = {0};
    for (int i = 0; c1 && i < 200 && st.cancels_rx < 1; i++) {
        sleep_ms(10);
        jb_link_stats(c1, &st);
    }
    JB_CHECK(st.cancels_rx == 1, "the CANCEL came before the preload");
    jb_err_t err = {0};
    JB_CHECK(c1 && !jb_link_preload_from(c1, "M", 3, "cbA", "E1", &err), "preloaded after it");
    n = c1 ? recv_n(c1, g, 8, 1, 4 * TIMEOUT) : 0;
    JB_CHECK(n == 1 && g[0].type == JB_MSG_CANCEL && !strcmp(g[0].job, "M"),
             "a job cancelled before its preload is void at once (%d)", n);
out:
    jb_link_close(&c1, 0);
    jb_link_close(&c2, 0);
    jb_link_close(&p, 0);
}

// A persist hook that refuses everything until *ready (a stage replaying its spool).
static int refuse_until(void *user, const jb_msg_t *m, jb_err_t *err) {
    (void)m;
    return *(volatile int *)user ? 0 : jb_err_set(err, JB_EUNAVAIL, "replaying");
}

// Another producer's seq 0 arrives (refused: the stage is replaying) before the job is
// preloaded: the held count must not continue that stream (issue 18 B, the race).
static void test_stream_before_preload(void) {
    const char *pe = ep("sb");
    char at[400], to[400];
    snprintf(at, sizeof at, "@%s", pe);
    snprintf(to, sizeof to, ">%s", pe);
    static volatile int ready;
    ready = 0;
    jb_link_t *p = open_epoch(at, JB_LINK_PRODUCER, "sbB", "E1");
    jb_link_opts_t o;
    jb_link_default_opts(&o);
    o.role = JB_LINK_CONSUMER;
    o.name = "sbc";
    o.stage = "test";
    o.heartbeat_ms = HB;
    o.peer_timeout_ms = TIMEOUT;
    o.persist = refuse_until;
    o.persist_user = (void *)&ready;
    jb_err_t err = {0};
    jb_link_t *c = jb_link_open(to, &o, &err);
    got_t g[16];
    char got[32] = "";
    JB_CHECK(p && c && wait_until(peers_alive_1, p, 2000), "links open");
    if (!p || !c) goto out;
    send_job(p, "N", 3);
    jb_link_stats_t st = {0};
    for (int i = 0; i < 200 && st.jobs < 1; i++) {
        sleep_ms(10);
        jb_link_stats(c, &st);
    }
    JB_CHECK_OK(jb_link_preload_from(c, "N", 2, "sbA", "E1", &err), &err, "preloaded");
    ready = 1;
    int k = recv_n(c, g, 16, 4, 10 * TIMEOUT);
    k += recv_n(c, g + k, 16 - k, 16 - k, 3 * HB);
    for (int i = 0; i < k && i < 16; i++)
        snprintf(got + strlen(got), sizeof got - strlen(got), "%c",
                 g[i].type == JB_MSG_CANCEL ? 'C' : (char)('0' + g[i].seq));
    JB_CHECK(!strcmp(got, "C012"), "a stream begun before the preload: CANCEL, 0 1 2 (%s)", got);
out:
    jb_link_close(&c, 0);
    jb_link_close(&p, 0);
}

// A job finished at its first message (the decoder finds its run directory written):
// the messages of it already queued behind that one are not delivered after
// jb_link_done (before: each started a new job at the decoder, ROOT/<id>.1).
static void test_done_drops_queued(void) {
    const char *pe = ep("dq");
    char at[400], to[400];
    snprintf(at, sizeof at, "@%s", pe);
    snprintf(to, sizeof to, ">%s", pe);
    jb_link_t *p = open_epoch(at, JB_LINK_PRODUCER, "dqP", "E1");
    jb_link_t *c = open_epoch(to, JB_LINK_CONSUMER, "dqC", NULL);
    JB_CHECK(p && c && wait_until(peers_alive_1, p, 2000), "links open");
    if (!p || !c) goto out;
    send_job(p, "Q", 4);
    jb_link_stats_t st = {0};
    for (int i = 0; i < 300 && st.queue < 4; i++) {
        sleep_ms(10);
        jb_link_stats(c, &st);
    }
    JB_CHECK(st.queue == 4, "the job's 4 messages are queued (%d)", st.queue);
    got_t g[8];
    int n = recv_n(c, g, 8, 1, 1000);
    JB_CHECK(n == 1 && g[0].type == JB_MSG_JOB, "its first message");
    jb_link_done(c, "Q");
    n = recv_n(c, g, 8, 8, 4 * HB);
    JB_CHECK(n == 0, "after DONE, nothing more of it is delivered (%d)", n);
    jb_link_stats(c, &st);
    JB_CHECK(st.queue == 0, "the queue is empty (%d)", st.queue);
out:
    jb_link_close(&c, 0);
    jb_link_close(&p, 0);
}

// A stage still making a job when DONE comes back for it (another copy finished
// first) sends one more message of it: not sent. Before, it opened a new stream whose
// seq 0 was that CODES message, at a consumer that never had the job, which held it
// (and its spool) until the producer restarted.
static void test_send_after_done(void) {
    const char *pe = ep("sd");
    char at[400], to[400];
    snprintf(at, sizeof at, "@%s", pe);
    snprintf(to, sizeof to, ">%s", pe);
    done_log_t d = {.mu = PTHREAD_MUTEX_INITIALIZER};
    jb_link_t *p = open_link(at, JB_LINK_PRODUCER, "sdP", 0, 0, &d);
    jb_link_t *c1 = open_epoch(to, JB_LINK_CONSUMER, "sd1", NULL), *c2 = NULL;
    got_t g[8];
    JB_CHECK(p && c1 && wait_until(peers_alive_1, p, 2000), "links open");
    if (!p || !c1) goto out;
    send_job(p, "S", 3);
    int n = recv_n(c1, g, 8, 3, 2000);
    jb_link_done(c1, "S");
    jb_err_t err = {0};
    JB_CHECK(n == 3 && jb_link_flush(p, 2000, 1, &err) == 0, "job delivered and DONE");
    jb_link_close(&c1, 0);   // the consumer that had it goes; another one is there
    c2 = open_epoch(to, JB_LINK_CONSUMER, "sd2", NULL);
    jb_link_stats_t st = {0};
    for (int i = 0; i < 200 && st.peers_alive < 1; i++) {
        sleep_ms(10);
        jb_link_stats(p, &st);
    }
    jb_msg_t m;
    jb_msg_init(&m);
    m.type = JB_MSG_CODES;
    int32_t cc[2] = {7, 8};
    m.level = 0;
    m.offset = 4;
    JB_CHECK(!jb_msg_set_job_id(&m, "S", &err) && !jb_msg_set_codes(&m, cc, 1, 2, &err) &&
                 jb_link_send(p, &m, &err) == 0,
             "a late message of the finished job is accepted by send");
    jb_msg_clear(&m);
    n = c2 ? recv_n(c2, g, 8, 1, 4 * HB + TIMEOUT) : -1;
    jb_link_stats(p, &st);
    JB_CHECK(n == 0 && st.jobs == 0, "but not sent: no new stream (%d delivered, %d retained)", n,
             st.jobs);
out:
    jb_link_close(&c1, 0);
    jb_link_close(&c2, 0);
    jb_link_close(&p, 0);
}

// A producer cancels a job while its consumer is down (the CANCEL is lost), then sends
// the job again, numbered from 0: the consumer, back with the old stream held in its
// spool (same producer, same run), must not take the new stream as the old one's
// continuation (before: its seqs 0-2 were dropped as held; the job hung or was spliced).
static void test_resend_after_cancel(void) {
    const char *pe = ep("rc");
    char at[400], to[400];
    snprintf(at, sizeof at, "@%s", pe);
    snprintf(to, sizeof to, ">%s", pe);
    jb_link_t *p = open_epoch(at, JB_LINK_PRODUCER, "rcP", "E1");
    jb_link_t *c = open_epoch(to, JB_LINK_CONSUMER, "rcC", NULL);
    got_t g[16];
    char got[32] = "";
    JB_CHECK(p && c && wait_until(peers_alive_1, p, 2000), "links open");
    if (!p || !c) goto out;
    send_job(p, "R", 3);
    int n = recv_n(c, g, 16, 3, 2000);
    JB_CHECK(n == 3, "the job delivered (%d)", n);
    jb_link_close(&c, 0);
    jb_link_stats_t st = {0};
    for (int i = 0; i < 400; i++) {
        jb_link_stats(p, &st);
        if (st.peers_alive == 0) break;
        sleep_ms(10);
    }
    jb_link_cancel(p, "R");   // to nobody: lost
    c = open_epoch(to, JB_LINK_CONSUMER, "rcC", NULL);
    jb_err_t err = {0};
    JB_CHECK(c && !jb_link_preload_from(c, "R", 3, "rcP", "E1", &err), "back, the old stream held");
    if (!c) goto out;
    send_job(p, "R", 3);   // the job again, a new stream
    int k = recv_n(c, g, 16, 4, 10 * TIMEOUT);
    k += recv_n(c, g + k, 16 - k, 16 - k, 3 * HB);
    for (int i = 0; i < k && i < 16; i++)
        snprintf(got + strlen(got), sizeof got - strlen(got), "%c",
                 g[i].type == JB_MSG_CANCEL ? 'C' : (char)('0' + g[i].seq));
    JB_CHECK(!strcmp(got, "C012"), "the new stream: CANCEL of the old, then seq 0 1 2 (%s)", got);
out:
    jb_link_close(&c, 0);
    jb_link_close(&p, 0);
}

static void test_garbage(void) {
    const char *pe = ep("g");
    char at[400], to[400];
    snprintf(at, sizeof at, "@%s", pe);
    snprintf(to, sizeof to, ">%s", pe);
    jb_link_t *c = open_link(at, JB_LINK_CONSUMER, "gc", 16, 0, NULL);
    JB_CHECK(c != NULL, "consumer open");
    if (!c) return;
    void *ctx = zmq_ctx_new(), *s = zmq_socket(ctx, ZMQ_DEALER);
    zmq_connect(s, pe);
    sleep_ms(50);
    zmq_send(s, "junk", 4, 0);                       // one part
    zmq_send(s, "\x81\xa4type", 6, ZMQ_SNDMORE);     // truncated MessagePack
    zmq_send(s, "", 0, 0);
    zmq_send(s, "a", 1, ZMQ_SNDMORE);                // three parts
    zmq_send(s, "b", 1, ZMQ_SNDMORE);
    zmq_send(s, "c", 1, 0);
    // A well-formed data message from a peer that never said HELLO.
    jb_msg_t m;
    jb_msg_init(&m);
    m.type = JB_MSG_END;
    m.seq = 0;
    strcpy(m.job_id, "x");
    jb_bytes_t h = {0}, pl = {0};
    jb_err_t err = {0};
    jb_wire_encode(&m, &h, &pl, &err);
    zmq_send(s, h.data, h.len, ZMQ_SNDMORE);
    zmq_send(s, "", 0, 0);
    jb_bytes_free(&h);
    jb_bytes_free(&pl);
    sleep_ms(300);
    jb_link_stats_t st;
    jb_link_stats(c, &st);
    JB_CHECK(st.bad >= 4 && st.rx == 0, "garbage dropped and counted (%lld)", (long long)st.bad);
    zmq_close(s);
    zmq_ctx_term(ctx);
    // Still serving.
    jb_link_t *p = open_link(to, JB_LINK_PRODUCER, "gp", 0, 0, NULL);
    send_job(p, "after", 2);
    got_t g[4];
    JB_CHECK(recv_n(c, g, 4, 2, 2000) == 2, "the link keeps serving after garbage");
    jb_link_close(&p, 0);
    jb_link_close(&c, 0);
}

typedef struct {
    jb_link_t *p;
    volatile int done;
    int rc;
    jb_err_t err;
} sender_t;

static void *sender(void *a) {
    sender_t *s = a;
    jb_msg_t m;
    jb_msg_init(&m);
    m.type = JB_MSG_END;
    strcpy(m.job_id, "bound");
    s->rc = jb_link_send(s->p, &m, &s->err);
    s->done = 1;
    return NULL;
}

static void test_bounded_send(void) {
    const char *pe = ep("b");
    char at[400], to[400];
    snprintf(at, sizeof at, "@%s", pe);
    snprintf(to, sizeof to, ">%s", pe);
    volatile sig_atomic_t stop = 0;
    jb_link_opts_t o;
    jb_link_default_opts(&o);
    o.role = JB_LINK_PRODUCER;
    o.name = "bp";
    o.heartbeat_ms = HB;
    o.peer_timeout_ms = TIMEOUT;
    o.backlog = 4;
    o.stop = &stop;
    jb_err_t err = {0};
    jb_link_t *p = jb_link_open(at, &o, &err);
    JB_CHECK(p != NULL, "producer open");
    if (!p) return;
    send_job(p, "fill", 4);   // backlog full: no consumer
    sender_t s = {.p = p};
    pthread_t th;
    pthread_create(&th, NULL, sender, &s);
    sleep_ms(200);
    JB_CHECK(!s.done, "send blocks while the backlog is full");
    jb_link_t *c = open_link(to, JB_LINK_CONSUMER, "bc", 16, 0, NULL);
    for (int i = 0; i < 200 && !s.done; i++) sleep_ms(10);
    JB_CHECK(s.done && s.rc == 0, "send unblocks once a consumer takes messages");
    pthread_join(th, NULL);
    jb_link_close(&c, 0);
    jb_link_close(&p, 0);
    // A producer that never had a consumer (the one above may still count the closed
    // consumer alive until its heartbeat timeout): a blocked send returns on the stop flag.
    p = jb_link_open(at, &o, &err);
    JB_CHECK(p != NULL, "producer reopens (%s)", err.msg);
    if (!p) return;
    send_job(p, "fill2", 4);
    sender_t s2 = {.p = p};
    pthread_create(&th, NULL, sender, &s2);
    sleep_ms(100);
    stop = 1;
    for (int i = 0; i < 100 && !s2.done; i++) sleep_ms(10);
    JB_CHECK(s2.done && s2.rc == -1 && s2.err.code == JB_ECANCEL,
             "a blocked send returns JB_ECANCEL on the stop flag");
    pthread_join(th, NULL);
    jb_link_close(&p, 0);
}

static char *hook_status(void *user) {
    (void)user;
    return strdup("{\"stage\":\"unit\",\"tokens_per_s\":12.5}");
}

// --control: a bound endpoint answering STATUS only; the hook's keys are in the reply,
// anything else sent there is dropped and counted.
static void test_control(void) {
    const char *e = ep("ctl");
    jb_link_opts_t o;
    jb_link_default_opts(&o);
    o.role = JB_LINK_CONTROL;
    o.name = "ctl";
    o.heartbeat_ms = HB;
    o.peer_timeout_ms = TIMEOUT;
    o.status = hook_status;
    jb_err_t err = {0};
    jb_link_t *c = jb_link_open(e, &o, &err);
    JB_CHECK(c != NULL, "control endpoint binds (%s)", err.msg);
    if (!c) return;
    char *info = NULL;
    JB_CHECK(jb_link_query_status(e, 2000, &info, &err) == 0, "control: status reply");
    json_t *j = info ? json_loads(info, 0, NULL) : NULL;
    JB_CHECK(j && !strcmp(json_string_value(json_object_get(j, "stage")), "unit") &&
                 json_real_value(json_object_get(j, "tokens_per_s")) == 12.5 &&
                 !strcmp(json_string_value(json_object_get(j, "role")), "control"),
             "control: the status hook's keys and the link's are in the reply");
    json_decref(j);
    free(info);
    char to[400];
    snprintf(to, sizeof to, ">%s", e);
    jb_link_t *p = open_link(to, JB_LINK_PRODUCER, "intruder", 0, 0, NULL);
    sleep_ms(3 * HB);
    jb_link_stats_t st;
    jb_link_stats(c, &st);
    JB_CHECK(st.bad >= 1 && st.peers_known == 0, "control: a link's HELLO is refused (%lld)",
             (long long)st.bad);
    JB_CHECK(jb_link_query_status("ipc:///nonexistent/dir/x", 200, &info, &err) == -1 &&
                 err.code == JB_EUNAVAIL,
             "status query to nobody: unavailable after the timeout");
    jb_link_close(&p, 0);
    jb_link_close(&c, 0);
}

int main(void) {
    if (getenv("JB_TEST_VALGRIND")) HB *= 4, TIMEOUT *= 4;
    snprintf(g_dir, sizeof g_dir, "/tmp/jb_link_test.XXXXXX");
    if (!mkdtemp(g_dir)) return 1;
    if (!getenv("JB_TEST_VERBOSE")) jb_log_set_level(JB_ERROR);
    signal(SIGPIPE, SIG_IGN);
    test_credit_affinity_acks_done();
    test_balance_by_jobs();
    test_silent_consumer_and_return();
    test_release();
    test_duplicates_and_takeover();
    test_takeover_spool_order();
    test_refused_data_fails_job();
    test_cancel_hands_to_copy();
    test_preload_streams();
    test_preload_producer_restarted();
    test_cancel_of_preloaded();
    test_cancel_before_preload();
    test_stream_before_preload();
    test_done_drops_queued();
    test_send_after_done();
    test_resend_after_cancel();
    test_garbage();
    test_bounded_send();
    test_control();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd)) {}
    return jb_test_summary("test_jb_link");
}
