// jb_sample.c: see jb_sample.h.
#include "jb_sample.h"

#include <stdlib.h>
#include <string.h>

#include "jb_labels.h"
#include "jb_log.h"
#include "jb_rng.h"

// ---- the sampler: the CPU, or the CUDA device behind it --------------------------------

#ifdef JB_HAVE_CUDA
#include "jb_prior_cuda.h"

static int device_attach(jb_prior_sampler_t *s, const jb_prior_t *p, int max_chunk,
                         jb_err_t *err) {
    jb_prior_cuda_t *d = jb_prior_cuda_new(p, jb_prior_sampler_max_batch(s), max_chunk, 0, err);
    if (!d || jb_prior_cuda_attach(s, d, err)) {
        jb_prior_cuda_destroy(&d);
        return -1;
    }
    jb_log(JB_INFO, "sampling on the GPU (batch up to %d)", jb_prior_cuda_max_batch(d));
    return 0;
}

static void device_free(void *impl) {
    jb_prior_cuda_t *d = impl;
    jb_prior_cuda_destroy(&d);
}
#else
static int device_attach(jb_prior_sampler_t *s, const jb_prior_t *p, int max_chunk,
                         jb_err_t *err) {
    (void)s, (void)p, (void)max_chunk;
    return jb_err_set(err, JB_EUNAVAIL,
                      "this build has no CUDA support (rebuild with make CUDA=1)");
}

static void device_free(void *impl) { (void)impl; }
#endif

jb_prior_sampler_t *jb_sample_sampler_new(const jb_prior_t *p, int max_batch, int max_chunk,
                                          int cuda, jb_err_t *err) {
    jb_prior_sampler_t *s = jb_prior_sampler_new(p, max_batch, max_chunk, err);
    if (s && cuda && device_attach(s, p, max_chunk, err)) jb_prior_sampler_destroy(&s);
    return s;
}

void jb_sample_sampler_destroy(jb_prior_sampler_t **s_p) {
    if (!s_p || !*s_p) return;
    void *device = jb_prior_sampler_backend(*s_p);
    jb_prior_sampler_destroy(s_p);
    device_free(device);
}

typedef struct {
    int32_t *y;         // (B, label_len)
    int32_t *zc;        // (B, n_ctx / cond_downsample)
    int32_t *prime;     // (B, n_ctx)
    int32_t *out;       // (B, n_ctx)
    jb_rng_stream_t *streams;   // (B)
    const jb_sampling_params_t **params;   // (B) each row's sampling settings
    int64_t *starts;    // (B) each row's window start: its draws' positions are absolute
    void *scratch;
} work_t;

// Rows [i0, i0 + n) of a part (one job's window) in a batch.
typedef struct {
    const jb_sample_part_t *part;
    int i0, n;
} seg_t;

typedef struct {
    const seg_t *segs;
    int n_segs;
    work_t *w;
} choose_ctx_t;

// Each row with its own settings, stream and absolute position; every job's on_step once.
static int choose(void *user, float *logits, int N, int n_bins, int pos, int32_t *out,
                  jb_err_t *err) {
    const choose_ctx_t *c = user;
    for (int r = 0; r < N; r++)
        if (jb_sampling_rows(logits + (int64_t)r * n_bins, 1, n_bins, c->w->params[r],
                             c->w->streams + r, (uint64_t)(c->w->starts[r] + pos), out + r,
                             c->w->scratch, err))
            return -1;
    for (int g = 0; g < c->n_segs; g++) {
        const jb_sample_part_t *pt = c->segs[g].part;
        if (pt->o->on_step) pt->o->on_step(pt->o->on_step_user, pt->win.start + pos);
    }
    return 0;
}

static int prime_len(const jb_prior_info_t *in, const jb_sample_part_t *pt) {
    int64_t start = pt->win.start, end = start + in->n_ctx;
    int64_t present = *pt->have < end ? *pt->have : end;
    return present > start ? (int)(present - start) : 0;
}

int jb_sample_window_prime(const jb_prior_info_t *in, jb_sample_window_t w, int have) {
    jb_sample_part_t pt = {.win = w, .have = &have};
    return prime_len(in, &pt);
}

// The checks of one part's window; P its prime length.
static int part_check(const jb_prior_info_t *in, const jb_sample_part_t *pt, int P,
                      jb_err_t *err) {
    int level = in->level, T = in->n_ctx;
    int64_t start = pt->win.start, end = start + T;
    if (*pt->have < start)
        return jb_err_set(err, JB_EINTERNAL, "level %d window %lld: only %d codes present", level,
                          (long long)start, *pt->have);
    if (start + pt->win.fill > pt->zs_stride)
        return jb_err_set(err, JB_EINVAL, "level %d window %lld: codes buffer of %d too short",
                          level, (long long)start, pt->zs_stride);
    if ((in->labels || in->lyrics) && !pt->y)
        return jb_err_set(err, JB_EINVAL, "level %d: labels required", level);
    if (jb_sampling_params_check(&pt->o->sampling, err)) return jb_err_prefix(err, "level %d", level);
    if (in->x_cond) {
        int cd = in->cond_downsample;
        if (!pt->zs_above)
            return jb_err_set(err, JB_EINVAL, "level %d needs the codes of level %d", level,
                              level + 1);
        if (start % cd || end % cd)
            return jb_err_set(err, JB_EINVAL, "level %d window [%lld, %lld): not a multiple of "
                              "the conditioning's %d", level, (long long)start, (long long)end, cd);
        if (end / cd > pt->above_stride)
            return jb_err_set(err, JB_EINVAL, "level %d window [%lld, %lld): level %d has only "
                              "%d codes", level, (long long)start, (long long)end, level + 1,
                              pt->above_stride);
    }
    (void)P;
    return 0;
}

// One batch: the rows of segs (all windows with prime length P and fill), sampled together
// (sample_single_window for each). Checked by the callers.
static int run_segs(jb_prior_sampler_t *s, const jb_prior_info_t *in, const seg_t *segs,
                    int n_segs, int P, int fill, int chunk_size, work_t *w, jb_err_t *err) {
    int level = in->level, T = in->n_ctx, L = in->label_len;
    int cd = in->cond_downsample, Lc = in->x_cond ? T / cd : 0;
    int r = 0, any_y = 0;
    for (int g = 0; g < n_segs; g++) {
        const jb_sample_part_t *pt = segs[g].part;
        const jb_sample_opts_t *o = pt->o;
        int64_t start = pt->win.start;
        for (int i = 0; i < segs[g].n; i++, r++) {
            int item = segs[g].i0 + i;
            if (pt->y) {   // prior.get_y: this level's sample_length, offset of the window, lyrics
                any_y = 1;
                int32_t *yi = w->y + (int64_t)r * L;
                memcpy(yi, pt->y + (int64_t)item * L, sizeof(int32_t) * (size_t)L);
                yi[2] = in->sample_length;
                yi[1] = (int32_t)(yi[1] + start * in->raw_to_tokens);
                if (in->n_tokens > 0) {
                    const int32_t *full = pt->lyrics ? pt->lyrics[item].tokens : NULL;
                    int nf = pt->lyrics && full ? pt->lyrics[item].n : 0;
                    if (jb_labels_lyric_window_f32(full, nf, in->n_tokens, yi[0], yi[1], yi[2],
                                                   yi + L - in->n_tokens, NULL, err))
                        return jb_err_prefix(err, "level %d window %lld item %d", level,
                                             (long long)start, item);
                }
            }
            if (Lc)
                memcpy(w->zc + (int64_t)r * Lc,
                       pt->zs_above + (int64_t)item * pt->above_stride + start / cd,
                       sizeof(int32_t) * (size_t)Lc);
            if (P)
                memcpy(w->prime + (int64_t)r * P, pt->zs + (int64_t)item * pt->zs_stride + start,
                       sizeof(int32_t) * (size_t)P);
            uint32_t sid = o->sample_ids ? o->sample_ids[item] : (uint32_t)item;
            w->streams[r] = jb_rng_stream(o->seed, o->job_hash, sid, (uint32_t)level);
            w->params[r] = &o->sampling;
            w->starts[r] = start;
        }
    }
    if (any_y && (in->labels || in->lyrics))
        for (int g = 0; g < n_segs; g++)
            if (!segs[g].part->y) return jb_err_set(err, JB_EINVAL, "level %d: labels required", level);
    choose_ctx_t cc = {segs, n_segs, w};
    if (jb_prior_sample(s, r, any_y ? w->y : NULL, Lc ? w->zc : NULL, P ? w->prime : NULL, P,
                        fill, chunk_size, choose, &cc, w->out, NULL, err)) {
        if (n_segs == 1)
            return jb_err_prefix(err, "level %d window %lld items %d..%d", level,
                                 (long long)segs[0].part->win.start, segs[0].i0,
                                 segs[0].i0 + segs[0].n - 1);
        return jb_err_prefix(err, "level %d: %d windows of %d jobs in one batch", level, n_segs,
                             n_segs);
    }
    r = 0;
    for (int g = 0; g < n_segs; g++) {
        const jb_sample_part_t *pt = segs[g].part;
        for (int i = 0; i < segs[g].n; i++, r++)
            memcpy(pt->zs + (int64_t)(segs[g].i0 + i) * pt->zs_stride + pt->win.start + P,
                   w->out + (int64_t)r * fill + P, sizeof(int32_t) * (size_t)(fill - P));
    }
    return 0;
}

static int work_alloc(work_t *w, const jb_prior_info_t *in, int B) {
    int T = in->n_ctx, L = in->label_len > 0 ? in->label_len : 1;
    int Lc = in->x_cond ? T / in->cond_downsample : 1;
    w->y = malloc(sizeof(int32_t) * (size_t)B * L);
    w->zc = malloc(sizeof(int32_t) * (size_t)B * Lc);
    w->prime = malloc(sizeof(int32_t) * (size_t)B * T);
    w->out = malloc(sizeof(int32_t) * (size_t)B * T);
    w->streams = malloc(sizeof(jb_rng_stream_t) * (size_t)B);
    w->params = malloc(sizeof(*w->params) * (size_t)B);
    w->starts = malloc(sizeof(int64_t) * (size_t)B);
    w->scratch = malloc(jb_sampling_scratch_bytes(in->seq_bins));
    return w->y && w->zc && w->prime && w->out && w->streams && w->params && w->starts &&
                   w->scratch
               ? 0
               : -1;
}

static void work_free(work_t *w) {
    free(w->y), free(w->zc), free(w->prime), free(w->out), free(w->streams), free(w->params);
    free(w->starts), free(w->scratch);
}

// One window [start, start + n_ctx), filling up to start + fill codes (sample_single_window),
// the job's items in batches of max_batch_size.
static int window(jb_prior_sampler_t *s, const jb_prior_info_t *in, const jb_sample_part_t *pt,
                  work_t *w, jb_err_t *err) {
    int P = prime_len(in, pt), fill = pt->win.fill;
    if (*pt->have < pt->win.start)
        return jb_err_set(err, JB_EINTERNAL, "level %d window %lld: only %d codes present",
                          in->level, (long long)pt->win.start, *pt->have);
    if (fill - P <= 0) return 0;   // nothing new in this window
    if (part_check(in, pt, P, err)) return -1;
    const jb_sample_opts_t *o = pt->o;
    for (int b0 = 0; b0 < pt->n_samples; b0 += o->max_batch_size) {
        seg_t sg = {pt, b0, pt->n_samples - b0 < o->max_batch_size ? pt->n_samples - b0
                                                                   : o->max_batch_size};
        if (run_segs(s, in, &sg, 1, P, fill, o->chunk_size, w, err)) return -1;
    }
    *pt->have = (int)(pt->win.start + fill);
    return 0;
}

int jb_sample_level(jb_prior_sampler_t *s, const jb_sample_opts_t *o, int n_samples, int total,
                    int32_t *zs, int zs_stride, int have, const int32_t *zs_above,
                    int above_stride, const int32_t *y, const jb_sample_lyrics_t *lyrics,
                    int *out_len, jb_err_t *err) {
    // The same windows, one at a time, as a streaming stage runs them.
    const jb_prior_info_t *in = jb_prior_info(jb_prior_sampler_prior(s));
    if (n_samples < 1 || total < 1 || have < 0 || have > zs_stride)
        return jb_err_set(err, JB_EINVAL, "level %d: %d samples, %d codes, %d present",
                          in->level, n_samples, total, have);
    jb_sample_window_t *w = NULL;
    int n = 0;
    if (jb_sample_plan(in, total, have, o->hop_length, &w, &n, err)) return -1;
    for (int i = 0; i < n; i++)
        if (jb_sample_window(s, o, n_samples, w[i], zs, zs_stride, &have, zs_above, above_stride,
                             y, lyrics, err)) {
            free(w);
            return -1;
        }
    free(w);
    *out_len = have;
    return 0;
}

int jb_sample_alignment(const jb_prior_t *p, int n_samples, int total, const int32_t *zs,
                        int zs_stride, const int32_t *y, const jb_sample_lyrics_t *lyrics,
                        int hop_length, float *const *out, jb_err_t *err) {
    const jb_prior_info_t *in = jb_prior_info(p);
    const jb_prior_hparams_t *hp = jb_prior_hparams(p);
    int T = in->n_ctx, nt = in->n_tokens, L = in->label_len;
    if (!in->lyrics || hp->alignment_layer < 0 || hp->alignment_head < 0)
        return jb_err_set(err, JB_EINVAL, "alignment: prior without lyrics or alignment layer");
    if (hop_length < 1 || total < T || n_samples < 1)
        return jb_err_set(err, JB_EINVAL, "alignment: %d codes, window %d, hop %d", total, T,
                          hop_length);
    for (int i = 0; i < n_samples; i++)
        memset(out[i], 0, sizeof(float) * (size_t)total * (size_t)lyrics[i].n);
    int32_t *yw = malloc(sizeof(int32_t) * (size_t)L);
    int32_t *idx = malloc(sizeof(int32_t) * (size_t)nt);
    float *attn = malloc(sizeof(float) * (size_t)T * nt);
    float *logits = malloc(sizeof(float) * (size_t)in->seq_len * in->seq_bins);
    int rc = -1;
    if (!yw || !idx || !attn || !logits) {
        jb_err_set(err, JB_ENOMEM, "alignment: out of memory");
        goto done;
    }
    // The windows of get_starts: every hop_length, the last one moved back to end at the
    // last code (total - T: the most context). From the last to the first, so that earlier
    // windows overwrite later ones.
    int64_t n_starts = 0;
    for (int64_t st = 0; st < (int64_t)total - T + hop_length; st += hop_length) n_starts++;
    for (int64_t w = n_starts - 1; w >= 0; w--) {
        int64_t start = w * hop_length;
        if (start + T >= total) start = total - T;
        for (int i = 0; i < n_samples; i++) {
            memcpy(yw, y + (int64_t)i * L, sizeof(int32_t) * (size_t)L);
            yw[2] = in->sample_length;
            yw[1] = (int32_t)(yw[1] + start * in->raw_to_tokens);
            if (jb_labels_lyric_window_f32(lyrics[i].tokens, lyrics[i].n, nt, yw[0], yw[1], yw[2],
                                       yw + L - nt, idx, err) ||
                jb_prior_forward(p, zs + (int64_t)i * zs_stride + start, NULL, yw, 1, logits,
                                 attn, err)) {
                jb_err_prefix(err, "alignment: window %lld item %d", (long long)start, i);
                goto done;
            }
            int nf = lyrics[i].n;
            for (int t = 0; t < T; t++)
                for (int k = 0; k < nt; k++)
                    if (idx[k] >= 0 && idx[k] < nf)
                        out[i][(start + t) * nf + idx[k]] = attn[(int64_t)t * nt + k];
        }
    }
    rc = 0;
done:
    free(yw), free(idx), free(attn), free(logits);
    return rc;
}

void jb_sample_alignment_rows(const float *full, int64_t total, int cols, int group,
                              double *out, int64_t *rows) {
    *rows = (total + group - 1) / group;
    for (int64_t r = 0; r < *rows; r++) {
        int64_t t0 = r * group, t1 = t0 + group < total ? t0 + group : total;
        for (int c = 0; c < cols; c++) {
            double acc = 0;
            for (int64_t t = t0; t < t1; t++) acc += full[t * cols + c];
            out[r * cols + c] = acc / (double)(t1 - t0);
        }
    }
}

// ---- window by window ---------------------------------------------------------------

int jb_sample_plan(const jb_prior_info_t *in, int total, int have, int hop_length,
                   jb_sample_window_t **windows, int *n, jb_err_t *err) {
    int T = in->n_ctx;
    *windows = NULL;
    *n = 0;
    if (total < 1 || have < 0)
        return jb_err_set(err, JB_EINVAL, "level %d: %d codes wanted, %d present", in->level,
                          total, have);
    if (total >= T) {
        if (hop_length < 1)
            return jb_err_set(err, JB_EINVAL, "level %d: hop length %d", in->level, hop_length);
        int64_t ns = jb_labels_n_starts(total, T, hop_length), got = 0;
        int64_t *starts = malloc(sizeof(int64_t) * (size_t)(ns > 0 ? ns : 1));
        jb_sample_window_t *w = malloc(sizeof *w * (size_t)(ns > 0 ? ns : 1));
        if (!starts || !w) {
            free(starts), free(w);
            return jb_err_set(err, JB_ENOMEM, "level %d: out of memory", in->level);
        }
        if (jb_labels_starts(total, T, hop_length, starts, ns, &got, err)) {
            free(starts), free(w);
            return jb_err_prefix(err, "level %d", in->level);
        }
        // Windows whose codes are all present already sample nothing (window() returns
        // early): leave them out so a resumed level starts where it stopped.
        int k = 0, h = have;
        for (int64_t i = 0; i < got; i++) {
            int64_t end = starts[i] + T;
            if (end <= h) continue;
            w[k].start = starts[i];
            w[k].fill = T;
            k++;
            h = (int)end;
        }
        free(starts);
        *windows = w;
        *n = k;
        return 0;
    }
    jb_sample_window_t *w = malloc(sizeof *w);
    if (!w) return jb_err_set(err, JB_ENOMEM, "level %d: out of memory", in->level);
    if (have < T - total) {   // sample_partial_window
        w->start = 0;
        w->fill = have + total;
    } else {
        w->start = have - T + total;
        w->fill = T;
    }
    *windows = w;
    *n = 1;
    return 0;
}

int jb_sample_plan_to(const jb_prior_info_t *in, int length, int have, int hop_length,
                      jb_sample_window_t **windows, int *n, jb_err_t *err) {
    *windows = NULL;
    *n = 0;
    if (have >= length) return 0;
    return jb_sample_plan(in, length < in->n_ctx ? length - have : length, have, hop_length,
                          windows, n, err);
}

int64_t jb_sample_window_needs(const jb_prior_info_t *in, jb_sample_window_t w) {
    if (!in->x_cond || in->cond_downsample <= 0) return 0;
    return (w.start + in->n_ctx) / in->cond_downsample;
}

int jb_sample_window(jb_prior_sampler_t *s, const jb_sample_opts_t *o, int n_samples,
                     jb_sample_window_t win, int32_t *zs, int zs_stride, int *have,
                     const int32_t *zs_above, int above_stride, const int32_t *y,
                     const jb_sample_lyrics_t *lyrics, jb_err_t *err) {
    const jb_prior_t *p = jb_prior_sampler_prior(s);
    const jb_prior_info_t *in = jb_prior_info(p);
    int level = in->level;
    if (n_samples < 1 || *have < 0 || *have > zs_stride)
        return jb_err_set(err, JB_EINVAL, "level %d: %d samples, %d present", level, n_samples,
                          *have);
    if (o->max_batch_size < 1 || o->max_batch_size > jb_prior_sampler_max_batch(s))
        return jb_err_set(err, JB_EINVAL, "level %d: max_batch_size %d outside [1, %d]", level,
                          o->max_batch_size, jb_prior_sampler_max_batch(s));
    jb_sample_part_t pt = {o, n_samples, win, zs, zs_stride, have, zs_above, above_stride, y,
                           lyrics};
    work_t w = {0};
    int rc = -1;
    if (work_alloc(&w, in, o->max_batch_size))
        jb_err_set(err, JB_ENOMEM, "level %d: out of memory", level);
    else
        rc = window(s, in, &pt, &w, err);
    work_free(&w);
    return rc;
}

int jb_sample_windows(jb_prior_sampler_t *s, const jb_sample_part_t *parts, int n_parts,
                      jb_err_t *err) {
    const jb_prior_info_t *in = jb_prior_info(jb_prior_sampler_prior(s));
    int level = in->level, rows = 0, P = 0, fill = 0;
    if (n_parts < 1) return jb_err_set(err, JB_EINVAL, "level %d: no windows", level);
    seg_t *segs = malloc(sizeof *segs * (size_t)n_parts);
    if (!segs) return jb_err_set(err, JB_ENOMEM, "level %d: out of memory", level);
    int rc = -1;
    for (int i = 0; i < n_parts; i++) {
        const jb_sample_part_t *pt = &parts[i];
        if (pt->n_samples < 1 || *pt->have < 0 || *pt->have > pt->zs_stride) {
            jb_err_set(err, JB_EINVAL, "level %d part %d: %d samples, %d present", level, i,
                       pt->n_samples, *pt->have);
            goto done;
        }
        int Pi = prime_len(in, pt);
        if (part_check(in, pt, Pi, err)) {
            jb_err_prefix(err, "part %d", i);
            goto done;
        }
        if (i == 0) P = Pi, fill = pt->win.fill;
        if (Pi != P || pt->win.fill != fill || pt->o->chunk_size != parts[0].o->chunk_size ||
            fill - P <= 0) {
            jb_err_set(err, JB_EINVAL, "level %d part %d: prime %d, fill %d, chunk %d (part 0: "
                       "%d, %d, %d): one batch needs the same, with codes to sample", level, i,
                       Pi, pt->win.fill, pt->o->chunk_size, P, fill, parts[0].o->chunk_size);
            goto done;
        }
        segs[i] = (seg_t){pt, 0, pt->n_samples};
        rows += pt->n_samples;
    }
    if (rows > jb_prior_sampler_max_batch(s)) {
        jb_err_set(err, JB_EINVAL, "level %d: %d rows in one batch, the sampler holds %d", level,
                   rows, jb_prior_sampler_max_batch(s));
        goto done;
    }
    work_t w = {0};
    if (work_alloc(&w, in, rows)) jb_err_set(err, JB_ENOMEM, "level %d: out of memory", level);
    else if (!run_segs(s, in, segs, n_parts, P, fill, parts[0].o->chunk_size, &w, err)) {
        for (int i = 0; i < n_parts; i++) *parts[i].have = (int)(parts[i].win.start + fill);
        rc = 0;
    }
    work_free(&w);
done:
    free(segs);
    return rc;
}
