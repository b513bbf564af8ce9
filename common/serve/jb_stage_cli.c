// jb_stage_cli.c: the command line shared by the three prior stages (jb_stage.h).
#include <getopt.h>
#include <omp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#include <sysexits.h>

#include "jb_device.h"
#include "jb_log.h"
#include "jb_stage.h"
#include "jb_threads.h"
#include "jb_transformer.h"

static volatile sig_atomic_t g_stop;

static void on_signal(int sig) {
    (void)sig;
    g_stop = 1;
}

static void usage(FILE *f, const char *stage, int level) {
    const char *what = level == 2   ? "the top-level prior: samples top codes from labels, "
                                      "lyrics and timing"
                       : level == 1 ? "the middle upsampler: samples middle codes from top codes"
                                    : "the bottom upsampler: samples bottom codes from middle codes";
    fprintf(f,
            "usage: jukebox-%s --model FILE [options]\n"
            "\n"
            "Stage of the Jukebox pipeline: %s.\n"
            "Reads a job stream (jobs, codes of other levels), passes every message on and adds\n"
            "this level's codes window by window, so the last stage holds every level.\n"
            "\n"
            "options:\n"
            "  -m, --model FILE     prior model file (.safetensors) of level %d (required)\n"
            "  -i, --in ENDPOINT    where messages come from (default '-': stdin)\n"
            "  -o, --out ENDPOINT   where messages go (default '-': stdout)\n"
            "                       ENDPOINT: '-', a file (a codes file), tcp://host:port or\n"
            "                       ipc://path (ZeroMQ; an input binds, an output connects;\n"
            "                       prefix '@' to bind, '>' to connect; several addresses,\n"
            "                       comma-separated, for several instances above or below).\n"
            "                       ZeroMQ endpoints are reliable links: docs/reliability.md\n"
            "  -t, --threads N      compute threads (default: all cores)\n"
            "  -b, --max-batch N    samples sampled together at most, of one job or of several:\n"
            "                       jobs whose next windows can share a step (same prime\n"
            "                       length and fill) advance together, each with the codes\n"
            "                       it gets alone (CPU or GPU; default 16)\n"
            "  -c, --max-chunk N    priming chunk capacity in tokens (default 64)\n"
            "  -d, --device DEV     cpu, cuda or cuda:N (default cpu)\n"
            "      --weights W      matrix weights in memory: stored (as in the model file, the\n"
            "                       default), bf16, f16 or f32 (converted at load, round to\n"
            "                       nearest even; bf16 halves the memory traffic of f32 files),\n"
            "                       or int8 (quantized at load, a scale per column and 64 rows:\n"
            "                       half of bf16's traffic; CPU and GPU)\n"
            "      --packed 0|1     repack the matrix weights at load for the sampling kernel\n"
            "                       (default 1: faster steps, one private copy of the weights)\n"
            "  -s, --spool DIR      keep every job's input and output in DIR (one directory\n"
            "                       per job) so that a restarted stage resumes its jobs from\n"
            "                       the last window it completed; one instance per DIR\n"
            "      --name NAME      instance name on the links (default <host>-<pid>); give a\n"
            "                       restarted instance the same name so its peers know it\n"
            "      --heartbeat MS   link: heartbeat after MS without sending (default 1000)\n"
            "      --peer-timeout MS  link: a peer silent this long is dead; its jobs go to\n"
            "                       another instance (default 5000)\n"
            "      --control EP     also bind EP (tcp:// or ipc://) to answer status queries\n"
            "                       (jukebox status EP)\n"
            "  -q, --quiet          errors only\n"
            "  -v, --verbose        debug logging\n"
            "  -h, --help           this text\n"
            "\n"
            "signals: SIGTERM or SIGINT: the window being sampled is finished (spooled and\n"
            "  sent), then (over a link) every unfinished job is handed back to its producer;\n"
            "  exit 0. With --spool, unfinished jobs resume on the next start.\n"
            "\n"
            "exit codes: 0 input ended and every job was passed on (or stopped by SIGTERM),\n"
            "  64 bad usage, 65 bad input stream, 66 model missing, 69 device or peer\n"
            "  unavailable (also: with --spool, the input ended in the middle of a job, which\n"
            "  stays in the spool), 70 internal error, 74 write failed (a spool write too).\n"
            "  A job that is refused (bad spec, lengths out of the model's range) is reported\n"
            "  downstream as an error record and does not stop the stage.\n",
            stage, what, level);
}

// The command line into o, *device and *threads. -1 when the stage is to run, else the
// exit code (0 after --help, EX_USAGE with a message on stderr).
static int parse_args(int argc, char **argv, const char *stage, int level, jb_stage_opts_t *o,
                      const char **device, int *threads) {
    static const struct option longs[] = {
        {"model", required_argument, 0, 'm'},   {"in", required_argument, 0, 'i'},
        {"out", required_argument, 0, 'o'},     {"threads", required_argument, 0, 't'},
        {"max-batch", required_argument, 0, 'b'}, {"max-chunk", required_argument, 0, 'c'},
        {"device", required_argument, 0, 'd'},  {"quiet", no_argument, 0, 'q'},
        {"verbose", no_argument, 0, 'v'},       {"help", no_argument, 0, 'h'},
        {"weights", required_argument, 0, 'W'}, {"packed", required_argument, 0, 'P'},
        {"spool", required_argument, 0, 's'},
        {"name", required_argument, 0, 'N'},    {"heartbeat", required_argument, 0, 'H'},
        {"peer-timeout", required_argument, 0, 'T'}, {"control", required_argument, 0, 'C'},
        {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "m:i:o:t:b:c:d:s:qvh", longs, NULL)) != -1) {
        char *end = NULL;
        switch (c) {
        case 'm': o->model_path = optarg; break;
        case 'i': o->in = optarg; break;
        case 'o': o->out = optarg; break;
        case 't':
        case 'b':
        case 'c': {
            long v = strtol(optarg, &end, 10);
            if (!*optarg || *end || v < 1 || v > 4096) {
                fprintf(stderr, "jukebox-%s: -%c %s: expected a positive integer\n", stage, c,
                        optarg);
                return EX_USAGE;
            }
            if (c == 't') *threads = (int)v;
            else if (c == 'b') o->max_batch = (int)v;
            else o->max_chunk = (int)v;
            break;
        }
        case 'd': *device = optarg; break;
        case 's': o->spool = optarg; break;
        case 'N': o->name = optarg; break;
        case 'C': o->control = optarg; break;
        case 'H':
        case 'T': {
            long v = strtol(optarg, &end, 10);
            if (!*optarg || *end || v < 1 || v > 86400000) {
                fprintf(stderr, "jukebox-%s: --%s %s: expected milliseconds\n", stage,
                        c == 'H' ? "heartbeat" : "peer-timeout", optarg);
                return EX_USAGE;
            }
            if (c == 'H') o->heartbeat_ms = (int)v;
            else o->peer_timeout_ms = (int)v;
            break;
        }
        case 'W':
            if ((o->weights = jb_weights_parse(optarg)) < 0) {
                fprintf(stderr, "jukebox-%s: --weights %s: expected stored, bf16, f16, f32 or int8\n",
                        stage, optarg);
                return EX_USAGE;
            }
            break;
        case 'P':
            if (strcmp(optarg, "0") && strcmp(optarg, "1")) {
                fprintf(stderr, "jukebox-%s: --packed %s: expected 0 or 1\n", stage, optarg);
                return EX_USAGE;
            }
            o->packed = optarg[0] == '1';
            break;
        case 'q': jb_log_set_level(JB_ERROR); break;
        case 'v': jb_log_set_level(JB_DEBUG); break;
        case 'h': usage(stdout, stage, level); return 0;
        default: usage(stderr, stage, level); return EX_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "jukebox-%s: unexpected argument '%s' (see --help)\n", stage, argv[optind]);
        return EX_USAGE;
    }
    int heartbeat = o->heartbeat_ms ? o->heartbeat_ms : 1000;       // the link's defaults
    int peer_timeout = o->peer_timeout_ms ? o->peer_timeout_ms : 5000;
    if ((o->heartbeat_ms || o->peer_timeout_ms) && peer_timeout <= heartbeat) {
        fprintf(stderr, "jukebox-%s: --peer-timeout must be longer than --heartbeat\n", stage);
        return EX_USAGE;
    }
    if (!o->model_path) {
        fprintf(stderr, "jukebox-%s: --model is required (see --help)\n", stage);
        return EX_USAGE;
    }
    return -1;
}

int jb_stage_prior_main(int argc, char **argv, const char *stage, int level) {
    jb_stage_opts_t o = {.stage = stage, .level = level, .in = "-", .out = "-",
                         .max_batch = 16, .max_chunk = 64, .stop = &g_stop,
                         .weights = JB_WEIGHTS_STORED, .packed = 1};
    const char *device = "cpu";
    int threads = 0;
    jb_log_set_stage(stage);
    int code = parse_args(argc, argv, stage, level, &o, &device, &threads);
    if (code >= 0) return code;
    jb_err_t err = {0};
    jb_device_t dev;
    if (jb_device_parse(device, &dev, &err) || jb_device_open(&dev, &err)) {
        jb_log(JB_ERROR, "%s", err.msg);
        return jb_err_exit_code(err.code);
    }
    o.cuda = dev.is_cuda;
    if (dev.is_cuda) jb_log(JB_INFO, "device %s, %.1f GiB free", dev.name,
                            (double)dev.mem_free / (1 << 30));
    jb_threads_set(threads);   // 0: OMP_NUM_THREADS, else every core; idle threads sleep
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;   // no SA_RESTART: a wait returns so the loop sees the flag
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    if (jb_stage_prior_run(&o, &err) != 0) {
        // Stopped by a signal; or, once asked to stop, the next stage (stopped by the
        // same signal) was gone before the last window could go to it: that window is
        // in the spool (written before sending) and goes out on the next start.
        if (err.code == JB_ECANCEL || (g_stop && err.code == JB_EUNAVAIL)) {
            if (err.code != JB_ECANCEL) jb_log(JB_INFO, "%s", err.msg);
            jb_log(JB_INFO, "stopped by a signal");
            return 0;
        }
        jb_log(JB_ERROR, "%s", err.msg);
        return jb_err_exit_code(err.code);
    }
    return 0;
}
