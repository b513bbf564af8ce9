// test_jb_stage.c: a prior stage (jb_stage.h) run in this process over a FIFO and a file,
// with the tiny golden pipeline's top prior: what it emits for a job (the job passed on,
// its level's codes, END(level) with the labels it used, END(-1) last), an ERROR record
// for a job it refuses and for a job whose message is malformed while the others go on,
// and its status JSON over --control while it runs. Every wait is bounded.
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "jb_job.h"
#include "jb_link.h"
#include "jb_log.h"
#include "jb_stage.h"
#include "jb_test.h"
#include "jb_transport.h"
#include "jb_wire.h"

#define MODEL "tests/golden/pipeline_tiny/prior_level_2.safetensors"
#define WAIT_S 60   // the stage's whole run (a few windows of a tiny model)

typedef struct {
    jb_stage_opts_t o;
    int rc;
    jb_err_t err;
} run_t;

static void *run_main(void *arg) {
    run_t *r = arg;
    r->rc = jb_stage_prior_run(&r->o, &r->err);
    return NULL;
}

static int put(jb_endpoint_t *ep, jb_msg_t *m) {
    jb_err_t err = {0};
    int rc = jb_endpoint_send(ep, m, &err);
    if (rc) printf("  send: %s\n", err.msg);
    jb_msg_clear(m);
    return rc;
}

static jb_msg_t msg(jb_msg_type_t type, const char *id, int level) {
    jb_msg_t m;
    jb_msg_init(&m);
    m.type = type;
    m.level = level;
    snprintf(m.job_id, sizeof m.job_id, "%s", id);
    return m;
}

// A job for the tiny top prior: total_seconds inside its timing signal's range (unless
// bad), one sample, greedy.
static int send_job(jb_endpoint_t *ep, const char *id, double total_seconds) {
    jb_job_t j;
    jb_job_defaults(&j);
    snprintf(j.id, sizeof j.id, "%s", id);
    j.total_seconds = total_seconds;
    j.sample_seconds = 0.16253968253968254;
    j.n_samples = 1;
    j.seed = 31;
    for (int l = 0; l < JB_JOB_LEVELS; l++) j.top_k[l] = 1;
    j.artist_id[2] = 33;
    j.genre_ids[2][0] = 21;
    j.n_genre_ids[2] = 1;
    json_t *spec = jb_job_to_json(&j);
    char *text = spec ? json_dumps(spec, JSON_COMPACT) : NULL;
    json_decref(spec);
    jb_job_free(&j);
    jb_msg_t m = msg(JB_MSG_JOB, id, -1);
    jb_err_t err = {0};
    int rc = !text || jb_msg_set_spec(&m, text, &err);
    free(text);
    if (rc) {
        jb_msg_clear(&m);
        return -1;
    }
    return put(ep, &m);
}

// The empty prefixes of every level, then the end of the job (what jukebox-job sample sends).
static int send_ends(jb_endpoint_t *ep, const char *id) {
    int rc = 0;
    for (int l = 2; l >= -1 && !rc; l--) {
        jb_msg_t m = msg(JB_MSG_END, id, l);
        rc = put(ep, &m);
    }
    return rc;
}

typedef struct {
    jb_msg_t v[64];
    int n;
} got_t;

static int keep(jb_msg_t *m, uint64_t at, void *user) {
    (void)at;
    got_t *g = user;
    if (g->n == 64) return -1;
    g->v[g->n++] = *m;
    m->spec = m->text = NULL;
    m->codes = NULL;
    return 0;
}

// Index of the first message of job id and type (and level, unless any) at or after from.
static int find(const got_t *g, int from, const char *id, jb_msg_type_t type, int level, int any) {
    for (int i = from; i < g->n; i++)
        if (!strcmp(g->v[i].job_id, id) && g->v[i].type == type && (any || g->v[i].level == level))
            return i;
    return -1;
}

static int count(const got_t *g, const char *id) {
    int n = 0;
    for (int i = 0; i < g->n; i++) n += !strcmp(g->v[i].job_id, id);
    return n;
}

int main(void) {
    if (!getenv("JB_TEST_VERBOSE")) jb_log_set_level(JB_ERROR);
    if (access(MODEL, R_OK)) {
        JB_SKIP("%s not found (run from the repository root)", MODEL);
        return jb_test_summary("test_jb_stage");
    }
    signal(SIGPIPE, SIG_IGN);
    char dir[] = "/tmp/jb_test_stage_XXXXXX";
    JB_CHECK(mkdtemp(dir) != NULL, "temporary directory");
    char fifo[256], out[256], control[300];
    snprintf(fifo, sizeof fifo, "%s/in.fifo", dir);
    snprintf(out, sizeof out, "%s/out.jbc", dir);
    snprintf(control, sizeof control, "ipc://%s/control", dir);
    JB_CHECK(mkfifo(fifo, 0600) == 0, "mkfifo %s", fifo);

    volatile sig_atomic_t stop = 0;
    run_t r = {.o = {.stage = "prior-top", .level = 2, .model_path = MODEL, .in = fifo,
                     .out = out, .max_batch = 4, .max_chunk = 16, .stop = &stop,
                     .weights = 0, .packed = 1, .control = control}};
    pthread_t th;
    pthread_create(&th, NULL, run_main, &r);
    // Opening the FIFO's write end waits for the stage to open its read end.
    jb_err_t err = {0};
    int fd = open(fifo, O_WRONLY | O_CLOEXEC);
    jb_endpoint_t *in = fd >= 0 ? jb_endpoint_from_fd(fd, 1, 1, "fifo", NULL, &err) : NULL;
    JB_CHECK(in != NULL, "the stage opened its input (%s)", in ? "ok" : err.msg);
    if (!in) return jb_test_summary("test_jb_stage");

    // One good job; one refused (a song of 5 s is outside the model's timing range); one
    // whose codes message is malformed for it (more codes than its level holds: refused
    // before decompression), which fails it as a whole.
    int bad = send_job(in, "good", 0.19052154195011337) || send_ends(in, "good") ||
              send_job(in, "refused", 5.0) || send_ends(in, "refused") ||
              send_job(in, "victim", 0.19052154195011337);
    jb_msg_t c = msg(JB_MSG_CODES, "victim", 1);
    c.offset = 0;
    c.count = 100000;   // level 1 of this job holds far fewer
    c.batch = 1;
    c.codebook = 2048;
    c.codes = calloc(100000, sizeof *c.codes);
    bad = bad || put(in, &c) || send_ends(in, "victim");
    JB_CHECK(!bad, "the input was written");

    // While it runs: its status over --control names the stage and its level.
    char *info = NULL;
    int q = -1;
    for (int i = 0; i < 50 && q; i++) {
        free(info);
        info = NULL;
        q = jb_link_query_status(control, 200, &info, &err);
    }
    json_t *st = q == 0 ? json_loads(info, 0, NULL) : NULL;
    const char *stage = st ? json_string_value(json_object_get(st, "stage")) : NULL;
    JB_CHECK(stage && !strcmp(stage, "prior-top") &&
                 json_integer_value(json_object_get(st, "level")) == 2 &&
                 json_is_array(json_object_get(st, "jobs_in_flight")) &&
                 json_is_number(json_object_get(st, "tokens_per_s")),
             "status: stage, level, jobs in flight, tokens/s (%.120s)", info ? info : err.msg);
    json_decref(st);
    free(info);

    jb_endpoint_destroy(&in);   // the input ends: the stage finishes and returns
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += WAIT_S;
    int joined = pthread_timedjoin_np(th, NULL, &dl) == 0;
    JB_CHECK(joined, "the stage returned within %d s", WAIT_S);
    if (!joined) {
        stop = 1;
        pthread_join(th, NULL);
    }
    JB_CHECK(r.rc == 0, "the stage ends cleanly: refused jobs do not make it fail (%s)",
             r.rc ? r.err.msg : "ok");

    // What it emitted: read the output file whole.
    got_t g = {0};
    FILE *f = fopen(out, "rb");
    uint8_t *buf = malloc(1 << 24);
    size_t n = f && buf ? fread(buf, 1, 1 << 24, f) : 0;
    if (f) fclose(f);
    int dec = jb_frame_decode_all(buf, n, -1, keep, &g, &err);
    free(buf);
    JB_CHECK(dec == 0 && g.n > 0, "output: %d messages read (%s)", g.n, dec ? err.msg : "ok");

    int job = find(&g, 0, "good", JB_MSG_JOB, 0, 1);
    int codes = find(&g, 0, "good", JB_MSG_CODES, 2, 0);
    int end2 = find(&g, 0, "good", JB_MSG_END, 2, 0);
    int end = find(&g, 0, "good", JB_MSG_END, -1, 0);
    JB_CHECK(job >= 0 && codes > job && end2 > codes && end > end2,
             "good: JOB, its level-2 codes, END(2), END(-1) in order (%d %d %d %d)", job, codes,
             end2, end);
    int64_t tokens = 0;
    for (int i = 0; i < g.n; i++)
        if (!strcmp(g.v[i].job_id, "good") && g.v[i].type == JB_MSG_CODES && g.v[i].level == 2)
            tokens = g.v[i].offset + g.v[i].count;
    JB_CHECK(end2 >= 0 && tokens > 0 && g.v[end2].offset == tokens,
             "good: END(2) closes the %lld codes sent", (long long)tokens);
    JB_CHECK(end2 >= 0 && g.v[end2].text && strstr(g.v[end2].text, "\"artist_id\":33") &&
                 strstr(g.v[end2].text, "\"level\":2"),
             "good: END(2) says which labels it used (%s)",
             end2 >= 0 && g.v[end2].text ? g.v[end2].text : "none");
    JB_CHECK(find(&g, 0, "good", JB_MSG_END, 1, 0) >= 0 && find(&g, 0, "good", JB_MSG_END, 0, 0) >= 0,
             "good: the prefixes of the levels below are passed on");
    JB_CHECK(find(&g, 0, "good", JB_MSG_ERROR, 0, 1) < 0, "good: no error");

    int rerr = find(&g, 0, "refused", JB_MSG_ERROR, 2, 0);
    JB_CHECK(rerr >= 0 && g.v[rerr].text && g.v[rerr].code > 0 &&
                 find(&g, 0, "refused", JB_MSG_CODES, 0, 1) < 0 &&
                 find(&g, rerr + 1, "refused", JB_MSG_END, 0, 1) < 0,
             "refused: one ERROR with its reason, no codes, nothing after it (%s)",
             rerr >= 0 && g.v[rerr].text ? g.v[rerr].text : "none");
    int verr = find(&g, 0, "victim", JB_MSG_ERROR, 2, 0);
    JB_CHECK(verr >= 0 && g.v[verr].text && strstr(g.v[verr].text, "refused") &&
                 find(&g, verr + 1, "victim", JB_MSG_END, 0, 1) < 0,
             "victim: its malformed message fails it with an ERROR (%s)",
             verr >= 0 && g.v[verr].text ? g.v[verr].text : "none");
    JB_CHECK(count(&g, "good") >= 5, "good: not disturbed by the others (%d messages)",
             count(&g, "good"));

    for (int i = 0; i < g.n; i++) jb_msg_clear(&g.v[i]);
    unlink(out);
    unlink(fifo);
    rmdir(dir);
    return jb_test_summary("test_jb_stage");
}
