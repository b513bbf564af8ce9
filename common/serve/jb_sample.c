// jb_sample.c: see jb_sample.h.
#include "jb_sample.h"

#include <stdlib.h>
#include <string.h>

#include "jb_labels.h"
#include "jb_rng.h"

typedef struct {
    const jb_sampling_params_t *params;
    const jb_rng_stream_t *streams;   // (batch)
    int64_t start;                    // window start: positions are absolute
    void *scratch;
    const jb_sample_opts_t *o;
} choose_ctx_t;

static int choose(void *user, float *logits, int N, int n_bins, int pos, int32_t *out,
                  jb_err_t *err) {
    const choose_ctx_t *c = user;
    int rc = jb_sampling_rows(logits, N, n_bins, c->params, c->streams,
                              (uint64_t)(c->start + pos), out, c->scratch, err);
    if (!rc && c->o->on_step) c->o->on_step(c->o->on_step_user, c->start + pos);
    return rc;
}

typedef struct {
    int32_t *y;         // (B, label_len)
    int32_t *zc;        // (B, n_ctx / cond_downsample)
    int32_t *prime;     // (B, n_ctx)
    int32_t *out;       // (B, n_ctx)
    jb_rng_stream_t *streams;   // (B)
    void *scratch;
} work_t;

// One window [start, start + n_ctx), filling up to start + fill codes (sample_single_window).
static int window(jb_prior_sampler_t *s, const jb_prior_t *p, const jb_sample_opts_t *o,
                  int n_samples, int64_t start, int fill, int32_t *zs, int zs_stride, int *have,
                  const int32_t *zs_above, int above_stride, const int32_t *y,
                  const jb_sample_lyrics_t *lyrics, work_t *w, jb_err_t *err) {
    const jb_prior_info_t *in = jb_prior_info(p);
    int level = in->level, T = in->n_ctx, L = in->label_len;
    int64_t end = start + T;
    int64_t present = *have < end ? *have : end;
    int P = present > start ? (int)(present - start) : 0;
    if (*have < start)
        return jb_err_set(err, JB_EINTERNAL, "level %d window %lld: only %d codes present", level,
                          (long long)start, *have);
    if (fill - P <= 0) return 0;   // nothing new in this window
    if (start + fill > zs_stride)
        return jb_err_set(err, JB_EINVAL, "level %d window %lld: codes buffer of %d too short",
                          level, (long long)start, zs_stride);
    int cd = in->cond_downsample, Lc = 0;
    if (in->x_cond) {
        if (!zs_above)
            return jb_err_set(err, JB_EINVAL, "level %d needs the codes of level %d", level,
                              level + 1);
        if (start % cd || end % cd)
            return jb_err_set(err, JB_EINVAL, "level %d window [%lld, %lld): not a multiple of "
                              "the conditioning's %d", level, (long long)start, (long long)end, cd);
        if (end / cd > above_stride)
            return jb_err_set(err, JB_EINVAL, "level %d window [%lld, %lld): level %d has only "
                              "%d codes", level, (long long)start, (long long)end, level + 1,
                              above_stride);
        Lc = T / cd;
    }
    for (int b0 = 0; b0 < n_samples; b0 += o->max_batch_size) {
        int nb = n_samples - b0 < o->max_batch_size ? n_samples - b0 : o->max_batch_size;
        for (int i = 0; i < nb; i++) {
            int item = b0 + i;
            if (y) {   // prior.get_y: this level's sample_length, offset of the window, lyrics
                int32_t *yi = w->y + (int64_t)i * L;
                memcpy(yi, y + (int64_t)item * L, sizeof(int32_t) * (size_t)L);
                yi[2] = in->sample_length;
                yi[1] = (int32_t)(yi[1] + start * in->raw_to_tokens);
                if (in->n_tokens > 0) {
                    const int32_t *full = lyrics ? lyrics[item].tokens : NULL;
                    int nf = lyrics && full ? lyrics[item].n : 0;
                    if (jb_labels_lyric_window_f32(full, nf, in->n_tokens, yi[0], yi[1], yi[2],
                                               yi + L - in->n_tokens, NULL, err))
                        return jb_err_prefix(err, "level %d window %lld item %d", level,
                                             (long long)start, item);
                }
            }
            if (Lc)
                memcpy(w->zc + (int64_t)i * Lc, zs_above + (int64_t)item * above_stride + start / cd,
                       sizeof(int32_t) * (size_t)Lc);
            if (P)
                memcpy(w->prime + (int64_t)i * P, zs + (int64_t)item * zs_stride + start,
                       sizeof(int32_t) * (size_t)P);
            uint32_t sid = o->sample_ids ? o->sample_ids[item] : (uint32_t)item;
            w->streams[i] = jb_rng_stream(o->seed, o->job_hash, sid, (uint32_t)level);
        }
        choose_ctx_t cc = {&o->sampling, w->streams, start, w->scratch, o};
        if (jb_prior_sample(s, nb, y ? w->y : NULL, Lc ? w->zc : NULL, P ? w->prime : NULL, P,
                            fill, o->chunk_size, choose, &cc, w->out, NULL, err))
            return jb_err_prefix(err, "level %d window %lld items %d..%d", level,
                                 (long long)start, b0, b0 + nb - 1);
        for (int i = 0; i < nb; i++)
            memcpy(zs + (int64_t)(b0 + i) * zs_stride + start + P, w->out + (int64_t)i * fill + P,
                   sizeof(int32_t) * (size_t)(fill - P));
    }
    *have = (int)(start + fill);
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
    int64_t last = 0;
    for (int64_t st = 0; st < (int64_t)total - T + hop_length; st += hop_length) last = st;
    // Windows from the last to the first, so that earlier windows overwrite later ones.
    for (int64_t start = last; start >= 0; start -= hop_length) {
        if (start + T > total) {
            jb_err_set(err, JB_EINVAL, "alignment: window [%lld, %lld) past the %d codes (hop %d)",
                       (long long)start, (long long)(start + T), total, hop_length);
            goto done;
        }
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
    int level = in->level, T = in->n_ctx;
    if (n_samples < 1 || *have < 0 || *have > zs_stride)
        return jb_err_set(err, JB_EINVAL, "level %d: %d samples, %d present", level, n_samples,
                          *have);
    if (o->max_batch_size < 1 || o->max_batch_size > jb_prior_sampler_max_batch(s))
        return jb_err_set(err, JB_EINVAL, "level %d: max_batch_size %d outside [1, %d]", level,
                          o->max_batch_size, jb_prior_sampler_max_batch(s));
    if ((in->labels || in->lyrics) && !y)
        return jb_err_set(err, JB_EINVAL, "level %d: labels required", level);
    if (jb_sampling_params_check(&o->sampling, err)) return jb_err_prefix(err, "level %d", level);
    int B = o->max_batch_size, L = in->label_len > 0 ? in->label_len : 1;
    int Lc = in->x_cond ? T / in->cond_downsample : 1;
    work_t w = {0};
    w.y = malloc(sizeof(int32_t) * (size_t)B * L);
    w.zc = malloc(sizeof(int32_t) * (size_t)B * Lc);
    w.prime = malloc(sizeof(int32_t) * (size_t)B * T);
    w.out = malloc(sizeof(int32_t) * (size_t)B * T);
    w.streams = malloc(sizeof(jb_rng_stream_t) * (size_t)B);
    w.scratch = malloc(jb_sampling_scratch_bytes(in->seq_bins));
    int rc = -1;
    if (!w.y || !w.zc || !w.prime || !w.out || !w.streams || !w.scratch)
        jb_err_set(err, JB_ENOMEM, "level %d: out of memory", level);
    else
        rc = window(s, p, o, n_samples, win.start, win.fill, zs, zs_stride, have, zs_above,
                    above_stride, y, lyrics, &w, err);
    free(w.y), free(w.zc), free(w.prime), free(w.out), free(w.streams), free(w.scratch);
    return rc;
}
