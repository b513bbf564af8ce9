// inspect.c: jukebox-inspect, what a model file holds and what running it needs.
//
//   jukebox-inspect [--no-tensors] MODEL.safetensors
//
// Prints (stdout) the metadata (a summary of the hyper-parameters, vocabulary
// sizes), the tensor table (name, dtype, shape, bytes), totals per dtype, whether
// the tensors match what the hyper-parameters expect (jb_expect.h), and an
// estimate of the memory the stage needs at batch 1 (see estimate_prior /
// estimate_vqvae for how). Exit codes: 0, 64 usage, 65 bad file, 66 missing.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include "jb_expect.h"
#include "jb_hparams.h"
#include "jb_log.h"
#include "jb_safetensors.h"

static double gib(double b) { return b / (1024.0 * 1024.0 * 1024.0); }

// "12.345 GiB" or "3.2 MiB". Static buffers: at most 4 live per printf.
static const char *human(double b) {
    static char buf[4][32];
    static int k;
    char *o = buf[k++ & 3];
    if (b >= 1024.0 * 1024.0 * 1024.0) snprintf(o, 32, "%.3f GiB", gib(b));
    else snprintf(o, 32, "%.1f MiB", b / (1024.0 * 1024.0));
    return o;
}

static void vocab_line(const jb_st_t *st, const char *key) {
    const char *v = jb_st_meta(st, key);
    if (!v) {
        printf("  %-8s none\n", key);
        return;
    }
    json_error_t jerr;
    json_t *o = json_loads(v, 0, &jerr);
    if (!json_is_object(o)) {
        printf("  %-8s unreadable (%s)\n", key, o ? "not an object" : jerr.text);
        json_decref(o);
        return;
    }
    // Distinct ids: several names may share one.
    int max_id = -1, n_ids = 0;
    const char *k;
    json_t *val;
    char *seen = NULL;
    json_object_foreach(o, k, val) {
        int id = (int)json_integer_value(val);
        if (id > max_id) max_id = id;
    }
    if (max_id >= 0 && max_id < (1 << 24) && (seen = calloc((size_t)max_id + 1, 1))) {
        json_object_foreach(o, k, val) {
            int id = (int)json_integer_value(val);
            if (id >= 0 && !seen[id]) seen[id] = 1, n_ids++;
        }
    }
    free(seen);
    printf("  %-8s %zu names, %d distinct ids (largest %d)\n", key, json_object_size(o), n_ids,
           max_id);
    json_decref(o);
}

// VQ-VAE, per second of 44.1 kHz audio: the decoder's widest layers run at the raw
// rate (level 0 width x multiplier channels); a residual block holds about three
// such buffers (input, hidden, output) at once, float32.
static void estimate_vqvae(const jb_vqvae_hparams_t *v, double weights) {
    double ch = 0;
    for (int l = 0; l < v->levels; l++)
        if ((double)v->width * v->multipliers[l] > ch) ch = (double)v->width * v->multipliers[l];
    double per_s = 3.0 * ch * v->sr * 4.0;
    printf("memory (batch 1):\n");
    printf("  weights                  %s (as stored)\n", human(weights));
    printf("  activations              %s per second of audio decoded or encoded\n"
           "                           (3 float32 buffers of %d channels at %d Hz)\n",
           human(per_s), (int)ch, v->sr);
    printf("  total for 60 s of audio  %s\n", human(weights + 60 * per_s));
}

// A prior at batch 1, float32 activations:
//  * KV cache: every layer keeps keys and values of its n_ctx positions,
//    2 x depth x n_ctx x n_state (n_state = m_attn x width); a layer reading the lyrics
//    encoder also keeps 2 x n_tokens x n_state; the lyrics encoder's own cache likewise;
//  * activations: one forward pass over a whole window (priming, or upsampling
//    conditioned on the level above): the residual stream, q/k/v, the MLP hidden state
//    and the logits, n_ctx x (2 width + 3 n_state + mlp width + bins), reused layer to layer;
//    the upsamplers' conditioner adds 3 buffers of n_ctx x cond_width.
static void estimate_prior(const jb_prior_hparams_t *h, const jb_expect_t *ex, double weights) {
    double st = (int)(h->m_attn * h->width), mlp = (int)(h->m_mlp * h->width);
    double n_ctx = h->n_ctx + (h->single_enc_dec ? h->n_tokens : 0);
    double bins = h->vqvae.l_bins + (h->single_enc_dec ? h->n_vocab : 0);
    double kv = 2.0 * h->depth * n_ctx * st * 4.0;
    if (h->use_tokens && !h->single_enc_dec && h->n_tokens) {
        int n_enc = 0;   // layers with attn_func 6
        for (int k = 0; ex && k < ex->n; k++)
            n_enc += strstr(ex->t[k].name, "prior.transformer.") == ex->t[k].name &&
                     strstr(ex->t[k].name, "c_enc_kv.w") != NULL;
        kv += 2.0 * n_enc * h->n_tokens * st * 4.0;
        double pst = (int)(h->prime_m_attn * h->prime_width);
        kv += 2.0 * h->prime_depth * h->n_tokens * pst * 4.0;
    }
    double acts = n_ctx * (2.0 * h->width + 3.0 * st + mlp + bins) * 4.0;
    if (h->level != h->vqvae.levels - 1) acts += 3.0 * n_ctx * h->cond_width * 4.0;
    printf("memory (batch 1, n_ctx %d):\n", (int)n_ctx);
    printf("  weights      %s (as stored)\n", human(weights));
    printf("  KV cache     %s (float32: 2 x %d layers x %d positions x %d)\n", human(kv),
           h->depth, (int)n_ctx, (int)st);
    printf("  activations  %s (one forward pass over the window)\n", human(acts));
    printf("  total        %s; each extra sample in a batch adds %s\n",
           human(weights + kv + acts), human(kv + acts));
}

// --preset NAME: the estimate for a released configuration, without a file. Weights
// as the release stores them: Conv1D weights F16 when fp16_params, all else F32.
// The VQ-VAE's codebook EMA state that jukebox-train keeps in the model file
// (bottleneck.level_blocks.L.k_sum / k_elem, train.md): read by a resumed training run,
// ignored by the encoder and decoder.
static int training_state(const char *name) {
    int L, end = 0;
    char what[8];
    return sscanf(name, "bottleneck.level_blocks.%d.%7[a-z_]%n", &L, what, &end) == 2 &&
           !name[end] && (!strcmp(what, "k_sum") || !strcmp(what, "k_elem"));
}

static int preset_estimate(const char *name) {
    jb_err_t err = {0};
    json_t *hp = jb_hparams_preset(name, &err);
    if (!hp) {
        jb_log(JB_ERROR, "%s", err.msg);
        return EX_USAGE;
    }
    int is_prior = strcmp(name, "vqvae") != 0, fp16 = 0;
    jb_expect_t *ex = is_prior ? jb_expect_prior(hp, &err) : jb_expect_vqvae(hp, &err);
    jb_prior_hparams_t ph;
    jb_vqvae_hparams_t vh;
    if (!ex || (is_prior ? jb_prior_hparams_parse(hp, &ph, &err)
                         : jb_vqvae_hparams_parse(hp, &vh, &err))) {
        jb_log(JB_ERROR, "%s", err.msg);
        json_decref(hp);
        jb_expect_destroy(&ex);
        return EX_SOFTWARE;
    }
    if (is_prior) fp16 = ph.fp16_params;
    double w = 0;
    for (int k = 0; k < ex->n; k++) {
        double c = 1;
        for (int d = 0; d < ex->t[k].ndim; d++) c *= (double)ex->t[k].shape[d];
        size_t nl = strlen(ex->t[k].name);
        int conv_w = nl > 2 && !strcmp(ex->t[k].name + nl - 2, ".w");
        w += c * (fp16 && conv_w ? 2 : 4);
    }
    printf("preset: %s\ntensors: %d, %lld parameters, %s of weights\n", name, ex->n,
           (long long)ex->n_params, human(w));
    if (is_prior) estimate_prior(&ph, ex, w);
    else estimate_vqvae(&vh, w);
    jb_expect_destroy(&ex);
    json_decref(hp);
    return 0;
}

int main(int argc, char **argv) {
    jb_log_set_stage("inspect");
    int tensors = 1;
    const char *path = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--preset") && i + 1 < argc) return preset_estimate(argv[++i]);
        if (!strcmp(argv[i], "--no-tensors")) tensors = 0;
        else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf("usage: jukebox-inspect [--no-tensors] MODEL.safetensors\n"
                   "       jukebox-inspect --preset NAME   (estimate for a released model)\n");
            return 0;
        } else if (argv[i][0] == '-' || path) {
            fprintf(stderr, "usage: jukebox-inspect [--no-tensors] MODEL.safetensors\n");
            return EX_USAGE;
        } else path = argv[i];
    }
    if (!path) {
        fprintf(stderr, "usage: jukebox-inspect [--no-tensors] MODEL.safetensors\n");
        return EX_USAGE;
    }
    jb_err_t err = {0};
    jb_st_t *st = jb_st_open(path, &err);
    if (!st) {
        jb_log(JB_ERROR, "%s", err.msg);
        return jb_err_exit_code(err.code);
    }
    const char *kind = jb_st_meta(st, "kind");
    printf("file: %s\nkind: %s\n", path, kind ? kind : "(none)");
    json_t *hp = jb_st_meta(st, "hparams") ? jb_hparams_from_st(st, &err) : NULL;
    int is_prior = kind && !strcmp(kind, "prior");
    jb_prior_hparams_t ph;
    jb_vqvae_hparams_t vh;
    int parsed = 0;
    if (hp && is_prior && jb_prior_hparams_parse(hp, &ph, &err) == 0) {
        parsed = 1;
        printf("hparams:\n");
        printf("  level %d, n_ctx %d, width %d, depth %d, heads %d, attn_order %d, blocks %d\n",
               ph.level, ph.n_ctx, ph.width, ph.depth, ph.heads, ph.attn_order, ph.blocks);
        printf("  m_attn %g, m_mlp %g, fp16_params %s\n", ph.m_attn, ph.m_mlp,
               ph.fp16_params ? "yes" : "no");
        if (ph.labels)
            printf("  labels %s: %d genres x %d artists, t_bins %d, max_bow_genre_size %d, "
                   "durations %g..%g s\n", ph.labels_v3 ? "v3" : "v2", ph.y_bins[0],
                   ph.y_bins[1], ph.t_bins, ph.max_bow_genre_size, ph.min_duration,
                   ph.max_duration);
        if (ph.use_tokens)
            printf("  lyrics: %d tokens of %d symbols, %s\n", ph.n_tokens, ph.n_vocab,
                   ph.single_enc_dec ? "in the same sequence (single_enc_dec)"
                                     : "separate encoder");
        if (ph.use_tokens && !ph.single_enc_dec)
            printf("  lyrics encoder: width %d, depth %d, heads %d, attn_order %d\n",
                   ph.prime_width, ph.prime_depth, ph.prime_heads, ph.prime_attn_order);
        if (ph.level != ph.vqvae.levels - 1)
            printf("  conditioner: width %d, depth %d\n", ph.cond_width, ph.cond_depth);
        printf("  vqvae: %d levels, l_bins %d, emb_width %d, hops %d/%d/%d, sr %d\n",
               ph.vqvae.levels, ph.vqvae.l_bins, ph.vqvae.emb_width, ph.vqvae.hop_lengths[0],
               ph.vqvae.levels > 1 ? ph.vqvae.hop_lengths[1] : 0,
               ph.vqvae.levels > 2 ? ph.vqvae.hop_lengths[2] : 0, ph.vqvae.sr);
        printf("vocabularies:\n");
        vocab_line(st, "artists");
        vocab_line(st, "genres");
    } else if (hp && !is_prior && jb_vqvae_hparams_parse(hp, &vh, &err) == 0) {
        parsed = 1;
        printf("hparams:\n  %d levels, downs_t", vh.levels);
        for (int l = 0; l < vh.levels; l++) printf(" %d", vh.downs_t[l]);
        printf(", strides_t");
        for (int l = 0; l < vh.levels; l++) printf(" %d", vh.strides_t[l]);
        printf(", hops");
        for (int l = 0; l < vh.levels; l++) printf(" %d", vh.hop_lengths[l]);
        printf("\n  l_bins %d, emb_width %d, width %d, depth %d, m_conv %g, sr %d\n", vh.l_bins,
               vh.emb_width, vh.width, vh.depth, vh.m_conv, vh.sr);
    } else {
        printf("hparams: %s\n", hp ? err.msg : "(none)");
    }
    int n = jb_st_count(st);
    double total = 0, by_dt_bytes[JB_DTYPE_COUNT] = {0};
    int by_dt_n[JB_DTYPE_COUNT] = {0};
    int64_t params = 0;
    if (tensors) printf("tensors:\n  %-72s %-5s %-20s %s\n", "name", "dtype", "shape", "bytes");
    for (int i = 0; i < n; i++) {
        const jb_st_entry_t *e = jb_st_entry(st, i);
        char sh[96];
        if (tensors)
            printf("  %-72s %-5s %-20s %zu\n", e->name, jb_dtype_name(e->dtype),
                   jb_shape_str(e->shape, e->ndim, sh, sizeof sh), e->nbytes);
        total += (double)e->nbytes;
        by_dt_bytes[e->dtype] += (double)e->nbytes;
        by_dt_n[e->dtype]++;
        int64_t c = 1;
        for (int d = 0; d < e->ndim; d++) c *= e->shape[d];
        params += c;
    }
    printf("totals: %d tensors, %lld parameters, %.0f bytes (%.3f GiB)\n", n, (long long)params,
           total, gib(total));
    for (int k = 0; k < JB_DTYPE_COUNT; k++)
        if (by_dt_n[k])
            printf("  %-5s %d tensors, %.0f bytes\n", jb_dtype_name((jb_dtype_t)k), by_dt_n[k],
                   by_dt_bytes[k]);
    int rc = 0;
    if (parsed) {
        jb_expect_t *ex = is_prior ? jb_expect_prior(hp, &err) : jb_expect_vqvae(hp, &err);
        int bad = 0;
        for (int k = 0; ex && k < ex->n; k++) {
            const jb_st_entry_t *e = jb_st_find(st, ex->t[k].name);
            if (!e) printf("  missing: %s\n", ex->t[k].name), bad++;
            else if (jb_expect_check(ex, k, e->dtype, e->ndim, e->shape, &err))
                printf("  wrong: %s\n", err.msg), bad++;
        }
        for (int i = 0; ex && i < n; i++) {
            const char *name = jb_st_entry(st, i)->name;
            if (jb_expect_find(ex, name) >= 0) continue;
            if (!is_prior && training_state(name))   // train.md: kept for --resume
                printf("  training state (not used to generate): %s\n", name);
            else
                printf("  extra: %s\n", name), bad++;
        }
        printf("check: %s\n", !ex ? err.msg : bad ? "tensors do NOT match the hyper-parameters"
                                                  : "every expected tensor present, right "
                                                    "shape and dtype");
        if (!ex || bad) rc = EX_DATAERR;
        if (is_prior) estimate_prior(&ph, ex, total);
        else estimate_vqvae(&vh, total);
        jb_expect_destroy(&ex);
    }
    json_decref(hp);
    jb_st_close(&st);
    return rc;
}
