// pipeline.c: `jukebox-bench pipeline`: the real stage executables as one pipeline on N jobs.
//
// jukebox-prior-top | -upsampler-mid | -upsampler-bottom | -decoder (found beside this
// executable) on a model directory, every stage with --threads N. The jobs are made first by
// jukebox-job (so a length the model cannot take is refused before anything starts); the
// stages are started and, once all four said READY=1 (over $NOTIFY_SOCKET, as systemd and
// jukebox-launch hear it: weights loaded), the N job streams are written to the top prior at
// once: that moment is every job's submission. Each stage's stderr comes here; every line is
// stamped when it arrives, and the stages' own per-job lines give the figures:
//   prior stages  "job=ID level=L done tokens=N busy=S.SSSs"   codes sampled, busy seconds
//   decoder       "job=ID first audio decoded ..."               (stamped: time to first audio)
//                 "job=ID written to ... codes=N busy=S.SSSs"   (stamped: the job's end)
// CPU seconds and peak memory of each stage come from the kernel (/proc/PID/stat at READY,
// wait4's rusage at exit): CPU seconds after READY / N is a stage's CPU per job.
//
// Transport: shell-style pipes, as pipelines/jukebox runs one machine's pipeline. What is
// measured is each stage's compute per job and the streaming between levels; pipes add no
// ports to pick, no heartbeats or credit, nothing to wait for before the links are up, and a
// stage's end of input is the end of the run. One instance a stage: the balance line says
// how many each would need (over ZeroMQ, the layout of docs/operations.md).
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <unistd.h>

#include "bench.h"
#include "jb_service.h"

#define MAX_JOBS 64
#define N_STAGES 4

static const char *const stage_names[N_STAGES] = {"prior-top", "upsampler-mid",
                                                   "upsampler-bottom", "decoder"};
static const char *const short_names[N_STAGES] = {"top", "mid", "bottom", "decoder"};
static const char *const model_files[N_STAGES] = {"prior_level_2", "prior_level_1",
                                                  "prior_level_0", "vqvae"};

typedef struct {
    int jobs, threads, json;
    double seconds, total, timeout;
    const char *models, *weights, *tmp, *logs;
    int verbose;               // -v: the stages log at debug level (with --logs)
} opts_t;

typedef struct {
    double first_audio, end;   // seconds from submission (decoder), 0: not seen
    double busy;               // the stage's busy seconds for this job (its log)
    int64_t tokens;            // codes the stage made for this job (every sample)
    int seen;                  // the done / written line was read
} jobrec_t;

typedef struct {
    pid_t pid;
    int err_fd, notify_fd;     // its stderr (read end), its notify socket (-1: closed)
    char line[4096];
    size_t len;
    char tail[4][512];         // its last lines, shown when it fails
    int n_tail;
    int ready, status;         // READY=1 seen; wait status
    double cpu_ready;          // its CPU seconds at READY (loading the model)
    struct rusage ru;
    FILE *log;                 // --logs DIR/<stage>.log, or NULL
    // Lines read before the submission, kept until it (their stamps are negative): when
    // they came and what they said.
    double pre_t[64];
    char *pre_line[64];
    int n_pre;
    jobrec_t job[MAX_JOBS];
} stage_t;

typedef struct {
    opts_t o;
    char bindir[PATH_MAX], models[PATH_MAX], dir[PATH_MAX];   // dir: the run's temporary files
    stage_t st[N_STAGES];
    int top_in;                // write end of the top prior's input
    double t0;                 // submission (monotonic), 0 before
    double t_start;            // the stages' start (logs: before submission, negative)
    int killed;                // the stages got SIGTERM from here: their statuses say nothing
} run_t;

static void usage(FILE *to) {
    fprintf(to,
            "usage: jukebox-bench pipeline [options]\n"
            "  --jobs N         jobs, all submitted at once (default 2)\n"
            "  --seconds S      seconds of audio each job makes (default: jukebox-job's, 24,\n"
            "                   or the song's length when the model takes only shorter)\n"
            "  --total-seconds T  the song's length for the timing signal (default S)\n"
            "  --models DIR     vqvae.safetensors, prior_level_{2,1,0}.safetensors (default:\n"
            "                   $JUKEBOX_MODELS, else the bundled model)\n"
            "  --threads N      threads of every stage (default: cores / 4, at least 1)\n"
            "  --weights W      the prior stages' --weights (default stored)\n"
            "  --timeout S      give up after S seconds (default 3600)\n"
            "  --json           one JSON object per stage and a summary, one per line\n"
            "  --logs DIR       keep each stage's log in DIR/<stage>.log, every line stamped\n"
            "                   with seconds since submission (negative: before it)\n"
            "  -v, --verbose    the stages log at debug level (e.g. their batches)\n"
            "  --tmp DIR        where the run's temporary files go (default $TMPDIR or /tmp)\n"
            "exit codes: 0 done; 64 bad usage or a job the model refuses; 66 model or stage\n"
            "  executable missing; 73 --logs is not a directory; 70 a stage failed or timed\n"
            "  out (its last lines are shown; a stage's own exit status is passed on)\n");
}

static int bad_number(const char *a, const char *v) {
    fprintf(stderr, "jukebox-bench pipeline: %s %s: expected a positive number\n", a, v);
    return EX_USAGE;
}

// 0, or EX_USAGE with the reason on stderr.
static int parse_args(int argc, char **argv, opts_t *o) {
    const char *tmp = getenv("TMPDIR"), *models = getenv("JUKEBOX_MODELS");
    long nc = sysconf(_SC_NPROCESSORS_ONLN);
    // threads: as the front command (pipelines/jukebox): the cores shared by four stages
    *o = (opts_t){.jobs = 2, .threads = nc >= 4 ? (int)(nc / 4) : 1, .timeout = 3600,
                  .models = models && *models ? models : NULL, .weights = "stored",
                  .tmp = tmp && *tmp ? tmp : "/tmp"};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return -1;
        }
        if (!strcmp(a, "--json") || !strcmp(a, "-v") || !strcmp(a, "--verbose")) {
            *(a[2] == 'j' ? &o->json : &o->verbose) = 1;
            continue;
        }
        int known = !strcmp(a, "--jobs") || !strcmp(a, "--seconds") ||
                    !strcmp(a, "--total-seconds") || !strcmp(a, "--models") ||
                    !strcmp(a, "--threads") || !strcmp(a, "--weights") ||
                    !strcmp(a, "--timeout") || !strcmp(a, "--tmp") || !strcmp(a, "--logs");
        if (!known) {
            fprintf(stderr, "jukebox-bench pipeline: unknown option '%s'\n", a);
            usage(stderr);
            return EX_USAGE;
        }
        if (!v) {
            fprintf(stderr, "jukebox-bench pipeline: %s needs a value\n", a);
            return EX_USAGE;
        }
        i++;
        char *end = NULL;
        double x = strtod(v, &end);
        int num = *v && !*end && x > 0 && x < 1e6;
        if (!strcmp(a, "--models")) o->models = v;
        else if (!strcmp(a, "--weights")) o->weights = v;
        else if (!strcmp(a, "--tmp")) o->tmp = v;
        else if (!strcmp(a, "--logs")) o->logs = v;
        else if (!num) return bad_number(a, v);
        else if (!strcmp(a, "--seconds")) o->seconds = x;
        else if (!strcmp(a, "--total-seconds")) o->total = x;
        else if (!strcmp(a, "--timeout")) o->timeout = x;
        else if (x != (int)x || (!strcmp(a, "--jobs") && x > MAX_JOBS) || x > 4096) {
            fprintf(stderr, "jukebox-bench pipeline: %s %s: a whole number from 1 to %d\n", a,
                    v, !strcmp(a, "--jobs") ? MAX_JOBS : 4096);
            return EX_USAGE;
        } else if (!strcmp(a, "--jobs")) o->jobs = (int)x;
        else o->threads = (int)x;
    }
    return 0;
}

static int is_file(const char *path) {
    struct stat s;
    return stat(path, &s) == 0 && S_ISREG(s.st_mode);
}

// The stage executables beside this one, and the model directory: --models, else
// $JUKEBOX_MODELS, else the bundled model (the build tree's models/default, or
// PREFIX/share/jukebox/models/default), as pipelines/jukebox resolves it. 0 or EX_NOINPUT.
static int find_files(run_t *r) {
    char exe[PATH_MAX], path[PATH_MAX + 64];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) {
        fprintf(stderr, "jukebox-bench pipeline: /proc/self/exe: %s\n", strerror(errno));
        return EX_NOINPUT;
    }
    exe[n] = 0;
    *strrchr(exe, '/') = 0;
    snprintf(r->bindir, sizeof r->bindir, "%s", exe);
    const char *need[] = {"jukebox-job", "jukebox-prior-top", "jukebox-upsampler-mid",
                          "jukebox-upsampler-bottom", "jukebox-decoder"};
    for (int i = 0; i < 5; i++) {
        snprintf(path, sizeof path, "%s/%s", r->bindir, need[i]);
        if (access(path, X_OK)) {
            fprintf(stderr, "jukebox-bench pipeline: %s: missing (run make)\n", path);
            return EX_NOINPUT;
        }
    }
    const char *m = r->o.models;
    const char *bundled[] = {"%s/../../models/default", "%s/../share/jukebox/models/default"};
    for (int i = 0; !m && i < 2; i++) {
        snprintf(path, sizeof path, bundled[i], r->bindir);
        strcat(path, "/vqvae.safetensors");
        if (is_file(path)) {
            snprintf(r->models, sizeof r->models, bundled[i], r->bindir);
            m = r->models;
        }
    }
    if (!m) {
        fprintf(stderr, "jukebox-bench pipeline: no model directory (--models DIR or "
                        "JUKEBOX_MODELS)\n");
        return EX_NOINPUT;
    }
    struct stat sb;
    if (stat(m, &sb) || !S_ISDIR(sb.st_mode)) {
        fprintf(stderr, "jukebox-bench pipeline: --models %s: no such directory\n", m);
        return EX_NOINPUT;
    }
    if (m != r->models) snprintf(r->models, sizeof r->models, "%s", m);
    if (realpath(m, path) && snprintf(r->models, sizeof r->models, "%s", path) >=
                                 (int)sizeof r->models) {
        fprintf(stderr, "jukebox-bench pipeline: --models %s: too long a path\n", m);
        return EX_USAGE;
    }
    for (int k = 0; k < N_STAGES; k++) {
        snprintf(path, sizeof path, "%s/%s.safetensors", r->models, model_files[k]);
        if (!is_file(path)) {
            fprintf(stderr, "jukebox-bench pipeline: %s: missing\n", path);
            return EX_NOINPUT;
        }
    }
    return 0;
}

// Runs argv (NULL-terminated) with stdout appended to out_path; its exit status or -1.
static int run_tool(char *const argv[], const char *out_path) {
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        int fd = open(out_path, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd < 0 || dup2(fd, 1) < 0) _exit(EX_CANTCREAT);
        execv(argv[0], argv);
        _exit(EX_UNAVAILABLE);
    }
    int ws;
    while (waitpid(pid, &ws, 0) < 0)
        if (errno != EINTR) return -1;
    return WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
}

// The lengths jukebox-job chose (sample_seconds, total_seconds of its spec) into r->o.
static int read_lengths(run_t *r, const char *path) {
    char buf[8192], *p;
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f) fclose(f);
    buf[n] = 0;
    if ((p = strstr(buf, "\"sample_seconds\":"))) r->o.seconds = atof(p + 17);
    if ((p = strstr(buf, "\"total_seconds\":"))) r->o.total = atof(p + 16);
    if (r->o.seconds > 0 && r->o.total > 0) return 0;
    fprintf(stderr, "jukebox-bench pipeline: %s: no sample_seconds/total_seconds\n", path);
    return EX_SOFTWARE;
}

// The N job streams, one after the other, in DIR/jobs.jbc (jukebox-job: a job the models
// cannot take is refused here, with its reason). 0 or jukebox-job's exit status.
static int make_jobs(run_t *r) {
    char exe[PATH_MAX + 32], out[PATH_MAX + 32], spec[PATH_MAX + 32], vq[PATH_MAX + 32];
    char chk[3][PATH_MAX + 40];
    char id[32], seed[32], secs[32], total[32];
    snprintf(exe, sizeof exe, "%s/jukebox-job", r->bindir);
    snprintf(out, sizeof out, "%s/jobs.jbc", r->dir);
    snprintf(spec, sizeof spec, "%s/spec.json", r->dir);
    snprintf(vq, sizeof vq, "%s/vqvae.safetensors", r->models);
    for (int l = 0; l < 3; l++)   // r->models is a checked path (find_models): it fits
        if (snprintf(chk[l], sizeof chk[l], "%d=%s/prior_level_%d.safetensors", l, r->models,
                     l) >= (int)sizeof chk[l])
            return EX_USAGE;
    const double want_s = r->o.seconds, want_t = r->o.total;   // 0: jukebox-job's default
    snprintf(secs, sizeof secs, "%g", want_s);
    snprintf(total, sizeof total, "%g", want_t > 0 ? want_t : want_s);
    for (int j = -1; j < r->o.jobs; j++) {   // -1: the spec, for the lengths it got
        snprintf(id, sizeof id, "bench-%d", j < 0 ? 0 : j);
        snprintf(seed, sizeof seed, "%d", j < 0 ? 0 : j);
        char *argv[24] = {exe, "sample", "-q", "--id", id, "--seed", seed, "--vqvae", vq,
                          "--check", chk[2], "--check", chk[1], "--check", chk[0]};
        int n = 15;
        if (want_s > 0) argv[n++] = "--seconds", argv[n++] = secs;
        if (want_s > 0 || want_t > 0) argv[n++] = "--total-seconds", argv[n++] = total;
        if (j < 0) argv[n++] = "--print-spec";
        argv[n] = NULL;
        int rc = run_tool(argv, j < 0 ? spec : out);
        if (!rc && j < 0) rc = read_lengths(r, spec);
        if (rc) {
            fprintf(stderr, "jukebox-bench pipeline: jukebox-job refused the job (exit %d)\n",
                    rc);
            return rc > 0 && rc < 128 ? rc : EX_SOFTWARE;
        }
    }
    return 0;
}

// A datagram socket at DIR/nK for stage k's READY=1 (jb_service.h); fd or -1.
static int notify_socket(const run_t *r, int k, char *path, size_t size) {
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (snprintf(path, size, "%s/n%d", r->dir, k) >= (int)size ||
        strlen(path) >= sizeof sa.sun_path) {
        fprintf(stderr, "jukebox-bench pipeline: %s: too long a path for a socket (--tmp)\n",
                path);
        return -1;
    }
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa)) {
        fprintf(stderr, "jukebox-bench pipeline: socket %s: %s\n", path, strerror(errno));
        if (fd >= 0) close(fd);
        return -1;
    }
    return fd;
}

// Starts stage k reading in_fd and writing out_fd (the decoder: --outdir DIR/out). Every
// descriptor of this process is close-on-exec, so a stage holds only its own three.
static int start_stage(run_t *r, int k, int in_fd, int out_fd) {
    stage_t *s = &r->st[k];
    char exe[PATH_MAX + 32], model[PATH_MAX + 32], sock[PATH_MAX + 8], outdir[PATH_MAX + 8];
    char threads[16], parent[32];
    int errp[2];
    if ((s->notify_fd = notify_socket(r, k, sock, sizeof sock)) < 0) return -1;
    if (pipe2(errp, O_CLOEXEC)) return -1;
    snprintf(exe, sizeof exe, "%s/jukebox-%s", r->bindir, stage_names[k]);
    snprintf(model, sizeof model, "%s/%s.safetensors", r->models, model_files[k]);
    snprintf(outdir, sizeof outdir, "%s/out", r->dir);
    snprintf(threads, sizeof threads, "%d", r->o.threads);
    snprintf(parent, sizeof parent, "%ld", (long)getpid());
    char *argv[] = {exe, "--threads", threads, "--model", model,
                    k < 3 ? "--weights" : "--outdir", k < 3 ? (char *)r->o.weights : outdir,
                    r->o.verbose ? "-v" : NULL, NULL};
    if (r->o.logs) {
        char path[PATH_MAX + 32];
        snprintf(path, sizeof path, "%s/%s.log", r->o.logs, stage_names[k]);
        if (!(s->log = fopen(path, "we"))) {
            fprintf(stderr, "jukebox-bench pipeline: --logs: %s: %s\n", path, strerror(errno));
            return -1;
        }
    }
    s->pid = fork();
    if (s->pid < 0) return -1;
    if (s->pid == 0) {
        // NOTIFY_SOCKET: READY=1 once loaded; JUKEBOX_PARENT_PID: the stage stops when this
        // process ends, however it ends (jb_threads.h).
        setenv("NOTIFY_SOCKET", sock, 1);
        setenv("JUKEBOX_PARENT_PID", parent, 1);
        signal(SIGPIPE, SIG_DFL);   // as a shell starts it (ignored here, and that is inherited)
        if (dup2(in_fd, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(errp[1], 2) < 0) _exit(EX_OSERR);
        execv(exe, argv);
        _exit(EX_UNAVAILABLE);
    }
    close(errp[1]);
    s->err_fd = errp[0];
    return 0;
}

// The four stages, connected by pipes; the top prior's input is r->top_in.
static int start_stages(run_t *r) {
    r->t_start = bench_now();
    int p[2], in_fd, out_fd, devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (devnull < 0 || pipe2(p, O_CLOEXEC)) return -1;
    r->top_in = p[1];
    in_fd = p[0];
    for (int k = 0; k < N_STAGES; k++) {
        if (k < N_STAGES - 1) {
            if (pipe2(p, O_CLOEXEC)) return -1;
            out_fd = p[1];
        } else {
            out_fd = devnull;
        }
        int rc = start_stage(r, k, in_fd, out_fd);
        close(in_fd);
        close(out_fd);
        if (rc) return -1;
        in_fd = p[0];
    }
    return 0;
}

// CPU seconds (user + system) of process pid so far, from /proc/PID/stat; -1 if unreadable.
static double proc_cpu_s(pid_t pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *p = strrchr(buf, ')');   // after the command name, which may hold spaces
    unsigned long long ut, st;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut,
                     &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

// The number K of "job=bench-K ", or -1.
static int job_index(const char *line, int jobs) {
    const char *p = strstr(line, " job=bench-");
    if (!p) return -1;
    int k = atoi(p + 11);
    return k >= 0 && k < jobs ? k : -1;
}

// One line of stage k's stderr, read at `now`.
static void on_line(run_t *r, int k, const char *line, double now) {
    stage_t *s = &r->st[k];
    snprintf(s->tail[s->n_tail++ % 4], sizeof s->tail[0], "%s", line);
    if (s->log && r->t0 == 0 && s->n_pre < 64 && (s->pre_line[s->n_pre] = strdup(line)))
        s->pre_t[s->n_pre++] = now;   // stamped at the submission (flush_pre)
    else if (s->log)
        fprintf(s->log, "%8.3f %s\n", r->t0 > 0 ? now - r->t0 : now - r->t_start, line);
    if (strstr(line, " ERROR ") || strstr(line, " WARN ")) fprintf(stderr, "%s\n", line);
    int j = job_index(line, r->o.jobs);
    if (j < 0) return;
    jobrec_t *rec = &s->job[j];
    const char *p;
    long long n;
    double busy;
    if (k < 3 && (p = strstr(line, " done tokens=")) && sscanf(p, " done tokens=%lld busy=%lfs",
                                                                &n, &busy) == 2) {
        rec->tokens = n, rec->busy = busy, rec->seen = 1;
    } else if (k == 3 && strstr(line, " first audio decoded ")) {
        rec->first_audio = now - r->t0;
    } else if (k == 3 && strstr(line, " written to ") && (p = strstr(line, " codes=")) &&
               sscanf(p, " codes=%lld busy=%lfs", &n, &busy) == 2) {
        rec->tokens = n, rec->busy = busy, rec->seen = 1;
        rec->end = now - r->t0;
    }
}

// Reads what stage k wrote to stderr; at its end closes the pipe.
static void read_stderr(run_t *r, int k, double now) {
    stage_t *s = &r->st[k];
    ssize_t n = read(s->err_fd, s->line + s->len, sizeof s->line - 1 - s->len);
    if (n < 0 && errno == EINTR) return;
    if (n <= 0) {
        close(s->err_fd);
        s->err_fd = -1;
        return;
    }
    s->len += (size_t)n;
    s->line[s->len] = 0;
    char *start = s->line, *nl;
    while ((nl = strchr(start, '\n'))) {
        *nl = 0;
        on_line(r, k, start, now);
        start = nl + 1;
    }
    s->len = strlen(start);
    memmove(s->line, start, s->len + 1);
    if (s->len == sizeof s->line - 1) {   // a line longer than the buffer: take it as it is
        on_line(r, k, s->line, now);
        s->len = 0;
    }
}

// A datagram on stage k's notify socket: READY=1 marks it loaded.
static void read_notify(run_t *r, int k) {
    stage_t *s = &r->st[k];
    char msg[512];
    ssize_t n = recv(s->notify_fd, msg, sizeof msg - 1, 0);
    if (n <= 0) return;
    msg[n] = 0;
    if (!s->ready && jb_service_is_ready_msg(msg)) {
        s->ready = 1;
        s->cpu_ready = proc_cpu_s(s->pid);
    }
}

// The lines each stage wrote before the submission, into its log now that their stamps
// (seconds from the submission, negative) are known; also at the end of a run that never
// submitted (then from the stages' start).
static void flush_pre(run_t *r) {
    for (int k = 0; k < N_STAGES; k++) {
        stage_t *s = &r->st[k];
        for (int i = 0; i < s->n_pre; i++) {
            if (s->log)
                fprintf(s->log, "%8.3f %s\n", s->pre_t[i] - (r->t0 > 0 ? r->t0 : r->t_start),
                        s->pre_line[i]);
            free(s->pre_line[i]);
        }
        s->n_pre = 0;
    }
}

// The submission: every job stream to the top prior at once, then its end of input.
static int submit(run_t *r) {
    char path[PATH_MAX + 16], buf[65536];
    snprintf(path, sizeof path, "%s/jobs.jbc", r->dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC), rc = fd < 0 ? -1 : 0;
    r->t0 = bench_now();
    flush_pre(r);
    for (ssize_t n; !rc && (n = read(fd, buf, sizeof buf)) != 0;) {
        if (n < 0 && errno == EINTR) continue;
        for (ssize_t off = 0; n > 0 && off < n && !rc;) {
            ssize_t w = write(r->top_in, buf + off, (size_t)(n - off));
            if (w < 0 && errno != EINTR) rc = -1;
            off += w > 0 ? w : 0;
        }
        if (n < 0) rc = -1;
    }
    if (fd >= 0) close(fd);
    close(r->top_in);
    r->top_in = -1;
    if (rc) fprintf(stderr, "jukebox-bench pipeline: writing the jobs: %s\n", strerror(errno));
    return rc;
}

static void kill_stages(run_t *r) {
    r->killed = 1;
    for (int k = 0; k < N_STAGES; k++)
        if (r->st[k].pid > 0) kill(r->st[k].pid, SIGTERM);
}

// Reads the stages' stderr and notifications; submits the jobs once all four are ready;
// returns 0 when every stage has closed its stderr (it ended), -1 when one ended before it
// was ready (once all have ended), when the jobs could not be written or after --timeout
// (the stages then get SIGTERM).
static int run_loop(run_t *r) {
    double start = bench_now();
    int failed = 0;
    for (;;) {
        struct pollfd pf[2 * N_STAGES];
        int map[2 * N_STAGES], n = 0, n_open = 0, ready = 0;
        for (int k = 0; k < N_STAGES; k++) {
            stage_t *s = &r->st[k];
            if (s->err_fd >= 0) pf[n] = (struct pollfd){s->err_fd, POLLIN, 0}, map[n++] = k;
            if (s->notify_fd >= 0)
                pf[n] = (struct pollfd){s->notify_fd, POLLIN, 0}, map[n++] = N_STAGES + k;
            n_open += s->err_fd >= 0;
            ready += s->ready;
        }
        if (!n_open) return failed;
        if (r->t0 == 0 && n_open < N_STAGES && !failed) {
            // No jobs then: the top prior's input ends, and every stage ends by itself with
            // its own exit status (not a SIGTERM racing the one that failed).
            fprintf(stderr, "jukebox-bench pipeline: a stage ended before it was ready\n");
            close(r->top_in);
            r->top_in = -1;
            failed = -1;
        }
        if (r->t0 == 0 && !failed && ready == N_STAGES && submit(r)) {
            kill_stages(r);
            return -1;
        }
        double left = r->o.timeout - (bench_now() - start);
        if (left <= 0) {
            fprintf(stderr, "jukebox-bench pipeline: not done after %g s (--timeout); "
                            "stopping the stages\n", r->o.timeout);
            kill_stages(r);
            return -1;
        }
        if (poll(pf, (nfds_t)n, left > 1 ? 1000 : (int)(left * 1000) + 1) < 0 && errno != EINTR)
            return -1;
        double now = bench_now();
        for (int i = 0; i < n; i++) {
            if (!pf[i].revents) continue;
            if (map[i] < N_STAGES) read_stderr(r, map[i], now);
            else read_notify(r, map[i] - N_STAGES);
        }
    }
}

// Waits for every stage (its exit status, CPU and memory); 0 when all exited 0 (or were
// stopped from here), else the first failure's exit status (its last lines shown),
// EX_SOFTWARE for a signal.
static int reap(run_t *r) {
    int rc = 0;
    for (int k = 0; k < N_STAGES; k++) {
        stage_t *s = &r->st[k];
        if (s->pid <= 0) continue;
        while (wait4(s->pid, &s->status, 0, &s->ru) < 0 && errno == EINTR) {}
        int code = WIFEXITED(s->status) ? WEXITSTATUS(s->status) : EX_SOFTWARE;
        if (code && !rc && !r->killed) {
            rc = code >= EX__BASE && code <= EX__MAX ? code : EX_SOFTWARE;
            fprintf(stderr, "jukebox-bench pipeline: %s failed (%s %d); its last lines:\n",
                    stage_names[k], WIFEXITED(s->status) ? "exit" : "signal",
                    WIFEXITED(s->status) ? code : WTERMSIG(s->status));
            for (int i = s->n_tail > 4 ? s->n_tail - 4 : 0; i < s->n_tail; i++)
                fprintf(stderr, "  %s\n", s->tail[i % 4]);
        }
    }
    return rc;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

// What the run gives, per stage and for the jobs.
typedef struct {
    double busy, cpu, tokens, tps, share, rss;   // per job: busy s, CPU s, codes; codes/s
    int instances, instances_cpu;                // of a balanced layout: by busy s, CPU s
} figs_t;

typedef struct {
    figs_t st[N_STAGES];
    int bottleneck;
    char balance[128], balance_cpu[128];   // "1 top : 2 mid : 6 bottom : 1 decoder"
    double first[MAX_JOBS], end[MAX_JOBS];       // per job, seconds from submission
    double first_mean, end_mean, fraction, wall; // fraction: mean of first / end
} report_t;

// Instances of each stage that balance the pipeline: its seconds a job (busy, or CPU when
// by_cpu) over the least of the four, rounded, at least 1; and the line saying it.
static void balance(report_t *rep, int by_cpu, char *line, size_t size) {
    double x[N_STAGES], least = 0;
    for (int k = 0; k < N_STAGES; k++) {
        x[k] = by_cpu ? rep->st[k].cpu : rep->st[k].busy;
        if (x[k] > 0 && (least == 0 || x[k] < least)) least = x[k];
    }
    size_t len = 0;
    for (int k = 0; k < N_STAGES; k++) {
        int n = least > 0 ? (int)lround(x[k] / least) : 1;
        n = n < 1 ? 1 : n;
        *(by_cpu ? &rep->st[k].instances_cpu : &rep->st[k].instances) = n;
        len += (size_t)snprintf(line + len, size - len, "%s%d %s", k ? " : " : "", n,
                                short_names[k]);
    }
}

// 0, or -1 naming a stage that did not report a job.
static int compute(const run_t *r, report_t *rep) {
    const int N = r->o.jobs;
    double sum = 0;
    memset(rep, 0, sizeof *rep);
    for (int k = 0; k < N_STAGES; k++) {
        const stage_t *s = &r->st[k];
        figs_t *f = &rep->st[k];
        for (int j = 0; j < N; j++) {
            if (!s->job[j].seen || s->job[j].busy <= 0) {
                fprintf(stderr, "jukebox-bench pipeline: %s did not log the end of job bench-%d "
                                "(\"done tokens=... busy=...\": a stage older than this tool?)\n",
                        stage_names[k], j);
                return -1;
            }
            f->busy += s->job[j].busy / N;
            f->tokens += (double)s->job[j].tokens / N;
        }
        double cpu = s->ru.ru_utime.tv_sec + 1e-6 * s->ru.ru_utime.tv_usec +
                     s->ru.ru_stime.tv_sec + 1e-6 * s->ru.ru_stime.tv_usec;
        f->cpu = (cpu - (s->cpu_ready > 0 ? s->cpu_ready : 0)) / N;
        f->tps = f->tokens / f->busy;
        f->rss = s->ru.ru_maxrss / 1024.0;   // KiB on Linux
        sum += f->busy;
        if (f->busy > rep->st[rep->bottleneck].busy) rep->bottleneck = k;
    }
    for (int k = 0; k < N_STAGES; k++) rep->st[k].share = rep->st[k].busy / sum;
    balance(rep, 0, rep->balance, sizeof rep->balance);
    balance(rep, 1, rep->balance_cpu, sizeof rep->balance_cpu);
    const stage_t *d = &r->st[N_STAGES - 1];
    for (int j = 0; j < N; j++) {
        rep->end[j] = d->job[j].end;
        // no "first audio" line: the whole job was decoded at its end (shorter than a step)
        rep->first[j] = d->job[j].first_audio > 0 ? d->job[j].first_audio : d->job[j].end;
        rep->first_mean += rep->first[j] / N;
        rep->end_mean += rep->end[j] / N;
        rep->fraction += rep->first[j] / rep->end[j] / N;
        rep->wall = rep->end[j] > rep->wall ? rep->end[j] : rep->wall;
    }
    return 0;
}

static void print_table(const run_t *r, const report_t *rep, const double la[2]) {
    char mach[512];
    bench_machine(mach, sizeof mach, 1);
    const int N = r->o.jobs;
    printf("machine: %s\nmodels %s, %d jobs submitted at once, %g s of audio each (song "
           "%g s); %d threads a stage, weights %s\nload average at start %.2f\n\n",
           mach, r->models, N, r->o.seconds, r->o.total, r->o.threads, r->o.weights, la[0]);
    printf("%-17s %10s %9s %10s %9s %9s %6s %5s %8s\n", "stage", "tokens/job", "s/job",
           "tokens/s", "ms/token", "CPU s/job", "share", "inst", "RSS MiB");
    for (int k = 0; k < N_STAGES; k++) {
        const figs_t *f = &rep->st[k];
        printf("%-17s %10.0f %9.2f %10.1f %9.3f %9.2f %5.0f%% %5d %8.0f\n", stage_names[k],
               f->tokens, f->busy, f->tps, 1e3 / f->tps, f->cpu, 100 * f->share, f->instances,
               f->rss);
    }
    printf("\nbottleneck: %s (%.2f s a job)\nbalance: %s (by CPU s/job: %s)\n",
           stage_names[rep->bottleneck], rep->st[rep->bottleneck].busy, rep->balance,
           rep->balance_cpu);
    printf("first audio: %.2f s after submission, %.0f%% of the job's %.2f s (mean of %d jobs;"
           " each:", rep->first_mean, 100 * rep->fraction, rep->end_mean, N);
    for (int j = 0; j < N; j++) printf(" %.2f/%.2f", rep->first[j], rep->end[j]);
    printf(")\nall %d jobs done %.2f s after submission\n(s/job: the stage's busy seconds a job, "
           "from its log; tokens/s = tokens/job / s/job;\nshare: of the four stages' busy "
           "seconds; inst: instances that balance the pipeline)\nload average at end %.2f\n",
           N, rep->wall, la[1]);
}

static void print_json(const run_t *r, const report_t *rep, const double la[2]) {
    const int N = r->o.jobs;
    char models[2 * PATH_MAX], weights[128];
    bench_json_text(r->models, models, sizeof models);
    bench_json_text(r->o.weights, weights, sizeof weights);
    // The fields of `jukebox-bench stage` where they apply (docs/bench.md).
    for (int k = 0; k < N_STAGES; k++) {
        const figs_t *f = &rep->st[k];
        printf("{\"name\":\"pipeline\",\"stage\":\"%s\",\"config\":\"%s\",\"weights\":\"%s\","
               "\"threads\":%d,\"jobs\":%d,\"seconds\":%g,\"tokens\":%.0f,\"busy_s\":%.3f,"
               "\"tokens_per_s\":%.3f,\"ms_per_token\":%.6f,\"cpu_s\":%.3f,\"share\":%.4f,"
               "\"instances\":%d,\"instances_cpu\":%d,\"bottleneck\":%s,\"peak_rss_mib\":%.1f",
               stage_names[k], models, k < 3 ? weights : "stored", r->o.threads, N,
               r->o.seconds, f->tokens, f->busy, f->tps, 1e3 / f->tps, f->cpu, f->share,
               f->instances, f->instances_cpu, k == rep->bottleneck ? "true" : "false", f->rss);
        if (k == N_STAGES - 1)
            printf(",\"first_output_s\":%.3f,\"job_s\":%.3f", rep->first_mean, rep->end_mean);
        printf(",\"load_avg\":%.2f}\n", la[0]);
    }
    printf("{\"name\":\"pipeline\",\"stage\":\"all\",\"config\":\"%s\",\"weights\":\"%s\","
           "\"threads\":%d,\"jobs\":%d,\"seconds\":%g,\"total_seconds\":%g,"
           "\"bottleneck\":\"%s\",\"balance\":\"%s\",\"instances\":[%d,%d,%d,%d],"
           "\"balance_cpu\":\"%s\",\"instances_cpu\":[%d,%d,%d,%d],"
           "\"first_output_s\":%.3f,\"job_s\":%.3f,\"first_output_fraction\":%.4f,"
           "\"wall_s\":%.3f,\"first_output_s_each\":[",
           models, weights, r->o.threads, N, r->o.seconds, r->o.total,
           stage_names[rep->bottleneck], rep->balance, rep->st[0].instances,
           rep->st[1].instances, rep->st[2].instances, rep->st[3].instances, rep->balance_cpu,
           rep->st[0].instances_cpu, rep->st[1].instances_cpu, rep->st[2].instances_cpu,
           rep->st[3].instances_cpu, rep->first_mean,
           rep->end_mean, rep->fraction, rep->wall);
    for (int j = 0; j < N; j++) printf("%s%.3f", j ? "," : "", rep->first[j]);
    printf("],\"job_s_each\":[");
    for (int j = 0; j < N; j++) printf("%s%.3f", j ? "," : "", rep->end[j]);
    char wait[96], wait_j[256];   // how the stages' threads wait (the table's header says it)
    bench_stage_wait_policy(wait, sizeof wait);
    printf("],\"load_avg\":%.2f,\"load_avg_end\":%.2f,\"omp_wait\":\"%s\"}\n", la[0], la[1],
           bench_json_text(wait, wait_j, sizeof wait_j));
}

int bench_pipeline(int argc, char **argv) {
    run_t *r = calloc(1, sizeof *r);
    if (!r) return EX_OSERR;
    int rc = parse_args(argc, argv, &r->o);
    if (rc) {
        free(r);
        return rc < 0 ? 0 : rc;
    }
    if ((rc = find_files(r))) {
        free(r);
        return rc;
    }
    struct stat sb;
    if (r->o.logs && (stat(r->o.logs, &sb) || !S_ISDIR(sb.st_mode))) {
        fprintf(stderr, "jukebox-bench pipeline: --logs %s: no such directory\n", r->o.logs);
        free(r);
        return EX_CANTCREAT;
    }
    signal(SIGPIPE, SIG_IGN);   // a stage that died shows in its exit status
    for (int k = 0; k < N_STAGES; k++) r->st[k].err_fd = r->st[k].notify_fd = -1;
    r->top_in = -1;
    snprintf(r->dir, sizeof r->dir, "%s/jb_bench_pipeline.XXXXXX", r->o.tmp);
    if (!mkdtemp(r->dir)) {
        fprintf(stderr, "jukebox-bench pipeline: %s: %s\n", r->dir, strerror(errno));
        free(r);
        return EX_CANTCREAT;
    }
    // Absolute: the stages' NOTIFY_SOCKET lives here, and libsystemd takes only an
    // absolute (or abstract) socket path: with a relative --tmp no READY=1 ever came.
    char abs_dir[PATH_MAX];
    if (realpath(r->dir, abs_dir) && strlen(abs_dir) < sizeof r->dir)
        snprintf(r->dir, sizeof r->dir, "%s", abs_dir);
    double la[2] = {-1, -1}, la3[3];
    if (getloadavg(la3, 3) > 0) la[0] = la3[0];
    report_t rep;
    if ((rc = make_jobs(r)) == 0) {
        if (start_stages(r)) {
            fprintf(stderr, "jukebox-bench pipeline: starting the stages: %s\n", strerror(errno));
            kill_stages(r);
            rc = EX_OSERR;
        }
        int stopped = rc ? 0 : run_loop(r);
        int st = reap(r);   // a stage's own failure says most (a bad model: 65, 66)
        rc = rc ? rc : st ? st : stopped ? EX_SOFTWARE : 0;
        if (!rc && compute(r, &rep)) rc = EX_SOFTWARE;
    }
    flush_pre(r);   // a run stopped before its submission: what the stages said
    for (int k = 0; k < N_STAGES; k++) {
        if (r->st[k].err_fd >= 0) close(r->st[k].err_fd);
        if (r->st[k].notify_fd >= 0) close(r->st[k].notify_fd);
        if (r->st[k].log) fclose(r->st[k].log);
    }
    if (r->top_in >= 0) close(r->top_in);
    nftw(r->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    if (!rc) {
        if (getloadavg(la3, 3) > 0) la[1] = la3[0];
        if (r->o.json) print_json(r, &rep, la);
        else print_table(r, &rep, la);
    }
    free(r);
    return rc;
}
