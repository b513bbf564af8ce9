// mkdataset.c: jukebox-mkdataset, a labelled synthetic music dataset rendered on this machine.
//
//   jukebox-mkdataset --out DIR [--songs N] [--seconds S] [--seed N] [--genres a,b]
//                     [--threads N] [--no-vocals] [--soundfont PATH]
//
// Songs are composed by common/jb_compose.c (pure functions of a seed), the band is rendered
// with FluidSynth and a General MIDI soundfont, the lyrics are sung word by word by the
// espeak-ng program (each word pitched to its melody note by resampling) and mixed in. Output:
// DIR/audio/<id>.wav (44.1 kHz mono 16-bit) and DIR/labels.jsonl (one JSON object a song).
// Every file is written under a temporary name and renamed. The output is a function of
// the options only: every song gets a fresh synth and every sung word a fresh espeak-ng
// process, so nothing carries over from the songs a thread rendered before.
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <sndfile.h>
#include <soxr.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <fluidsynth.h>

#include "jb_compose.h"
#include "jb_publish.h"
#include "jb_log.h"

#define SR 44100
#define EX_OK_ 0
#define EX_USAGE_ 64
#define EX_DATAERR_ 65
#define EX_NOINPUT_ 66
#define EX_UNAVAILABLE_ 69
#define EX_SOFTWARE_ 70
#define EX_CANTCREAT_ 73
#define EX_IOERR_ 74

#define DEFAULT_SF2 "/usr/share/sounds/sf2/FluidR3_GM.sf2"

typedef struct {
    const char *out;
    const char *soundfont;
    int songs;
    int first;            // index of the first song (--first)
    double seconds;
    uint64_t seed;
    int genres[64];
    int n_genres;
    int threads;
    int vocals;
    int tunes;            // --tunes: jb_compose_opts_t.tunes
} opts_t;

typedef struct {
    const opts_t *o;
    atomic_int next;      // next song index to take
    atomic_int failed;    // exit code of the first failure, 0 if none
    atomic_int done;
    char **labels;        // (songs) one JSON line each, filled by the workers
    double t0;
    pthread_mutex_t fail_mu;
} run_t;

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void fail_run(run_t *run, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fail_run(run_t *run, int code, const char *fmt, ...) {
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&run->fail_mu);
    if (!atomic_load(&run->failed)) {
        atomic_store(&run->failed, code);
        jb_log(JB_ERROR, "%s", msg);
    }
    pthread_mutex_unlock(&run->fail_mu);
}

// ---------------------------------------------------------------------------------------
// The band: FluidSynth.

// One per worker thread. A song gets a fresh synth: a reused one keeps state from the song
// before (filter and mixer state of the voice slots), which would make a song depend on
// which songs its thread rendered before it. With dynamic sample loading a fresh synth costs
// ~50 ms (only the presets a song selects are read). FluidSynth's sample cache is shared by
// all synths and is not safe to load into and unload from on several threads at once (seen:
// "Trying to free sample data not found in cache", then a crash), so creating a synth,
// selecting its presets and deleting it happen under g_fluid_mu; rendering runs unlocked
// (a selected preset's samples stay loaded until it is unselected).
static pthread_mutex_t g_fluid_mu = PTHREAD_MUTEX_INITIALIZER;
typedef struct {
    fluid_settings_t *settings;
    const char *sf2;
} band_t;

static void band_destroy(band_t *b) {
    if (b->settings) delete_fluid_settings(b->settings);
    memset(b, 0, sizeof *b);
}

static int band_init(band_t *b, const char *sf2) {
    memset(b, 0, sizeof *b);
    b->sf2 = sf2;
    b->settings = new_fluid_settings();
    if (!b->settings) return -1;
    fluid_settings_setnum(b->settings, "synth.sample-rate", SR);
    fluid_settings_setint(b->settings, "synth.cpu-cores", 1);
    fluid_settings_setint(b->settings, "synth.polyphony", 256);
    fluid_settings_setint(b->settings, "synth.dynamic-sample-loading", 1);
    return 0;
}

typedef struct {
    int64_t at;      // sample
    uint8_t on;      // 0 off, 1 on: offs first at the same sample
    uint8_t chan, key, vel;
} event_t;

static int event_cmp(const void *pa, const void *pb) {
    const event_t *a = pa, *b = pb;
    if (a->at != b->at) return a->at < b->at ? -1 : 1;
    if (a->on != b->on) return a->on - b->on;
    if (a->chan != b->chan) return a->chan - b->chan;
    if (a->key != b->key) return a->key - b->key;
    return a->vel - b->vel;
}

// Renders the song's notes into out: (n) mono. 0 or -1.
static int band_render(band_t *b, const jb_song_t *s, float *out, int64_t n) {
    event_t *ev = malloc((size_t)(2 * s->n_notes + 1) * sizeof *ev);
    int rc = -1, setup = -1;
    pthread_mutex_lock(&g_fluid_mu);
    fluid_synth_t *fs = new_fluid_synth(b->settings);
    int sfid = fs ? fluid_synth_sfload(fs, b->sf2, 1) : FLUID_FAILED;
    for (int c = 0; c < 16 && sfid != FLUID_FAILED; c++) {
        const jb_channel_t *ch = &s->chan[c];
        setup = 0;
        if (ch->program < 0) continue;
        int bank = c == JB_COMPOSE_DRUM_CHANNEL ? 128 : 0;
        if (fluid_synth_program_select(fs, c, sfid, bank, ch->program) != FLUID_OK &&
            fluid_synth_program_select(fs, c, sfid, bank, 0) != FLUID_OK) {
            setup = -1;
            break;
        }
        fluid_synth_cc(fs, c, 7, ch->volume);
        fluid_synth_cc(fs, c, 10, ch->pan);
        fluid_synth_cc(fs, c, 91, ch->reverb);
        fluid_synth_cc(fs, c, 93, ch->chorus);
    }
    pthread_mutex_unlock(&g_fluid_mu);
    if (setup < 0 || !ev) goto done;
    int ne = 0;
    for (int i = 0; i < s->n_notes; i++) {
        const jb_note_t *nt = &s->notes[i];
        int64_t t0 = llround(nt->t * SR), t1 = llround((nt->t + nt->dur) * SR);
        ev[ne++] = (event_t){t0, 1, nt->chan, nt->key, nt->vel};
        ev[ne++] = (event_t){t1 > t0 ? t1 : t0 + 1, 0, nt->chan, nt->key, 0};
    }
    qsort(ev, (size_t)ne, sizeof *ev, event_cmp);
    enum { BLOCK = 1024 };
    float l[BLOCK], r[BLOCK];
    int64_t pos = 0;
    // Events take effect at the synth's next 64-sample block: timing is within 1.5 ms.
    for (int e = 0; e <= ne; e++) {
        int64_t until = e < ne ? (ev[e].at < n ? ev[e].at : n) : n;
        while (pos < until) {
            int len = until - pos > BLOCK ? BLOCK : (int)(until - pos);
            if (fluid_synth_write_float(fs, len, l, 0, 1, r, 0, 1) != FLUID_OK) goto done;
            for (int i = 0; i < len; i++) out[pos + i] = 0.5f * (l[i] + r[i]);
            pos += len;
        }
        if (e == ne || ev[e].at >= n) break;
        if (ev[e].on)
            fluid_synth_noteon(fs, ev[e].chan, ev[e].key, ev[e].vel);
        else
            fluid_synth_noteoff(fs, ev[e].chan, ev[e].key);
    }
    rc = 0;
done:
    free(ev);
    pthread_mutex_lock(&g_fluid_mu);
    if (fs) delete_fluid_synth(fs);
    pthread_mutex_unlock(&g_fluid_mu);
    return rc;
}

// ---------------------------------------------------------------------------------------
// The singer: the espeak-ng program, one process per word. (libespeak-ng keeps state from one
// utterance to the next, so the same word comes out a few samples different each time; a
// fresh process makes each word a function of its arguments alone, and workers need no lock.)

extern char **environ;

// Synthesizes one word, monotone, at espeak-ng pitch (0..99) and rate (words/min): *out (n)
// samples at *sr. 0 / -1.
static int speak_word(const char *voice, int pitch, int rate, const char *word, float **out,
                      int64_t *n, int *sr) {
    char ps[16], rs[16], text[128];
    snprintf(ps, sizeof ps, "%d", pitch);
    snprintf(rs, sizeof rs, "%d", rate);
    // SSML prosody range 0: no intonation contour, the pitch comes from the melody.
    snprintf(text, sizeof text, "<speak><prosody range=\"0\">%s</prosody></speak>", word);
    char *argv[] = {"espeak-ng", "-m", "-v", (char *)voice, "-p", ps, "-s", rs, "--stdout",
                    text, NULL};
    *out = NULL;
    *n = 0;
    int fd[2];
    if (pipe2(fd, O_CLOEXEC) != 0) return -1;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fd[1], 1);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    pid_t pid;
    int rc = posix_spawnp(&pid, "espeak-ng", &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(fd[1]);
    if (rc != 0) {
        close(fd[0]);
        return -1;
    }
    unsigned char *buf = NULL;
    size_t len = 0, cap = 0;
    int bad = 0;
    for (;;) {
        if (len + 65536 > cap) {
            cap = (len + 65536) * 2;
            unsigned char *p = realloc(buf, cap);
            if (!p) {
                bad = 1;
                break;
            }
            buf = p;
        }
        ssize_t got = read(fd[0], buf + len, cap - len);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) bad = 1;
        if (got <= 0) break;
        len += (size_t)got;
    }
    close(fd[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) bad = 1;
    // A canonical 44-byte WAV header (16-bit mono) then samples; the streamed header's sizes
    // are placeholders, so the length is what came through the pipe.
    if (!bad && (len < 44 || memcmp(buf, "RIFF", 4) || memcmp(buf + 8, "WAVE", 4) ||
                 buf[22] != 1 || buf[34] != 16))
        bad = 1;
    if (!bad) {
        *sr = (int)(buf[24] | buf[25] << 8 | buf[26] << 16 | (unsigned)buf[27] << 24);
        *n = (int64_t)(len - 44) / 2;
        *out = malloc((size_t)(*n > 0 ? *n : 1) * sizeof **out);
        if (!*out) bad = 1;
        for (int64_t i = 0; !bad && i < *n; i++)
            (*out)[i] = (int16_t)(buf[44 + 2 * i] | buf[45 + 2 * i] << 8) / 32768.0f;
    }
    free(buf);
    if (bad) {
        free(*out);
        *out = NULL;
        *n = 0;
        return -1;
    }
    return 0;
}

// 0 when the espeak-ng program runs.
static int speak_check(void) {
    float *x;
    int64_t n;
    int sr;
    if (speak_word("en", 50, 175, "test", &x, &n, &sr) < 0) return -1;
    free(x);
    return n > 0 ? 0 : -1;
}

// Fundamental of voiced speech x: (n) at rate sr: median over loud 1024-sample frames of the
// first normalized-autocorrelation peak within 90% of the best (avoids octave errors).
// Returns 0 when nothing is voiced.
static double estimate_f0(const float *x, int64_t n, int sr) {
    enum { W = 1024, CMP = 600 };
    int lag_min = sr / 500, lag_max = sr / 60;
    if (n < W + 1) return 0.0;
    double emax = 0;
    for (int64_t s = 0; s + W <= n; s += W / 2) {
        double e = 0;
        for (int i = 0; i < W; i++) e += (double)x[s + i] * x[s + i];
        emax = e > emax ? e : emax;
    }
    double f[256];
    int nf = 0;
    double cc[512];
    for (int64_t s = 0; s + W <= n && nf < 256; s += W / 2) {
        double e = 0;
        for (int i = 0; i < W; i++) e += (double)x[s + i] * x[s + i];
        if (e < 0.3 * emax || e <= 0) continue;
        double best = -1;
        for (int l = lag_min; l <= lag_max && l + CMP <= W; l++) {
            double c = 0, e1 = 0, e2 = 0;
            for (int i = 0; i < CMP; i++) {
                c += (double)x[s + i] * x[s + i + l];
                e1 += (double)x[s + i] * x[s + i];
                e2 += (double)x[s + i + l] * x[s + i + l];
            }
            cc[l] = c / sqrt(e1 * e2 + 1e-20);
            best = cc[l] > best ? cc[l] : best;
        }
        if (best < 0.5) continue;   // unvoiced
        int top = lag_max < W - CMP ? lag_max : W - CMP;
        for (int l = lag_min + 1; l < top; l++)
            if (cc[l] >= 0.9 * best && cc[l] >= cc[l - 1] && cc[l] >= cc[l + 1]) {
                f[nf++] = (double)sr / l;
                break;
            }
    }
    if (!nf) return 0.0;
    for (int i = 1; i < nf; i++)   // insertion sort for the median
        for (int j = i; j > 0 && f[j] < f[j - 1]; j--) {
            double t = f[j];
            f[j] = f[j - 1];
            f[j - 1] = t;
        }
    return f[nf / 2];
}

// Sings the song's words into voc: (n) at SR; fills start/end (seconds) per word.
static int sing(const jb_song_t *s, float *voc, int64_t n, double *start, double *end) {
    int female = strstr(s->voice, "+f") != NULL;
    double f50 = female ? 165.0 : 88.0;   // espeak-ng's fundamental at pitch 50, measured
    for (int w = 0; w < s->n_words; w++) {
        const jb_sung_word_t *wd = &s->words[w];
        double target = 440.0 * pow(2.0, (wd->key - 69) / 12.0);
        int pitch = (int)lround(50.0 + 61.0 * log2(target / f50));
        pitch = pitch < 25 ? 25 : pitch > 99 ? 99 : pitch;
        int rate = (int)lround(175.0 * 0.35 / (0.85 * wd->dur));
        rate = rate < 80 ? 80 : rate > 400 ? 400 : rate;
        float *x;
        int64_t nx;
        int sr;
        if (speak_word(s->voice, pitch, rate, wd->word, &x, &nx, &sr) < 0) return -1;
        // Trim the silence espeak-ng puts around the word.
        float peak = 0;
        for (int64_t i = 0; i < nx; i++) peak = fabsf(x[i]) > peak ? fabsf(x[i]) : peak;
        int64_t a = 0, z = nx;
        while (a < z && fabsf(x[a]) < 0.02f * peak) a++;
        while (z > a && fabsf(x[z - 1]) < 0.02f * peak) z--;
        double f0 = estimate_f0(x + a, z - a, sr);
        double k = f0 > 0 ? target / f0 : 1.0;   // playback speed that puts it on the note
        // Resampling from sr * k to SR plays the word k times faster; soxr's filter keeps the
        // images of espeak-ng's 22 kHz output out of the top octave.
        size_t cap_out = (size_t)((double)(z - a) * SR / (sr * k)) + 16, got = 0;
        float *y = malloc(cap_out * sizeof *y);
        soxr_io_spec_t io = soxr_io_spec(SOXR_FLOAT32_I, SOXR_FLOAT32_I);
        soxr_quality_spec_t q = soxr_quality_spec(SOXR_HQ, 0);
        soxr_runtime_spec_t rt = soxr_runtime_spec(1);
        if (!y || soxr_oneshot(sr * k, SR, 1, x + a, (size_t)(z - a), NULL, y, cap_out, &got,
                               &io, &q, &rt) != NULL) {
            free(x);
            free(y);
            return -1;
        }
        free(x);
        int64_t len = (int64_t)got;
        int64_t cap = (int64_t)(0.95 * wd->dur * SR);
        if (len > cap) len = cap;
        int64_t at = llround(wd->t * SR);
        if (at + len > n) len = n - at;
        int64_t fade_in = SR / 200, fade_out = SR / 50;
        for (int64_t i = 0; i < len; i++) {
            float g = 1.0f;
            if (i < fade_in) g = (float)i / (float)fade_in;
            if (len - i < fade_out) g = fminf(g, (float)(len - i) / (float)fade_out);
            voc[at + i] += g * y[i];
        }
        free(y);
        start[w] = (double)at / SR;
        end[w] = (double)(at + (len > 0 ? len : 0)) / SR;
    }
    return 0;
}

// ---------------------------------------------------------------------------------------
// Output.

static int write_wav(const char *path, const float *x, int64_t n, char *why, size_t why_len) {
    jb_err_t err = {0};
    jb_publish_t p;
    if (jb_publish_open(&p, path, &err)) {
        snprintf(why, why_len, "%s", err.msg);
        return -1;
    }
    SF_INFO info = {.samplerate = SR, .channels = 1, .format = SF_FORMAT_WAV | SF_FORMAT_PCM_16};
    SNDFILE *f = sf_open_fd(p.fd, SFM_WRITE, &info, 0);   // the fd stays p's
    if (!f) {
        snprintf(why, why_len, "%s: %s", path, sf_strerror(NULL));
        jb_publish_abort(&p);
        return -1;
    }
    sf_count_t got = sf_write_float(f, x, n);
    int rc = got == n ? 0 : -1;
    if (rc) snprintf(why, why_len, "%s: %s", path, sf_strerror(f));
    if (sf_close(f) != 0 && !rc) {
        snprintf(why, why_len, "%s: close failed", path);
        rc = -1;
    }
    if (rc) {
        jb_publish_abort(&p);
    } else if (jb_publish_commit(&p, &err)) {
        snprintf(why, why_len, "%s", err.msg);
        rc = -1;
    }
    return rc;
}

static double ms(double t) { return round(t * 1000.0) / 1000.0; }

// One song, start to end; the label line goes to run->labels[i - first]. Returns an exit
// code.
static int make_song(run_t *run, band_t *band, int i) {
    const opts_t *o = run->o;
    double t0 = now_s();
    int genre = o->genres[i % o->n_genres];
    int artist = (i / o->n_genres) % JB_COMPOSE_N_ARTISTS;
    uint64_t song_seed = jb_compose_mix(o->seed ^ jb_compose_mix((uint64_t)i + 1));
    jb_err_t err;
    jb_compose_opts_t co = {.vocals = o->vocals != 0, .tunes = o->tunes != 0};
    jb_song_t *s = jb_compose_song_opts(genre, artist, o->seconds, song_seed, &co, &err);
    if (!s) {
        fail_run(run, EX_SOFTWARE_, "song %d: %s", i, err.msg);
        return EX_SOFTWARE_;
    }
    int rc = EX_SOFTWARE_;
    int64_t n = llround(o->seconds * SR);
    float *mix = calloc((size_t)n, sizeof *mix), *voc = calloc((size_t)n, sizeof *voc);
    double *start = calloc((size_t)s->n_words + 1, sizeof *start);
    double *end = calloc((size_t)s->n_words + 1, sizeof *end);
    json_t *obj = NULL;
    char id[32], path[4096], why[4400];
    snprintf(id, sizeof id, "song%05d", i);
    if (!mix || !voc || !start || !end) {
        fail_run(run, EX_SOFTWARE_, "song %s: out of memory", id);
        goto done;
    }
    if (band_render(band, s, mix, n) < 0) {
        fail_run(run, EX_SOFTWARE_, "song %s: fluidsynth failed to render (soundfont %s)", id,
                 o->soundfont);
        goto done;
    }
    if (s->n_words && sing(s, voc, n, start, end) < 0) {
        fail_run(run, EX_SOFTWARE_, "song %s: espeak-ng failed to sing", id);
        goto done;
    }
    // The genre's production: bass and treble shelves from one-pole low-passes.
    {
        const float a_lo = 1.0f - expf(-2.0f * (float)M_PI * 200.0f / SR);
        const float a_hi = 1.0f - expf(-2.0f * (float)M_PI * 3000.0f / SR);
        float lo = 0, mid = 0;
        for (int64_t k = 0; k < n; k++) {
            lo += a_lo * (mix[k] - lo);
            mid += a_hi * (mix[k] - mid);
            mix[k] += (s->eq_low - 1.0f) * lo + (s->eq_high - 1.0f) * (mix[k] - mid);
        }
    }
    // Vocals at a fixed level relative to the band, then peak-normalized to -1 dBFS.
    double eb = 0, ev = 0;
    int64_t nv = 0;
    for (int64_t k = 0; k < n; k++) {
        eb += (double)mix[k] * mix[k];
        if (voc[k] != 0.0f) ev += (double)voc[k] * voc[k], nv++;
    }
    double rms_b = sqrt(eb / (double)n), rms_v = nv ? sqrt(ev / (double)nv) : 0.0;
    float gv = rms_v > 0 && rms_b > 0 ? (float)(s->vocal_gain * 1.3 * rms_b / rms_v) : 0.0f;
    float peak = 0;
    for (int64_t k = 0; k < n; k++) {
        mix[k] += gv * voc[k];
        peak = fabsf(mix[k]) > peak ? fabsf(mix[k]) : peak;
    }
    if (peak <= 0) {
        fail_run(run, EX_SOFTWARE_, "song %s: rendered silence", id);
        goto done;
    }
    int64_t fade = SR / 50 < n ? SR / 50 : n;
    for (int64_t k = 0; k < n; k++) {
        mix[k] *= 0.891f / peak;
        if (n - k <= fade) mix[k] *= (float)(n - k - 1) / (float)fade;
    }
    snprintf(path, sizeof path, "%s/audio/%s.wav", o->out, id);
    if (write_wav(path, mix, n, why, sizeof why) < 0) {
        fail_run(run, EX_IOERR_, "song %s: %s", id, why);
        rc = EX_IOERR_;
        goto done;
    }
    obj = json_object();
    json_t *words = json_array();
    for (int w = 0; w < s->n_words; w++)
        json_array_append_new(words, json_pack("{s:s, s:f, s:f}", "word", s->words[w].word,
                                               "start", ms(start[w]), "end", ms(end[w])));
    char file[64];
    snprintf(file, sizeof file, "audio/%s.wav", id);
    json_object_set_new(obj, "id", json_string(id));
    json_object_set_new(obj, "file", json_string(file));
    json_object_set_new(obj, "artist", json_string(jb_compose_artist_name(genre, artist)));
    json_object_set_new(obj, "genre", json_string(jb_compose_genre_name(genre)));
    json_object_set_new(obj, "lyrics", json_string(o->vocals ? s->lyrics : ""));
    json_object_set_new(obj, "words", words);
    json_object_set_new(obj, "duration", json_real(ms(o->seconds)));
    json_object_set_new(obj, "sample_rate", json_integer(SR));
    json_object_set_new(obj, "seed", json_integer((json_int_t)o->seed));
    json_object_set_new(obj, "index", json_integer(i));
    json_object_set_new(obj, "tempo", json_real(round(s->tempo * 10) / 10));
    json_object_set_new(obj, "key", json_string(jb_compose_pitch_name(s->tonic)));
    json_object_set_new(obj, "mode", json_string(s->mode));
    json_object_set_new(obj, "voice", json_string(o->vocals ? s->voice : ""));
    if (o->tunes) json_object_set_new(obj, "tunes", json_true());
    run->labels[i - o->first] = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9));
    if (!run->labels[i - o->first]) {
        fail_run(run, EX_SOFTWARE_, "song %s: out of memory", id);
        goto done;
    }
    rc = EX_OK_;
    int d = atomic_fetch_add(&run->done, 1) + 1;
    jb_log(JB_INFO, "song=%s %d/%d genre=%s artist=\"%s\" tempo=%.1f words=%d render_s=%.2f "
           "elapsed_s=%.1f", id, d, o->songs, jb_compose_genre_name(genre),
           jb_compose_artist_name(genre, artist), s->tempo, s->n_words, now_s() - t0,
           now_s() - run->t0);
done:
    json_decref(obj);
    free(mix);
    free(voc);
    free(start);
    free(end);
    jb_song_destroy(&s);
    return rc;
}

static void *worker(void *arg) {
    run_t *run = arg;
    band_t band;
    if (band_init(&band, run->o->soundfont) < 0) {
        fail_run(run, EX_SOFTWARE_, "fluidsynth: out of memory");
        return NULL;
    }
    for (;;) {
        if (atomic_load(&run->failed)) break;
        int i = atomic_fetch_add(&run->next, 1);
        if (i >= run->o->songs) break;
        if (make_song(run, &band, run->o->first + i) != EX_OK_) break;
    }
    band_destroy(&band);
    return NULL;
}

static int write_labels(const run_t *run, char *why, size_t why_len) {
    char path[4200];
    snprintf(path, sizeof path, "%s/labels.jsonl", run->o->out);
    jb_err_t err = {0};
    jb_publish_t p;
    FILE *f = NULL;
    if (jb_publish_open(&p, path, &err) || !(f = jb_publish_stream(&p, &err))) {
        if (!f && p.tmp) jb_publish_abort(&p);
        snprintf(why, why_len, "%s", err.msg);
        return -1;
    }
    int bad = 0;
    for (int i = 0; i < run->o->songs; i++) bad |= fprintf(f, "%s\n", run->labels[i]) < 0;
    if (bad) {
        snprintf(why, why_len, "%s: %s", path, strerror(errno));
        jb_publish_abort(&p);
        return -1;
    }
    if (jb_publish_commit(&p, &err)) {
        snprintf(why, why_len, "%s", err.msg);
        return -1;
    }
    return 0;
}

// ---------------------------------------------------------------------------------------

static void usage(FILE *f) {
    fprintf(f,
            "usage: jukebox-mkdataset --out DIR [options]\n"
            "Renders a labelled synthetic music dataset (FluidSynth + General MIDI soundfont,\n"
            "lyrics sung by espeak-ng), deterministically from a seed.\n"
            "\n"
            "  -o, --out DIR        output directory (created): DIR/audio/<id>.wav (44.1 kHz mono\n"
            "                       16-bit) and DIR/labels.jsonl\n"
            "  -n, --songs N        number of songs (default 24); genres rotate, then artists\n"
            "      --first I        render songs I .. I+N-1 of the run (default 0): the same\n"
            "                       files as a run of I+N songs would write for them\n"
            "  -s, --seconds S      length of each song in seconds, (0, 3600] (default 10)\n"
            "      --seed N         master seed, 0 .. 2^63-1 (default 1)\n"
            "  -g, --genres LIST    comma-separated genres to use (default all; see --list)\n"
            "  -j, --threads N      songs rendered in parallel, 1..64 (default: cores, at\n"
            "                       most 4); the output does not depend on it\n"
            "      --no-vocals      no singing: the vocal line is played by the lead instrument\n"
            "                       and the labels carry empty lyrics\n"
            "      --tunes          clear tunes: the melody in front (lead and voice louder,\n"
            "                       accompaniment softer, no pad, sparser legato motifs)\n"
            "      --soundfont PATH General MIDI .sf2 (default " DEFAULT_SF2 ")\n"
            "      --list           print the genres and their artists, then exit\n"
            "  -q, --quiet          no progress lines\n"
            "  -h, --help           this text\n"
            "\n"
            "Exit codes: 0 done; 64 bad usage; 65 not a soundfont; 66 soundfont missing;\n"
            "69 espeak-ng unavailable; 70 internal error (synthesis failed); 73 cannot create\n"
            "the output directory; 74 write failed.\n");
}

static int parse_u64(const char *s, uint64_t *out) {
    char *end;
    if (!*s || *s == '-') return -1;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end) return -1;
    *out = v;
    return 0;
}

int main(int argc, char **argv) {
    jb_log_set_stage("mkdataset");
    opts_t o = {.out = NULL, .soundfont = DEFAULT_SF2, .songs = 24, .seconds = 10.0, .seed = 1,
                .n_genres = 0, .threads = 0, .vocals = 1};
    const char *genres = NULL;
    int list = 0;
    enum { OPT_SEED = 256, OPT_NOVOC, OPT_SF, OPT_LIST, OPT_FIRST, OPT_TUNES };
    static const struct option LONG[] = {
        {"out", required_argument, 0, 'o'},      {"songs", required_argument, 0, 'n'},
        {"seconds", required_argument, 0, 's'},  {"seed", required_argument, 0, OPT_SEED},
        {"genres", required_argument, 0, 'g'},   {"threads", required_argument, 0, 'j'},
        {"no-vocals", no_argument, 0, OPT_NOVOC}, {"soundfont", required_argument, 0, OPT_SF},
        {"first", required_argument, 0, OPT_FIRST}, {"tunes", no_argument, 0, OPT_TUNES}, {"list", no_argument, 0, OPT_LIST},      {"quiet", no_argument, 0, 'q'},
        {"help", no_argument, 0, 'h'},           {0, 0, 0, 0}};
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "o:n:s:g:j:qh", LONG, NULL)) != -1) {
        char *end = NULL;
        uint64_t u;
        switch (c) {
        case 'o': o.out = optarg; break;
        case 'n':
            if (parse_u64(optarg, &u) < 0 || u < 1 || u > 1000000) goto bad_value;
            o.songs = (int)u;
            break;
        case 's':
            o.seconds = strtod(optarg, &end);
            if (!*optarg || *end || !(o.seconds > 0 && o.seconds <= 3600)) goto bad_value;
            break;
        case OPT_SEED:   // up to 2^63 - 1: labels.jsonl stores it as a JSON integer
            if (parse_u64(optarg, &o.seed) < 0 || o.seed > (uint64_t)INT64_MAX) goto bad_value;
            break;
        case 'g': genres = optarg; break;
        case 'j':
            if (parse_u64(optarg, &u) < 0 || u < 1 || u > 64) goto bad_value;
            o.threads = (int)u;
            break;
        case OPT_NOVOC: o.vocals = 0; break;
        case OPT_TUNES: o.tunes = 1; break;
        case OPT_SF: o.soundfont = optarg; break;
        case OPT_FIRST:
            if (parse_u64(optarg, &u) < 0 || u > 1000000) goto bad_value;
            o.first = (int)u;
            break;
        case OPT_LIST: list = 1; break;
        case 'q': jb_log_set_level(JB_WARN); break;
        case 'h': usage(stdout); return EX_OK_;
        default:
            fprintf(stderr, "jukebox-mkdataset: unknown option or missing value: %s\n",
                    argv[optind - 1]);
            usage(stderr);
            return EX_USAGE_;
        }
        continue;
    bad_value:
        fprintf(stderr, "jukebox-mkdataset: bad option value '%s' (see --help)\n", optarg);
        return EX_USAGE_;
    }
    if (list) {
        for (int g = 0; g < jb_compose_n_genres(); g++) {
            printf("%s:", jb_compose_genre_name(g));
            for (int a = 0; a < JB_COMPOSE_N_ARTISTS; a++)
                printf("%s %s", a ? "," : "", jb_compose_artist_name(g, a));
            printf("\n");
        }
        return EX_OK_;
    }
    if (optind < argc) {
        fprintf(stderr, "jukebox-mkdataset: unexpected argument '%s'\n", argv[optind]);
        return EX_USAGE_;
    }
    if (!o.out || !*o.out) {
        fprintf(stderr, "jukebox-mkdataset: --out DIR is required (see --help)\n");
        return EX_USAGE_;
    }
    if (genres) {
        const char *p = genres;
        while (*p) {
            size_t len = strcspn(p, ",");
            char name[64];
            snprintf(name, sizeof name, "%.*s", (int)(len < 63 ? len : 63), p);
            int g = len < 63 ? jb_compose_genre_find(name) : -1;
            if (g < 0 || o.n_genres == 64) {
                fprintf(stderr, "jukebox-mkdataset: unknown genre '%s' (see --list)\n", name);
                return EX_USAGE_;
            }
            o.genres[o.n_genres++] = g;
            p += len;
            if (*p == ',') p++;
        }
        if (!o.n_genres) {
            fprintf(stderr, "jukebox-mkdataset: --genres is empty\n");
            return EX_USAGE_;
        }
    } else {
        for (int g = 0; g < jb_compose_n_genres(); g++) o.genres[o.n_genres++] = g;
    }
    if (!o.threads) {
        long nc = sysconf(_SC_NPROCESSORS_ONLN);
        o.threads = nc < 1 ? 1 : nc > 4 ? 4 : (int)nc;
    }
    if (o.threads > o.songs) o.threads = o.songs;
    if (access(o.soundfont, R_OK) != 0) {
        fprintf(stderr, "jukebox-mkdataset: soundfont %s: %s (Debian: fluid-soundfont-gm)\n",
                o.soundfont, strerror(errno));
        return EX_NOINPUT_;
    }
    char audio_dir[4200];
    snprintf(audio_dir, sizeof audio_dir, "%s/audio", o.out);
    jb_err_t merr = {0};
    if (jb_publish_mkdirs(audio_dir, &merr)) {
        fprintf(stderr, "jukebox-mkdataset: %s\n", merr.msg);
        return EX_CANTCREAT_;
    }
    if (access(audio_dir, W_OK) != 0 || access(o.out, W_OK) != 0) {
        fprintf(stderr, "jukebox-mkdataset: %s is not writable\n", o.out);
        return EX_CANTCREAT_;
    }
    // FluidSynth's warnings (missing instruments fall back) are not ours to print.
    fluid_set_log_function(FLUID_WARN, NULL, NULL);
    fluid_set_log_function(FLUID_INFO, NULL, NULL);
    fluid_set_log_function(FLUID_DBG, NULL, NULL);
    // One synth on this thread first: it sets up FluidSynth's global tables before any
    // worker runs, and a file that is not a soundfont is refused here.
    {
        band_t probe;
        int ok = band_init(&probe, o.soundfont) == 0;
        fluid_synth_t *fs = ok ? new_fluid_synth(probe.settings) : NULL;
        ok = fs && fluid_synth_sfload(fs, o.soundfont, 1) != FLUID_FAILED;
        if (fs) delete_fluid_synth(fs);
        band_destroy(&probe);
        if (!ok) {
            fprintf(stderr, "jukebox-mkdataset: %s: not a usable SoundFont\n", o.soundfont);
            return EX_DATAERR_;
        }
    }
    if (o.vocals && speak_check() < 0) {
        fprintf(stderr, "jukebox-mkdataset: the espeak-ng program does not run (Debian: "
                        "espeak-ng; or use --no-vocals)\n");
        return EX_UNAVAILABLE_;
    }
    run_t run = {.o = &o, .t0 = now_s()};
    atomic_init(&run.next, 0);
    atomic_init(&run.failed, 0);
    atomic_init(&run.done, 0);
    pthread_mutex_init(&run.fail_mu, NULL);
    run.labels = calloc((size_t)o.songs, sizeof *run.labels);
    pthread_t *th = calloc((size_t)o.threads, sizeof *th);
    int rc = EX_OK_;
    if (!run.labels || !th) {
        fprintf(stderr, "jukebox-mkdataset: out of memory\n");
        rc = EX_SOFTWARE_;
        goto out;
    }
    jb_log(JB_INFO, "out=%s songs=%d seconds=%g seed=%llu genres=%d threads=%d vocals=%d", o.out,
           o.songs, o.seconds, (unsigned long long)o.seed, o.n_genres, o.threads, o.vocals);
    if (o.tunes) jb_log(JB_INFO, "tunes: the melody in front");
    int started = 0;
    for (; started < o.threads; started++)
        if (pthread_create(&th[started], NULL, worker, &run) != 0) {
            fail_run(&run, EX_SOFTWARE_, "cannot start thread %d", started);
            break;
        }
    for (int t = 0; t < started; t++) pthread_join(th[t], NULL);
    rc = atomic_load(&run.failed);
    if (!rc) {
        char why[4400];
        if (write_labels(&run, why, sizeof why) < 0) {
            jb_log(JB_ERROR, "labels: %s", why);
            rc = EX_IOERR_;
        } else {
            jb_log(JB_INFO, "done songs=%d elapsed_s=%.1f labels=%s/labels.jsonl", o.songs,
                   now_s() - run.t0, o.out);
        }
    }
out:
    if (run.labels)
        for (int i = 0; i < o.songs; i++) free(run.labels[i]);
    free(run.labels);
    free(th);
    pthread_mutex_destroy(&run.fail_mu);
    return rc;
}
