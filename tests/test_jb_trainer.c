// test_jb_trainer.c: the data set (files found, sorted, labels attached by file and by id),
// windows (deterministic, equal to the source slice they report, items drawn in proportion to
// their length, zero padding), the bandwidth against the closed forms of a sine, the
// vocabularies (v2 and v3 keys), the CSV's resume truncation, the plot's PNG header, fresh
// prior files (loaded by jb_prior_new and jb_train_prior_new; initial statistics; tied x_out;
// a step), lyrics priors of both kinds among them, and the label of a training window (the
// lyric window against hand-computed cases and the rule of labels.py written out here).
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "jb_audio.h"
#include "jb_hparams.h"
#include "jb_prior.h"
#include "jb_safetensors.h"
#include "jb_test.h"
#include "jb_train_prior.h"
#include "jb_trainer.h"

#define SR 8000

static char dir[256];

static void write_file(const char *name, const char *text) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    fputs(text, f);
    fclose(f);
}

static double stddev(const float *x, int64_t n) {
    double s = 0, s2 = 0;
    for (int64_t i = 0; i < n; i++) s += x[i], s2 += (double)x[i] * x[i];
    return sqrt(s2 / n - (s / n) * (s / n));
}

static void test_prior_init(const char *model, const char *what) {
    jb_err_t err = {0};
    jb_st_t *st = jb_st_open(model, &err);
    JB_CHECK(st != NULL, "%s: open %s", what, model);
    if (!st) return;
    json_t *hp = jb_hparams_from_st(st, &err);
    jb_st_close(&st);
    // A quarter of the bundled top prior's context (1024 codes): its shapes otherwise, but one
    // step over 1072 positions at width 192 took minutes under valgrind (test_valgrind.sh).
    if (!strcmp(what, "top")) json_object_set_new(hp, "n_ctx", json_integer(256));
    char path[512];
    snprintf(path, sizeof path, "%s/fresh_%s.safetensors", dir, what);
    const char *k[2] = {"artists", "genres"}, *v[2] = {"{\"a\": 1}", "{\"g\": 1}"};
    JB_CHECK_OK(jb_trainer_prior_init(hp, 7, path, k, v, 2, &err), &err, what);
    jb_prior_t *p = jb_prior_new(path, &err);
    JB_CHECK(p != NULL, "%s: jb_prior_new loads the fresh file (%s)", what, err.msg);
    jb_prior_destroy(&p);
    jb_train_prior_t *tp = jb_train_prior_new(path, 2, &err);
    JB_CHECK(tp != NULL, "%s: jb_train_prior_new loads the fresh file (%s)", what, err.msg);
    if (tp) {
        const jb_train_param_t *xe = jb_train_prior_find(tp, "prior.x_emb.weight");
        const jb_train_param_t *ln = jb_train_prior_find(tp, "prior.transformer._attn_mods.0.ln_0.weight");
        const jb_train_param_t *pe = jb_train_prior_find(tp, "prior.pos_emb.pos_emb");
        double sx = stddev(xe->w, xe->numel), sp = stddev(pe->w, pe->numel);
        JB_CHECK(fabs(sx - 0.02) < 0.003, "%s: x_emb std %.4f ~ 0.02", what, sx);
        JB_CHECK(fabs(sp - 0.01) < 0.0015, "%s: pos_emb std %.4f ~ 0.01", what, sp);
        int ones = 1;
        for (int64_t i = 0; i < ln->numel; i++) ones &= ln->w[i] == 1.0f;
        JB_CHECK(ones, "%s: LayerNorm weights are 1", what);
        st = jb_st_open(path, &err);
        const jb_st_entry_t *xo = jb_st_find(st, "prior.x_out.weight");
        const jb_st_entry_t *xi = jb_st_find(st, "prior.x_emb.weight");
        int merged = 0;
        jb_hp_bool(hp, "merged_decoder", &merged, NULL);
        int copy = xo && xi && xo->nbytes == xi->nbytes && !memcmp(xo->data, xi->data, xi->nbytes);
        JB_CHECK(xo && (merged ? !copy : copy), "%s: x_out %s", what,
                 merged ? "separate (merged_decoder)" : "tied: stored as a copy of x_emb");
        JB_CHECK(st && jb_st_meta(st, "artists") && !strcmp(jb_st_meta(st, "artists"), "{\"a\": 1}"),
                 "%s: extra metadata stored", what);
        jb_st_close(&st);
        const jb_prior_info_t *in = jb_train_prior_info(tp);
        // windows of the model's n_ctx
        int32_t *z = calloc((size_t)2 * in->n_ctx, sizeof *z);
        int32_t *zc = calloc((size_t)2 * in->n_ctx, sizeof *zc), y[2 * 64];
        int LL = in->label_len, P = in->n_tokens;
        JB_CHECK(z && zc && LL <= 64, "%s: buffers for n_ctx %d, label_len %d", what, in->n_ctx, LL);
        for (int i = 0; i < 2 * in->n_ctx; i++) z[i] = (i * 7) % in->bins;
        for (int i = 0; i < 2 * LL; i++)   // no genre words; lyric tokens spread over the vocabulary
            y[i] = i % LL >= LL - P ? (i * 5) % in->n_vocab : i % LL >= 4 ? -1 : 0;
        for (int b = 0; b < 2 && in->labels; b++) {
            y[b * in->label_len + 0] = 2 * in->sample_length;   // within the timing range
            y[b * in->label_len + 2] = in->sample_length;
            y[b * in->label_len + 3] = 1;
        }
        jb_train_prior_loss_t L;
        JB_CHECK_OK(jb_train_prior_step(tp, z, in->x_cond ? zc : NULL, in->labels ? y : NULL, 2,
                                        &L, NULL, &err), &err, "a step on the fresh prior");
        // near-uniform logits at initialisation: each cross-entropy close to log2 of its
        // number of classes (music: seq_bins; lyrics: the joint vocabulary or n_vocab)
        double u = log2(in->seq_bins);
        JB_CHECK(fabs(L.gen_loss - u) < 0.1 * u, "%s: initial music loss %.3f bits ~ log2(%d) = "
                 "%.3f", what, L.gen_loss, in->seq_bins, u);
        if (in->lyrics) {
            int V = in->lyrics == JB_PRIOR_LYRICS_JOINT ? in->seq_bins : in->n_vocab;
            double up = log2(V);
            JB_CHECK(fabs(L.prime_loss - up) < 0.1 * up, "%s: initial lyrics loss %.3f bits ~ "
                     "log2(%d) = %.3f", what, L.prime_loss, V, up);
        }
        if (in->lyrics == JB_PRIOR_LYRICS_ENCODER) {   // prime_prior scaled by prime_init_scale
            double ps = 1.0;
            jb_hp_double_or(hp, "prime_init_scale", 1.0, &ps, NULL);
            const jb_train_param_t *pe = jb_train_prior_find(tp, "prime_prior.x_emb.weight");
            const jb_train_param_t *kv =
                jb_train_prior_find(tp, "prior.transformer._attn_mods.18.attn.c_enc_kv.w");
            double sp2 = pe ? stddev(pe->w, pe->numel) : 0, sk = kv ? stddev(kv->w, kv->numel) : 0;
            JB_CHECK(pe && fabs(sp2 - 0.02 * ps) < 0.003, "%s: prime_prior.x_emb std %.4f ~ %.3f",
                     what, sp2, 0.02 * ps);
            JB_CHECK(kv && fabs(sk - 0.02) < 0.004, "%s: c_enc_kv of the attn_func-6 layer, std "
                     "%.4f ~ 0.02", what, sk);
        }
        free(z), free(zc);
    }
    jb_train_prior_destroy(&tp);
    if (!json_is_true(json_object_get(hp, "use_tokens"))) {   // attn_func 7 needs lyrics
        json_object_set_new(hp, "attn_order", json_integer(12));
        json_object_set_new(hp, "blocks", json_integer(4));
        json_object_set_new(hp, "prior_depth", json_integer(16));
        JB_CHECK(jb_trainer_prior_init(hp, 7, path, NULL, NULL, 0, &err) == -1 &&
                 err.code == JB_EUNSUP, "%s: attn_order 12 without lyrics refused (%s)", what,
                 err.msg);
    } else {   // a lyrics prior needs labels (its tokens are part of y)
        json_object_set_new(hp, "labels", json_false());
        JB_CHECK(jb_trainer_prior_init(hp, 7, path, NULL, NULL, 0, &err) == -1 &&
                 err.code == JB_EINVAL, "%s: lyrics without labels refused (%s)", what, err.msg);
    }
    json_decref(hp);
}

// The reference's lyric window for a training window (jukebox/data/labels.py,
// get_relevant_lyric_tokens), written out here from its text, in double precision.
static void ref_window(const int32_t *full, int n_full, int n_tokens, double total, double offset,
                       double duration, int32_t *out) {
    if (n_full < n_tokens) {
        for (int i = 0; i < n_tokens; i++)
            out[i] = i < n_tokens - n_full ? 0 : full[i - (n_tokens - n_full)];
        return;
    }
    long mid = (long)(n_full * (offset + duration / 2.0) / total);
    if (mid < n_tokens / 2) mid = n_tokens / 2;
    if (mid > n_full - n_tokens / 2) mid = n_full - n_tokens / 2;
    for (int i = 0; i < n_tokens; i++) out[i] = full[mid - n_tokens / 2 + i];
}

static void test_label(void) {
    jb_err_t err = {0};
    int32_t full[40], y[4 + 2 + 8], g[1] = {5};
    for (int i = 0; i < 40; i++) full[i] = 100 + i;
    // hand-computed: 40 tokens, windows of 8, a song of 176400 samples, 4096-sample windows
    //   offset 0:      int(40 * 2048 / 176400) = 0 -> clamped to 4: tokens 0..7
    //   offset 50000:  int(40 * 52048 / 176400) = int(11.80) = 11: tokens 7..14
    //   offset 88200:  int(40 * 90248 / 176400) = int(20.46) = 20: tokens 16..23
    //   offset 172304: int(40 * 174352 / 176400) = int(39.54) = 39 -> clamped to 36: 32..39
    static const int64_t offs[4] = {0, 50000, 88200, 172304};
    static const int first[4] = {0, 7, 16, 32};
    for (int k = 0; k < 4; k++) {
        JB_CHECK_OK(jb_trainer_label(176400, offs[k], 4096, 3, g, 1, 2, full, 40, 8, y, &err),
                    &err, "label");
        int ok = y[0] == 176400 && y[1] == offs[k] && y[2] == 4096 && y[3] == 3 && y[4] == 5 &&
                 y[5] == -1;
        for (int i = 0; i < 8; i++) ok &= y[6 + i] == 100 + first[k] + i;
        JB_CHECK(ok, "label at offset %lld: [total, offset, length, artist, genre, -1] and "
                 "lyric tokens %d..%d", (long long)offs[k], first[k], first[k] + 7);
    }
    // an exact midpoint: 40 * (150 + 100) / 1000 = 10 -> tokens 6..13
    JB_CHECK_OK(jb_trainer_label(1000, 150, 200, 0, NULL, 0, 2, full, 40, 8, y, &err), &err, "l");
    JB_CHECK(y[4] == -1 && y[5] == -1 && y[6] == 106 && y[13] == 113,
             "integer midpoint 10: tokens 6..13, no genre words (-1 -1)");
    // lyrics shorter than the window: left-padded with 0
    JB_CHECK_OK(jb_trainer_label(1000, 900, 200, 0, g, 1, 2, full, 5, 8, y, &err), &err, "l");
    JB_CHECK(y[6] == 0 && y[7] == 0 && y[8] == 0 && y[9] == 100 && y[13] == 104,
             "5 tokens in a window of 8: three 0s then the tokens");
    // every offset of a song against the rule written out from labels.py
    int32_t r[8];
    int all = 1;
    for (int64_t off = 0; off + 4096 <= 176400 && all; off += 128) {
        jb_trainer_label(176400, off, 4096, 0, NULL, 0, 2, full, 37, 8, y, &err);
        ref_window(full, 37, 8, 176400, (double)off, 4096, r);
        all &= !memcmp(y + 6, r, sizeof r);
    }
    JB_CHECK(all, "every window start (hop 128) of a song: the reference's window");
    JB_CHECK(jb_trainer_label(1000, 1000, 200, 0, NULL, 0, 2, full, 40, 8, y, &err) == -1 &&
             err.code == JB_EINVAL, "offset at the song's end: refused (%s)", err.msg);
    JB_CHECK(jb_trainer_label(1000, 0, 200, 0, g, 3, 2, full, 40, 8, y, &err) == -1,
             "more genre words than max_genre_words: refused");
}

int main(void) {
    jb_err_t err = {0};
    snprintf(dir, sizeof dir, "/tmp/test_jb_trainer.XXXXXX");
    if (!mkdtemp(dir)) return 1;
    char p[512];
    snprintf(p, sizeof p, "%s/audio", dir);
    mkdir(p, 0777);
    // A: 1000 samples of 0.5; B: 3000 samples of a sine of period 100 (amplitude 0.8)
    float a[1000], b[3000];
    for (int i = 0; i < 1000; i++) a[i] = 0.5f;
    for (int i = 0; i < 3000; i++) b[i] = 0.8f * (float)sin(2 * M_PI * i / 100.0);
    snprintf(p, sizeof p, "%s/audio/b_sine.wav", dir);
    JB_CHECK_OK(jb_audio_write(p, b, 3000, SR, JB_AUDIO_WAV_FLOAT, &err), &err, "write b");
    snprintf(p, sizeof p, "%s/audio/a_const.wav", dir);
    JB_CHECK_OK(jb_audio_write(p, a, 1000, SR, JB_AUDIO_WAV_FLOAT, &err), &err, "write a");
    snprintf(p, sizeof p, "%s/audio/notes.txt", dir);
    write_file("audio/notes.txt", "not audio\n");
    write_file("labels.jsonl", "{\"file\": \"audio/b_sine.wav\", \"artist\": \"Sine Duo\", "
               "\"genre\": \"chip tune\"}\n\n{\"id\": \"a_const\", \"artist\": \"Square One\", "
               "\"genre\": \"ambient\", \"lyrics\": \"la\"}\n");

    jb_trainer_data_t *d = jb_trainer_data_load(dir, SR, &err);
    JB_CHECK(d != NULL, "load (%s)", err.msg);
    if (!d) return jb_test_summary("test_jb_trainer");
    JB_CHECK(d->n_items == 2 && d->items[0].n == 1000 && d->items[1].n == 3000 &&
             d->total == 4000, "two audio files found, sorted by name, lengths");
    JB_CHECK(d->labelled == 2 && !strcmp(d->items[0].artist, "Square One") &&
             !strcmp(d->items[0].lyrics, "la") && !strcmp(d->items[1].genre, "chip tune"),
             "labels attached by id and by file");

    // windows
    float w1[2000], w2[2000];
    int it, it2, nb = 0, same = 1, slice = 1;
    int64_t off, off2;
    for (int k = 0; k < 4000; k++) {
        jb_trainer_data_window(d, 3, (uint64_t)k, 500, w1, &it, &off);
        jb_trainer_data_window(d, 3, (uint64_t)k, 500, w2, &it2, &off2);
        same &= it == it2 && off == off2 && !memcmp(w1, w2, sizeof(float) * 500);
        const jb_trainer_item_t *src = &d->items[it];
        slice &= off >= 0 && off + 500 <= src->n &&
                 !memcmp(w1, src->x + off, sizeof(float) * 500);
        nb += it == 1;
    }
    JB_CHECK(same, "a window is a pure function of (seed, draw)");
    JB_CHECK(slice, "each window equals the source slice at the offset it reports");
    JB_CHECK(fabs(nb / 4000.0 - 0.75) < 0.03, "items drawn in proportion to length: %.3f ~ 0.75",
             nb / 4000.0);
    jb_trainer_data_window(d, 4, 0, 500, w1, NULL, NULL);
    jb_trainer_data_window(d, 3, 0, 500, w2, NULL, NULL);
    int differ = 0;
    for (int k = 1; k < 20 && !differ; k++) {
        jb_trainer_data_window(d, 4, (uint64_t)k, 500, w1, &it, &off);
        jb_trainer_data_window(d, 3, (uint64_t)k, 500, w2, &it2, &off2);
        differ = it != it2 || off != off2;
    }
    JB_CHECK(differ, "another seed draws other windows");
    int pad_ok = 0;
    for (int k = 0; k < 50 && !pad_ok; k++) {
        jb_trainer_data_window(d, 3, (uint64_t)k, 2000, w1, &it, &off);
        if (it == 0) {
            pad_ok = off == 0 && w1[999] == 0.5f;
            for (int i = 1000; i < 2000; i++) pad_ok &= w1[i] == 0.0f;
        }
    }
    JB_CHECK(pad_ok, "an item shorter than the window: start 0, zero padded");

    // vocabularies
    char *aj = NULL, *gj = NULL;
    int na = 0, ng = 0;
    JB_CHECK_OK(jb_trainer_vocabs(d, JB_TEXT_V2, &aj, &gj, &na, &ng, &err), &err, "vocabs");
    JB_CHECK(aj && !strcmp(aj, "{\"sine_duo\":1,\"square_one\":2}") && na == 3,
             "artist vocabulary normalised, ids from 1: %s", aj ? aj : "");
    JB_CHECK(gj && !strcmp(gj, "{\"ambient\":1,\"chip\":2,\"tune\":3}") && ng == 4,
             "genre words: %s", gj ? gj : "");
    free(aj), free(gj);
    JB_CHECK_OK(jb_trainer_vocabs(d, JB_TEXT_V3, &aj, &gj, &na, &ng, &err), &err, "vocabs v3");
    JB_CHECK(aj && !strcmp(aj, "{\"sine duo\":1,\"square one\":2}") && na == 3,
             "v3 artist vocabulary: lower-cased names: %s", aj ? aj : "");
    JB_CHECK(gj && !strcmp(gj, "{\"ambient\":1,\"chip tune\":2}") && ng == 3,
             "v3 genres: whole lower-cased names: %s", gj ? gj : "");
    free(aj), free(gj);
    jb_trainer_data_destroy(&d);
    JB_CHECK(d == NULL, "destroy nulls the pointer");

    // bandwidth of the sine alone: l1 = 2A/pi, l2 = A^2/2 over whole periods
    snprintf(p, sizeof p, "%s/sine", dir);
    mkdir(p, 0777);
    char q[600];
    snprintf(q, sizeof q, "%s/sine/s.wav", dir);
    JB_CHECK_OK(jb_audio_write(q, b, 3000, SR, JB_AUDIO_WAV_FLOAT, &err), &err, "write s");
    d = jb_trainer_data_load(p, SR, &err);
    double l1, l2, sp;
    JB_CHECK_OK(jb_trainer_bandwidth(d, 2000, 8, 1, &l1, &l2, &sp, &err), &err, "bandwidth");
    JB_CHECK(fabs(l1 - 1.6 / M_PI) < 0.01 && fabs(l2 - 0.32) < 0.01 && sp > 0,
             "bandwidth of a sine: l1 %.4f (%.4f), l2 %.4f (0.32)", l1, 1.6 / M_PI, l2);
    jb_trainer_data_destroy(&d);

    // errors
    snprintf(p, sizeof p, "%s/none", dir);
    JB_CHECK(!jb_trainer_data_load(p, SR, &err) && err.code == JB_ENOENT, "missing dir: %s", err.msg);
    write_file("labels.jsonl", "{\"file\": \"audio/zzz.wav\"}\n");
    JB_CHECK(!jb_trainer_data_load(dir, SR, &err) && err.code == JB_EFORMAT &&
             strstr(err.msg, "labels.jsonl:1"), "label for no file: %s", err.msg);

    // CSV: resume keeps the rows up to the step
    snprintf(p, sizeof p, "%s/m.csv", dir);
    const char *names[2] = {"loss", "lr"};
    jb_trainer_csv_t *c = jb_trainer_csv_open(p, names, 2, -1, &err);
    for (int s = 1; s <= 5; s++) {
        double v[2] = {10.0 / s, 0.5};
        jb_trainer_csv_row(c, s, v, &err);
    }
    jb_trainer_csv_close(&c);
    c = jb_trainer_csv_open(p, names, 2, 3, &err);
    double v4[2] = {9, 0.25};
    jb_trainer_csv_row(c, 4, v4, &err);
    jb_trainer_csv_close(&c);
    char buf[512] = {0};
    FILE *f = fopen(p, "r");
    size_t got = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    (void)got;
    JB_CHECK(!strcmp(buf, "step,loss,lr\n1,10,0.5\n2,5,0.5\n3,3.33333333,0.5\n4,9,0.25\n"),
             "CSV after resume at step 3: %s", buf);

    // plot
    snprintf(q, sizeof q, "%s/m.png", dir);
    const char *which[2] = {"lr", "nope"};
    JB_CHECK_OK(jb_trainer_plot(p, q, which, 2, &err), &err, "plot");
    unsigned char h[24];
    f = fopen(q, "rb");
    got = f ? fread(h, 1, 24, f) : 0;
    if (f) fclose(f);
    JB_CHECK(got == 24 && !memcmp(h, "\x89PNG\r\n\x1a\n", 8) && h[16] == 0 && h[17] == 0 &&
             h[18] == 2 && h[19] == 128 && h[23] == 120,
             "PNG header: 640 x 120 (one panel: the unknown column skipped)");
    JB_CHECK_OK(jb_trainer_plot(p, q, NULL, 0, &err), &err, "plot of every column");

    test_prior_init("models/default/prior_level_2.safetensors", "top");
    test_prior_init("models/default/prior_level_1.safetensors", "upsampler");
    test_prior_init("tests/golden/train_prior_lyrics_tiny/model.safetensors", "lyrics_encoder");
    test_prior_init("tests/golden/train_prior_1b_tiny/model.safetensors", "lyrics_joint");
    test_label();

    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", dir);
    return jb_test_summary("test_jb_trainer");
}
