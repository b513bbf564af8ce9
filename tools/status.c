// jukebox-status: ask running stages how they are doing (`jukebox status`).
//
//   jukebox-status tcp://hostA:5595 tcp://hostB:5605 ...    one table per stage
//   jukebox-status --state /run/jukebox-services             local-services.sh's instances
//   jukebox-status --json EP...                              the raw replies, one a line
//
// Each endpoint is a stage's --control endpoint (or any endpoint a stage binds). A
// STATUS request (wire type `status` without `info`) goes to it over a ZeroMQ DEALER
// socket; the reply is a `status` message whose `info` JSON says: stage, instance,
// level, pid, uptime, jobs in flight (id, window k of n), input queue depth, output
// backlog, tokens/s over the last minute, the last error (time, text) and the peers.
// The endpoints are asked at once, each with --timeout; one that does not answer is
// listed as such and makes the exit code 69.
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <msgpack.h>
#include <sysexits.h>
#include <zmq.h>

#include "jb_log.h"
#include "jb_progress.h"
#include "jb_wire.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: jukebox-status [--timeout MS] [--json] [--peers] [--wait-linked S] [--state DIR]\n"
            "                      [ENDPOINT...]\n"
            "\n"
            "Asks each stage instance at ENDPOINT (its --control endpoint, or any endpoint it\n"
            "binds: tcp://host:port, ipc://path) for its status and prints, per stage: the\n"
            "instances, jobs in flight (window k of n), input queue depth, output backlog,\n"
            "tokens/s over the last minute and the last error (--peers: each instance's peers too).\n"
            "\n"
            "  --state DIR     also ask the instances of pipelines/local-services.sh whose state\n"
            "                  directory is DIR (its 'endpoints' file); used when no ENDPOINT\n"
            "                  is given: DIR = $JUKEBOX_STATE, else\n"
            "                  ${XDG_RUNTIME_DIR:-/tmp}/jukebox-services\n"
            "  --timeout MS    wait this long for each answer (default 2000)\n"
            "  --json          print each reply's JSON on a line (unanswered: {\"endpoint\":..,\n"
            "                  \"error\":..}) instead of the tables\n"
            "  --peers         list every instance's peers too\n"
            "  --wait-linked S  wait up to S seconds until every endpoint answers and every\n"
            "                  instance sees, as live consumers, every answering instance of\n"
            "                  the next stage (top -> mid -> bottom -> decoder): the pipeline\n"
            "                  is wired and a job sent now can go to any of them. Prints\n"
            "                  nothing on success; on timeout, the links missing (exit 69)\n"
            "  -h, --help      this text\n"
            "\n"
            "exit codes: 0 every endpoint answered; 64 bad usage; 69 one or more did not\n"
            "  answer (they are listed); 70 internal error.\n");
}

typedef struct {
    const char *ep;
    void *sock;
    json_t *info;        // the reply's info object, owned; NULL: no answer (yet)
    char error[640];     // why there is no info
} query_t;

// First member of obj among the names (several spellings are accepted).
static json_t *member(json_t *obj, const char *const *names) {
    for (; *names; names++) {
        json_t *v = json_object_get(obj, *names);
        if (v && !json_is_null(v)) return v;
    }
    return NULL;
}
#define MEMBER(obj, ...) member(obj, (const char *const[]){__VA_ARGS__, NULL})

// A stage's reply (--control) holds its own keys at the top and each link's status under
// "in" and "out"; a link endpoint's reply holds the link's keys at the top. A value is
// looked up at the top, then under sub1, then under sub2 (either may be NULL).
static json_t *deep(json_t *info, const char *sub1, const char *sub2, const char *const *names) {
    json_t *v = member(info, names);
    if (!v && sub1) v = member(json_object_get(info, sub1), names);
    if (!v && sub2) v = member(json_object_get(info, sub2), names);
    return v;
}
#define DEEP(obj, s1, s2, ...) deep(obj, s1, s2, (const char *const[]){__VA_ARGS__, NULL})
#define INSTANCE(i) str(DEEP(i, "in", "out", "instance", "name"), "?")
#define UPTIME(i) num(DEEP(i, "in", "out", "uptime_s", "uptime"), -1)
#define QUEUE(i) num(DEEP(i, "in", NULL, "queue", "input_queue", "queue_depth"), 0)
#define BACKLOG(i) num(DEEP(i, "out", NULL, "backlog", "output_backlog"), 0)
#define TOKENS_S(i) num(MEMBER(i, "tokens_per_s", "tokens_s"), 0)

static double num(json_t *v, double dflt) { return json_is_number(v) ? json_number_value(v) : dflt; }
static const char *str(json_t *v, const char *dflt) { return json_is_string(v) ? json_string_value(v) : dflt; }

static const char *stage_of(json_t *info) { return str(MEMBER(info, "stage"), "?"); }

// Jobs in flight: an array of {id, window, windows} (or of ids), or a count.
static int jobs_count(json_t *info) {
    json_t *j = MEMBER(info, "jobs_in_flight", "jobs");
    if (json_is_array(j)) return (int)json_array_size(j);
    return (int)num(j, 0);
}

static void jobs_text(json_t *info, char *buf, size_t cap) {
    json_t *j = MEMBER(info, "jobs_in_flight", "jobs");
    buf[0] = '\0';
    if (!json_is_array(j)) {
        snprintf(buf, cap, "%d", (int)num(j, 0));
        return;
    }
    if (!json_array_size(j)) {
        snprintf(buf, cap, "-");
        return;
    }
    size_t len = 0, i;
    json_t *e;
    json_array_foreach(j, i, e) {
        char one[160];
        if (json_is_string(e)) {
            snprintf(one, sizeof one, "%s", json_string_value(e));
        } else {
            const char *id = str(MEMBER(e, "id", "job"), "?");
            json_t *k = MEMBER(e, "window"), *n = MEMBER(e, "windows", "n_windows");
            if (k && n) snprintf(one, sizeof one, "%s %d/%d", id, (int)num(k, 0), (int)num(n, 0));
            else snprintf(one, sizeof one, "%s", id);
        }
        int w = snprintf(buf + len, cap - len, "%s%s", i ? ", " : "", one);
        if (w < 0 || (size_t)w >= cap - len) break;
        len += (size_t)w;
    }
}

static void duration(double s, char *buf, size_t cap) {
    if (s < 0) snprintf(buf, cap, "-");
    else if (s < 60) snprintf(buf, cap, "%.0fs", s);
    else if (s < 3600) snprintf(buf, cap, "%dm%02ds", (int)s / 60, (int)s % 60);
    else if (s < 86400) snprintf(buf, cap, "%dh%02dm", (int)s / 3600, (int)s / 60 % 60);
    else snprintf(buf, cap, "%dd%02dh", (int)s / 86400, (int)s / 3600 % 24);
}

// The last error: an object {time or ago_s / ago_ms, text} or a string; the stage's
// own, else its input link's, else its output link's; "-" when none.
static void last_error(json_t *info, char *buf, size_t cap) {
    json_t *e = DEEP(info, "in", "out", "last_error", "error");
    if (json_is_string(e)) {
        snprintf(buf, cap, "%s", json_string_value(e));
    } else if (json_is_object(e)) {
        const char *t = str(MEMBER(e, "time"), NULL), *m = str(MEMBER(e, "text", "msg"), "?");
        json_t *ago_s = MEMBER(e, "ago_s"), *ago_ms = MEMBER(e, "ago_ms");
        char when[32];
        if (ago_s || ago_ms) {
            duration(ago_s ? num(ago_s, 0) : num(ago_ms, 0) / 1000, when, sizeof when);
            snprintf(buf, cap, "%s ago: %s", when, m);
        } else if (t) {
            snprintf(buf, cap, "%s %s", t, m);
        } else {
            snprintf(buf, cap, "%s", m);
        }
    } else {
        snprintf(buf, cap, "-");
    }
}

// The request: a status message without info (docs/wire.md: "status without info is a
// request"), header {"type": "status", "v": 1} and an empty payload part.
static int send_request(void *sock, jb_err_t *err) {
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    msgpack_pack_str(&pk, 4);
    msgpack_pack_str_body(&pk, "type", 4);
    msgpack_pack_str(&pk, 6);
    msgpack_pack_str_body(&pk, "status", 6);
    msgpack_pack_str(&pk, 1);
    msgpack_pack_str_body(&pk, "v", 1);
    msgpack_pack_uint8(&pk, 1);
    int rc = 0;
    if (zmq_send(sock, sb.data, sb.size, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
        zmq_send(sock, "", 0, ZMQ_DONTWAIT) < 0)
        rc = jb_err_set(err, JB_EUNAVAIL, "send: %s", zmq_strerror(zmq_errno()));
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

// Reads one reply from q->sock (all its parts). A reply through a ROUTER may start
// with an empty delimiter part: the header is the first non-empty part. Anything
// but a status message with a JSON object is recorded as the error.
static void read_reply(query_t *q) {
    zmq_msg_t parts[8];
    int n = 0, more = 1;
    while (more) {
        zmq_msg_t p;
        zmq_msg_init(&p);
        if (zmq_msg_recv(&p, q->sock, 0) < 0) {
            zmq_msg_close(&p);
            snprintf(q->error, sizeof q->error, "receive: %s", zmq_strerror(zmq_errno()));
            break;
        }
        more = zmq_msg_more(&p);
        if (n < 8) parts[n++] = p;
        else zmq_msg_close(&p);
    }
    int h = 0;
    while (h < n && zmq_msg_size(&parts[h]) == 0) h++;
    if (!q->error[0]) {
        if (h >= n) {
            snprintf(q->error, sizeof q->error, "an empty reply");
        } else {
            jb_msg_t m;
            jb_msg_init(&m);
            jb_err_t err = {0};
            size_t plen = h + 1 < n ? zmq_msg_size(&parts[h + 1]) : 0;
            if (jb_wire_decode(zmq_msg_data(&parts[h]), zmq_msg_size(&parts[h]),
                               plen ? zmq_msg_data(&parts[h + 1]) : NULL, plen, -1, &m, &err)) {
                snprintf(q->error, sizeof q->error, "bad reply: %s", err.msg);
            } else if (m.type != JB_MSG_STATUS || !m.text) {
                snprintf(q->error, sizeof q->error, "the reply is a %s message, not status",
                         jb_msg_type_name(m.type));
            } else {
                json_error_t je;
                q->info = json_loads(m.text, 0, &je);
                if (!json_is_object(q->info)) {
                    json_decref(q->info);
                    q->info = NULL;
                    snprintf(q->error, sizeof q->error, "the reply's info is not a JSON object");
                }
            }
            jb_msg_clear(&m);
        }
    }
    for (int i = 0; i < n; i++) zmq_msg_close(&parts[i]);
}

// Asks every endpoint at once; waits until all answered or timeout_ms passed.
static void ask_all(void *ctx, query_t *qs, int nq, int timeout_ms) {
    for (int i = 0; i < nq; i++) {
        query_t *q = &qs[i];
        jb_err_t err = {0};
        const char *ep = q->ep[0] == '>' ? q->ep + 1 : q->ep;
        int zero = 0, one = 1;
        q->sock = zmq_socket(ctx, ZMQ_DEALER);
        if (!q->sock || zmq_setsockopt(q->sock, ZMQ_LINGER, &zero, sizeof zero) ||
            zmq_setsockopt(q->sock, ZMQ_IMMEDIATE, &zero, sizeof zero) ||
            zmq_setsockopt(q->sock, ZMQ_RCVHWM, &one, sizeof one) || zmq_connect(q->sock, ep)) {
            snprintf(q->error, sizeof q->error, "cannot connect: %s", zmq_strerror(zmq_errno()));
            continue;
        }
        if (send_request(q->sock, &err)) snprintf(q->error, sizeof q->error, "%s", err.msg);
    }
    double end = jb_now() + timeout_ms / 1000.0;
    for (;;) {
        zmq_pollitem_t items[nq];
        int waiting = 0;
        for (int i = 0; i < nq; i++) {
            items[i] = (zmq_pollitem_t){.socket = qs[i].sock, .events = ZMQ_POLLIN};
            if (!qs[i].sock || qs[i].info || qs[i].error[0]) items[i].socket = NULL, items[i].events = 0;
            else waiting++;
        }
        double left = end - jb_now();
        if (!waiting || left <= 0) break;
        int n = zmq_poll(items, nq, (long)(left * 1000) + 1);
        if (n < 0) break;
        for (int i = 0; i < nq; i++)
            if (items[i].revents & ZMQ_POLLIN) read_reply(&qs[i]);
    }
    for (int i = 0; i < nq; i++) {
        if (!qs[i].info && !qs[i].error[0])
            snprintf(qs[i].error, sizeof qs[i].error, "no answer within %d ms", timeout_ms);
        if (qs[i].sock) zmq_close(qs[i].sock);
        qs[i].sock = NULL;
    }
}

static int stage_rank(const char *s) {
    static const char *order[] = {"prior-top", "upsampler-mid", "upsampler-bottom", "decoder"};
    for (int i = 0; i < 4; i++)
        if (!strcmp(s, order[i])) return i;
    return 4;
}

// Whether producer p lists an instance named name as a live consumer (its "out" link).
static bool sees_consumer(json_t *p, const char *name) {
    json_t *peers = json_object_get(json_object_get(p, "out"), "peers"), *e;
    size_t i;
    json_array_foreach(peers, i, e) {
        if (!strcmp(str(MEMBER(e, "name"), ""), name) && json_is_true(MEMBER(e, "alive")) &&
            !strcmp(str(MEMBER(e, "role"), ""), "consumer"))
            return true;
    }
    return false;
}

// The links of the answering instances that are not up yet: one line each in buf ("" when
// the pipeline is wired). Unanswered endpoints count as missing too.
static int missing_links(const query_t *qs, int nq, char *buf, size_t cap) {
    int missing = 0;
    size_t len = 0;
    buf[0] = '\0';
#define MISSING(...)                                                                        \
    do {                                                                                    \
        missing++;                                                                          \
        int w_ = snprintf(buf + len, cap - len, __VA_ARGS__);                               \
        if (w_ > 0 && (size_t)w_ < cap - len) len += (size_t)w_;                            \
    } while (0)
    for (int i = 0; i < nq; i++) {
        if (!qs[i].info) {
            MISSING("  %s: no answer (%s)\n", qs[i].ep, qs[i].error);
            continue;
        }
        int r = stage_rank(stage_of(qs[i].info));
        for (int k = 0; k < nq; k++) {
            if (!qs[k].info || stage_rank(stage_of(qs[k].info)) != r + 1) continue;
            const char *name = INSTANCE(qs[k].info);
            if (!sees_consumer(qs[i].info, name))
                MISSING("  %s (%s) does not see %s (%s) yet\n", INSTANCE(qs[i].info),
                        stage_of(qs[i].info), name, stage_of(qs[k].info));
        }
    }
#undef MISSING
    return missing;
}

// --wait-linked: asks every endpoint every 100 ms until missing_links() is empty or
// secs pass. 0 when wired; EX_UNAVAILABLE (the missing links printed) otherwise.
static int wait_linked(void *ctx, query_t *qs, int nq, int timeout_ms, double secs) {
    double end = jb_now() + secs;
    char buf[8192];
    for (;;) {
        for (int i = 0; i < nq; i++) {
            json_decref(qs[i].info);
            qs[i].info = NULL;
            qs[i].error[0] = '\0';
        }
        ask_all(ctx, qs, nq, timeout_ms);
        if (!missing_links(qs, nq, buf, sizeof buf)) return 0;
        if (jb_now() >= end) break;
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    fprintf(stderr, "jukebox-status: the pipeline is not wired after %g s:\n%s", secs, buf);
    return EX_UNAVAILABLE;
}

static int by_stage(const void *a, const void *b) {
    const query_t *x = a, *y = b;
    if (!x->info || !y->info) return (x->info == NULL) - (y->info == NULL);
    int r = stage_rank(stage_of(x->info)) - stage_rank(stage_of(y->info));
    if (r) return r;
    r = strcmp(stage_of(x->info), stage_of(y->info));
    if (r) return r;
    return strcmp(INSTANCE(x->info), INSTANCE(y->info));
}

static void print_peer_list(json_t *peers, const char *side) {
    size_t i;
    json_t *p;
    if (!json_is_array(peers)) return;
    json_array_foreach(peers, i, p) {
        char seen[32] = "-";
        json_t *ms = MEMBER(p, "last_seen_ms", "seen_ms"), *alive = MEMBER(p, "alive");
        if (ms) snprintf(seen, sizeof seen, "%.0f ms ago", num(ms, 0));
        printf("      %speer %-22s %-9s credit %-4d last seen %s%s\n", side,
               str(MEMBER(p, "name", "instance"), "?"), str(MEMBER(p, "role"), "?"),
               (int)num(MEMBER(p, "credit"), -1), seen,
               json_is_false(alive) ? " (dead)" : "");
    }
}

static void print_peers(json_t *info) {
    print_peer_list(MEMBER(info, "peers"), "");
    print_peer_list(json_object_get(json_object_get(info, "in"), "peers"), "in:  ");
    print_peer_list(json_object_get(json_object_get(info, "out"), "peers"), "out: ");
}

static void print_tables(query_t *qs, int nq, int peers) {
    qsort(qs, (size_t)nq, sizeof *qs, by_stage);
    for (int i = 0; i < nq && qs[i].info;) {
        const char *stage = stage_of(qs[i].info);
        int j = i, jobs = 0;
        double queue = 0, tps = 0;
        for (; j < nq && qs[j].info && !strcmp(stage_of(qs[j].info), stage); j++) {
            jobs += jobs_count(qs[j].info);
            queue += QUEUE(qs[j].info);
            tps += TOKENS_S(qs[j].info);
        }
        printf("%s: %d instance%s, %d job%s in flight, queue %.0f, %.1f tokens/s\n", stage, j - i,
               j - i == 1 ? "" : "s", jobs, jobs == 1 ? "" : "s", queue, tps);
        printf("  %-16s %-8s %-7s %-5s %-7s %-9s %-28s %s\n", "INSTANCE", "PID", "UPTIME",
               "QUEUE", "BACKLOG", "TOKENS/S", "JOBS (WINDOW K/N)", "LAST ERROR");
        for (; i < j; i++) {
            json_t *in = qs[i].info;
            char up[32], jt[256], le[256];
            duration(UPTIME(in), up, sizeof up);
            jobs_text(in, jt, sizeof jt);
            last_error(in, le, sizeof le);
            printf("  %-16s %-8d %-7s %-5d %-7d %-9.1f %-28s %s\n",
                   INSTANCE(in), (int)num(DEEP(in, "in", "out", "pid"), 0), up, (int)QUEUE(in),
                   (int)BACKLOG(in), TOKENS_S(in), jt, le);
            if (peers) print_peers(in);
        }
    }
    for (int i = 0; i < nq; i++)
        if (!qs[i].info) printf("unreachable: %s (%s)\n", qs[i].ep, qs[i].error);
}

// Endpoints of local-services.sh: lines "control NAME ENDPOINT" in DIR/endpoints.
static int read_state(const char *dir, char ***eps, int *n, int *cap) {
    char path[4200];
    snprintf(path, sizeof path, "%s/endpoints", dir);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[1024];
    while (fgets(line, sizeof line, f)) {
        char kind[32], name[256], ep[512];
        if (sscanf(line, "%31s %255s %511s", kind, name, ep) != 3 || strcmp(kind, "control")) continue;
        if (*n == *cap) {
            *cap = *cap ? *cap * 2 : 16;
            char **grown = realloc(*eps, (size_t)*cap * sizeof **eps);
            if (!grown) break;
            *eps = grown;
        }
        (*eps)[(*n)++] = strdup(ep);
    }
    fclose(f);
    return 0;
}

int main(int argc, char **argv) {
    jb_log_set_stage("status");
    int timeout_ms = 2000, as_json = 0, peers = 0;
    double linked_s = -1;
    const char *state = NULL;
    static const struct option longs[] = {{"timeout", 1, 0, 't'}, {"json", 0, 0, 'j'},
                                          {"state", 1, 0, 's'},   {"peers", 0, 0, 'p'},
                                          {"help", 0, 0, 'h'},    {"wait-linked", 1, 0, 'w'},
                                          {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "t:jps:h", longs, NULL)) != -1) {
        char *end = NULL;
        switch (c) {
        case 't':
            timeout_ms = (int)strtol(optarg, &end, 10);
            if (!*optarg || *end || timeout_ms < 1) {
                fprintf(stderr, "jukebox-status: --timeout %s: expected milliseconds\n", optarg);
                return EX_USAGE;
            }
            break;
        case 'w':
            linked_s = strtod(optarg, &end);
            if (!*optarg || *end || !(linked_s >= 0 && linked_s <= 86400)) {
                fprintf(stderr, "jukebox-status: --wait-linked %s: expected seconds (0-86400)\n",
                        optarg);
                return EX_USAGE;
            }
            break;
        case 'j': as_json = 1; break;
        case 'p': peers = 1; break;
        case 's': state = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return EX_USAGE;
        }
    }
    char **eps = NULL;
    int n = 0, cap = 0;
    for (int i = optind; i < argc; i++) {
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            char **grown = realloc(eps, (size_t)cap * sizeof *eps);
            if (!grown) return EX_SOFTWARE;
            eps = grown;
        }
        eps[n++] = strdup(argv[i]);
    }
    char dflt[4096];
    if (!state && !n) {
        const char *e = getenv("JUKEBOX_STATE"), *x = getenv("XDG_RUNTIME_DIR");
        if (e && *e) snprintf(dflt, sizeof dflt, "%s", e);
        else snprintf(dflt, sizeof dflt, "%s/jukebox-services", x && *x ? x : "/tmp");
        state = dflt;
    }
    if (state && read_state(state, &eps, &n, &cap)) {
        fprintf(stderr, "jukebox-status: %s/endpoints: no services there (give endpoints, or "
                "--state DIR of pipelines/local-services.sh)\n", state);
        if (!n) return EX_USAGE;
    }
    if (!n) {
        fprintf(stderr, "jukebox-status: no endpoints (the services were started without "
                "control endpoints?)\n");
        return EX_USAGE;
    }
    void *ctx = zmq_ctx_new();
    query_t *qs = calloc((size_t)n, sizeof *qs);
    if (!ctx || !qs) return EX_SOFTWARE;
    for (int i = 0; i < n; i++) qs[i].ep = eps[i];
    int missing = 0;
    if (linked_s >= 0) {
        int rc = wait_linked(ctx, qs, n, timeout_ms, linked_s);
        for (int i = 0; i < n; i++) {
            json_decref(qs[i].info);
            free(eps[i]);
        }
        free(qs);
        free(eps);
        zmq_ctx_term(ctx);
        return rc;
    }
    ask_all(ctx, qs, n, timeout_ms);
    for (int i = 0; i < n; i++) missing += !qs[i].info;
    if (as_json) {
        for (int i = 0; i < n; i++) {
            json_t *o = qs[i].info ? json_incref(qs[i].info)
                                   : json_pack("{s:s, s:s}", "endpoint", qs[i].ep, "error",
                                               qs[i].error);
            if (qs[i].info) json_object_set_new(o, "endpoint", json_string(qs[i].ep));
            char *t = json_dumps(o, JSON_COMPACT);
            if (t) puts(t);
            free(t);
            json_decref(o);
        }
    } else {
        print_tables(qs, n, peers);
    }
    for (int i = 0; i < n; i++) {
        json_decref(qs[i].info);
        free(eps[i]);
    }
    free(qs);
    free(eps);
    zmq_ctx_term(ctx);
    return missing ? EX_UNAVAILABLE : 0;
}
