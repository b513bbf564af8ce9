// jukebox-decoder: VQ-VAE codes (frame stream from stdin, a codes file or ZeroMQ) -> audio
// files. The work is jb_codec_decode_stream.
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <sysexits.h>

#include "jb_codec.h"
#include "jb_collect.h"
#include "jb_device.h"
#include "jb_link.h"
#include "jb_log.h"

static volatile int stop_flag;
static void on_signal(int sig) { stop_flag = sig; }

// SIGTERM / SIGINT: finish the file being written, drop unfinished jobs, exit 0.
// No SA_RESTART, so a wait for input is interrupted at once.
static void install_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
}

static void usage(FILE *f) {
    fprintf(f,
"Usage: jukebox-decoder --model VQVAE.safetensors [options] -o AUDIO\n"
"\n"
"Turns Jukebox VQ-VAE codes (from jukebox-encoder, a codes file, or the pipeline's last\n"
"stage) back into audio, through the decoder of one level.\n"
"\n"
"  -i, --in ENDPOINT         where the codes come from (default \"-\", stdin): \"-\", a codes\n"
"                            file, or tcp://HOST:PORT / ipc://PATH (ZeroMQ; binds unless\n"
"                            the address starts with '>').\n"
"      --outdir ROOT         pipeline mode: for each job write the run directory\n"
"                            ROOT/<job id>/ (audio of every level and sample, codes.jbc,\n"
"                            job.json, labels.json, index.html); a failed job leaves\n"
"                            ROOT/<job id>/error.json. Replaces -o.\n"
"      --spool DIR           with --outdir: keep every job's messages in DIR until its run\n"
"                            directory is written, so that a restarted decoder decodes its\n"
"                            unfinished jobs again (one instance per DIR). A job whose\n"
"                            ROOT/<job id> exists is then taken as done.\n"
"      --jobs N              with --outdir: exit after N jobs (for a decoder listening on\n"
"                            a socket); default: until the input ends.\n"
"      --decode-step N       with --outdir: decode the bottom level N codes at a time as\n"
"                            they stream in (default: one second of audio; 0: only when\n"
"                            the job is complete).\n"
"      --name NAME           instance name on a link (default <host>-<pid>).\n"
"      --heartbeat MS        link: heartbeat after MS without sending (default 1000).\n"
"      --peer-timeout MS     link: a peer silent this long is dead (default 5000).\n"
"      --control EP          also bind EP to answer status queries (jukebox status).\n"
"                            Over a link (tcp://, ipc://) the decoder reports each job\n"
"                            DONE upstream once its run directory is in place (or its\n"
"                            error.json written); a job whose ROOT/<id> exists is DONE at\n"
"                            once. See docs/reliability.md.\n"
"  -d, --device DEV          cpu, cuda or cuda:N (default cpu): where the VQ-VAE runs.\n"
"  -o, --out FILE            audio file to write (or --outdir). The extension picks the format:\n"
"                            .wav (16-bit PCM; see --float) or .flac (16-bit); \"-\" writes a\n"
"                            WAV to stdout. The name may hold {job}, {sample} and {level};\n"
"                            when a job has several samples and the name has no {sample},\n"
"                            \"_N\" goes before the extension (out_0.wav, out_1.wav). Files\n"
"                            are written under a temporary name and renamed when complete.\n"
"  -m, --model FILE          VQ-VAE model file (safetensors with kind \"vqvae\"). Required.\n"
"  -L, --level L             level to decode (0 bottom, 1 middle, 2 top). Default: the\n"
"                            lowest (finest) level present in each job.\n"
"      --float               32-bit float WAV instead of 16-bit PCM (keeps values beyond\n"
"                            [-1, 1]; 16-bit output clips them).\n"
"      --flac                FLAC whatever the extension.\n"
"  -t, --threads N           compute threads (OpenMP and OpenBLAS; default: their own).\n"
"  -w, --window SAMPLES      largest pass of the VQ-VAE in samples (default 524288, ~12 s;\n"
"                            at least 2 x the widest context + 128: 92288 for the released\n"
"                            model, less is refused):\n"
"                            longer audio is decoded in overlapping chunks, memory bounded.\n"
"  -q, --quiet               only errors on stderr.   -v, --verbose   debug lines too.\n"
"  -h, --help                this text.\n"
"\n"
"Length: the encoder pads audio with zeros to a multiple of the top hop length (128\n"
"samples) and records the true length (audio_len); the output is cut back to it. Codes\n"
"without a recorded length give len * hop_L samples.\n"
"\n"
"Jobs: every job in the stream is decoded when its END message arrives. A job that\n"
"cannot be decoded is reported and skipped (one error each; its later messages are\n"
"dropped); the others are still written.\n"
"\n"
"Signals: SIGTERM or SIGINT stops the decoder cleanly (exit 0): a file being written is\n"
"finished, jobs not complete yet are dropped without output.\n"
"\n"
"Exit codes (docs/wire.md 8.5, the same for -o and --outdir): 0 every job written (or\n"
"stopped by SIGTERM/SIGINT); 64 bad usage (also: two jobs would write the same file);\n"
"65 bad input data (a job failed: corrupt codes, codes for another model, a missing\n"
"level, an error from upstream; a truncated stream; messages naming no job skipped; an\n"
"input with no complete job; a model file that is not a VQ-VAE); 66 codes or model file\n"
"missing; 69 the input ended in the middle of a job (the stage before died; with --spool:\n"
"kept for a restart), a ZeroMQ peer or the device unusable; 70 internal error or out of\n"
"memory; 74 writing the audio failed (checked before any work: the directory of -o must\n"
"exist, --outdir must be creatable). A job the input cut is never written as a lower\n"
"level: -o writes it only when --level names a level that is complete.\n"
"No partial output file is left on failure.\n"
"\n"
"Example: jukebox-decoder -m vqvae.safetensors < song.jbc -o song.wav\n"
"         jukebox-encoder -m vqvae.safetensors song.flac | jukebox-decoder -m \\\n"
"             vqvae.safetensors --level 2 -o preview.wav\n");
}

// Where the output goes must be writable before any work: a decoder that finds out after
// decoding (minutes of a long song) has wasted them. `dir` is the directory the files go
// in (with !must_exist created when missing, so its nearest existing ancestor is
// checked). 0 or the exit code (74).
static int check_out_dir(const char *opt, const char *arg, const char *dir, int must_exist) {
    char p[4096];
    snprintf(p, sizeof p, "%s", dir);
    struct stat sb;
    if (must_exist && stat(p, &sb) != 0) {
        fprintf(stderr, "jukebox-decoder: %s %s: no directory %s\n", opt, arg, p);
        return EX_IOERR;
    }
    while (stat(p, &sb) != 0) {
        char *slash = strrchr(p, '/');
        if (!slash) {
            snprintf(p, sizeof p, ".");
            break;
        }
        if (slash == p) slash[1] = 0;
        else *slash = 0;
    }
    if (stat(p, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        fprintf(stderr, "jukebox-decoder: %s %s: %s is not a directory\n", opt, arg, p);
        return EX_IOERR;
    }
    if (access(p, W_OK | X_OK) != 0) {
        fprintf(stderr, "jukebox-decoder: %s %s: cannot write in %s: %s\n", opt, arg, p,
                strerror(errno));
        return EX_IOERR;
    }
    return 0;
}

static jb_link_opts_t g_link;    // --name, --heartbeat, --peer-timeout
static const char *g_control;    // --control EP
static jb_endpoint_t *g_in;      // for the control endpoint's status

static char *decoder_status(void *user) {
    (void)user;
    return strdup("{\"stage\":\"decoder\"}");
}

// --control: the input link's status as it is (its keys at the top, as before), the
// decoder's keys (stage, pid, jobs_in_flight: the jobs its link holds) and the link again
// nested as "in", the shape of a stage's control reply (reliability.md "Status reply").
static char *control_status(void *user) {
    (void)user;
    char *t = jb_endpoint_status_json(g_in);   // NULL for a stream
    json_t *o = t ? json_loads(t, 0, NULL) : NULL;
    free(t);
    if (!o) o = json_object();
    if (!o) return NULL;
    json_t *in = json_deep_copy(o), *jobs = json_array(), *j;
    size_t i;
    json_array_foreach(json_object_get(o, "jobs"), i, j)
        json_array_append_new(jobs, json_pack("{s:O}", "id", json_object_get(j, "id")));
    json_object_set_new(o, "stage", json_string("decoder"));
    json_object_set_new(o, "pid", json_integer(getpid()));
    json_object_set_new(o, "jobs_in_flight", jobs);
    if (in && json_object_size(in)) json_object_set_new(o, "in", in);
    else json_decref(in);
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return text;
}

// Each known job's messages are bounded by its levels' lengths under this model.
static void set_admit(jb_endpoint_opts_t *eo, const jb_vqvae_t *vq) {
    const jb_vqvae_hparams_t *hp = jb_vqvae_hparams(vq);
    eo->admit.sr = hp->sr;
    eo->admit.levels = hp->levels <= JB_WIRE_MAX_LEVEL + 1 ? hp->levels : JB_WIRE_MAX_LEVEL + 1;
    for (int l = 0; l < eo->admit.levels; l++) eo->admit.hop[l] = hp->hop_lengths[l];
}

// --outdir: the pipeline's last stage (jb_collect).
static int run_outdir(const char *model, const char *in, const char *root, int max_jobs,
                      int threads, long long window, long long decode_step, int cuda,
                      const char *spool) {
    jb_err_t err = {0};
    if (threads) jb_codec_set_threads(threads);
    jb_vqvae_t *vq = jb_codec_load_vqvae(model, window, &err);
    if (!vq) {
        jb_log(JB_ERROR, "%s", err.msg);
        return jb_err_exit_code(err.code);
    }
    void *on_dev = NULL;
    if (jb_codec_attach_device(vq, cuda, &on_dev, &err)) {
        jb_log(JB_ERROR, "%s", err.msg);
        jb_vqvae_destroy(&vq);
        return jb_err_exit_code(err.code);
    }
    install_signals();
    jb_spool_t *sp = NULL;
    if (spool) {
        if (!(sp = jb_spool_open(spool, &err))) {
            jb_log(JB_ERROR, "%s", err.msg);
            jb_codec_detach_device(vq, &on_dev);
            jb_vqvae_destroy(&vq);
            return jb_err_exit_code(err.code);
        }
        for (int i = 0; i < jb_spool_n_warnings(sp); i++)
            jb_log(JB_WARN, "%s", jb_spool_warning(sp, i));
    }
    static char spool_name[200];   // with a spool, the default name survives a restart
    if (sp && !g_link.name)
        g_link.name = jb_spool_instance_name(sp, spool_name, sizeof spool_name);
    static atomic_int spool_ready;
    jb_collect_opts_t co = {.root = root, .max_jobs = max_jobs, .stop = &stop_flag,
                            .decode_step = decode_step, .spool = sp, .spool_ready = &spool_ready};
    if (sp) {   // a link input spools each message before acking it
        g_link.persist = jb_collect_persist;
        g_link.persist_user = &co;
    }
    jb_endpoint_opts_t eo;
    jb_endpoint_default_opts(&eo);
    eo.codebook = jb_vqvae_hparams(vq)->l_bins;
    set_admit(&eo, vq);
    g_link.admit = eo.admit;
    g_link.stage = "decoder";
    g_link.stop = (volatile sig_atomic_t *)&stop_flag;
    g_link.status = decoder_status;
    eo.link = &g_link;
    jb_endpoint_t *ep = jb_endpoint_open_in(in, &eo, &err);
    g_in = ep;
    co.in = ep;
    jb_link_t *control = NULL;
    if (ep && g_control) {
        jb_link_opts_t cl = g_link;
        cl.role = JB_LINK_CONTROL;
        cl.status = control_status;
        cl.persist = NULL;
        if (!(control = jb_link_open(g_control, &cl, &err))) {
            jb_log(JB_ERROR, "%s", err.msg);
            jb_endpoint_destroy(&ep);
            jb_spool_destroy(&sp);
            jb_codec_detach_device(vq, &on_dev);
            jb_vqvae_destroy(&vq);
            return jb_err_exit_code(err.code);
        }
    }
    jb_collect_stats_t st;
    int rc = 0;
    if (!ep || jb_collect_run(vq, ep, &co, &st, &err)) {
        jb_log(JB_ERROR, "%s", err.msg);
        rc = jb_err_exit_code(err.code);
    } else if (st.jobs_failed) {
        jb_log(JB_ERROR, "%d of %d job(s) failed (see ROOT/<job>/error.json)", st.jobs_failed,
               st.jobs_failed + st.jobs_done);
        rc = st.first_fail_code ? st.first_fail_code : EX_DATAERR;
    } else if (st.jobs_kept) {
        jb_log(JB_ERROR, "the input ended in the middle of %d job(s), kept in the spool %s",
               st.jobs_kept, spool);
        rc = EX_UNAVAILABLE;
    } else if (st.msgs_skipped) {
        jb_log(JB_ERROR, "%d job(s) written under %s, but %d message(s) naming no job were "
               "skipped", st.jobs_done, root, st.msgs_skipped);
        rc = EX_DATAERR;
    } else if (!st.jobs_done && !stop_flag && !jb_endpoint_spec_is_link(in)) {
        jb_log(JB_ERROR, "%s: the input ended before any complete job (did the stage before "
               "this one fail?)", in);
        rc = EX_DATAERR;
    } else {
        jb_log(JB_INFO, "%d job(s) written under %s; first audio %.2f s, all %.2f s after the "
               "first message", st.jobs_done, root, st.first_audio_s, st.total_s);
    }
    jb_link_close(&control, 0);
    g_in = NULL;
    jb_endpoint_destroy(&ep);   // a link input: the last DONEs get up to 1 s to leave
    jb_spool_destroy(&sp);
    jb_codec_detach_device(vq, &on_dev);
    jb_vqvae_destroy(&vq);
    return rc;
}

int main(int argc, char **argv) {
    const char *in = "-", *out = NULL, *model = NULL;
    int threads = 0, level = -1, want_float = 0, want_flac = 0, max_jobs = 0;
    const char *outdir = NULL, *device = "cpu";
    long long window = 0;
    jb_log_set_stage("decoder");
    enum { OPT_FLOAT = 1000, OPT_FLAC, OPT_OUTDIR, OPT_JOBS, OPT_STEP, OPT_NAME, OPT_HB,
           OPT_PEER, OPT_CONTROL, OPT_SPOOL };
    const char *spool = NULL;
    jb_link_default_opts(&g_link);
    long long decode_step = 0;
    static const struct option opts[] = {
        {"in", required_argument, 0, 'i'},     {"out", required_argument, 0, 'o'},
        {"model", required_argument, 0, 'm'},  {"level", required_argument, 0, 'L'},
        {"float", no_argument, 0, OPT_FLOAT},  {"flac", no_argument, 0, OPT_FLAC},
        {"outdir", required_argument, 0, OPT_OUTDIR}, {"jobs", required_argument, 0, OPT_JOBS},
        {"decode-step", required_argument, 0, OPT_STEP},
        {"spool", required_argument, 0, OPT_SPOOL},
        {"name", required_argument, 0, OPT_NAME}, {"heartbeat", required_argument, 0, OPT_HB},
        {"peer-timeout", required_argument, 0, OPT_PEER},
        {"control", required_argument, 0, OPT_CONTROL},
        {"device", required_argument, 0, 'd'},
        {"threads", required_argument, 0, 't'}, {"window", required_argument, 0, 'w'},
        {"quiet", no_argument, 0, 'q'},        {"verbose", no_argument, 0, 'v'},
        {"help", no_argument, 0, 'h'},         {0, 0, 0, 0},
    };
    int c;
    char *end;
    while ((c = getopt_long(argc, argv, "i:o:m:L:t:w:d:qvh", opts, NULL)) != -1) {
        switch (c) {
        case 'i': in = optarg; break;
        case 'o': out = optarg; break;
        case 'm': model = optarg; break;
        case 'L':
            level = (int)strtol(optarg, &end, 10);
            if (*end || !*optarg || level < 0 || level > JB_WIRE_MAX_LEVEL) {
                fprintf(stderr, "jukebox-decoder: --level: expected a level number, got '%s'\n",
                        optarg);
                return EX_USAGE;
            }
            break;
        case OPT_FLOAT: want_float = 1; break;
        case OPT_OUTDIR: outdir = optarg; break;
        case OPT_SPOOL: spool = optarg; break;
        case OPT_JOBS:
            max_jobs = (int)strtol(optarg, &end, 10);
            if (*end || max_jobs < 1) {
                fprintf(stderr, "jukebox-decoder: --jobs: expected a positive count, got '%s'\n",
                        optarg);
                return EX_USAGE;
            }
            break;
        case 'd': device = optarg; break;
        case OPT_NAME: g_link.name = optarg; break;
        case OPT_CONTROL: g_control = optarg; break;
        case OPT_HB:
        case OPT_PEER: {
            long v = strtol(optarg, &end, 10);
            if (*end || !*optarg || v < 1 || v > 86400000) {
                fprintf(stderr, "jukebox-decoder: --%s: expected milliseconds, got '%s'\n",
                        c == OPT_HB ? "heartbeat" : "peer-timeout", optarg);
                return EX_USAGE;
            }
            if (c == OPT_HB) g_link.heartbeat_ms = (int)v;
            else g_link.peer_timeout_ms = (int)v;
            break;
        }
        case OPT_STEP:
            decode_step = strtoll(optarg, &end, 10);
            if (*end || !*optarg || decode_step < 0) {
                fprintf(stderr, "jukebox-decoder: --decode-step: expected a count, got '%s'\n",
                        optarg);
                return EX_USAGE;
            }
            if (decode_step == 0) decode_step = -1;   // only at the end
            break;
        case OPT_FLAC: want_flac = 1; break;
        case 't':
            threads = (int)strtol(optarg, &end, 10);
            if (*end || threads < 1 || threads > 1024) {
                fprintf(stderr, "jukebox-decoder: --threads: expected 1..1024, got '%s'\n", optarg);
                return EX_USAGE;
            }
            break;
        case 'w':
            window = strtoll(optarg, &end, 10);
            if (*end || window < 1) {
                fprintf(stderr, "jukebox-decoder: --window: expected a sample count, got '%s'\n",
                        optarg);
                return EX_USAGE;
            }
            break;
        case 'q': jb_log_set_level(JB_ERROR); break;
        case 'v': jb_log_set_level(JB_DEBUG); break;
        case 'h': usage(stdout); return 0;
        default:
            fprintf(stderr, "Try 'jukebox-decoder --help'.\n");
            return EX_USAGE;
        }
    }
    if (optind < argc || (!out && !outdir) || !model || (out && outdir)) {
        fprintf(stderr, "jukebox-decoder: %s\nTry 'jukebox-decoder --help'.\n",
                optind < argc ? "unexpected argument (codes come from --in or stdin)"
                : !model      ? "--model is required"
                : out && outdir ? "-o and --outdir exclude each other"
                              : "-o AUDIO (or --outdir ROOT) is required");
        return EX_USAGE;
    }
    if (g_link.peer_timeout_ms <= g_link.heartbeat_ms) {
        fprintf(stderr, "jukebox-decoder: --peer-timeout must be longer than --heartbeat\n");
        return EX_USAGE;
    }
    jb_err_t err = {0};
    jb_device_t dev;
    if (jb_device_parse(device, &dev, &err) || jb_device_open(&dev, &err)) {
        jb_log(JB_ERROR, "%s", err.msg);
        return jb_err_exit_code(err.code);
    }
    if (spool && !outdir) {
        fprintf(stderr, "jukebox-decoder: --spool needs --outdir\n");
        return EX_USAGE;
    }
    if (outdir) {
        int bad = check_out_dir("--outdir", outdir, outdir, 0);
        if (bad) return bad;
    }
    if (out && strcmp(out, "-") && !strchr(out, '{')) {   // {job}...: known per job only
        char dir[4096];
        snprintf(dir, sizeof dir, "%s", out);
        char *slash = strrchr(dir, '/');
        if (!slash) snprintf(dir, sizeof dir, ".");
        else if (slash == dir) dir[1] = 0;
        else *slash = 0;
        int bad = check_out_dir("-o", out, dir, 1);
        if (bad) return bad;
    }
    if (outdir)
        return run_outdir(model, in, outdir, max_jobs, threads, window, decode_step, dev.is_cuda,
                          spool);
    jb_codec_decode_opts_t o = {.level = level, .out = out, .format = JB_AUDIO_AUTO};
    if (want_float && want_flac) {
        fprintf(stderr, "jukebox-decoder: --float and --flac exclude each other\n");
        return EX_USAGE;
    }
    if (want_flac) o.format = JB_AUDIO_FLAC;
    else if (want_float) o.format = JB_AUDIO_WAV_FLOAT;
    else if (jb_audio_format_for_path(out, &o.format, &err)) {
        fprintf(stderr, "jukebox-decoder: -o %s\n", err.msg);   // before any work
        return EX_USAGE;
    }
    if (!strcmp(out, "-") && o.format == JB_AUDIO_AUTO) o.format = JB_AUDIO_WAV_PCM16;
    if (!strcmp(out, "-") && isatty(1)) {
        fprintf(stderr, "jukebox-decoder: not writing audio to a terminal; redirect stdout\n");
        return EX_USAGE;
    }
    if (threads) jb_codec_set_threads(threads);
    jb_vqvae_t *vq = jb_codec_load_vqvae(model, window, &err);
    if (!vq) {
        jb_log(JB_ERROR, "%s", err.msg);
        return jb_err_exit_code(err.code);
    }
    if (window && window < jb_codec_min_window(vq)) {
        fprintf(stderr, "jukebox-decoder: --window %lld: this model needs at least %lld\n",
                window, (long long)jb_codec_min_window(vq));
        jb_vqvae_destroy(&vq);
        return EX_USAGE;
    }
    if (level >= jb_vqvae_hparams(vq)->levels) {
        fprintf(stderr, "jukebox-decoder: --level %d: the model has levels 0..%d\n", level,
                jb_vqvae_hparams(vq)->levels - 1);
        jb_vqvae_destroy(&vq);
        return EX_USAGE;
    }
    void *on_dev = NULL;
    if (jb_codec_attach_device(vq, dev.is_cuda, &on_dev, &err)) {
        jb_log(JB_ERROR, "%s", err.msg);
        jb_vqvae_destroy(&vq);
        return jb_err_exit_code(err.code);
    }
    install_signals();
    o.stop = &stop_flag;
    jb_endpoint_opts_t eo;
    jb_endpoint_default_opts(&eo);
    eo.codebook = jb_vqvae_hparams(vq)->l_bins;   // codes of another codebook are refused
    set_admit(&eo, vq);
    jb_endpoint_t *ep = jb_endpoint_open_in(in, &eo, &err);
    int rc = 0;
    jb_codec_decode_stats_t st;
    if (!ep || jb_codec_decode_stream(vq, ep, &o, &st, &err)) {
        jb_log(JB_ERROR, "%s", err.msg);
        rc = jb_err_exit_code(err.code);
    } else if (st.jobs_failed) {
        jb_log(JB_ERROR, "%d of %d jobs failed; first: %s", st.jobs_failed,
               st.jobs_failed + st.jobs_done, st.first_fail);
        rc = jb_err_exit_code(st.first_fail_code);
    } else if (st.stopped) {
        jb_log(JB_INFO, "stopped by signal %d: %d job(s) written, %d unfinished dropped",
               stop_flag, st.jobs_done, st.jobs_dropped);
    } else if (st.msgs_skipped) {
        jb_log(JB_ERROR, "%d job(s) written, but %d message(s) naming no job were skipped",
               st.jobs_done, st.msgs_skipped);
        rc = jb_err_exit_code(JB_EFORMAT);
    } else if (!st.jobs_done) {
        jb_log(JB_ERROR, "%s: no job in the stream", in);
        rc = jb_err_exit_code(JB_EFORMAT);
    }
    jb_endpoint_destroy(&ep);
    jb_codec_detach_device(vq, &on_dev);
    jb_vqvae_destroy(&vq);
    return rc;
}
