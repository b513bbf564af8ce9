// jb_train_vqvae.c: VQ-VAE training step (reference: jukebox/vqvae/{vqvae,encdec,resnet,
// bottleneck}.py, jukebox/utils/audio_utils.py).
#include "jb_train_vqvae.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jb_conv.h"
#include "jb_conv_grad.h"
#include "jb_rng.h"
#include "jb_stft.h"
#include "jb_tensor.h"

#define MAX_METRICS 64
#define SC_EPS 2e-3   // spectral_convergence epsilon
#define VQ_ROWS 256   // bottleneck rows per distance block

// ---- loss hyper-parameters ----------------------------------------------------------

static int int_list_or(const json_t *hp, const char *key, const int *dflt, int n_dflt, int *out,
                       int *n, jb_err_t *err) {
    if (!json_object_get(hp, key)) {
        memcpy(out, dflt, sizeof(int) * (size_t)n_dflt);
        *n = n_dflt;
        return 0;
    }
    return jb_hp_int_list(hp, key, out, JB_TVQ_MAX_MULTISPEC, n, err);
}

int jb_vqvae_loss_hparams_parse(const json_t *hp, jb_vqvae_loss_hparams_t *o, jb_err_t *err) {
    memset(o, 0, sizeof *o);
    const json_t *lf = json_object_get(hp, "loss_fn");
    const char *fn = lf ? json_string_value(lf) : "l2";
    if (!fn) return jb_err_set(err, JB_EFORMAT, "hparams: loss_fn is not a string");
    if (!strcmp(fn, "l1")) o->loss_fn = JB_TVQ_LOSS_L1;
    else if (!strcmp(fn, "l2")) o->loss_fn = JB_TVQ_LOSS_L2;
    else if (!strcmp(fn, "linf")) o->loss_fn = JB_TVQ_LOSS_LINF;
    else if (!strcmp(fn, "lmix")) o->loss_fn = JB_TVQ_LOSS_LMIX;
    else return jb_err_set(err, JB_EFORMAT, "hparams: unknown loss_fn '%s'", fn);
    if (jb_hp_double_or(hp, "l_mu", 0.99, &o->l_mu, err) ||
        jb_hp_double_or(hp, "commit", 0.02, &o->commit, err) ||
        jb_hp_double_or(hp, "spectral", 0.0, &o->spectral, err) ||
        jb_hp_double_or(hp, "multispectral", 1.0, &o->multispectral, err) ||
        jb_hp_int_or(hp, "linf_k", 2048, &o->linf_k, err) ||
        jb_hp_double_or(hp, "lmix_l1", 0.0, &o->lmix_l1, err) ||
        jb_hp_double_or(hp, "lmix_l2", 0.0, &o->lmix_l2, err) ||
        jb_hp_double_or(hp, "lmix_linf", 0.0, &o->lmix_linf, err) ||
        jb_hp_double_or(hp, "revival_threshold", 1.0, &o->revival_threshold, err))
        return -1;
    o->use_nonrelative_specloss = 1;
    if (json_object_get(hp, "use_nonrelative_specloss") &&
        jb_hp_bool(hp, "use_nonrelative_specloss", &o->use_nonrelative_specloss, err))
        return -1;
    static const int d_fft[3] = {2048, 1024, 512}, d_hop[3] = {240, 120, 50}, d_win[3] = {1200, 600, 240};
    int n1, n2, n3;
    if (int_list_or(hp, "multispec_loss_n_fft", d_fft, 3, o->ms_n_fft, &n1, err) ||
        int_list_or(hp, "multispec_loss_hop_length", d_hop, 3, o->ms_hop, &n2, err) ||
        int_list_or(hp, "multispec_loss_window_size", d_win, 3, o->ms_win, &n3, err))
        return -1;
    if (n1 != n2 || n1 != n3 || n1 < 1)
        return jb_err_set(err, JB_EFORMAT, "hparams: multispec_loss_* lists differ in length");
    o->n_multispec = n1;
    const json_t *bw = json_object_get(hp, "bandwidth");
    if (!json_is_object(bw))
        return jb_err_set(err, JB_EFORMAT, "hparams: 'bandwidth' {l1, l2, spec} missing");
    if (jb_hp_double(bw, "l1", &o->bw_l1, err) || jb_hp_double(bw, "l2", &o->bw_l2, err) ||
        jb_hp_double(bw, "spec", &o->bw_spec, err))
        return jb_err_prefix(err, "bandwidth");
    if (o->bw_l1 <= 0 || o->bw_l2 <= 0 || o->bw_spec <= 0)
        return jb_err_set(err, JB_EFORMAT, "hparams: bandwidth values must be positive");
    if (o->linf_k < 1) return jb_err_set(err, JB_EFORMAT, "hparams: linf_k must be positive");
    return 0;
}

// ---- the network as a list of ops ---------------------------------------------------

enum { OP_CONV, OP_CONVT, OP_RES };

typedef struct {
    int type;
    int C, OC, k, s, p, d;    // OP_RES: C = width, OC = hidden width S, d = dilation
    int64_t T_in, T_out;
    int pw, pb, pw1, pb1;     // parameter indices (OP_RES: conv3 = pw/pb, conv1 = pw1/pb1)
    size_t x_off;             // saved input: (N, T_in, C) in the arena
    size_t a_off;             // OP_RES: saved conv3 pre-activation (N, T_in, OC)
} op_t;

typedef struct {
    op_t *ops;
    int n, cap;
    size_t out_off;           // output (N, T_out, C_out) in the arena
    int64_t T_out;
    int C_out;
} net_t;

typedef struct {
    char name[128];
    int ndim;
    int64_t shape[3];
    size_t off, n;
} pdesc_t;

struct jb_train_vqvae {
    jb_vqvae_hparams_t hp;
    jb_vqvae_loss_hparams_t lh;
    int N;
    int64_t T;
    uint64_t seed, step;
    // parameters
    pdesc_t *pd;
    int np, pcap;
    size_t nw;
    float *w, *g;
    // codebooks
    float *k[JB_MAX_LEVELS], *k_sum[JB_MAX_LEVELS], *k_elem[JB_MAX_LEVELS];
    float *k_old;                       // (l_bins, emb) scratch
    float *vq_scratch;                  // (l_bins) norms + (VQ_ROWS, l_bins) dots
    int32_t *zs[JB_MAX_LEVELS];         // (N, T_L)
    // networks
    net_t enc[JB_MAX_LEVELS], dec[JB_MAX_LEVELS];
    float *arena;
    size_t n_arena;
    float *gbuf[2];                     // ping-pong gradients, one item
    size_t n_gbuf;
    float *ws;                          // conv scratch
    size_t n_ws;
    float *de;                          // (N, T_L, emb) gradient into an encoder output
    float *dxh;                         // (N, T) gradient into a decoder output
    float *tmp;                         // (T) linf scratch
    // spectral losses
    jb_stft_t *spec_plan;               // (2048, 256, 1536)
    jb_stft_t *ms_plan[JB_TVQ_MAX_MULTISPEC];
    double *tgt_spec, *tgt_ms[JB_TVQ_MAX_MULTISPEC];   // (N, F, B) target magnitudes
    double *sbuf, *mbuf, *dbuf;         // (F, 2B) spectrum, (F, B) magnitude, (F, 2B) grad
    // metric names
    char mnames[MAX_METRICS][32];
};

// ---- building -------------------------------------------------------------------------

static int add_param(jb_train_vqvae_t *tv, const char *name, int ndim, int64_t a, int64_t b,
                     int64_t c) {
    if (tv->np == tv->pcap) {
        int cap = tv->pcap ? 2 * tv->pcap : 256;
        pdesc_t *pd = realloc(tv->pd, sizeof *pd * (size_t)cap);
        if (!pd) return -1;
        tv->pd = pd, tv->pcap = cap;
    }
    pdesc_t *p = &tv->pd[tv->np];
    snprintf(p->name, sizeof p->name, "%s", name);
    p->ndim = ndim;
    p->shape[0] = a, p->shape[1] = b, p->shape[2] = c;
    p->n = (size_t)(a * (ndim > 1 ? b : 1) * (ndim > 2 ? c : 1));
    p->off = tv->nw;
    tv->nw += (p->n + 15) & ~(size_t)15;
    return tv->np++;
}

static op_t *add_op(net_t *net) {
    if (net->n == net->cap) {
        int cap = net->cap ? 2 * net->cap : 64;
        op_t *o = realloc(net->ops, sizeof *o * (size_t)cap);
        if (!o) return NULL;
        net->ops = o, net->cap = cap;
    }
    op_t *o = &net->ops[net->n++];
    memset(o, 0, sizeof *o);
    return o;
}

// A Conv1d / ConvTranspose1d op with parameters "<prefix>.weight" / ".bias".
static int conv_op(jb_train_vqvae_t *tv, net_t *net, const char *prefix, int transposed, int C,
                   int OC, int k, int s, int p, int d, int64_t *T) {
    op_t *o = add_op(net);
    if (!o) return -1;
    char name[160];
    o->type = transposed ? OP_CONVT : OP_CONV;
    o->C = C, o->OC = OC, o->k = k, o->s = s, o->p = p, o->d = d;
    o->T_in = *T;
    o->T_out = transposed ? jb_convt1d_out_len(*T, k, s, p) : jb_conv1d_out_len(*T, k, s, p, d);
    snprintf(name, sizeof name, "%s.weight", prefix);
    o->pw = add_param(tv, name, 3, transposed ? C : OC, transposed ? OC : C, k);
    snprintf(name, sizeof name, "%s.bias", prefix);
    o->pb = add_param(tv, name, 1, OC, 0, 0);
    if (o->pw < 0 || o->pb < 0) return -1;
    *T = o->T_out;
    return 0;
}

// Resnet1D at prefix: blocks "<prefix>.model.<j>.model.{1,3}".
static int resnet_ops(jb_train_vqvae_t *tv, net_t *net, const char *prefix, int width, int depth,
                      int reverse, int64_t T) {
    const jb_vqvae_hparams_t *hp = &tv->hp;
    int S = (int)(hp->m_conv * width);
    for (int j = 0; j < depth; j++) {
        int fwd = reverse ? depth - 1 - j : j;
        int e = hp->dilation_cycle ? fwd % hp->dilation_cycle : fwd;
        int dil = 1;
        for (int q = 0; q < e; q++) dil *= hp->dilation_growth_rate;
        op_t *o = add_op(net);
        if (!o) return -1;
        o->type = OP_RES;
        o->C = width, o->OC = S, o->k = 3, o->s = 1, o->p = dil, o->d = dil;
        o->T_in = o->T_out = T;
        char name[200];
        snprintf(name, sizeof name, "%s.model.%d.model.1.weight", prefix, j);
        o->pw = add_param(tv, name, 3, S, width, 3);
        snprintf(name, sizeof name, "%s.model.%d.model.1.bias", prefix, j);
        o->pb = add_param(tv, name, 1, S, 0, 0);
        snprintf(name, sizeof name, "%s.model.%d.model.3.weight", prefix, j);
        o->pw1 = add_param(tv, name, 3, width, S, 1);
        snprintf(name, sizeof name, "%s.model.%d.model.3.bias", prefix, j);
        o->pb1 = add_param(tv, name, 1, width, 0, 0);
        if (o->pw < 0 || o->pb < 0 || o->pw1 < 0 || o->pb1 < 0) return -1;
    }
    return 0;
}

static int build_encoder(jb_train_vqvae_t *tv, int L) {
    const jb_vqvae_hparams_t *hp = &tv->hp;
    net_t *net = &tv->enc[L];
    int emb = hp->emb_width, width = hp->width * hp->multipliers[L];
    int depth = hp->depth * hp->multipliers[L];
    int64_t T = tv->T;
    int C = 1;
    char pre[160], name[200];
    for (int l = 0; l <= L; l++) {
        int down = hp->downs_t[l], s = hp->strides_t[l];
        if (down == 0) continue;
        snprintf(pre, sizeof pre, "encoders.%d.level_blocks.%d.model", L, l);
        for (int i = 0; i < down; i++) {
            snprintf(name, sizeof name, "%s.%d.0", pre, i);
            if (conv_op(tv, net, name, 0, i > 0 ? width : C, width, 2 * s, s, s / 2, 1, &T))
                return -1;
            snprintf(name, sizeof name, "%s.%d.1", pre, i);
            if (resnet_ops(tv, net, name, width, depth, 0, T)) return -1;
        }
        snprintf(name, sizeof name, "%s.%d", pre, down);
        if (conv_op(tv, net, name, 0, width, emb, 3, 1, 1, 1, &T)) return -1;
        C = emb;
    }
    net->T_out = T, net->C_out = emb;
    return 0;
}

static int build_decoder(jb_train_vqvae_t *tv, int L) {
    const jb_vqvae_hparams_t *hp = &tv->hp;
    net_t *net = &tv->dec[L];
    int emb = hp->emb_width, width = hp->width * hp->multipliers[L];
    int depth = hp->depth * hp->multipliers[L];
    int64_t T = tv->T / hp->hop_lengths[L];
    char pre[160], name[200];
    for (int l = L; l >= 0; l--) {
        int down = hp->downs_t[l], s = hp->strides_t[l];
        if (down == 0) continue;
        snprintf(pre, sizeof pre, "decoders.%d.level_blocks.%d.model", L, l);
        snprintf(name, sizeof name, "%s.0", pre);
        if (conv_op(tv, net, name, 0, emb, width, 3, 1, 1, 1, &T)) return -1;
        for (int i = 0; i < down; i++) {
            snprintf(name, sizeof name, "%s.%d.0", pre, 1 + i);
            if (resnet_ops(tv, net, name, width, depth, hp->reverse_decoder_dilation, T)) return -1;
            snprintf(name, sizeof name, "%s.%d.1", pre, 1 + i);
            if (conv_op(tv, net, name, 1, width, i == down - 1 ? emb : width, 2 * s, s, s / 2, 1,
                        &T))
                return -1;
        }
    }
    snprintf(name, sizeof name, "decoders.%d.out", L);
    if (conv_op(tv, net, name, 0, emb, 1, 3, 1, 1, 1, &T)) return -1;
    net->T_out = T, net->C_out = 1;
    return 0;
}

static size_t max_sz(size_t a, size_t b) { return a > b ? a : b; }

// Arena offsets for every saved tensor and the sizes of the per-item scratch.
static void plan_net(jb_train_vqvae_t *tv, net_t *net) {
    for (int i = 0; i < net->n; i++) {
        op_t *o = &net->ops[i];
        o->x_off = tv->n_arena;
        tv->n_arena += (size_t)(tv->N * o->T_in * o->C);
        if (o->type == OP_RES) {
            o->a_off = tv->n_arena;
            tv->n_arena += (size_t)(tv->N * o->T_in * o->OC);
            tv->n_ws = max_sz(tv->n_ws, jb_cg_res_ws_floats(o->T_in, o->C, o->OC));
        } else if (o->type == OP_CONV) {
            tv->n_ws = max_sz(tv->n_ws, jb_cg_conv_ws_floats(o->T_out, o->C, o->k));
        } else {
            tv->n_ws = max_sz(tv->n_ws, jb_cg_convt_ws_floats(o->T_in, o->OC, o->k));
        }
        tv->n_gbuf = max_sz(tv->n_gbuf, (size_t)(o->T_in * o->C));
        tv->n_gbuf = max_sz(tv->n_gbuf, (size_t)(o->T_out * (o->type == OP_RES ? o->C : o->OC)));
    }
    net->out_off = tv->n_arena;
    tv->n_arena += (size_t)(tv->N * net->T_out * net->C_out);
}

void jb_train_vqvae_destroy(jb_train_vqvae_t **tv_p) {
    if (!tv_p || !*tv_p) return;
    jb_train_vqvae_t *tv = *tv_p;
    for (int L = 0; L < JB_MAX_LEVELS; L++) {
        free(tv->enc[L].ops), free(tv->dec[L].ops);
        free(tv->k[L]), free(tv->k_sum[L]), free(tv->k_elem[L]), free(tv->zs[L]);
    }
    for (int i = 0; i < JB_TVQ_MAX_MULTISPEC; i++) {
        jb_stft_destroy(&tv->ms_plan[i]);
        free(tv->tgt_ms[i]);
    }
    jb_stft_destroy(&tv->spec_plan);
    free(tv->tgt_spec), free(tv->sbuf), free(tv->mbuf), free(tv->dbuf);
    free(tv->pd), free(tv->w), free(tv->g), free(tv->k_old), free(tv->vq_scratch), free(tv->arena);
    free(tv->gbuf[0]), free(tv->gbuf[1]), free(tv->ws), free(tv->de), free(tv->dxh), free(tv->tmp);
    free(tv);
    *tv_p = NULL;
}

jb_train_vqvae_t *jb_train_vqvae_new(const jb_vqvae_hparams_t *hp,
                                     const jb_vqvae_loss_hparams_t *lh, int N, int64_t T,
                                     uint64_t seed, jb_err_t *err) {
    int top = hp->hop_lengths[hp->levels - 1];
    if (N < 1 || T < top || T % top) {
        jb_err_set(err, JB_EINVAL, "train_vqvae: batch (%d, %lld): T must be a positive multiple of %d",
                   N, (long long)T, top);
        return NULL;
    }
    jb_train_vqvae_t *tv = calloc(1, sizeof *tv);
    if (!tv) goto oom;
    tv->hp = *hp, tv->lh = *lh, tv->N = N, tv->T = T, tv->seed = seed;
    for (int L = 0; L < hp->levels; L++)
        if (build_encoder(tv, L)) goto oom;
    for (int L = 0; L < hp->levels; L++)
        if (build_decoder(tv, L)) goto oom;
    for (int L = 0; L < hp->levels; L++) {
        if (tv->dec[L].T_out != T || tv->enc[L].T_out != T / hp->hop_lengths[L]) {
            jb_err_set(err, JB_EINVAL, "train_vqvae: level %d: shapes do not round-trip T = %lld",
                       L, (long long)T);
            jb_train_vqvae_destroy(&tv);
            return NULL;
        }
        plan_net(tv, &tv->enc[L]);
        plan_net(tv, &tv->dec[L]);
    }
    int K = hp->l_bins, E = hp->emb_width;
    tv->w = calloc(tv->nw, sizeof(float));
    tv->g = calloc(tv->nw, sizeof(float));
    tv->arena = calloc(tv->n_arena, sizeof(float));
    tv->gbuf[0] = malloc(sizeof(float) * tv->n_gbuf);
    tv->gbuf[1] = malloc(sizeof(float) * tv->n_gbuf);
    tv->ws = malloc(sizeof(float) * max_sz(tv->n_ws, 1));
    tv->de = malloc(sizeof(float) * (size_t)(N * (T / hp->hop_lengths[0]) * E));
    tv->dxh = malloc(sizeof(float) * (size_t)(N * T));
    tv->tmp = malloc(sizeof(float) * (size_t)T);
    tv->k_old = malloc(sizeof(float) * (size_t)K * E);
    tv->vq_scratch = malloc(sizeof(float) * (size_t)K * (VQ_ROWS + 1));
    if (!tv->w || !tv->g || !tv->arena || !tv->gbuf[0] || !tv->gbuf[1] || !tv->ws || !tv->de ||
        !tv->dxh || !tv->tmp || !tv->k_old || !tv->vq_scratch)
        goto oom;
    for (int L = 0; L < hp->levels; L++) {
        tv->k[L] = calloc((size_t)K * E, sizeof(float));
        tv->k_sum[L] = calloc((size_t)K * E, sizeof(float));
        tv->k_elem[L] = calloc((size_t)K, sizeof(float));
        tv->zs[L] = calloc((size_t)(N * (T / hp->hop_lengths[L])), sizeof(int32_t));
        if (!tv->k[L] || !tv->k_sum[L] || !tv->k_elem[L] || !tv->zs[L]) goto oom;
    }
    // STFT plans: the spectral loss's fixed (2048, 256, 6*256) and the multispectral ones
    size_t fb_max = 0;
    tv->spec_plan = jb_stft_new(2048, 256, 1536, T, err);
    if (!tv->spec_plan) goto fail;
    for (int i = 0; i < lh->n_multispec; i++) {
        tv->ms_plan[i] = jb_stft_new(lh->ms_n_fft[i], lh->ms_hop[i], lh->ms_win[i], T, err);
        if (!tv->ms_plan[i]) goto fail;
    }
    for (int i = -1; i < lh->n_multispec; i++) {
        jb_stft_t *p = i < 0 ? tv->spec_plan : tv->ms_plan[i];
        size_t fb = (size_t)jb_stft_frames(p) * jb_stft_bins(p);
        fb_max = max_sz(fb_max, fb);
        double *t = malloc(sizeof(double) * fb * N);
        if (!t) goto oom;
        if (i < 0) tv->tgt_spec = t;
        else tv->tgt_ms[i] = t;
    }
    tv->sbuf = malloc(sizeof(double) * 2 * fb_max);
    tv->dbuf = malloc(sizeof(double) * 2 * fb_max);
    tv->mbuf = malloc(sizeof(double) * fb_max);
    if (!tv->sbuf || !tv->dbuf || !tv->mbuf) goto oom;
    return tv;
oom:
    jb_err_set(err, JB_ENOMEM, "train_vqvae: out of memory");
fail:
    jb_err_prefix(err, "train_vqvae");
    jb_train_vqvae_destroy(&tv);
    return NULL;
}

// ---- parameters and codebooks ------------------------------------------------------------

int jb_train_vqvae_n_params(const jb_train_vqvae_t *tv) { return tv->np; }

jb_tvq_param_t jb_train_vqvae_param(const jb_train_vqvae_t *tv, int i) {
    const pdesc_t *p = &tv->pd[i];
    jb_tvq_param_t r = {.name = p->name, .ndim = p->ndim, .n = (int64_t)p->n,
                        .w = tv->w + p->off, .g = tv->g + p->off};
    memcpy(r.shape, p->shape, sizeof r.shape);
    return r;
}

int jb_train_vqvae_find(const jb_train_vqvae_t *tv, const char *name) {
    for (int i = 0; i < tv->np; i++)
        if (!strcmp(tv->pd[i].name, name)) return i;
    return -1;
}

void jb_train_vqvae_codebook(const jb_train_vqvae_t *tv, int L, const float **k,
                             const float **k_sum, const float **k_elem) {
    if (k) *k = tv->k[L];
    if (k_sum) *k_sum = tv->k_sum[L];
    if (k_elem) *k_elem = tv->k_elem[L];
}

int jb_train_vqvae_set_ema(jb_train_vqvae_t *tv, int L, const float *k, const float *k_sum,
                           const float *k_elem, jb_err_t *err) {
    if (L < 0 || L >= tv->hp.levels)
        return jb_err_set(err, JB_EINVAL, "train_vqvae: level %d out of range", L);
    size_t n = (size_t)tv->hp.l_bins * tv->hp.emb_width;
    if (k) memcpy(tv->k[L], k, sizeof(float) * n);
    if (k_sum) memcpy(tv->k_sum[L], k_sum, sizeof(float) * n);
    if (k_elem) memcpy(tv->k_elem[L], k_elem, sizeof(float) * (size_t)tv->hp.l_bins);
    return 0;
}

int jb_train_vqvae_load(jb_train_vqvae_t *tv, const jb_st_t *st, jb_err_t *err) {
    for (int i = 0; i < tv->np; i++) {
        pdesc_t *p = &tv->pd[i];
        float *v = jb_st_get_f32(st, p->name, p->ndim, p->shape, err);
        if (!v) return -1;
        memcpy(tv->w + p->off, v, sizeof(float) * p->n);
        jb_free(v);
    }
    int K = tv->hp.l_bins, E = tv->hp.emb_width;
    for (int L = 0; L < tv->hp.levels; L++) {
        char name[64];
        snprintf(name, sizeof name, "bottleneck.level_blocks.%d.k", L);
        int64_t shape[2] = {K, E};
        float *v = jb_st_get_f32(st, name, 2, shape, err);
        if (!v) return -1;
        memcpy(tv->k[L], v, sizeof(float) * (size_t)K * E);
        jb_free(v);
        snprintf(name, sizeof name, "bottleneck.level_blocks.%d.k_sum", L);
        char name2[64];
        snprintf(name2, sizeof name2, "bottleneck.level_blocks.%d.k_elem", L);
        if (jb_st_find(st, name) && jb_st_find(st, name2)) {
            int64_t s1[1] = {K};
            float *ks = jb_st_get_f32(st, name, 2, shape, err);
            float *ke = ks ? jb_st_get_f32(st, name2, 1, s1, err) : NULL;
            if (ke) {
                memcpy(tv->k_sum[L], ks, sizeof(float) * (size_t)K * E);
                memcpy(tv->k_elem[L], ke, sizeof(float) * (size_t)K);
            }
            jb_free(ks), jb_free(ke);
            if (!ke) return -1;
            continue;
        }
        // restore_k(num_tokens = T / hop_L): uniform expected usage
        float usage = (float)((double)(tv->T / tv->hp.hop_lengths[L]) / K);
        for (int j = 0; j < K; j++) {
            tv->k_elem[L][j] = usage;
            for (int c = 0; c < E; c++)
                tv->k_sum[L][(size_t)j * E + c] = tv->k[L][(size_t)j * E + c] * usage;
        }
    }
    return 0;
}

// ---- network passes ------------------------------------------------------------------------

// Forward of item n; its input must already be in ops[0]'s saved input.
static void net_forward(jb_train_vqvae_t *tv, net_t *net, int n) {
    float *A = tv->arena;
    for (int i = 0; i < net->n; i++) {
        op_t *o = &net->ops[i];
        const float *x = A + o->x_off + (size_t)n * o->T_in * o->C;
        float *y;
        if (i + 1 < net->n) {
            op_t *q = &net->ops[i + 1];
            y = A + q->x_off + (size_t)n * q->T_in * q->C;
        } else {
            y = A + net->out_off + (size_t)n * net->T_out * net->C_out;
        }
        const float *w = tv->w + tv->pd[o->pw].off, *b = tv->w + tv->pd[o->pb].off;
        if (o->type == OP_CONV) {
            jb_cg_conv_forward(y, x, o->T_in, o->C, w, b, o->OC, o->k, o->s, o->p, o->d, tv->ws);
        } else if (o->type == OP_CONVT) {
            jb_cg_convt_forward(y, x, o->T_in, o->C, w, b, o->OC, o->k, o->s, o->p, tv->ws);
        } else {
            float *a = A + o->a_off + (size_t)n * o->T_in * o->OC;
            jb_cg_res_forward(y, a, x, o->T_in, o->C, o->OC, w, b, tv->w + tv->pd[o->pw1].off,
                              tv->w + tv->pd[o->pb1].off, o->d, tv->ws);
        }
    }
}

// Backward of item n: dout: (T_out, C_out) of the net's output; dx: (T_in, C) of its input
// written, or NULL. Parameter gradients accumulate.
static void net_backward(jb_train_vqvae_t *tv, net_t *net, int n, const float *dout, float *dx) {
    float *A = tv->arena;
    const float *dy = dout;
    int cur = 0;
    for (int i = net->n - 1; i >= 0; i--) {
        op_t *o = &net->ops[i];
        const float *x = A + o->x_off + (size_t)n * o->T_in * o->C;
        float *d = i == 0 ? dx : tv->gbuf[cur];
        const float *w = tv->w + tv->pd[o->pw].off;
        float *gw = tv->g + tv->pd[o->pw].off, *gb = tv->g + tv->pd[o->pb].off;
        if (o->type == OP_CONV) {
            jb_cg_conv_backward(d, gw, gb, dy, x, o->T_in, o->C, w, o->OC, o->k, o->s, o->p, o->d,
                                tv->ws);
        } else if (o->type == OP_CONVT) {
            jb_cg_convt_backward(d, gw, gb, dy, x, o->T_in, o->C, w, o->OC, o->k, o->s, o->p,
                                 tv->ws);
        } else {
            const float *a = A + o->a_off + (size_t)n * o->T_in * o->OC;
            float *dres = d ? d : tv->gbuf[cur];
            jb_cg_res_backward(dres, gw, gb, tv->g + tv->pd[o->pw1].off,
                               tv->g + tv->pd[o->pb1].off, dy, x, a, o->T_in, o->C, o->OC, w,
                               tv->w + tv->pd[o->pw1].off, o->d, tv->ws);
        }
        dy = d;
        cur ^= 1;
    }
}

// ---- bottleneck ----------------------------------------------------------------------------

// Random rows of a batch as the reference's _tile + randperm: the R rows are repeated
// reps = ceil(K / R) times when R < K (M = R reps rows), permuted, and the first K taken.
// Returns perm: (M) whose first K entries are chosen by a partial Fisher-Yates shuffle with
// counter-based draws (draw 0 at position q); NULL when out of memory.
static int64_t *random_rows(jb_rng_stream_t rs, int64_t R, int K) {
    int64_t reps = R < K ? (K + R - 1) / R : 1, M = R * reps;
    int64_t *perm = malloc(sizeof(int64_t) * (size_t)M);
    if (!perm) return NULL;
    for (int64_t i = 0; i < M; i++) perm[i] = i;
    for (int64_t q = 0; q < K && q < M - 1; q++) {
        int64_t pick = q + (int64_t)(jb_rng_uniform_f64(rs, (uint64_t)q, 0) * (double)(M - q));
        int64_t t = perm[q];
        perm[q] = perm[pick], perm[pick] = t;
    }
    return perm;
}

// dst: (E) = tiled row perm[j] of e: (R, E), plus Gaussian noise of std 0.01/sqrt(E) when
// the rows were tiled (Box-Muller from draws 1, 2 at the element's position).
static void random_row(float *dst, jb_rng_stream_t rs, const int64_t *perm, int j,
                       const float *e, int64_t R, int E, int K) {
    int64_t row = perm[j];
    const float *src = e + (row % R) * E;
    double std = R < K ? 0.01 / sqrt((double)E) : 0.0;
    for (int c = 0; c < E; c++) {
        double v = src[c];
        if (std > 0) {
            double u1 = jb_rng_uniform_f64(rs, (uint64_t)(row * E + c), 1);
            double u2 = jb_rng_uniform_f64(rs, (uint64_t)(row * E + c), 2);
            v += std * sqrt(-2.0 * log(1.0 - u1)) * cos(2.0 * M_PI * u2);
        }
        dst[c] = (float)v;
    }
}

// Level L: codes for e: (R, E) rows; xd: (R, E) = k[codes] (codebook before the update);
// commit loss; EMA update; metrics. Adds to the per-level means in res.
static void bottleneck(jb_train_vqvae_t *tv, int L, const float *e, int64_t R, float *xd,
                       jb_tvq_result_t *res) {
    int K = tv->hp.l_bins, E = tv->hp.emb_width;
    float *k = tv->k[L];
    int32_t *z = tv->zs[L];
    double fit = 0.0;
    // codes: argmin_j ‖e‖² − 2 e·k_j + ‖k_j‖² in float32 as the reference (e·k by sgemm in
    // blocks of VQ_ROWS rows; first index on ties)
    float *kk = tv->vq_scratch, *dots = kk + K;
    for (int j = 0; j < K; j++) {
        float acc = 0.0f;
        for (int c = 0; c < E; c++) acc += k[(size_t)j * E + c] * k[(size_t)j * E + c];
        kk[j] = acc;
    }
    for (int64_t r0 = 0; r0 < R; r0 += VQ_ROWS) {
        int nr = (int)(R - r0 < VQ_ROWS ? R - r0 : VQ_ROWS);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nr, K, E, 1.0f, e + r0 * E, E, k, E,
                    0.0f, dots, K);
        for (int q = 0; q < nr; q++) {
            int64_t r = r0 + q;
            const float *x = e + r * E, *dr = dots + (size_t)q * K;
            float xx = 0.0f;
            for (int c = 0; c < E; c++) xx += x[c] * x[c];
            float best = 0.0f;
            int arg = 0;
            for (int j = 0; j < K; j++) {
                float v = (xx - 2.0f * dr[j]) + kk[j];
                if (j == 0 || v < best) best = v, arg = j;
            }
            z[r] = arg;
            fit += best;
            memcpy(xd + r * E, k + (size_t)arg * E, sizeof(float) * E);
        }
    }
    // prenorm: ‖e − mean(e)‖ / sqrt(numel)
    double mean = 0.0, ss = 0.0, cm = 0.0;
    int64_t numel = R * E;
    for (int64_t i = 0; i < numel; i++) mean += e[i];
    mean /= (double)numel;
    for (int64_t i = 0; i < numel; i++) {
        double v = e[i] - mean, c = (double)xd[i] - e[i];
        ss += v * v, cm += c * c;
    }
    res->commit[L] = cm / (double)numel;
    res->fit += fit / (double)R;
    res->pn += sqrt(ss) / sqrt((double)numel);

    // EMA update (no gradient)
    double mu = tv->lh.l_mu, thr = tv->lh.revival_threshold;
    double *s = calloc((size_t)K * E + K, sizeof(double));
    if (!s) return;   // cannot happen in practice; sizes are tiny (l_bins * emb)
    double *cnt = s + (size_t)K * E;
    for (int64_t r = 0; r < R; r++) {
        cnt[z[r]] += 1.0;
        for (int c = 0; c < E; c++) s[(size_t)z[r] * E + c] += e[r * E + c];
    }
    memcpy(tv->k_old, k, sizeof(float) * (size_t)K * E);
    double total = 0.0, ent = 0.0;
    int used_curr = 0, usage = 0, revived = 0;
    for (int j = 0; j < K; j++) total += cnt[j];
    for (int j = 0; j < K; j++) {
        double pj = cnt[j] / total;
        ent -= pj * log(pj + 1e-8);
        if (cnt[j] >= thr) used_curr++;
        for (int c = 0; c < E; c++) {
            size_t i = (size_t)j * E + c;
            tv->k_sum[L][i] = (float)(mu * tv->k_sum[L][i] + (1.0 - mu) * s[i]);
        }
        tv->k_elem[L][j] = (float)(mu * tv->k_elem[L][j] + (1.0 - mu) * cnt[j]);
    }
    // revival: code j takes row j of the reference's tiled, permuted batch (drawn lazily: only
    // a dead code needs one)
    int64_t *perm = NULL;
    jb_rng_stream_t rs = jb_rng_stream(tv->seed, jb_rng_splitmix64(tv->step), 0, (uint32_t)L);
    for (int j = 0; j < K; j++) {
        float *kj = k + (size_t)j * E;
        if (tv->k_elem[L][j] >= thr) {
            usage++;
            for (int c = 0; c < E; c++) kj[c] = tv->k_sum[L][(size_t)j * E + c] / tv->k_elem[L][j];
            continue;
        }
        if (!perm && !(perm = random_rows(rs, R, K))) break;
        random_row(kj, rs, perm, j, e, R, E, K);
        revived++;
    }
    free(perm);
    free(s);
    double dk = 0.0;
    for (size_t i = 0; i < (size_t)K * E; i++) {
        double v = (double)k[i] - tv->k_old[i];
        dk += v * v;
    }
    res->entropy += ent;
    res->used_curr += used_curr;
    res->usage += usage;
    res->dk += sqrt(dk) / sqrt((double)K * E);
    res->revived[L] = revived;
}

// ---- losses ---------------------------------------------------------------------------------

static int cmp_desc(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

// One of l1 / l2 / linf of xh against x (both (N, T)); adds weight * its gradient to dxh
// when dxh is not NULL.
static double simple_loss(jb_train_vqvae_t *tv, int kind, const float *xh, const float *x,
                          float *dxh, double weight) {
    int64_t n = (int64_t)tv->N * tv->T;
    const jb_vqvae_loss_hparams_t *lh = &tv->lh;
    double acc = 0.0;
    if (kind == JB_TVQ_LOSS_L1) {
        for (int64_t i = 0; i < n; i++) {
            double d = (double)xh[i] - x[i];
            acc += fabs(d);
            if (dxh) dxh[i] += (float)(weight * (d > 0 ? 1.0 : d < 0 ? -1.0 : 0.0) / (n * lh->bw_l1));
        }
        return acc / n / lh->bw_l1;
    }
    if (kind == JB_TVQ_LOSS_L2) {
        for (int64_t i = 0; i < n; i++) {
            double d = (double)xh[i] - x[i];
            acc += d * d;
            if (dxh) dxh[i] += (float)(weight * 2.0 * d / (n * lh->bw_l2));
        }
        return acc / n / lh->bw_l2;
    }
    // linf: mean over items of the top linf_k squared residuals, over the l2 bandwidth
    int64_t T = tv->T, kk = lh->linf_k < T ? lh->linf_k : T;
    for (int it = 0; it < tv->N; it++) {
        const float *a = xh + it * T, *b = x + it * T;
        for (int64_t t = 0; t < T; t++) {
            float d = a[t] - b[t];
            tv->tmp[t] = d * d;
        }
        qsort(tv->tmp, (size_t)T, sizeof(float), cmp_desc);
        float thr = tv->tmp[kk - 1];
        int64_t above = 0;
        for (int64_t q = 0; q < kk; q++) {
            acc += tv->tmp[q];
            if (tv->tmp[q] > thr) above++;
        }
        if (!dxh) continue;
        int64_t ties = kk - above;   // elements equal to the threshold that are in the top k
        for (int64_t t = 0; t < T; t++) {
            float d = a[t] - b[t], v = d * d;
            int in = v > thr || (v == thr && ties-- > 0);
            if (in) dxh[it * T + t] += (float)(weight * 2.0 * d / ((double)tv->N * kk * lh->bw_l2));
        }
    }
    return acc / ((double)tv->N * kk) / lh->bw_l2;
}

static double recons_loss(jb_train_vqvae_t *tv, int kind, const float *xh, const float *x,
                          float *dxh) {
    const jb_vqvae_loss_hparams_t *lh = &tv->lh;
    if (kind != JB_TVQ_LOSS_LMIX) return simple_loss(tv, kind, xh, x, dxh, 1.0);
    double v = 0.0;
    if (lh->lmix_l1) v += lh->lmix_l1 * simple_loss(tv, JB_TVQ_LOSS_L1, xh, x, dxh, lh->lmix_l1);
    if (lh->lmix_l2) v += lh->lmix_l2 * simple_loss(tv, JB_TVQ_LOSS_L2, xh, x, dxh, lh->lmix_l2);
    if (lh->lmix_linf)
        v += lh->lmix_linf * simple_loss(tv, JB_TVQ_LOSS_LINF, xh, x, dxh, lh->lmix_linf);
    return v;
}

// ‖S(x) − S(xh)‖ of one item given the target magnitudes tgt: (F, B); when dxh is not
// NULL adds scale * its gradient w.r.t. xh: (T). gt_norm (if not NULL) = ‖S(x)‖.
static double spec_dist(jb_train_vqvae_t *tv, jb_stft_t *p, const double *tgt, const float *xh,
                        float *dxh, double scale, double *gt_norm) {
    int F = jb_stft_frames(p), B = jb_stft_bins(p);
    size_t fb = (size_t)F * B;
    jb_stft_forward(p, tv->sbuf, xh);
    jb_stft_magnitude(p, tv->mbuf, tv->sbuf);
    double acc = 0.0, gt = 0.0;
    for (size_t i = 0; i < fb; i++) {
        double d = tgt[i] - tv->mbuf[i];
        acc += d * d, gt += tgt[i] * tgt[i];
    }
    double dist = sqrt(acc);
    if (gt_norm) *gt_norm = sqrt(gt);
    if (dxh && dist > 0.0 && scale != 0.0) {
        for (int f = 0; f < F; f++)
            for (int k = 0; k < B; k++) {
                size_t i = (size_t)f * B + k, ri = (size_t)f * 2 * B + k, ii = ri + B;
                double m = tv->mbuf[i];
                // d dist / d mag = −(tgt − mag) / dist; d mag / d (re, im) = (re, im) / mag
                double g = m > 0.0 ? -scale * (tgt[i] - m) / dist / m : 0.0;
                tv->dbuf[ri] = g * tv->sbuf[ri];
                tv->dbuf[ii] = g * tv->sbuf[ii];
            }
        jb_stft_backward(p, dxh, tv->dbuf);
    }
    return dist;
}

// Target magnitudes of x: (N, T) for every plan.
static void target_spectra(jb_train_vqvae_t *tv, const float *x) {
    for (int i = -1; i < tv->lh.n_multispec; i++) {
        jb_stft_t *p = i < 0 ? tv->spec_plan : tv->ms_plan[i];
        double *t = i < 0 ? tv->tgt_spec : tv->tgt_ms[i];
        size_t fb = (size_t)jb_stft_frames(p) * jb_stft_bins(p);
        for (int n = 0; n < tv->N; n++) {
            jb_stft_forward(p, tv->sbuf, x + (int64_t)n * tv->T);
            jb_stft_magnitude(p, t + n * fb, tv->sbuf);
        }
    }
}

// spectral_convergence of xh (mean over items); adds weight * gradient when dxh.
static double spec_conv(jb_train_vqvae_t *tv, const float *xh, float *dxh, double weight) {
    jb_stft_t *p = tv->spec_plan;
    size_t fb = (size_t)jb_stft_frames(p) * jb_stft_bins(p);
    double acc = 0.0;
    for (int n = 0; n < tv->N; n++) {
        double gt;
        // the gradient scale needs ‖S(x)‖ first: it does not depend on xh
        spec_dist(tv, p, tv->tgt_spec + n * fb, xh + (int64_t)n * tv->T, NULL, 0.0, &gt);
        if (!(gt > SC_EPS)) continue;
        double sc = weight / (tv->N * gt);
        double d = spec_dist(tv, p, tv->tgt_spec + n * fb, xh + (int64_t)n * tv->T,
                             dxh ? dxh + (int64_t)n * tv->T : NULL, sc, NULL);
        acc += d / gt;
    }
    return acc / tv->N;
}

// Spectral and multispectral losses of level output xh: (N, T); gradients into dxh.
static void spectral_losses(jb_train_vqvae_t *tv, const float *xh, float *dxh, double *spec,
                            double *mspec) {
    const jb_vqvae_loss_hparams_t *lh = &tv->lh;
    int N = tv->N;
    if (lh->use_nonrelative_specloss) {
        jb_stft_t *p = tv->spec_plan;
        size_t fb = (size_t)jb_stft_frames(p) * jb_stft_bins(p);
        double acc = 0.0, sc = lh->spectral / (N * lh->bw_spec);
        for (int n = 0; n < N; n++)
            acc += spec_dist(tv, p, tv->tgt_spec + n * fb, xh + (int64_t)n * tv->T,
                             dxh + (int64_t)n * tv->T, sc, NULL);
        *spec = acc / N / lh->bw_spec;
    } else {
        *spec = spec_conv(tv, xh, dxh, lh->spectral);
    }
    double acc = 0.0;
    int K = lh->n_multispec;
    double sc = lh->multispectral / ((double)N * K * lh->bw_spec);
    for (int i = 0; i < K; i++) {
        jb_stft_t *p = tv->ms_plan[i];
        size_t fb = (size_t)jb_stft_frames(p) * jb_stft_bins(p);
        for (int n = 0; n < N; n++)
            acc += spec_dist(tv, p, tv->tgt_ms[i] + n * fb, xh + (int64_t)n * tv->T,
                             dxh + (int64_t)n * tv->T, sc, NULL);
    }
    *mspec = acc / K / N / lh->bw_spec;
}

// ---- the step ---------------------------------------------------------------------------------

int jb_train_vqvae_step(jb_train_vqvae_t *tv, const float *x, jb_tvq_result_t *res,
                        jb_err_t *err) {
    const jb_vqvae_hparams_t *hp = &tv->hp;
    const jb_vqvae_loss_hparams_t *lh = &tv->lh;
    int N = tv->N, E = hp->emb_width, levels = hp->levels;
    int64_t T = tv->T;
    memset(res, 0, sizeof *res);
    memset(tv->g, 0, sizeof(float) * tv->nw);
    for (int64_t i = 0; i < N * T; i++)
        if (!isfinite(x[i]))
            return jb_err_set(err, JB_EINVAL, "train_vqvae: input sample %lld is not finite",
                              (long long)i);

    // encoders and bottleneck
    for (int L = 0; L < levels; L++) {
        net_t *en = &tv->enc[L], *dn = &tv->dec[L];
        memcpy(tv->arena + en->ops[0].x_off, x, sizeof(float) * (size_t)(N * T));
        for (int n = 0; n < N; n++) net_forward(tv, en, n);
        bottleneck(tv, L, tv->arena + en->out_off, N * en->T_out, tv->arena + dn->ops[0].x_off,
                   res);
    }
    res->fit /= levels, res->pn /= levels, res->entropy /= levels;
    res->used_curr /= levels, res->usage /= levels, res->dk /= levels;

    // decoders, losses, backward
    target_spectra(tv, x);
    for (int L = levels - 1; L >= 0; L--) {
        net_t *en = &tv->enc[L], *dn = &tv->dec[L];
        for (int n = 0; n < N; n++) net_forward(tv, dn, n);
        const float *xh = tv->arena + dn->out_off;
        memset(tv->dxh, 0, sizeof(float) * (size_t)(N * T));
        res->recons[L] = recons_loss(tv, lh->loss_fn, xh, x, tv->dxh);
        spectral_losses(tv, xh, tv->dxh, &res->spectral[L], &res->multispectral[L]);
        res->recons_loss += res->recons[L];
        res->spectral_loss += res->spectral[L];
        res->multispectral_loss += res->multispectral[L];
        res->commit_loss += res->commit[L];

        // decoder backward into its (straight-through) input, then the commit loss term
        int64_t TL = en->T_out;
        const float *e = tv->arena + en->out_off, *xd = tv->arena + dn->ops[0].x_off;
        for (int n = 0; n < N; n++)
            net_backward(tv, dn, n, tv->dxh + (int64_t)n * T, tv->de + n * TL * E);
        double cg = lh->commit * 2.0 / ((double)N * TL * E);
        for (int64_t i = 0; i < N * TL * E; i++) tv->de[i] += (float)(cg * ((double)e[i] - xd[i]));
        for (int n = 0; n < N; n++) net_backward(tv, en, n, tv->de + n * TL * E, NULL);
    }
    res->loss = res->recons_loss + lh->spectral * res->spectral_loss +
                lh->multispectral * res->multispectral_loss + lh->commit * res->commit_loss;

    // metrics on the level-0 output (no gradient)
    const float *x0 = tv->arena + tv->dec[0].out_off;
    res->spectral_convergence = spec_conv(tv, x0, NULL, 0.0);
    res->l2_loss = simple_loss(tv, JB_TVQ_LOSS_L2, x0, x, NULL, 0.0);
    res->l1_loss = simple_loss(tv, JB_TVQ_LOSS_L1, x0, x, NULL, 0.0);
    res->linf_loss = simple_loss(tv, JB_TVQ_LOSS_LINF, x0, x, NULL, 0.0);
    for (int L = 0; L < levels; L++) {
        res->zs[L] = tv->zs[L];
        res->x_outs[L] = tv->arena + tv->dec[L].out_off;
    }
    res->x_out = x0;
    tv->step++;
    return 0;
}

int jb_train_vqvae_metrics(const jb_train_vqvae_t *tv, const jb_tvq_result_t *res,
                           const char **names, double *values, int max) {
    jb_train_vqvae_t *m = (jb_train_vqvae_t *)tv;   // names live in the object
    int n = 0;
#define PUT(nm, v)                                                          \
    do {                                                                    \
        if (n < max && n < MAX_METRICS) {                                   \
            snprintf(m->mnames[n], sizeof m->mnames[n], "%s", nm);          \
            names[n] = m->mnames[n];                                        \
            values[n] = (v);                                                \
        }                                                                   \
        n++;                                                                \
    } while (0)
    char nm[32];
    for (int L = tv->hp.levels - 1; L >= 0; L--) {
        snprintf(nm, sizeof nm, "recons_loss_l%d", L + 1);
        PUT(nm, res->recons[L]);
        snprintf(nm, sizeof nm, "spectral_loss_l%d", L + 1);
        PUT(nm, res->spectral[L]);
        snprintf(nm, sizeof nm, "multispectral_loss_l%d", L + 1);
        PUT(nm, res->multispectral[L]);
    }
    PUT("recons_loss", res->recons_loss);
    PUT("spectral_loss", res->spectral_loss);
    PUT("multispectral_loss", res->multispectral_loss);
    PUT("spectral_convergence", res->spectral_convergence);
    PUT("l2_loss", res->l2_loss);
    PUT("l1_loss", res->l1_loss);
    PUT("linf_loss", res->linf_loss);
    PUT("commit_loss", res->commit_loss);
    PUT("fit", res->fit);
    PUT("pn", res->pn);
    PUT("entropy", res->entropy);
    PUT("used_curr", res->used_curr);
    PUT("usage", res->usage);
    PUT("dk", res->dk);
#undef PUT
    return n;
}

// ---- fresh models and model files ------------------------------------------------------------

void jb_train_vqvae_init_random(jb_train_vqvae_t *tv, uint64_t seed) {
    jb_rng_stream_t rs = jb_rng_stream(seed, 0x7261696e76717661ull, 0, 0);   // "trainvqva"
    uint64_t pos = 0;
    for (int i = 0; i < tv->np; i++) {
        pdesc_t *p = &tv->pd[i];
        // fan_in = weight.size(1) * k; a bias takes its weight's (the previous parameter)
        const pdesc_t *w = p->ndim == 3 ? p : &tv->pd[i - 1];
        double bound = 1.0 / sqrt((double)(w->shape[1] * w->shape[2]));
        float *v = tv->w + p->off;
        for (size_t j = 0; j < p->n; j++)
            v[j] = (float)(bound * (2.0 * jb_rng_uniform_f64(rs, pos++, 0) - 1.0));
    }
}

int jb_train_vqvae_init_codebooks(jb_train_vqvae_t *tv, const float *x, jb_err_t *err) {
    int N = tv->N, K = tv->hp.l_bins, E = tv->hp.emb_width;
    for (int64_t i = 0; i < (int64_t)N * tv->T; i++)
        if (!isfinite(x[i]))
            return jb_err_set(err, JB_EINVAL, "train_vqvae: input sample %lld is not finite",
                              (long long)i);
    for (int L = 0; L < tv->hp.levels; L++) {
        net_t *en = &tv->enc[L];
        memcpy(tv->arena + en->ops[0].x_off, x, sizeof(float) * (size_t)(N * tv->T));
        for (int n = 0; n < N; n++) net_forward(tv, en, n);
        int64_t R = N * en->T_out;
        jb_rng_stream_t rs = jb_rng_stream(tv->seed, jb_rng_splitmix64(~tv->step), 0, (uint32_t)L);
        int64_t *perm = random_rows(rs, R, K);
        if (!perm) return jb_err_set(err, JB_ENOMEM, "train_vqvae: out of memory");
        for (int j = 0; j < K; j++) {
            random_row(tv->k[L] + (size_t)j * E, rs, perm, j, tv->arena + en->out_off, R, E, K);
            tv->k_elem[L][j] = 1.0f;
        }
        memcpy(tv->k_sum[L], tv->k[L], sizeof(float) * (size_t)K * E);
        free(perm);
    }
    return 0;
}

// The VQ-VAE and loss keys of the reference's hparams, as JSON (caller frees).
static char *default_hparams(const jb_train_vqvae_t *tv) {
    const jb_vqvae_hparams_t *hp = &tv->hp;
    const jb_vqvae_loss_hparams_t *lh = &tv->lh;
    static const char *fns[] = {"l1", "l2", "linf", "lmix"};
    json_t *o = json_object(), *d = json_array(), *s = json_array(), *m = json_array();
    json_t *f = json_array(), *h = json_array(), *w = json_array(), *bw = json_object();
    for (int l = 0; l < hp->levels; l++) {
        json_array_append_new(d, json_integer(hp->downs_t[l]));
        json_array_append_new(s, json_integer(hp->strides_t[l]));
        json_array_append_new(m, json_integer(hp->multipliers[l]));
    }
    for (int i = 0; i < lh->n_multispec; i++) {
        json_array_append_new(f, json_integer(lh->ms_n_fft[i]));
        json_array_append_new(h, json_integer(lh->ms_hop[i]));
        json_array_append_new(w, json_integer(lh->ms_win[i]));
    }
    json_object_set_new(o, "levels", json_integer(hp->levels));
    json_object_set_new(o, "downs_t", d);
    json_object_set_new(o, "strides_t", s);
    json_object_set_new(o, "emb_width", json_integer(hp->emb_width));
    json_object_set_new(o, "l_bins", json_integer(hp->l_bins));
    json_object_set_new(o, "width", json_integer(hp->width));
    json_object_set_new(o, "depth", json_integer(hp->depth));
    json_object_set_new(o, "m_conv", json_real(hp->m_conv));
    json_object_set_new(o, "dilation_growth_rate", json_integer(hp->dilation_growth_rate));
    json_object_set_new(o, "dilation_cycle",
                        hp->dilation_cycle ? json_integer(hp->dilation_cycle) : json_null());
    json_object_set_new(o, "hvqvae_multipliers", m);
    json_object_set_new(o, "vqvae_reverse_decoder_dilation",
                        json_boolean(hp->reverse_decoder_dilation));
    json_object_set_new(o, "sample_length", json_integer(hp->sample_length ? hp->sample_length : tv->T));
    json_object_set_new(o, "sr", json_integer(hp->sr));
    json_object_set_new(o, "l_mu", json_real(lh->l_mu));
    json_object_set_new(o, "commit", json_real(lh->commit));
    json_object_set_new(o, "spectral", json_real(lh->spectral));
    json_object_set_new(o, "multispectral", json_real(lh->multispectral));
    json_object_set_new(o, "loss_fn", json_string(fns[lh->loss_fn]));
    json_object_set_new(o, "linf_k", json_integer(lh->linf_k));
    json_object_set_new(o, "lmix_l1", json_real(lh->lmix_l1));
    json_object_set_new(o, "lmix_l2", json_real(lh->lmix_l2));
    json_object_set_new(o, "lmix_linf", json_real(lh->lmix_linf));
    json_object_set_new(o, "revival_threshold", json_real(lh->revival_threshold));
    json_object_set_new(o, "use_nonrelative_specloss", json_boolean(lh->use_nonrelative_specloss));
    json_object_set_new(o, "multispec_loss_n_fft", f);
    json_object_set_new(o, "multispec_loss_hop_length", h);
    json_object_set_new(o, "multispec_loss_window_size", w);
    json_object_set_new(bw, "l1", json_real(lh->bw_l1));
    json_object_set_new(bw, "l2", json_real(lh->bw_l2));
    json_object_set_new(bw, "spec", json_real(lh->bw_spec));
    json_object_set_new(o, "bandwidth", bw);
    char *txt = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return txt;
}

uint64_t jb_train_vqvae_get_step(const jb_train_vqvae_t *tv) { return tv->step; }
void jb_train_vqvae_set_step(jb_train_vqvae_t *tv, uint64_t step) { tv->step = step; }

int jb_train_vqvae_save(const jb_train_vqvae_t *tv, const char *path, const char *hparams_json,
                        jb_err_t *err) {
    char *own = hparams_json ? NULL : default_hparams(tv);
    if (!hparams_json && !own) return jb_err_set(err, JB_ENOMEM, "train_vqvae: out of memory");
    int K = tv->hp.l_bins, E = tv->hp.emb_width, rc = -1;
    char names[JB_MAX_LEVELS][3][64];
    jb_st_writer_t *w = jb_st_writer_new(err);
    if (!w || jb_st_writer_meta(w, "kind", "vqvae", err) ||
        jb_st_writer_meta(w, "hparams", hparams_json ? hparams_json : own, err))
        goto done;
    for (int i = 0; i < tv->np; i++) {
        const pdesc_t *p = &tv->pd[i];
        if (jb_st_writer_add(w, p->name, JB_F32, p->ndim, p->shape, tv->w + p->off, err)) goto done;
    }
    for (int L = 0; L < tv->hp.levels; L++) {
        int64_t s2[2] = {K, E}, s1[1] = {K};
        snprintf(names[L][0], 64, "bottleneck.level_blocks.%d.k", L);
        snprintf(names[L][1], 64, "bottleneck.level_blocks.%d.k_sum", L);
        snprintf(names[L][2], 64, "bottleneck.level_blocks.%d.k_elem", L);
        if (jb_st_writer_add(w, names[L][0], JB_F32, 2, s2, tv->k[L], err) ||
            jb_st_writer_add(w, names[L][1], JB_F32, 2, s2, tv->k_sum[L], err) ||
            jb_st_writer_add(w, names[L][2], JB_F32, 1, s1, tv->k_elem[L], err))
            goto done;
    }
    rc = jb_st_writer_write(w, path, NULL, NULL, err);
done:
    jb_st_writer_destroy(&w);
    free(own);
    return rc;
}
