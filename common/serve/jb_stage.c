// jb_stage.c: the loop of a prior stage; see jb_stage.h and docs/wire.md ("Job stream").
// Its spool is jb_stage_replay.c, its status jb_stage_status.c (jb_stage_private.h).
#include "jb_stage_private.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "jb_log.h"
#include "jb_rng.h"
#include "jb_service.h"

job_t *stage_find_job(stage_t *s, const char *id) {
    for (job_t *j = s->jobs; j; j = j->next)
        if (!strcmp(j->spec.id, id)) return j;
    return NULL;
}

static void job_free(job_t *j) {
    if (!j) return;
    jb_job_free(&j->spec);
    jb_codes_free(&j->codes);
    free(j->zs);
    free(j->windows);
    free(j->y);
    free(j->full_tokens);
    free(j->lyrics);
    free(j->labels_json);
    free(j->gen);
    free(j->in_sum);
    jb_codes_free(&j->mine);
    free(j);
}

void stage_drop_job(stage_t *s, job_t *j) {
    for (job_t **p = &s->jobs; *p; p = &(*p)->next)
        if (*p == j) {
            *p = j->next;
            snprintf(s->gone_ids[s->n_gone++ % 256], sizeof s->gone_ids[0], "%s", j->spec.id);
            job_free(j);
            return;
        }
}

// Every message out goes through here: with a spool, into the job's out.jbc first.
int stage_send_msg(stage_t *s, const jb_msg_t *m, jb_err_t *err) {
    if (s->replaying) return stage_capture(s, m, err);
    if (m->job_id[0] && stage_done_pending(s, m->job_id)) return 0;   // finished below
    // A job's first output here: which model makes its codes, first (stage_check_spool_model).
    if (s->spool && m->job_id[0] && jb_spool_count(s->spool, m->job_id, JB_SPOOL_OUT) == 0 &&
        jb_spool_put_note(s->spool, m->job_id, "model", s->model_id, err)) {
        s->out_broken = 1;
        return jb_err_prefix(err, "%s: spool", s->o->stage);
    }
    if (s->spool && m->job_id[0] && jb_spool_append(s->spool, m->job_id, JB_SPOOL_OUT, m, err)) {
        s->out_broken = 1;
        return jb_err_prefix(err, "%s: spool", s->o->stage);
    }
    if (jb_endpoint_send(s->out, m, err) != 0) {
        s->out_broken = 1;
        return jb_err_prefix(err, "%s: sending %s of job %s", s->o->stage,
                             jb_msg_type_name(m->type), m->job_id);
    }
    return 0;
}

// A message this stage makes for job j (its codes, alignment, ENDs, an ERROR). A
// resumed job's out.jbc already held the first n_gen of them (they were re-sent
// from there on start): those are not sent again.
static int emit(stage_t *s, job_t *j, const jb_msg_t *m, jb_err_t *err) {
    if (j && j->gen_idx < j->n_gen && !s->replaying) {
        const jb_stage_gen_t *want = &j->gen[j->gen_idx];
        if (want->type == (int)m->type && want->level == m->level && want->offset == m->offset &&
            want->sample0 == m->sample0) {
            j->gen_idx++;
            return 0;
        }
        jb_log(JB_WARN, "job=%s level=%d: after the restart this stage makes %s (offset %lld) "
               "where its spool holds %s (offset %lld); sending from here on", j->spec.id,
               s->info->level, jb_msg_type_name(m->type), (long long)m->offset,
               jb_msg_type_name(want->type), (long long)want->offset);
        j->n_gen = j->gen_idx;
    }
    return stage_send_msg(s, m, err);
}

// Refuse or abandon a job: an ERROR record downstream, then forget it.
int stage_fail_job(stage_t *s, job_t *j, const jb_err_t *why, jb_err_t *err) {
    jb_log(JB_ERROR, "job=%s level=%d refused: %s", j->spec.id, s->info->level, why->msg);
    stage_note_error(s, why->msg);
    jb_msg_t m;
    jb_msg_init(&m);
    m.type = JB_MSG_ERROR;
    m.level = s->info->level;
    m.code = jb_err_exit_code(why->code ? why->code : JB_EINTERNAL);
    int rc = jb_msg_set_job_id(&m, j->spec.id, err) || jb_msg_set_text(&m, why->msg, err) ||
             emit(s, j, &m, err);
    jb_msg_clear(&m);
    j->failed = 1;
    snprintf(s->failed_ids[s->n_failed++ % 32], sizeof s->failed_ids[0], "%s", j->spec.id);
    if (!rc) jb_endpoint_finished(s->out, j->spec.id);   // its ERROR is its result
    return rc ? -1 : 0;
}

// ---- a new job: validate, labels ------------------------------------------------

static int build_labels(stage_t *s, job_t *j, jb_err_t *err) {
    const jb_prior_info_t *in = s->info;
    const int level = in->level, n = j->spec.n_samples;
    jb_labeller_t lb = {
        .version = s->hp->labels_v3 ? JB_TEXT_V3 : JB_TEXT_V2,
        .max_genre_words = s->hp->max_bow_genre_size,
        .n_tokens = in->n_tokens,
        .sample_length = in->sample_length,
        .artists = s->artists,
        .genres = s->genres,
    };
    jb_labels_job_t q = {
        .id = j->spec.id,
        .level = level,
        .artist = j->spec.artist,
        .genre = j->spec.genre,
        .lyrics = j->spec.lyrics,
        .artist_id = j->spec.artist_id[level],
        .genre_ids = j->spec.genre_ids[level],
        .n_genre_ids = j->spec.n_genre_ids[level],
        .total_length = jb_job_total_length(&j->spec, s->hp->sr),
        .n_samples = n,
    };
    jb_labels_built_t b;
    if (jb_labeller_build(&lb, in->label_len, &q, &b, err)) return -1;
    j->y = b.y;   // j owns them from here
    j->full_tokens = b.full_tokens;
    j->n_full = b.n_full;
    j->labels_json = b.used_json;
    if (b.n_dropped)
        jb_log(JB_WARN, "job=%s level=%d lyrics: %zu character(s) outside the model's "
               "vocabulary dropped: \"%s\"", j->spec.id, level, b.n_dropped, b.dropped);
    if (in->label_len > 0 && in->n_tokens > 0) {   // every sample sings the same lyrics
        j->lyrics = malloc(sizeof *j->lyrics * (size_t)n);
        if (!j->lyrics) return jb_err_set(err, JB_ENOMEM, "job %s: out of memory", j->spec.id);
        for (int k = 0; k < n; k++) {
            j->lyrics[k].tokens = j->full_tokens;
            j->lyrics[k].n = j->n_full;
        }
    }
    return 0;
}

static int on_job(stage_t *s, jb_msg_t *m, jb_err_t *err) {
    if (stage_find_job(s, m->job_id)) {
        jb_log(JB_WARN, "job=%s: a second JOB message for a job in progress; dropped", m->job_id);
        return 0;
    }
    if (stage_send_msg(s, m, err)) return -1;
    job_t *j = calloc(1, sizeof *j);
    if (!j) return jb_err_set(err, JB_ENOMEM, "out of memory");
    jb_job_defaults(&j->spec);
    snprintf(j->spec.id, sizeof j->spec.id, "%s", m->job_id);
    j->next = s->jobs;
    s->jobs = j;
    jb_err_t why = {0};
    json_error_t jerr;
    json_t *spec = m->spec ? json_loads(m->spec, 0, &jerr) : NULL;
    int ok = spec && jb_job_from_json(spec, &j->spec, &why) == 0;
    json_decref(spec);
    if (spec && ok && strcmp(j->spec.id, m->job_id) != 0) {
        jb_err_set(&why, JB_EFORMAT, "spec id '%s' differs from the message's", j->spec.id);
        snprintf(j->spec.id, sizeof j->spec.id, "%s", m->job_id);
        ok = 0;
    }
    if (!m->spec) jb_err_set(&why, JB_EFORMAT, "job message without a spec");
    else if (!spec) jb_err_set(&why, JB_EFORMAT, "spec: %s", jerr.text);
    ok = ok && jb_job_validate(&j->spec, &why) == 0 &&
         jb_job_validate_for_prior(&j->spec, s->hp, &why) == 0;
    ok = ok && jb_codes_init(&j->codes, j->spec.id, s->levels, j->spec.n_samples,
                             s->info->bins, &why) == 0;
    ok = ok && build_labels(s, j, &why) == 0;
    if (!ok) return stage_fail_job(s, j, &why, err);
    jb_log(JB_INFO, "job=%s level=%d accepted: mode=%s samples=%d seconds=%g", j->spec.id,
           s->info->level, jb_job_mode_name(j->spec.mode), j->spec.n_samples,
           j->spec.sample_seconds);
    return 0;
}

// ---- this stage's level ----------------------------------------------------------

// Sends codes [from, from + count) of this stage's level, every sample, as one CODES message.
static int send_codes(stage_t *s, job_t *j, int from, int64_t count, jb_err_t *err) {
    const int n = j->spec.n_samples;
    int32_t *rows = malloc(sizeof(int32_t) * (size_t)(count * n));
    if (!rows) return jb_err_set(err, JB_ENOMEM, "job %s: out of memory", j->spec.id);
    for (int k = 0; k < n; k++)
        memcpy(rows + (int64_t)k * count, j->zs + (int64_t)k * j->total + from,
               sizeof(int32_t) * (size_t)count);
    jb_msg_t m;
    jb_msg_init(&m);
    m.type = JB_MSG_CODES;
    m.level = s->info->level;
    m.offset = from;
    m.codebook = s->info->bins;
    m.codes = rows;   // owned by m from here
    m.batch = n;
    m.count = count;
    int rc = jb_msg_set_job_id(&m, j->spec.id, err) || emit(s, j, &m, err);
    jb_msg_clear(&m);
    return rc ? -1 : 0;
}

static int start_level(stage_t *s, job_t *j, jb_err_t *err) {
    const jb_prior_info_t *in = s->info;
    const int level = in->level, n = j->spec.n_samples;
    const jb_vqvae_hparams_t *vq = &s->hp->vqvae;
    int64_t sample_length = jb_job_sample_length(&j->spec, s->hp->sr,
                                                 vq->hop_lengths[vq->levels - 1]);
    j->total = (int)(sample_length / vq->hop_lengths[level]);
    if (level + 1 < vq->levels) j->total_above = sample_length / vq->hop_lengths[level + 1];
    j->have = (int)jb_codes_len(&j->codes, level);
    if (j->have > j->total)
        return jb_err_set(err, JB_EINVAL,
                          "job %s level %d: %d codes given to continue from, the job wants %d "
                          "(is the sample length shorter than the codes?)",
                          j->spec.id, level, j->have, j->total);
    j->zs = malloc(sizeof(int32_t) * (size_t)n * (size_t)(j->total > 0 ? j->total : 1));
    if (!j->zs) return jb_err_set(err, JB_ENOMEM, "job %s: out of memory", j->spec.id);
    for (int k = 0; k < n && j->have > 0; k++)
        memcpy(j->zs + (int64_t)k * j->total, jb_codes_row(&j->codes, level, k),
               sizeof(int32_t) * (size_t)j->have);
    // The prefix is not sent again: it was forwarded as it came (wire.md 8.2).
    int hop = (int)(j->spec.hop_fraction[level] * in->n_ctx);
    if (jb_sample_plan_to(in, j->total, j->have, hop, &j->windows, &j->n_windows, err))
        return jb_err_prefix(err, "job %s", j->spec.id);
    j->started = 1;
    if (j->resumed) {
        // The windows whose codes reached out.jbc before the restart are done.
        int64_t mine = jb_codes_len(&j->mine, level);
        if (mine > j->total) mine = j->total;
        for (int k = 0; k < n && mine > j->have; k++)
            memcpy(j->zs + (int64_t)k * j->total + j->have,
                   jb_codes_row(&j->mine, level, k) + j->have,
                   sizeof(int32_t) * (size_t)(mine - j->have));
        if (mine > j->have) j->have = (int)mine;
        while (j->gen_idx < j->n_gen && j->gen[j->gen_idx].type == JB_MSG_CODES &&
               j->gen[j->gen_idx].level == level)
            j->gen_idx++;
        while (j->next_window < j->n_windows &&
               j->windows[j->next_window].start + j->windows[j->next_window].fill <= j->have)
            j->next_window++;
        jb_log(JB_INFO, "job=%s level=%d resumed at window %d of %d (%d of %d tokens)",
               j->spec.id, level, j->next_window, j->n_windows, j->have, j->total);
    }
    char what[128];
    snprintf(what, sizeof what, "job=%s level=%d", j->spec.id, level);
    jb_progress_start(&j->progress, what, j->total, "tokens");
    j->progress.done = j->have;
    return 0;
}

// Ready when the next window's conditioning has arrived.
static int window_ready(stage_t *s, job_t *j) {
    if (j->failed || j->level_done || !j->prefix_done || j->next_window >= j->n_windows)
        return 0;
    int64_t need = jb_sample_window_needs(s->info, j->windows[j->next_window]);
    if (need > j->total_above) need = j->total_above;
    int lvl = s->info->level + 1;
    return need <= 0 || jb_codes_len(&j->codes, lvl) >= need || j->codes.complete[lvl];
}

// The lyric alignment of the song (align.py), sent as ALIGN before END(level).
static int send_alignment(stage_t *s, job_t *j, jb_err_t *err) {
    const jb_prior_info_t *in = s->info;
    const int n = j->spec.n_samples, cols = j->n_full, G = JB_STAGE_ALIGN_TOKENS;
    if (!j->lyrics || cols < 1 || j->total < in->n_ctx) return 0;   // nothing to align
    const int64_t rows = (j->total + G - 1) / G;
    float **full = calloc((size_t)n, sizeof *full);
    int32_t *q = malloc(sizeof(int32_t) * (size_t)(n * rows * cols));
    double *mean = malloc(sizeof(double) * (size_t)(rows * cols));
    char *lyrics = NULL;
    int rc = -1;
    if (!full || !q || !mean) {
        jb_err_set(err, JB_ENOMEM, "job %s: out of memory for the alignment", j->spec.id);
        goto done;
    }
    for (int k = 0; k < n; k++)
        if (!(full[k] = calloc((size_t)j->total * cols, sizeof(float)))) {
            jb_err_set(err, JB_ENOMEM, "job %s: out of memory for the alignment", j->spec.id);
            goto done;
        }
    int hop = (int)(j->spec.hop_fraction[in->level] * in->n_ctx);
    if (jb_sample_alignment(s->prior, n, j->total, j->zs, j->total, j->y, j->lyrics, hop, full,
                            err)) {
        jb_err_prefix(err, "job %s: alignment", j->spec.id);
        goto done;
    }
    for (int k = 0; k < n; k++) {   // rows of G codes, quantized to [0, JB_WIRE_ALIGN_ONE]
        int64_t got;
        jb_sample_alignment_rows(full[k], j->total, cols, G, mean, &got);
        for (int64_t i = 0; i < rows * cols; i++) {
            double w = mean[i] < 0 ? 0 : mean[i] > 1 ? 1 : mean[i];
            q[(int64_t)k * rows * cols + i] = (int32_t)(w * JB_WIRE_ALIGN_ONE + 0.5);
        }
    }
    lyrics = jb_text_textise(s->hp->labels_v3 ? JB_TEXT_V3 : JB_TEXT_V2, j->full_tokens,
                             j->n_full, err);
    if (!lyrics) goto done;
    jb_msg_t m;
    jb_msg_init(&m);
    m.type = JB_MSG_ALIGN;
    m.level = in->level;
    rc = jb_msg_set_job_id(&m, j->spec.id, err) || jb_msg_set_align(&m, q, n, rows, cols, err) ||
         jb_msg_set_text(&m, lyrics, err) || emit(s, j, &m, err);
    jb_msg_clear(&m);
    rc = rc ? -1 : 0;
done:
    for (int k = 0; full && k < n; k++) free(full[k]);
    free(full);
    free(q);
    free(mean);
    free(lyrics);
    return rc;
}

static int finish_level(stage_t *s, job_t *j, jb_err_t *err) {
    jb_msg_t m;
    jb_msg_init(&m);
    if (s->info->lyrics != JB_PRIOR_NO_LYRICS && s->hp->alignment_layer >= 0) {
        // The alignment failing is this job's failure (an ERROR record), not the stage's;
        // only a broken output stops the stage.
        jb_err_t why = {0};
        if (send_alignment(s, j, &why)) {
            if (s->out_broken) {
                *err = why;
                return -1;
            }
            return stage_fail_job(s, j, &why, err);
        }
    }
    m.type = JB_MSG_END;
    m.level = s->info->level;
    m.offset = j->total;
    int rc = jb_msg_set_job_id(&m, j->spec.id, err) ||
             (j->labels_json && jb_msg_set_text(&m, j->labels_json, err)) || emit(s, j, &m, err);
    jb_msg_clear(&m);
    if (rc) return -1;
    j->level_done = 1;
    jb_progress_finish(&j->progress);
    return 0;
}

// After every sampled position: the progress line and the service watchdog (a
// window of the real upsamplers takes minutes on a CPU).
static void on_step(void *user, int64_t pos) {
    job_t *j = user;
    jb_progress_update(&j->progress, pos + 1);
    jb_service_watchdog();
}

// The sampling settings of job j's windows at this stage's level.
static void window_opts(const stage_t *s, job_t *j, jb_sample_opts_t *o) {
    const int level = s->info->level;
    *o = (jb_sample_opts_t){0};
    o->sampling = jb_sampling_default_params();
    o->sampling.temp = (float)j->spec.temp[level];
    o->sampling.top_k = j->spec.top_k[level];
    o->sampling.top_p = (float)j->spec.top_p[level];
    o->sampling.greedy = j->spec.top_k[level] == 1;
    o->chunk_size = j->spec.chunk_size[level];
    o->max_batch_size = j->spec.max_batch_size[level] < s->o->max_batch ? j->spec.max_batch_size[level]
                                                                          : s->o->max_batch;
    o->hop_length = (int)(j->spec.hop_fraction[level] * s->info->n_ctx);
    o->seed = j->spec.seed;
    o->job_hash = jb_rng_hash_job(j->spec.id);
    o->on_step = on_step;
    o->on_step_user = j;
}

// Job j's next window as a part of a batch (jb_sample_windows); o: its settings.
static jb_sample_part_t window_part(const stage_t *s, job_t *j, const jb_sample_opts_t *o) {
    jb_sample_part_t pt = {o, j->spec.n_samples, j->windows[j->next_window], j->zs, j->total,
                           &j->have, NULL, 0, j->y, j->lyrics};
    if (s->info->x_cond) {
        pt.zs_above = jb_codes_row(&j->codes, s->info->level + 1, 0);
        pt.above_stride = (int)jb_codes_stride(&j->codes, s->info->level + 1);
    }
    return pt;
}

// After job j's window brought it from `before` codes to j->have: send the new codes, count.
static int window_done(stage_t *s, job_t *j, int before, jb_err_t *err) {
    j->next_window++;
    if (j->have > before && send_codes(s, j, before, j->have - before, err))   // the new codes
        return -1;
    stage_count_tokens(s, (int64_t)(j->have - before) * j->spec.n_samples);
    j->sampled += (int64_t)(j->have - before) * j->spec.n_samples;
    // "window=k/n" in the progress lines: the front command's display shows it.
    snprintf(j->progress.what, sizeof j->progress.what, "job=%s level=%d window=%d/%d",
             j->spec.id, s->info->level, j->next_window, j->n_windows);
    jb_progress_update(&j->progress, j->have);
    return 0;
}

static int run_window(stage_t *s, job_t *j, jb_err_t *err) {
    jb_sample_opts_t o;
    window_opts(s, j, &o);
    jb_sample_part_t pt = window_part(s, j, &o);
    int before = j->have;
    double t0 = jb_now();
    if (jb_sample_window(s->sampler, &o, pt.n_samples, pt.win, pt.zs, pt.zs_stride, pt.have,
                         pt.zs_above, pt.above_stride, pt.y, pt.lyrics, err))
        return jb_err_prefix(err, "job %s", j->spec.id);
    j->busy_s += jb_now() - t0;
    return window_done(s, j, before, err);
}

// Many jobs in one step: the oldest job whose next window can run, and every other such job
// whose window has the same prime length, fill and chunk size, as long as their samples fit
// the sampler's batch (--max-batch), sampled together (jb_sample_windows); each job's codes
// are those it gets alone. order: the jobs, oldest last; first_only: only jobs whose first
// window has not run (new jobs, see step()). Returns 1 when it ran a batch of two
// or more jobs, 0 when there is none to run (the caller then advances one job: also the path
// that names a failing job), -1 on a fatal error. On the CPU and the device alike: the device
// sampler holds the sampler's batch (jb_prior_cuda_attach refuses less) and its products are
// batch-invariant too (jb_matmul_cuda.h).
static int run_batched(stage_t *s, job_t **order, int n_jobs, int first_only, jb_err_t *err) {
    const int maxb = jb_prior_sampler_max_batch(s->sampler);
    job_t *sel[64];
    jb_sample_opts_t opts[64];
    int n = 0, rows = 0, P = -1, fill = 0, chunk = 0;
    for (int i = n_jobs - 1; i >= 0 && n < 64; i--) {
        job_t *j = order[i];
        if (j->failed || !j->started || j->level_done || j->next_window >= j->n_windows ||
            (first_only && j->next_window != 0) || !window_ready(s, j))
            continue;
        jb_sample_window_t w = j->windows[j->next_window];
        int pj = jb_sample_window_prime(s->info, w, j->have), nj = j->spec.n_samples;
        if (w.fill <= pj || nj > j->spec.max_batch_size[s->info->level]) continue;
        if (n == 0) P = pj, fill = w.fill, chunk = j->spec.chunk_size[s->info->level];
        else if (pj != P || w.fill != fill || j->spec.chunk_size[s->info->level] != chunk)
            continue;
        if (rows + nj > maxb) continue;
        window_opts(s, j, &opts[n]);
        sel[n++] = j;
        rows += nj;
    }
    if (n < 2) return 0;
    jb_sample_part_t parts[64];
    int before[64];
    for (int i = 0; i < n; i++) {
        parts[i] = window_part(s, sel[i], &opts[i]);
        before[i] = sel[i]->have;
    }
    jb_err_t why = {0};
    double t0 = jb_now();
    if (jb_sample_windows(s->sampler, parts, n, &why)) {
        if (why.code == JB_ECANCEL) {
            *err = why;
            return -1;
        }
        // Whose fault it is shows when each job runs alone: that path fails the right one.
        jb_log(JB_WARN, "level %d: %d jobs in one batch failed (%s); running them one at a time",
               s->info->level, n, why.msg);
        return 0;
    }
    double dt = jb_now() - t0;   // the batch's time, each job's share by its samples
    jb_log(JB_DEBUG, "level %d: one batch of %d jobs, %d samples", s->info->level, n, rows);
    for (int i = 0; i < n; i++) {
        sel[i]->busy_s += dt * sel[i]->spec.n_samples / rows;
        if (window_done(s, sel[i], before[i], err)) return -1;
    }
    return 1;
}

// Moves a job on as far as it can without input: start, one window (when may_sample), finish.
// Returns 1 when it did work, 0 when it waits, -1 on a fatal error. It may free j.
static int advance(stage_t *s, job_t *j, int may_sample, jb_err_t *err) {
    if (j->failed) return 0;
    jb_err_t why = {0};
    if (j->prefix_done && !j->started) {
        if (start_level(s, j, &why)) {
            if (s->out_broken) {   // the output is gone: not the job's fault
                *err = why;
                return -1;
            }
            return stage_fail_job(s, j, &why, err) ? -1 : 1;
        }
    }
    if (!j->started) return 0;
    if (!j->level_done && j->next_window >= j->n_windows) {
        if (finish_level(s, j, err)) return -1;   // (sending: fatal)
        if (j->failed) return 1;                  // its alignment failed: the job, not us
    } else if (may_sample && window_ready(s, j)) {
        if (run_window(s, j, &why)) {
            if (why.code == JB_ECANCEL || s->out_broken) {
                *err = why;
                return -1;
            }
            return stage_fail_job(s, j, &why, err) ? -1 : 1;
        }
        return 1;
    }
    if (j->level_done && j->upstream_done) {
        jb_msg_t m;
        jb_msg_init(&m);
        m.type = JB_MSG_END;
        int rc = jb_msg_set_job_id(&m, j->spec.id, err) || emit(s, j, &m, err);
        jb_msg_clear(&m);
        if (rc) return -1;
        // tokens (codes sampled here, every sample) and busy: what jukebox-bench pipeline
        // reads to size the stages (docs/bench.md)
        jb_log(JB_INFO, "job=%s level=%d done tokens=%lld busy=%.3fs", j->spec.id,
               s->info->level, (long long)j->sampled, j->busy_s);
        // DONE upstream: now for a stream output, which holds the job; for a link
        // output when its consumer reports it (then stage_on_done).
        jb_endpoint_finished(s->out, j->spec.id);
        return stage_finish_job(s, j, err) ? -1 : 1;
    }
    return 0;
}

// ---- messages ------------------------------------------------------------------------

int stage_seen_before(const stage_t *s, const char *id) {
    int n = s->n_gone < 256 ? s->n_gone : 256;
    for (int i = 0; i < n; i++)
        if (!strcmp(s->gone_ids[i], id)) return 1;
    return stage_failed_before(s, id) || stage_is_finished(s, id);
}

int stage_fail_unknown(stage_t *s, const char *id, const jb_err_t *why, jb_err_t *err) {
    if (!id[0] || stage_find_job(s, id)) return 0;
    if (stage_seen_before(s, id)) {
        jb_log(JB_INFO, "job=%s: a late message of a job that ended here (%s); dropped", id,
               why->msg);
        return 0;
    }
    // A job entry of its own, so that it ends as every failed job does (its ERROR is its
    // result, its spool released once downstream has it).
    job_t *j = calloc(1, sizeof *j);
    if (!j) return jb_err_set(err, JB_ENOMEM, "out of memory");
    jb_job_defaults(&j->spec);
    snprintf(j->spec.id, sizeof j->spec.id, "%s", id);
    j->next = s->jobs;
    s->jobs = j;
    return stage_fail_job(s, j, why, err);
}

int stage_failed_before(const stage_t *s, const char *id) {
    int n = s->n_failed < 32 ? s->n_failed : 32;
    for (int i = 0; i < n; i++)
        if (!strcmp(s->failed_ids[i], id)) return 1;
    return 0;
}

// SIGTERM / SIGINT: the one place that decides to stop. It is asked between
// windows, so the window being sampled is finished (spooled and sent) first.
static int stop_requested(const stage_t *s) { return s->o->stop && *s->o->stop; }

int stage_on_message(stage_t *s, jb_msg_t *m, jb_err_t *err) {
    const int level = s->info->level;
    if (m->type == JB_MSG_CANCEL) {   // the link: this job went elsewhere
        job_t *c = stage_find_job(s, m->job_id);
        jb_log(JB_INFO, "job=%s level=%d cancelled by its producer%s", m->job_id, level,
               c ? "; dropped" : "");
        if (c) stage_drop_job(s, c);
        jb_endpoint_cancel(s->out, m->job_id);
        if (s->spool && jb_spool_remove(s->spool, m->job_id, err)) return -1;
        return 0;
    }
    if (m->type == JB_MSG_JOB) return on_job(s, m, err);
    job_t *j = m->job_id[0] ? stage_find_job(s, m->job_id) : NULL;
    if (!j && m->job_id[0] && m->type != JB_MSG_ERROR && stage_failed_before(s, m->job_id))
        return 0;   // the job ended here with an ERROR record; drop what follows
    switch (m->type) {
    case JB_MSG_CODES:
    case JB_MSG_END: {
        if (!j) {
            jb_err_t why = {0};
            jb_err_set(&why, JB_EFORMAT, "%s of level %d came without the job's job message "
                       "(a stage samples a job from its spec: make the stream with jukebox-job)",
                       jb_msg_type_name(m->type), m->level);
            return stage_fail_unknown(s, m->job_id, &why, err);
        }
        if (j->failed) return 0;
        jb_err_t why = {0};
        if (m->type == JB_MSG_END && m->level == level) {   // the prefix of our level is closed
            // Its length and sample count must be those of the prefix held, as for every
            // other level: a prefix that did not arrive whole fails the job instead of
            // being sampled anew (an upsample that silently is not one).
            if (j->prefix_done) {
                jb_err_set(&why, JB_EFORMAT, "a second end of level %d's prefix", level);
                return stage_fail_job(s, j, &why, err);
            }
            if (jb_codes_apply(&j->codes, m, &why)) {
                jb_err_prefix(&why, "the prefix of level %d", level);
                return stage_fail_job(s, j, &why, err);
            }
            j->prefix_done = 1;
            return 0;
        }
        if (m->type == JB_MSG_END && m->level < 0) {
            j->upstream_done = 1;
            return 0;
        }
        if (m->type == JB_MSG_CODES && m->level == level && j->prefix_done) {
            jb_err_set(&why, JB_EFORMAT, "codes of level %d after its prefix was closed", level);
            return stage_fail_job(s, j, &why, err);
        }
        if (jb_codes_apply(&j->codes, m, &why)) return stage_fail_job(s, j, &why, err);
        // Forwarded, our own level's prefix too: our windows emit only the tokens
        // they add (offset = first new token), so downstream needs the prefix.
        return stage_send_msg(s, m, err);
    }
    case JB_MSG_ERROR:
        if (j) {
            jb_log(JB_WARN, "job=%s failed upstream: %s", m->job_id, m->text ? m->text : "");
            if (stage_send_msg(s, m, err)) return -1;
            return stage_finish_job(s, j, err);
        }
        if (stage_send_msg(s, m, err)) return -1;
        jb_endpoint_finished(s->out, m->job_id);
        return 0;
    default:
        return stage_send_msg(s, m, err);
    }
}

// SIGTERM over a link: take no new work, hand back every job not finished here
// (its producer gives it to another instance at once) and cancel what was sent of it
// downstream; give the messages of finished jobs up to 2 s to be acked.
// (Streams: nothing to hand back; the jobs stay in the spool, if any.)
static void hand_back(stage_t *s) {
    jb_endpoint_pause(s->in);
    int n = 0;
    for (job_t *j = s->jobs; j; j = j->next)   // '|': both, whatever the first did
        n += jb_endpoint_release(s->in, j->spec.id) | jb_endpoint_cancel(s->out, j->spec.id);
    if (n) jb_log(JB_INFO, "handed back %d unfinished job(s)", n);
    jb_err_t e = {0};
    if (jb_endpoint_flush(s->out, 2000, 0, &e)) jb_log(JB_WARN, "%s", e.msg);
}

// ---- the run ---------------------------------------------------------------------------

// The model, its vocabularies, the sampler, the spool (checked against the model).
static int stage_load(stage_t *s, jb_err_t *err) {
    const jb_stage_opts_t *o = s->o;
    // On the GPU the weights are uploaded as stored (no packed CPU copy is needed), or as the
    // int8 tiles `--weights int8` packs on the CPU (always packed), as they are.
    jb_weights_opts_t wo = {o->weights, o->cuda ? 0 : o->packed};
    if (!(s->prior = jb_prior_new_opts(o->model_path, &wo, err))) return -1;
    s->info = jb_prior_info(s->prior);
    s->hp = jb_prior_hparams(s->prior);
    s->levels = s->hp->vqvae.levels;
    if (o->level >= 0 && s->info->level != o->level)
        return jb_err_set(err, JB_EINVAL, "%s: model is a level-%d prior; this stage runs "
                          "level %d", o->model_path, s->info->level, o->level);
    if (s->info->labels) {
        if (!(s->st = jb_st_open(o->model_path, err))) return -1;
        // Models converted from the releases carry their vocabularies; test
        // models may not, and then take ids only.
        if (jb_st_meta(s->st, "artists") &&
            !(s->artists = jb_labels_vocab_from_model(s->st, "artists", err)))
            return -1;
        if (jb_st_meta(s->st, "genres") &&
            !(s->genres = jb_labels_vocab_from_model(s->st, "genres", err)))
            return -1;
    }
    s->sampler = jb_sample_sampler_new(s->prior, o->max_batch > 0 ? o->max_batch : 16,
                                       o->max_chunk > 0 ? o->max_chunk : 64, o->cuda, err);
    if (!s->sampler) return -1;
    if (o->spool) {
        if (!(s->spool = jb_spool_open(o->spool, err))) return -1;
        for (int i = 0; i < jb_spool_n_warnings(s->spool); i++)
            jb_log(JB_WARN, "%s", jb_spool_warning(s->spool, i));
        if (stage_check_spool_model(s, err)) return -1;
    }
    return 0;
}

// The input, the output (a job's DONE passes from it to the input) and --control.
static int stage_open(stage_t *s, jb_err_t *err) {
    const jb_stage_opts_t *o = s->o;
    jb_link_opts_t lo;   // used when an endpoint is a link (its strings copied at open)
    jb_link_default_opts(&lo);
    lo.name = o->name;
    char spool_name[200];   // with a spool, the default name survives a restart
    if (!lo.name && s->spool)
        lo.name = jb_spool_instance_name(s->spool, spool_name, sizeof spool_name);
    lo.stage = o->stage;
    if (o->heartbeat_ms > 0) lo.heartbeat_ms = o->heartbeat_ms;
    if (o->peer_timeout_ms > 0) lo.peer_timeout_ms = o->peer_timeout_ms;
    lo.stop = o->stop;
    lo.status = stage_status;
    lo.status_user = s;
    stage_update_status(s);
    if (s->spool) {   // a link input spools on its I/O thread, once the replay is set up
        lo.persist = stage_persist;
        lo.persist_user = s;
    }
    jb_endpoint_opts_t eo;
    jb_endpoint_default_opts(&eo);
    eo.link = &lo;
    // Each job's messages are bounded by its levels' lengths under this model (wire.md 3.1).
    eo.admit.sr = s->hp->sr;
    eo.admit.levels = s->hp->vqvae.levels;
    for (int l = 0; l < s->hp->vqvae.levels && l <= JB_WIRE_MAX_LEVEL; l++)
        eo.admit.hop[l] = s->hp->vqvae.hop_lengths[l];
    lo.admit = eo.admit;
    if (!(s->in = jb_endpoint_open_in(o->in, &eo, err))) return -1;
    eo.upstream = s->in;   // a job's DONE from below (or its end, on a stream) goes up
    lo.on_done = stage_on_done;
    lo.done_user = s;
    if (!(s->out = jb_endpoint_open_out(o->out, &eo, err))) return -1;
    if (o->control) {
        jb_link_opts_t co = lo;
        co.role = JB_LINK_CONTROL;
        co.on_done = NULL;
        co.persist = NULL;
        co.status = stage_control_status;
        if (!(s->control = jb_link_open(o->control, &co, err))) return -1;
    }
    jb_log(JB_INFO, "level=%d model=%s ready: in=%s out=%s%s%s", s->info->level, o->model_path,
           jb_endpoint_address(s->in), jb_endpoint_address(s->out), o->spool ? " spool=" : "",
           o->spool ? o->spool : "");
    return 0;
}

// Whether some job can move without new input (then the input is only polled).
static int busy(stage_t *s) {
    for (job_t *j = s->jobs; j; j = j->next)
        if (window_ready(s, j) || (j->prefix_done && !j->started) ||
            (j->started && !j->level_done && j->next_window >= j->n_windows) ||
            (j->level_done && j->upstream_done))
            return 1;
    return 0;
}

// Waits up to timeout_ms for one input message and acts on it. 1: a message was taken
// (read on: forwarding stays prompt), 0: nothing taken (*input_open 0 at the end of the
// input), -1 + err: fatal.
static int receive(stage_t *s, int timeout_ms, int *input_open, jb_err_t *err) {
    jb_msg_t m;
    jb_msg_init(&m);
    jb_err_t rerr = {0};
    int rc = 0;
    jb_recv_t r = jb_endpoint_recv(s->in, &m, timeout_ms, &rerr);
    if (r == JB_RECV_MSG) {
        rc = stage_accept_msg(s, &m, err) ? -1 : 1;
        if (rc > 0) stage_update_status(s);
    } else if (r == JB_RECV_EOF) {
        *input_open = 0;
    } else if (r == JB_RECV_BAD) {
        // A message of a job in progress that cannot be read: the job is missing
        // part of its stream, so it fails as a whole (wire.md 8.3).
        // A job not seen here (its `job` message the one refused, say) fails the same way.
        job_t *bj = m.job_id[0] ? stage_find_job(s, m.job_id) : NULL;
        if (m.type > JB_MSG_NONE && m.type < JB_MSG_TYPE_COUNT)
            jb_err_prefix(&rerr, "the job's %s message was refused", jb_msg_type_name(m.type));
        else
            jb_err_prefix(&rerr, "a message of the job was refused");
        if (bj && !bj->failed) {
            if (stage_fail_job(s, bj, &rerr, err)) rc = -1;
        } else if (!bj && m.job_id[0] && (m.type <= JB_MSG_ERROR || m.type == JB_MSG_ALIGN ||
                                          m.type >= JB_MSG_TYPE_COUNT)) {   // a data message
            if (stage_fail_unknown(s, m.job_id, &rerr, err)) rc = -1;
        } else {
            jb_log(JB_WARN, "rejected a message: %s", rerr.msg);
        }
    } else if (r == JB_RECV_ERROR) {
        *err = rerr;
        rc = jb_err_prefix(err, "%s: input", s->o->stage);
    }
    jb_msg_clear(&m);
    return rc;
}

// One step: first what every job can do without sampling (start, finish, END: quick, and
// a batch must not starve it), then new jobs' first windows, then the windows of several
// jobs together when they can share a batch, else one window of the oldest job that can
// move. 1: worked, 0: nothing to do, -1 + err: fatal.
static int step(stage_t *s, jb_err_t *err) {
    int worked = 0;
    job_t *order[256];
    int n_jobs = 0;
    for (job_t *j = s->jobs; j && n_jobs < 256; j = j->next) order[n_jobs++] = j;
    for (int i = n_jobs - 1; i >= 0; i--) {   // list is newest first; advance may free
        int a = advance(s, order[i], 0, err);
        if (a < 0) return -1;
        worked |= a;
    }
    n_jobs = 0;
    for (job_t *j = s->jobs; j && n_jobs < 256; j = j->next) order[n_jobs++] = j;
    // New jobs' first windows go before the older jobs' windows (together when they can):
    // a first window's prime length differs from a later one's, so it cannot join the older
    // jobs' batch, and oldest-first would keep it waiting as long as the older jobs can move
    // (at a bottom upsampler fed faster than it samples: until they are done). After one
    // window its windows share the older jobs' steps (docs/operations.md). Not twice in a
    // row while an older job can move: new jobs arriving faster than a step would stall the
    // older ones for good (no job would ever finish); this way they go at least every
    // other step and a new job waits at most one.
    if (!worked) {
        int first = 0;
        if (!s->first_windows_last) {
            if ((worked = run_batched(s, order, n_jobs, 1, err)) < 0) return -1;
            for (int i = n_jobs - 1; i >= 0 && !worked; i--) {
                job_t *j = order[i];
                if (!j->started || j->next_window != 0 || !window_ready(s, j)) continue;
                if ((worked = advance(s, j, 1, err)) < 0) return -1;
            }
            first = worked;
        }
        if (!worked && (worked = run_batched(s, order, n_jobs, 0, err)) < 0) return -1;
        for (int i = n_jobs - 1; i >= 0 && !worked; i--) {
            int a = advance(s, order[i], 1, err);
            if (a < 0) return -1;
            worked = a;
        }
        if (worked) s->first_windows_last = first;
    }
    if (worked) stage_update_status(s);
    // Failed jobs are forgotten once their ERROR is out.
    for (job_t *j = s->jobs, *next; j; j = next) {
        next = j->next;
        if (j->failed && stage_finish_job(s, j, err)) return -1;
    }
    if (stage_release_finished(s, 0, 0, err)) return -1;
    return worked;
}

// The input ended and nothing can move: 0 when no job is left, else -1 + err (JB_EUNAVAIL):
// with a spool the jobs stay there for a restart, without one each gets an ERROR record.
static int input_ended(stage_t *s, jb_err_t *err) {
    const jb_stage_opts_t *o = s->o;
    if (s->jobs && s->spool) {   // upstream ended in the middle: kept for a restart
        char ids[256] = "";
        for (job_t *j = s->jobs; j; j = j->next)
            if (strlen(ids) + strlen(j->spec.id) + 2 < sizeof ids)
                snprintf(ids + strlen(ids), sizeof ids - strlen(ids), "%s%s", ids[0] ? " " : "",
                         j->spec.id);
        stage_release_finished(s, 1, 0, err);
        return jb_err_set(err, JB_EUNAVAIL, "%s: input ended in the middle of job(s) %s; kept "
                          "in the spool %s for a restart", o->stage, ids, o->spool);
    }
    if (s->jobs) {   // upstream ended in the middle of these jobs
        for (job_t *j = s->jobs, *next; j; j = next) {
            next = j->next;
            jb_err_t why;
            jb_err_set(&why, JB_EUNAVAIL, "input ended before the job was complete");
            if (stage_fail_job(s, j, &why, err)) return -1;
            stage_drop_job(s, j);
        }
        return jb_err_set(err, JB_EUNAVAIL, "%s: input ended in the middle of a job", o->stage);
    }
    return 0;
}

// Until the input ends with every job done (0), stop (-1, JB_ECANCEL) or a fatal error.
static int serve(stage_t *s, jb_err_t *err) {
    int input_open = 1;
    for (;;) {
        jb_service_watchdog();
        stage_drain_done(s);
        if (stop_requested(s))
            return jb_err_set(err, JB_ECANCEL, "%s: stopped by a signal", s->o->stage);
        if (input_open) {
            int r = receive(s, busy(s) ? 0 : 200, &input_open, err);
            if (r < 0) return -1;
            if (r > 0) continue;   // drain input first: forwarding stays prompt
        }
        int worked = step(s, err);
        if (worked < 0) return -1;
        // An idle stage's status still moves (a failed job gone, the minute's rate).
        if (jb_now() - s->t_status > 1) stage_update_status(s);
        if (!input_open && !worked) {
            if (input_ended(s, err)) return -1;
            break;
        }
    }
    // The pipe read empty: the next stage has every message of the finished jobs.
    return stage_release_finished(s, 1, 0, err);
}

// After the run (rc its result): stopped: hand back; done: the output closed, and a
// file's finished jobs' spools removed. Frees everything. Returns rc, or -1 when the
// output could not be closed.
static int stage_close(stage_t *s, int rc, jb_err_t *err) {
    jb_service_stopping();
    if (rc && err->code != JB_ECANCEL && err->msg[0]) stage_note_error(s, err->msg);
    // Stopped (between windows, or while a send waited for room): hand back.
    if (rc && err->code == JB_ECANCEL) hand_back(s);
    jb_link_close(&s->control, 0);
    while (s->jobs) stage_drop_job(s, s->jobs);
    if (rc == 0 && s->out) {
        int64_t unread;
        int pipe_out = jb_endpoint_unread(s->out, &unread) != 0;
        int confirms = jb_endpoint_confirms(s->out);
        if (jb_endpoint_close(&s->out, err)) rc = -1;
        // A file closed cleanly holds the finished jobs. (An output whose reader confirms:
        // only their DONE removes them, stage_on_done.)
        else if (!pipe_out && !confirms && stage_release_finished(s, 0, 1, err)) rc = -1;
    }
    // The links' I/O threads use the spool (persist, DONE): they stop first.
    jb_endpoint_destroy(&s->out);
    jb_endpoint_destroy(&s->in);
    stage_drain_done(s);   // the last DONEs' spools
    jb_spool_destroy(&s->spool);
    free(s->finished);
    free(s->cap);
    jb_sample_sampler_destroy(&s->sampler);
    jb_labels_vocab_destroy(&s->artists);
    jb_labels_vocab_destroy(&s->genres);
    jb_st_close(&s->st);
    jb_prior_destroy(&s->prior);
    free(s->status);
    pthread_mutex_destroy(&s->status_mu);
    pthread_mutex_destroy(&s->done_mu);
    free(s->done_q);
    return rc;
}

int jb_stage_prior_run(const jb_stage_opts_t *o, jb_err_t *err) {
    stage_t s = {.o = o, .status_mu = PTHREAD_MUTEX_INITIALIZER,
                 .done_mu = PTHREAD_MUTEX_INITIALIZER, .t_start = jb_now()};
    int rc = -1;
    if (!stage_load(&s, err) && !stage_open(&s, err) && !stage_replay_all(&s, err)) {
        jb_service_ready("weights loaded; waiting for jobs");
        rc = serve(&s, err) ? -1 : 0;
    }
    return stage_close(&s, rc, err);
}
