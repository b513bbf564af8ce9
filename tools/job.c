// jukebox-job: builds a job (the spec and the codes it continues from) and writes it
// as the head of a job stream, the input of jukebox-prior-top.
//
//   jukebox-job sample   --artist A --genre G --lyrics-file L --seconds 20 | jukebox-prior-top ...
//   jukebox-encoder prompt.wav | jukebox-job primed --prompt - --prompt-seconds 6 | ...
//   jukebox-job continue --codes run/codes.jbc --pick 1 --seconds 40 | ...
//   jukebox-job upsample --codes run/codes.jbc | ...
//
// The stream: JOB(spec), then for levels top..bottom the codes to continue from and
// END(level), then END(-1) (docs/wire.md, "Job stream").
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>
#include <sysexits.h>

#include "jb_codes.h"
#include "jb_hparams.h"
#include "jb_job.h"
#include "jb_log.h"
#include "jb_safetensors.h"
#include "jb_link.h"
#include "jb_transport.h"

#define LEVELS 3

static void usage(FILE *f) {
    fprintf(f,
"usage: jukebox-job MODE [options]\n"
"\n"
"Writes a job stream (a job spec and the codes it continues from) for the stages.\n"
"MODE: sample (ancestral), primed (continue an audio prompt), continue (extend saved\n"
"codes of every level), upsample (sample the lower levels under saved top codes).\n"
"\n"
"labels:\n"
"  --artist NAME          artist, looked up in each stage's vocabulary (v2: normalised)\n"
"  --genre NAME           genre (v2: words looked up one by one)\n"
"  --artist-id L=ID       explicit artist id for level L (0 bottom .. 2 top); repeatable\n"
"  --genre-ids L=I,J      explicit genre ids for level L; repeatable\n"
"  --lyrics TEXT          lyrics (UTF-8; cleaned to the model's vocabulary by the stage)\n"
"  --lyrics-file FILE     lyrics from a file (UTF-8 text: other bytes or a NUL are refused,\n"
"                         exit 65, with where they are; a model without lyrics\n"
"                         conditioning (--check) ignores them, with a warning)\n"
"lengths:\n"
"  --seconds S            seconds of audio to generate; for continue, the new length\n"
"                         (default 24; upsample: the length of the saved top codes)\n"
"  --total-seconds S      length of the whole song for the timing signal (default 240)\n"
"  --prompt-seconds S     primed: seconds of the prompt to continue from (default 12)\n"
"sampling (V or V0,V1,V2 for bottom, middle, top):\n"
"  --samples N            samples to generate (default 1, at most 256)\n"
"  --temp V               temperature (default 0.99)\n"
"  --top-k V              keep the V most likely codes (default 0: off; 1: greedy)\n"
"  --top-p V              nucleus sampling (default 0: off)\n"
"  --hop-fraction V       window hop as a fraction of the context (default 0.5,0.5,0.125)\n"
"  --max-batch V          samples per batch (default 16,16,3)\n"
"  --chunk V              priming chunk in tokens (default 32,32,16)\n"
"  --seed N               random seed (default 0); the same seed gives the same codes\n"
"inputs:\n"
"  --prompt FILE          primed: the prompt's codes (jukebox-encoder output; '-' stdin)\n"
"  --codes FILE           continue/upsample: a saved codes file (OUTDIR/codes.jbc)\n"
"  --pick I,J             continue/upsample: which saved samples go on (default all)\n"
"  --hops H0,H1,H2        audio samples per code of each level (default 8,32,128: the\n"
"                         released VQ-VAE), or --vqvae FILE to read them from a model\n"
"  --vqvae FILE           VQ-VAE model file (for its hop lengths and sample rate)\n"
"  --check [L=]MODEL      also check the job against a prior model file (lengths inside\n"
"                         its range, ids inside its tables, enough tokens for one\n"
"                         context); repeatable: the front command checks all three.\n"
"                         With L=, the file must be the prior of level L. The top\n"
"                         prior's timing range gives the defaults of --total-seconds\n"
"                         (240, or the longest whole second the model takes) and so\n"
"                         of --seconds and --prompt-seconds when those do not fit\n"
"  --input-name NAME      call the --prompt/--codes file NAME in messages\n"
"other:\n"
"  --spec FILE            start from a job spec JSON (options given here override it)\n"
"  --id ID                job id (default job-<time>-<pid>)\n"
"  -o, --out ENDPOINT     where the stream goes (default '-': stdout); tcp://HOST:PORT or\n"
"                         ipc://PATH: submit to the top prior's bound input over the\n"
"                         reliable link (docs/reliability.md); exit 0 once a stage\n"
"                         acknowledged every message of the job\n"
"  --timeout MS           link: give up (exit 69) when no stage acknowledged the job\n"
"                         within MS (default 10000)\n"
"  --wait                 link: also wait until the job is DONE (its run directory\n"
"                         written by the decoder)\n"
"  --name NAME            link: instance name (default <host>-<pid>)\n"
"  --heartbeat MS, --peer-timeout MS   link timing (default 1000, 5000)\n"
"  --print-spec           print the spec as JSON on stdout and exit\n"
"  -q, --quiet            errors only\n"
"  -h, --help             this text\n"
"\n"
"exit codes: 0 ok, 64 bad usage or invalid spec, 65 bad codes file (also: lyrics that\n"
"  are not UTF-8 text, a --check L=FILE of another level), 66 missing file,\n"
"  69 downstream gone or no stage acknowledged the job in time, 74 write failed.\n");
}

static int parse_levels_d(const char *s, double *out) {
    double v[3];
    int n = sscanf(s, "%lf,%lf,%lf", &v[0], &v[1], &v[2]);
    if (n == 1 && strchr(s, ',')) return -1;   // "1,2": neither one value nor three
    if (n == 1) v[1] = v[2] = v[0];
    else if (n != 3) return -1;
    for (int i = 0; i < 3; i++) out[i] = v[i];
    return 0;
}

static int parse_levels_i(const char *s, int *out) {
    double d[3];
    if (parse_levels_d(s, d)) return -1;
    for (int i = 0; i < 3; i++) {
        if (d[i] != floor(d[i]) || fabs(d[i]) > 1e9) return -1;
        out[i] = (int)d[i];
    }
    return 0;
}

// "I,J,K" -> ints; returns count or -1.
static int parse_list(const char *s, int *out, int max) {
    int n = 0;
    const char *p = s;
    while (*p) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 0 || v > 1000000000 || n >= max) return -1;
        out[n++] = (int)v;
        if (*end == ',') p = end + 1;
        else if (*end == '\0') p = end;
        else return -1;
    }
    return n;
}

// Where s (n bytes) stops being UTF-8 (the offset of the first bad byte), or -1 when it
// is valid UTF-8 without NUL bytes. *nul: set when the bad byte is a NUL.
static long utf8_bad_offset(const char *s, size_t n, int *nul) {
    const unsigned char *p = (const unsigned char *)s;
    *nul = 0;
    for (size_t i = 0; i < n;) {
        unsigned c = p[i];
        int k = c < 0x80 ? 0 : (c & 0xE0) == 0xC0 ? 1 : (c & 0xF0) == 0xE0 ? 2
              : (c & 0xF8) == 0xF0 ? 3 : -1;
        if (c == 0) {
            *nul = 1;
            return (long)i;
        }
        if (k < 0 || (k == 1 && c < 0xC2) || (k == 3 && c > 0xF4) || n - i <= (size_t)k)
            return (long)i;   // not a lead byte, overlong 2-byte, beyond U+10FFFF, cut off
        unsigned cp = k == 0 ? c : k == 1 ? c & 0x1F : k == 2 ? c & 0x0F : c & 0x07;
        for (int j = 1; j <= k; j++) {
            if ((p[i + j] & 0xC0) != 0x80) return (long)i;
            cp = (cp << 6) | (p[i + j] & 0x3F);
        }
        if ((k == 2 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
            (k == 3 && (cp < 0x10000 || cp > 0x10FFFF)))
            return (long)i;   // overlong, surrogate or beyond Unicode
        i += (size_t)k + 1;
    }
    return -1;
}

// Lyrics must be UTF-8 text: a byte that is not (a Latin-1 file, a binary file) or a NUL
// would otherwise be dropped by the stage's cleaning or cut the text, silently. Refused
// (JB_EFORMAT: exit 65) with where and how to convert; `what` names the source.
static int check_lyrics_text(const char *what, const char *s, size_t n, jb_err_t *err) {
    int nul;
    long at = utf8_bad_offset(s, n, &nul);
    if (at < 0) return 0;
    long line = 1, col = 1;
    for (long i = 0; i < at; i++) {
        if (s[i] == '\n') line++, col = 1;
        else if (((unsigned char)s[i] & 0xC0) != 0x80) col++;
    }
    if (nul)
        return jb_err_set(err, JB_EFORMAT, "%s: a NUL byte at line %ld, column %ld (byte %ld): "
                          "lyrics must be text", what, line, col, at);
    return jb_err_set(err, JB_EFORMAT, "%s: not UTF-8: byte 0x%02X at line %ld, column %ld "
                      "(byte %ld); lyrics must be UTF-8 text (convert a Latin-1 file with "
                      "iconv -f latin1 -t utf-8)", what, (unsigned char)s[at], line, col, at);
}

static char *read_text_file(const char *path, jb_err_t *err) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        jb_err_set(err, JB_ENOENT, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct stat sb;
    if (fstat(fileno(f), &sb) == 0 && S_ISDIR(sb.st_mode)) {
        fclose(f);
        jb_err_set(err, JB_ENOENT, "%s: is a directory, not a lyrics file", path);
        return NULL;
    }
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (!buf) break;
        if (n + 1 >= cap) {
            char *b = realloc(buf, cap * 2);
            if (!b) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = b, cap *= 2;
        }
        size_t k = fread(buf + n, 1, cap - n - 1, f);
        if (k == 0) break;
        n += k;
        if (n > (1u << 20)) {
            fclose(f);
            free(buf);
            jb_err_set(err, JB_EINVAL, "%s: lyrics longer than 1 MiB", path);
            return NULL;
        }
    }
    int rerr = ferror(f);
    fclose(f);
    if (!buf) {
        jb_err_set(err, JB_ENOMEM, "out of memory");
        return NULL;
    }
    buf[n] = 0;
    if (rerr) {
        free(buf);
        jb_err_set(err, JB_ENOENT, "%s: read failed", path);
        return NULL;
    }
    if (check_lyrics_text(path, buf, n, err)) {
        free(buf);
        return NULL;
    }
    return buf;
}

static const char *level_name(int level) {
    return level == 2 ? "top" : level == 1 ? "middle" : level == 0 ? "bottom" : "?";
}

static int send_level_codes(jb_endpoint_t *out, const char *id, const jb_codes_t *c, int level,
                            int64_t count, jb_err_t *err) {
    jb_msg_t m;
    jb_msg_init(&m);
    int rc = 0;
    if (count > 0) {
        int64_t n = c->n_samples;
        int32_t *rows = malloc(sizeof(int32_t) * (size_t)(n * count));
        if (!rows) return jb_err_set(err, JB_ENOMEM, "out of memory");
        for (int k = 0; k < n; k++)
            memcpy(rows + (int64_t)k * count, jb_codes_row(c, level, k),
                   sizeof(int32_t) * (size_t)count);
        m.type = JB_MSG_CODES;
        m.level = level;
        m.offset = 0;
        m.batch = n;
        m.count = count;
        m.codes = rows;
        if (c->codebook > 0) m.codebook = c->codebook;
        rc = jb_msg_set_job_id(&m, id, err) || jb_endpoint_send(out, &m, err);
        jb_msg_clear(&m);
        if (rc) return -1;
    }
    return 0;
}

static int send_end(jb_endpoint_t *out, const char *id, int level, jb_err_t *err) {
    jb_msg_t m;
    jb_msg_init(&m);
    m.type = JB_MSG_END;
    m.level = level;
    int rc = jb_msg_set_job_id(&m, id, err) || jb_endpoint_send(out, &m, err);
    jb_msg_clear(&m);
    return rc ? -1 : 0;
}

int main(int argc, char **argv) {
    jb_log_set_stage("job");
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? EX_USAGE : 0;
    }
    jb_err_t err = {0};
    jb_job_t job;
    jb_job_defaults(&job);
    jb_job_mode_t mode;
    const char *mode_name = argv[1];
    if (!strcmp(mode_name, "sample")) mode_name = "ancestral";
    if (jb_job_mode_parse(mode_name, &mode, &err)) {
        fprintf(stderr, "jukebox-job: %s (modes: sample, primed, continue, upsample)\n", err.msg);
        return EX_USAGE;
    }
    enum { O_ARTIST = 256, O_GENRE, O_ARTIST_ID, O_GENRE_IDS, O_LYRICS, O_LYRICS_FILE, O_SECONDS,
           O_TOTAL, O_PROMPT_SECONDS, O_SAMPLES, O_TEMP, O_TOPK, O_TOPP, O_HOP, O_BATCH, O_CHUNK,
           O_SEED, O_PROMPT, O_CODES, O_PICK, O_HOPS, O_VQVAE, O_SPEC, O_ID, O_PRINT, O_CHECK,
           O_TIMEOUT, O_WAIT, O_NAME, O_HEARTBEAT, O_PEER_TIMEOUT, O_INPUT_NAME };
    static const struct option longs[] = {
        {"artist", 1, 0, O_ARTIST}, {"genre", 1, 0, O_GENRE}, {"artist-id", 1, 0, O_ARTIST_ID},
        {"genre-ids", 1, 0, O_GENRE_IDS}, {"lyrics", 1, 0, O_LYRICS},
        {"lyrics-file", 1, 0, O_LYRICS_FILE}, {"seconds", 1, 0, O_SECONDS},
        {"total-seconds", 1, 0, O_TOTAL}, {"prompt-seconds", 1, 0, O_PROMPT_SECONDS},
        {"samples", 1, 0, O_SAMPLES}, {"temp", 1, 0, O_TEMP}, {"top-k", 1, 0, O_TOPK},
        {"top-p", 1, 0, O_TOPP}, {"hop-fraction", 1, 0, O_HOP}, {"max-batch", 1, 0, O_BATCH},
        {"chunk", 1, 0, O_CHUNK}, {"seed", 1, 0, O_SEED}, {"prompt", 1, 0, O_PROMPT},
        {"codes", 1, 0, O_CODES}, {"pick", 1, 0, O_PICK}, {"hops", 1, 0, O_HOPS},
        {"vqvae", 1, 0, O_VQVAE}, {"spec", 1, 0, O_SPEC}, {"id", 1, 0, O_ID},
        {"check", 1, 0, O_CHECK}, {"timeout", 1, 0, O_TIMEOUT}, {"wait", 0, 0, O_WAIT},
        {"name", 1, 0, O_NAME}, {"heartbeat", 1, 0, O_HEARTBEAT},
        {"peer-timeout", 1, 0, O_PEER_TIMEOUT}, {"input-name", 1, 0, O_INPUT_NAME},
        {"out", 1, 0, 'o'}, {"print-spec", 0, 0, O_PRINT}, {"quiet", 0, 0, 'q'},
        {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    const char *out_spec = "-", *prompt = NULL, *codes_path = NULL, *vqvae = NULL;
    const char *spec_path = NULL, *id = NULL, *checks[8], *input_name = NULL;
    int n_checks = 0, check_level[8];
    int total_given = 0, prompt_s_given = 0, from_spec = 0;
    jb_prior_hparams_t check_hp[8];
    int hops[LEVELS] = {8, 32, 128}, sr = 44100, print_spec = 0;
    int seconds_given = 0, rc = EX_USAGE;
    int timeout_ms = 10000, wait_done = 0;
    jb_link_opts_t lo;   // -o tcp:// or ipc://: the reliable link's options
    jb_link_default_opts(&lo);
    lo.stage = "job";
    jb_codes_t codes = {0};   // the codes to continue from
    int have_codes = 0;
    int64_t prefix[LEVELS] = {0, 0, 0};
    // Options are applied in two passes: --spec first, then everything else over it.
    for (int pass = 0; pass < 2; pass++) {
        optind = 2;
        int c, idx = -1;
        while ((c = getopt_long(argc, argv, "o:qh", longs, &idx)) != -1) {
            if (c == '?') {
                usage(stderr);
                goto out;
            }
            if (pass == 0) {
                if (c == O_SPEC) spec_path = optarg;
                if (c == O_CODES) codes_path = optarg;
                if (c == 'h') {
                    usage(stdout);
                    rc = 0;
                    goto out;
                }
                continue;
            }
            int bad = 0;
            char *end = NULL;
            switch (c) {
            case O_ARTIST: snprintf(job.artist, sizeof job.artist, "%s", optarg); break;
            case O_GENRE: snprintf(job.genre, sizeof job.genre, "%s", optarg); break;
            case O_ARTIST_ID:
            case O_GENRE_IDS: {
                int l = optarg[0] - '0';
                if (l < 0 || l >= LEVELS || optarg[1] != '=') {
                    bad = 1;
                    break;
                }
                if (c == O_ARTIST_ID) {
                    int v[1];
                    bad = parse_list(optarg + 2, v, 1) != 1;
                    if (!bad) job.artist_id[l] = v[0];
                } else {
                    int k = parse_list(optarg + 2, job.genre_ids[l], JB_JOB_MAX_GENRES);
                    bad = k < 1;
                    if (!bad) job.n_genre_ids[l] = k;
                }
                break;
            }
            case O_LYRICS:
                if (check_lyrics_text("--lyrics", optarg, strlen(optarg), &err)) {
                    fprintf(stderr, "jukebox-job: %s\n", err.msg);
                    rc = EX_DATAERR;
                    goto out;
                }
                free(job.lyrics);
                job.lyrics = strdup(optarg);
                break;
            case O_LYRICS_FILE:
                free(job.lyrics);
                job.lyrics = read_text_file(optarg, &err);
                if (!job.lyrics) {
                    fprintf(stderr, "jukebox-job: %s\n", err.msg);
                    rc = jb_err_exit_code(err.code);
                    goto out;
                }
                break;
            case O_SECONDS:
            case O_TOTAL:
            case O_PROMPT_SECONDS: {
                double v = strtod(optarg, &end);
                bad = !*optarg || *end != 0;
                if (!bad && !(v > 0 && v <= 24 * 3600)) {
                    fprintf(stderr, "jukebox-job: --%s %s: expected seconds, more than 0 and at "
                            "most 86400 (24 h)\n", longs[idx].name, optarg);
                    goto out;
                }
                if (c == O_SECONDS) job.sample_seconds = v, seconds_given = 1;
                else if (c == O_TOTAL) job.total_seconds = v, total_given = 1;
                else job.prompt_seconds = v, prompt_s_given = 1;
                break;
            }
            case O_SAMPLES: {
                long v = strtol(optarg, &end, 10);
                if (!*optarg || *end != 0 || v < 1 || v > JB_JOB_MAX_SAMPLES) {
                    fprintf(stderr, "jukebox-job: --samples %s: expected a count from 1 to %d\n",
                            optarg, JB_JOB_MAX_SAMPLES);
                    goto out;
                }
                job.n_samples = (int)v;
                break;
            }
            case O_TEMP: bad = parse_levels_d(optarg, job.temp); break;
            case O_TOPK: bad = parse_levels_i(optarg, job.top_k); break;
            case O_TOPP: bad = parse_levels_d(optarg, job.top_p); break;
            case O_HOP: bad = parse_levels_d(optarg, job.hop_fraction); break;
            case O_BATCH: bad = parse_levels_i(optarg, job.max_batch_size); break;
            case O_CHUNK: bad = parse_levels_i(optarg, job.chunk_size); break;
            case O_SEED:   // 0 .. 2^64 - 1, decimal (wire.md 2.4); an overflow is refused
                errno = 0;
                job.seed = strtoull(optarg, &end, 10);
                bad = !*optarg || *end != 0 || optarg[0] == '-' || optarg[0] == '+' ||
                      errno == ERANGE;
                break;
            case O_PROMPT: prompt = optarg; break;
            case O_CODES: codes_path = optarg; break;
            case O_PICK: {
                int k = parse_list(optarg, job.pick, JB_JOB_MAX_PICK);
                bad = k < 1;
                job.n_pick = k;
                break;
            }
            case O_HOPS: bad = parse_list(optarg, hops, LEVELS) != LEVELS; break;
            case O_VQVAE: vqvae = optarg; break;
            case O_CHECK:
                bad = n_checks == 8;
                if (bad) break;
                check_level[n_checks] = -1;
                if (optarg[0] >= '0' && optarg[0] <= '9' && optarg[1] == '=') {
                    check_level[n_checks] = optarg[0] - '0';   // L=FILE: must be level L
                    checks[n_checks++] = optarg + 2;
                } else {
                    checks[n_checks++] = optarg;
                }
                break;
            case O_INPUT_NAME: input_name = optarg; break;
            case O_SPEC: break;
            case O_ID:   // checked whole: a long id is refused, not cut (wire.md 2.3)
                if (!jb_wire_job_id_ok(optarg)) {
                    fprintf(stderr, "jukebox-job: --id '%.80s': an id is 1..%d of letters, "
                            "digits, . _ : -, not starting with '.'\n", optarg,
                            JB_WIRE_JOB_ID_MAX);
                    goto out;
                }
                id = optarg;
                break;
            case 'o': out_spec = optarg; break;
            case O_TIMEOUT:
            case O_HEARTBEAT:
            case O_PEER_TIMEOUT: {
                char *e = NULL;
                long v = strtol(optarg, &e, 10);
                bad = !*optarg || *e || v < 1 || v > 86400000;
                if (!bad && c == O_TIMEOUT) timeout_ms = (int)v;
                if (!bad && c == O_HEARTBEAT) lo.heartbeat_ms = (int)v;
                if (!bad && c == O_PEER_TIMEOUT) lo.peer_timeout_ms = (int)v;
                break;
            }
            case O_WAIT: wait_done = 1; break;
            case O_NAME: lo.name = optarg; break;
            case O_PRINT: print_spec = 1; break;
            case 'q': jb_log_set_level(JB_ERROR); break;
            }
            if (bad) {  // idx: the long option just parsed
                fprintf(stderr, "jukebox-job: --%s %s: bad value (see --help)\n",
                        idx >= 0 ? longs[idx].name : "?", optarg);
                goto out;
            }
        }
        if (pass == 0 && spec_path) {
            json_error_t jerr;
            json_t *js = json_load_file(spec_path, 0, &jerr);
            if (!js || jb_job_from_json(js, &job, &err)) {
                fprintf(stderr, "jukebox-job: %s: %s\n", spec_path, js ? err.msg : jerr.text);
                json_decref(js);
                rc = js ? EX_USAGE : EX_NOINPUT;
                goto out;
            }
            json_decref(js);
            from_spec = 1;   // the spec's lengths are the user's: no model default over them
        }
        // continue / upsample: the saved run's spec is the base, as --spec would be:
        // its labels, lyrics and settings go on unless options here change them.
        if (pass == 0 && codes_path && (mode == JB_MODE_CONTINUE || mode == JB_MODE_UPSAMPLE)) {
            if (jb_codes_load(&codes, codes_path, &err)) {
                fprintf(stderr, "jukebox-job: %s\n", err.msg);
                rc = jb_err_exit_code(err.code);
                goto out;
            }
            have_codes = 1;
            if (codes.spec) {
                json_t *js = json_loads(codes.spec, 0, NULL);
                if (js && jb_job_from_json(js, &job, &err) == 0) {
                    from_spec = 1;
                    job.n_pick = 0;
                    snprintf(job.id, sizeof job.id, "job");   // a new run gets a new id
                }
                json_decref(js);
            }
        }
    }
    if (optind < argc) {
        fprintf(stderr, "jukebox-job: unexpected argument '%s'\n", argv[optind]);
        goto out;
    }
    job.mode = mode;
    if (vqvae) {   // hop lengths and rate of the actual VQ-VAE
        jb_st_t *st = jb_st_open(vqvae, &err);
        json_t *hp = st ? jb_hparams_from_st(st, &err) : NULL;
        jb_vqvae_hparams_t v;
        int ok = hp && jb_vqvae_hparams_parse(hp, &v, &err) == 0 && v.levels == LEVELS;
        json_decref(hp);
        jb_st_close(&st);
        if (!ok) {
            fprintf(stderr, "jukebox-job: --vqvae %s: %s\n", vqvae,
                    err.msg[0] ? err.msg : "not a 3-level VQ-VAE");
            rc = err.code == JB_ENOENT ? EX_NOINPUT : EX_DATAERR;
            goto out;
        }
        for (int l = 0; l < LEVELS; l++) hops[l] = v.hop_lengths[l];
        sr = v.sr;
    }
    if (id) snprintf(job.id, sizeof job.id, "%s", id);
    else if (!strcmp(job.id, "job")) {
        time_t t = time(NULL);
        struct tm tm;
        gmtime_r(&t, &tm);
        char stamp[32];
        strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%S", &tm);
        snprintf(job.id, sizeof job.id, "job-%s-%ld", stamp, (long)getpid());
    }

    // The models the job is checked against (--check): read once, here, so that their
    // ranges give the defaults the user did not set (a small model takes a few seconds,
    // not the released models' 240 s).
    const jb_prior_hparams_t *top_hp = NULL;
    for (int i = 0; i < n_checks; i++) {
        jb_st_t *st = jb_st_open(checks[i], &err);
        json_t *hp = st ? jb_hparams_from_st(st, &err) : NULL;
        int ok = hp && jb_prior_hparams_parse(hp, &check_hp[i], &err) == 0;
        json_decref(hp);
        jb_st_close(&st);
        if (!ok) {
            fprintf(stderr, "jukebox-job: --check %s: %s\n", checks[i], err.msg);
            rc = err.code == JB_ENOENT ? EX_NOINPUT : EX_DATAERR;
            goto out;
        }
        if (check_level[i] >= 0 && check_hp[i].level != check_level[i]) {
            fprintf(stderr, "jukebox-job: %s: a prior of level %d (%s), expected level %d (%s)",
                    checks[i], check_hp[i].level, level_name(check_hp[i].level), check_level[i],
                    level_name(check_level[i]));
            for (int k = 0; k < n_checks; k++)   // the file that holds the other one
                if (k != i && check_level[k] == check_hp[i].level)
                    fprintf(stderr, "; %s is expected to be that one: are the two swapped?",
                            checks[k]);
            fprintf(stderr, "\n");
            rc = EX_DATAERR;
            goto out;
        }
        for (int k = 0; k < i; k++)
            if (check_hp[k].level == check_hp[i].level) {
                fprintf(stderr, "jukebox-job: %s and %s are both priors of level %d (%s)\n",
                        checks[k], checks[i], check_hp[i].level, level_name(check_hp[i].level));
                rc = EX_DATAERR;
                goto out;
            }
        if (check_hp[i].level == check_hp[i].vqvae.levels - 1) top_hp = &check_hp[i];
    }
    if (top_hp && top_hp->labels && top_hp->max_duration > 0) {
        // Defaults inside the top prior's timing range [min, max): the largest whole second
        // below max when 240 s does not fit; the sample then fits in it.
        double lo = top_hp->min_duration, hi = top_hp->max_duration;
        if (!total_given && !from_spec && (job.total_seconds < lo || job.total_seconds >= hi)) {
            double t = ceil(hi) - 1;
            if (t < lo) t = (lo + hi) / 2;
            jb_log(JB_INFO, "total length %g s: the longest this model takes (its range is "
                   "[%g, %g) s)", t, lo, hi);
            job.total_seconds = t;
        }
        if (!seconds_given && !from_spec && mode != JB_MODE_UPSAMPLE &&
            job.sample_seconds > job.total_seconds)
            job.sample_seconds = job.total_seconds;
        if (mode == JB_MODE_PRIMED && !prompt_s_given && !from_spec &&
            job.prompt_seconds >= job.sample_seconds)
            job.prompt_seconds = floor(job.sample_seconds / 2 * 10) / 10;
        // An explicit length the model cannot take: say which option and the range.
        if (total_given && (job.total_seconds < lo || job.total_seconds >= hi)) {
            fprintf(stderr, "jukebox-job: --total-seconds %g is outside this model's range "
                    "[%g, %g) s (%s); give --total-seconds from %g to below %g\n",
                    job.total_seconds, lo, hi, checks[top_hp - check_hp], lo, hi);
            goto out;
        }
    }
    if (top_hp && job.lyrics && job.lyrics[0] && !top_hp->use_tokens)
        jb_log(JB_WARN, "lyrics ignored: the top prior %s has no lyrics conditioning (a model "
               "without lyrics); the song is made from the labels alone",
               checks[top_hp - check_hp]);

    if (mode == JB_MODE_PRIMED || mode == JB_MODE_CONTINUE || mode == JB_MODE_UPSAMPLE) {
        const char *path = mode == JB_MODE_PRIMED ? prompt : codes_path;
        const char *shown = input_name ? input_name : path;   // as the user named it
        if (!path) {
            fprintf(stderr, "jukebox-job: %s needs %s\n", jb_job_mode_name(mode),
                    mode == JB_MODE_PRIMED ? "--prompt FILE (jukebox-encoder output)"
                                           : "--codes FILE (a saved codes file)");
            goto out;
        }
        if (!have_codes && jb_codes_load(&codes, path, &err)) {
            fprintf(stderr, "jukebox-job: %s\n", err.msg);
            rc = jb_err_exit_code(err.code);
            goto out;
        }
        have_codes = 1;
        if (codes.levels < LEVELS) {
            fprintf(stderr, "jukebox-job: %s: codes of %d levels; a 3-level job needs all\n", path,
                    codes.levels);
            rc = EX_DATAERR;
            goto out;
        }
        if (job.n_pick && jb_codes_pick(&codes, job.pick, job.n_pick, &err)) {
            fprintf(stderr, "jukebox-job: %s: %s\n", path, err.msg);
            goto out;
        }
        int64_t top_len = jb_codes_len(&codes, LEVELS - 1);
        if (top_len < 1) {
            fprintf(stderr, "jukebox-job: %s: no top-level codes (shorter than one top token)\n",
                    path);
            rc = EX_DATAERR;
            goto out;
        }
        if (mode == JB_MODE_PRIMED) {
            int64_t plen = llround(job.prompt_seconds * sr) / hops[2] * hops[2];
            if (plen < hops[2]) {
                fprintf(stderr, "jukebox-job: --prompt-seconds %g is shorter than one top-level "
                        "token (%d samples, %.3f s)\n", job.prompt_seconds, hops[2],
                        (double)hops[2] / sr);
                goto out;
            }
            for (int l = 0; l < LEVELS; l++) {
                prefix[l] = plen / hops[l];
                if (jb_codes_len(&codes, l) < prefix[l]) {
                    double have = (double)(jb_codes_len(&codes, 2) * hops[2]) / sr;
                    fprintf(stderr, "jukebox-job: %s: the prompt is %.2f s long; "
                            "--prompt-seconds %g needs at least %g s (give a shorter "
                            "--prompt-seconds or a longer prompt)\n", shown, have,
                            job.prompt_seconds, job.prompt_seconds);
                    rc = EX_DATAERR;
                    goto out;
                }
            }
            // One prompt for every sample, as sample.py's load_prompts repeats it.
            if (codes.n_samples != job.n_samples) {
                int pick[JB_JOB_MAX_SAMPLES];
                for (int k = 0; k < job.n_samples; k++) pick[k] = k % codes.n_samples;
                if (jb_codes_pick(&codes, pick, job.n_samples, &err)) {
                    fprintf(stderr, "jukebox-job: %s\n", err.msg);
                    goto out;
                }
            }
        } else {
            job.n_samples = codes.n_samples;
            for (int l = 0; l < LEVELS; l++) prefix[l] = jb_codes_len(&codes, l);
            double saved_s = (double)(top_len * hops[2]) / sr;
            if (mode == JB_MODE_UPSAMPLE) {
                prefix[0] = prefix[1] = 0;
                job.sample_seconds = saved_s;
            } else if (!seconds_given || job.sample_seconds <= saved_s) {
                fprintf(stderr, "jukebox-job: continue: --seconds must be longer than the saved "
                        "%.3f s\n", saved_s);
                goto out;
            }
            job.n_pick = 0;   // applied here: the stages see only the picked samples
        }
    }
    if (jb_job_validate(&job, &err)) {
        fprintf(stderr, "jukebox-job: %s\n", err.msg);
        goto out;
    }
    const char *in_shown = input_name ? input_name
                          : mode == JB_MODE_PRIMED ? prompt : codes_path;
    for (int i = 0; i < n_checks; i++) {   // the stages' own checks, before any work starts
        const jb_prior_hparams_t ph = check_hp[i];
        if (jb_job_validate_for_prior(&job, &ph, &err)) {
            fprintf(stderr, "jukebox-job: %s (model %s)\n", err.msg, checks[i]);
            goto out;
        }
        // Codes to continue from must come from this model's VQ-VAE: same codebook,
        // and level lengths in the ratio of its hop lengths.
        if (have_codes && codes.codebook > 0 && codes.codebook != ph.vqvae.l_bins) {
            fprintf(stderr, "jukebox-job: %s: codes of a %lld-entry codebook; model %s uses %d "
                    "(codes from another model)\n", in_shown,
                    (long long)codes.codebook, checks[i], ph.vqvae.l_bins);
            goto out;
        }
        for (int l = 0; have_codes && l + 1 < LEVELS && l + 1 < ph.vqvae.levels; l++) {
            int64_t a = jb_codes_len(&codes, l), b = jb_codes_len(&codes, l + 1);
            int64_t r = ph.vqvae.hop_lengths[l + 1] / ph.vqvae.hop_lengths[l];
            if (a > 0 && b > 0 && a != b * r) {
                fprintf(stderr, "jukebox-job: %s: %lld codes at level %d and %lld at level %d; "
                        "model %s has %lld codes below each one above (codes from another "
                        "model?)\n", in_shown, (long long)a,
                        l, (long long)b, l + 1, checks[i], (long long)r);
                goto out;
            }
        }
    }
    json_t *js = jb_job_to_json(&job);
    char *text = js ? json_dumps(js, JSON_COMPACT) : NULL;
    json_decref(js);
    if (!text) {
        fprintf(stderr, "jukebox-job: out of memory\n");
        rc = EX_SOFTWARE;
        goto out;
    }
    if (print_spec) {
        puts(text);
        free(text);
        rc = 0;
        goto out;
    }
    if (lo.peer_timeout_ms <= lo.heartbeat_ms) {
        fprintf(stderr, "jukebox-job: --peer-timeout must be longer than --heartbeat\n");
        goto out;
    }
    jb_endpoint_opts_t eo;
    jb_endpoint_default_opts(&eo);
    eo.link = &lo;
    eo.linger_ms = timeout_ms;   // close: every message acked within this
    lo.send_timeout_ms = timeout_ms;
    jb_endpoint_t *ep = jb_endpoint_open_out(out_spec, &eo, &err);
    jb_msg_t m;
    jb_msg_init(&m);
    m.type = JB_MSG_JOB;
    int bad = !ep || jb_msg_set_job_id(&m, job.id, &err) || jb_msg_set_spec(&m, text, &err) ||
              jb_endpoint_send(ep, &m, &err);
    jb_msg_clear(&m);
    free(text);
    for (int l = LEVELS - 1; l >= 0 && !bad; l--)
        bad = (have_codes && send_level_codes(ep, job.id, &codes, l, prefix[l], &err)) ||
              send_end(ep, job.id, l, &err);
    bad = bad || send_end(ep, job.id, -1, &err);
    if (!bad && jb_endpoint_confirms(ep)) {
        // Acknowledged by a stage: it holds the job from here (and its producer's
        // retention), so this process may go. --wait: until the pipeline finished it.
        bad = jb_endpoint_flush(ep, timeout_ms, 0, &err);
        if (!bad) jb_log(JB_INFO, "job=%s acknowledged by the first stage", job.id);
        if (!bad && wait_done) bad = jb_endpoint_flush(ep, -1, 1, &err);
        if (!bad && wait_done) jb_log(JB_INFO, "job=%s done", job.id);
    }
    bad = bad || jb_endpoint_close(&ep, &err);
    jb_endpoint_destroy(&ep);
    if (bad) {
        if (err.code == JB_EUNAVAIL && jb_endpoint_spec_is_link(out_spec))
            fprintf(stderr, "jukebox-job: %s (is a jukebox-prior-top listening there? see "
                    "jukebox status)\n", err.msg);
        else
            fprintf(stderr, "jukebox-job: %s\n", err.msg);
        rc = jb_err_exit_code(err.code);
        goto out;
    }
    jb_log(JB_INFO, "job=%s mode=%s samples=%d seconds=%g written", job.id,
           jb_job_mode_name(job.mode), job.n_samples, job.sample_seconds);
    rc = 0;
out:
    if (have_codes) jb_codes_free(&codes);
    jb_job_free(&job);
    return rc;
}
