// jb_job.c: see jb_job.h.
#include "jb_job.h"
#include "jb_wire.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *k_modes[] = {"ancestral", "primed", "continue", "upsample"};

void jb_job_defaults(jb_job_t *job) {
    memset(job, 0, sizeof *job);
    snprintf(job->id, sizeof job->id, "job");
    job->mode = JB_MODE_ANCESTRAL;
    for (int l = 0; l < JB_JOB_LEVELS; l++) {
        job->artist_id[l] = -1;
        job->temp[l] = 0.99;
        job->hop_fraction[l] = l == 2 ? 0.125 : 0.5;
        job->max_batch_size[l] = l == 2 ? 3 : 16;
        job->chunk_size[l] = l == 2 ? 16 : 32;
    }
    job->total_seconds = 240.0;
    job->sample_seconds = 24.0;
    job->prompt_seconds = 12.0;
    job->n_samples = 1;
}

void jb_job_free(jb_job_t *job) {
    if (!job) return;
    free(job->lyrics);
    job->lyrics = NULL;
}

int jb_job_copy(jb_job_t *dst, const jb_job_t *src, jb_err_t *err) {
    *dst = *src;
    if (src->lyrics) {
        dst->lyrics = strdup(src->lyrics);
        if (!dst->lyrics) return jb_err_set(err, JB_ENOMEM, "job %s: out of memory", src->id);
    }
    return 0;
}

const char *jb_job_mode_name(jb_job_mode_t mode) {
    return (unsigned)mode < 4 ? k_modes[mode] : "?";
}

int jb_job_mode_parse(const char *name, jb_job_mode_t *mode, jb_err_t *err) {
    for (int i = 0; i < 4; i++)
        if (name && !strcmp(name, k_modes[i])) {
            *mode = (jb_job_mode_t)i;
            return 0;
        }
    return jb_err_set(err, JB_EINVAL, "unknown mode '%s' (ancestral, primed, continue, upsample)",
                      name ? name : "");
}

int jb_job_validate(const jb_job_t *j, jb_err_t *err) {
    const char *id = j->id;
    if (!id[0]) return jb_err_set(err, JB_EINVAL, "job: empty id");
    if (!jb_wire_job_id_ok(id))   // the one definition (docs/wire.md 2.1)
        return jb_err_set(err, JB_EINVAL, "job '%.80s': an id is 1..%d of letters, digits, "
                          ". _ : -, not starting with '.'", id, JB_WIRE_JOB_ID_MAX);
    if ((unsigned)j->mode > JB_MODE_UPSAMPLE)
        return jb_err_set(err, JB_EINVAL, "job %s: unknown mode %d", id, (int)j->mode);
    if (j->n_samples < 1 || j->n_samples > JB_JOB_MAX_SAMPLES)
        return jb_err_set(err, JB_EINVAL, "job %s: n_samples %d outside 1..%d", id, j->n_samples,
                          JB_JOB_MAX_SAMPLES);
    if (!(j->sample_seconds > 0) || !(j->total_seconds > 0) || !isfinite(j->total_seconds) ||
        j->total_seconds > 24 * 3600)
        return jb_err_set(err, JB_EINVAL, "job %s: lengths must be positive seconds (sample %g, "
                          "total %g)", id, j->sample_seconds, j->total_seconds);
    if (j->sample_seconds > j->total_seconds)
        return jb_err_set(err, JB_EINVAL,
                          "job %s: sample length %g s is longer than the total length %g s", id,
                          j->sample_seconds, j->total_seconds);
    if (j->mode == JB_MODE_PRIMED && (!(j->prompt_seconds > 0) ||
                                      j->prompt_seconds >= j->sample_seconds))
        return jb_err_set(err, JB_EINVAL,
                          "job %s: primed: prompt length %g s must be > 0 and shorter than the "
                          "sample length %g s",
                          id, j->prompt_seconds, j->sample_seconds);
    for (int l = 0; l < JB_JOB_LEVELS; l++) {
        if (!(j->temp[l] > 0) || j->temp[l] > 100)
            return jb_err_set(err, JB_EINVAL, "job %s: level %d: temperature %g outside (0, 100]",
                              id, l, j->temp[l]);
        if (j->top_k[l] < 0)
            return jb_err_set(err, JB_EINVAL, "job %s: level %d: top_k %d < 0", id, l, j->top_k[l]);
        if (!(j->top_p[l] >= 0 && j->top_p[l] <= 1))
            return jb_err_set(err, JB_EINVAL, "job %s: level %d: top_p %g outside [0, 1]", id, l,
                              j->top_p[l]);
        if (!(j->hop_fraction[l] > 0 && j->hop_fraction[l] <= 1))
            return jb_err_set(err, JB_EINVAL, "job %s: level %d: hop fraction %g outside (0, 1]",
                              id, l, j->hop_fraction[l]);
        if (j->max_batch_size[l] < 1 || j->max_batch_size[l] > JB_JOB_MAX_SAMPLES)
            return jb_err_set(err, JB_EINVAL, "job %s: level %d: max batch size %d outside 1..%d",
                              id, l, j->max_batch_size[l], JB_JOB_MAX_SAMPLES);
        if (j->chunk_size[l] < 1)
            return jb_err_set(err, JB_EINVAL, "job %s: level %d: chunk size %d < 1", id, l,
                              j->chunk_size[l]);
        if (j->n_genre_ids[l] < 0 || j->n_genre_ids[l] > JB_JOB_MAX_GENRES)
            return jb_err_set(err, JB_EINVAL, "job %s: level %d: %d genre ids", id, l,
                              j->n_genre_ids[l]);
    }
    if (j->n_pick < 0 || j->n_pick > JB_JOB_MAX_PICK)
        return jb_err_set(err, JB_EINVAL, "job %s: %d picked samples", id, j->n_pick);
    if (j->n_pick && j->mode != JB_MODE_CONTINUE && j->mode != JB_MODE_UPSAMPLE)
        return jb_err_set(err, JB_EINVAL, "job %s: --pick applies to continue and upsample only",
                          id);
    for (int i = 0; i < j->n_pick; i++) {
        if (j->pick[i] < 0)
            return jb_err_set(err, JB_EINVAL, "job %s: pick %d is negative", id, j->pick[i]);
        for (int k = 0; k < i; k++)
            if (j->pick[k] == j->pick[i])
                return jb_err_set(err, JB_EINVAL, "job %s: sample %d picked twice", id, j->pick[i]);
    }
    return 0;
}

// Rounded to the nearest sample, so that a length given as samples / sr in seconds
// comes back exactly.
int64_t jb_job_total_length(const jb_job_t *job, int sr) {
    return llround(job->total_seconds * sr);
}

int64_t jb_job_sample_length(const jb_job_t *job, int sr, int hop) {
    int64_t n = llround(job->sample_seconds * sr);
    return hop > 0 ? n / hop * hop : n;
}

int jb_job_validate_for_prior(const jb_job_t *j, const jb_prior_hparams_t *hp, jb_err_t *err) {
    const int level = hp->level, sr = hp->sr;
    const int top_hop = hp->vqvae.hop_lengths[hp->vqvae.levels - 1];
    const int hop = hp->vqvae.hop_lengths[level];
    int64_t sample_length = jb_job_sample_length(j, sr, top_hop);
    int64_t total_length = jb_job_total_length(j, sr);
    if (sample_length < top_hop)
        return jb_err_set(err, JB_EINVAL,
                          "job %s: sample length %g s is shorter than one top-level token (%d "
                          "samples)",
                          j->id, j->sample_seconds, top_hop);
    int64_t tokens = sample_length / hop;
    int is_top = level == hp->vqvae.levels - 1;
    if (!is_top && tokens < hp->n_ctx)
        return jb_err_set(err, JB_EINVAL,
                          "job %s: level %d: %lld tokens (%g s) is less than one context of %d "
                          "tokens; upsampling needs at least %.2f s",
                          j->id, level, (long long)tokens, j->sample_seconds, hp->n_ctx,
                          (double)hp->n_ctx * hop / sr);
    // The timing signal's ranges (LabelConditioner with include_time_signal).
    if (is_top && hp->labels && hp->max_duration > 0) {
        double lo = hp->min_duration * sr, hi = hp->max_duration * sr;
        if ((double)total_length < lo || (double)total_length >= hi)
            return jb_err_set(err, JB_EINVAL,
                              "job %s: total length %g s outside this model's range [%g, %g) s",
                              j->id, j->total_seconds, hp->min_duration, hp->max_duration);
        int64_t window = (int64_t)hp->n_ctx * hop;
        int64_t last_end = (tokens > hp->n_ctx ? sample_length - window : 0) + window;
        if ((double)last_end > hi)
            return jb_err_set(err, JB_EINVAL,
                              "job %s: sample length %g s runs past this model's maximum %g s",
                              j->id, j->sample_seconds, hp->max_duration);
    }
    if (j->top_k[level] > hp->vqvae.l_bins)
        return jb_err_set(err, JB_EINVAL, "job %s: level %d: top_k %d > %d codes", j->id, level,
                          j->top_k[level], hp->vqvae.l_bins);
    if (hp->labels) {
        if (j->artist_id[level] >= hp->y_bins[1])
            return jb_err_set(err, JB_EINVAL, "job %s: level %d: artist id %d >= %d artists",
                              j->id, level, j->artist_id[level], hp->y_bins[1]);
        if (j->n_genre_ids[level] > hp->max_bow_genre_size)
            return jb_err_set(err, JB_EINVAL, "job %s: level %d: %d genre ids, the model takes %d",
                              j->id, level, j->n_genre_ids[level], hp->max_bow_genre_size);
        for (int g = 0; g < j->n_genre_ids[level]; g++)
            if (j->genre_ids[level][g] < 0 || j->genre_ids[level][g] >= hp->y_bins[0])
                return jb_err_set(err, JB_EINVAL, "job %s: level %d: genre id %d outside 0..%d",
                                  j->id, level, j->genre_ids[level][g], hp->y_bins[0] - 1);
    }
    return 0;
}

// ---- JSON -------------------------------------------------------------------------

static json_t *level_array_d(const double *v) {
    return json_pack("[f, f, f]", v[0], v[1], v[2]);
}
static json_t *level_array_i(const int *v) { return json_pack("[i, i, i]", v[0], v[1], v[2]); }

json_t *jb_job_to_json(const jb_job_t *j) {
    json_t *o = json_object();
    if (!o) return NULL;
    json_object_set_new(o, "id", json_string(j->id));
    json_object_set_new(o, "mode", json_string(jb_job_mode_name(j->mode)));
    json_object_set_new(o, "artist", json_string(j->artist));
    json_object_set_new(o, "genre", json_string(j->genre));
    json_object_set_new(o, "artist_id", level_array_i(j->artist_id));
    json_t *g = json_array();
    for (int l = 0; l < JB_JOB_LEVELS; l++) {
        json_t *a = json_array();
        for (int k = 0; k < j->n_genre_ids[l]; k++) json_array_append_new(a, json_integer(j->genre_ids[l][k]));
        json_array_append_new(g, a);
    }
    json_object_set_new(o, "genre_ids", g);
    json_object_set_new(o, "lyrics", j->lyrics ? json_string(j->lyrics) : json_null());
    json_object_set_new(o, "total_seconds", json_real(j->total_seconds));
    json_object_set_new(o, "sample_seconds", json_real(j->sample_seconds));
    json_object_set_new(o, "prompt_seconds", json_real(j->prompt_seconds));
    json_object_set_new(o, "n_samples", json_integer(j->n_samples));
    json_object_set_new(o, "temp", level_array_d(j->temp));
    json_object_set_new(o, "top_k", level_array_i(j->top_k));
    json_object_set_new(o, "top_p", level_array_d(j->top_p));
    json_object_set_new(o, "hop_fraction", level_array_d(j->hop_fraction));
    json_object_set_new(o, "max_batch_size", level_array_i(j->max_batch_size));
    json_object_set_new(o, "chunk_size", level_array_i(j->chunk_size));
    // Seeds are 64-bit; JSON integers in jansson are signed 64-bit, so the
    // seed travels as a decimal string to survive every value.
    char seed[32];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)j->seed);
    json_object_set_new(o, "seed", json_string(seed));
    json_t *p = json_array();
    for (int i = 0; i < j->n_pick; i++) json_array_append_new(p, json_integer(j->pick[i]));
    json_object_set_new(o, "pick", p);
    return o;
}

static int get_level_d(json_t *v, const char *key, double *out, jb_err_t *err) {
    if (json_is_number(v)) {   // one number for every level
        for (int l = 0; l < JB_JOB_LEVELS; l++) out[l] = json_number_value(v);
        return 0;
    }
    if (!json_is_array(v) || json_array_size(v) != JB_JOB_LEVELS)
        return jb_err_set(err, JB_EINVAL, "job: '%s' must be a number or [bottom, middle, top]",
                          key);
    for (int l = 0; l < JB_JOB_LEVELS; l++) {
        json_t *e = json_array_get(v, (size_t)l);
        if (!json_is_number(e)) return jb_err_set(err, JB_EINVAL, "job: '%s'[%d] is not a number", key, l);
        out[l] = json_number_value(e);
    }
    return 0;
}

static int get_level_i(json_t *v, const char *key, int *out, jb_err_t *err) {
    if (json_is_integer(v)) {
        for (int l = 0; l < JB_JOB_LEVELS; l++) out[l] = (int)json_integer_value(v);
        return 0;
    }
    if (!json_is_array(v) || json_array_size(v) != JB_JOB_LEVELS)
        return jb_err_set(err, JB_EINVAL, "job: '%s' must be an integer or [bottom, middle, top]",
                          key);
    for (int l = 0; l < JB_JOB_LEVELS; l++) {
        json_t *e = json_array_get(v, (size_t)l);
        if (!json_is_integer(e) || json_integer_value(e) < -1000000000 ||
            json_integer_value(e) > 1000000000)
            return jb_err_set(err, JB_EINVAL, "job: '%s'[%d] is not an integer", key, l);
        out[l] = (int)json_integer_value(e);
    }
    return 0;
}

static int get_string(json_t *v, const char *key, char *out, size_t size, jb_err_t *err) {
    if (!json_is_string(v)) return jb_err_set(err, JB_EINVAL, "job: '%s' is not a string", key);
    if (json_string_length(v) >= size)
        return jb_err_set(err, JB_EINVAL, "job: '%s' longer than %zu bytes", key, size - 1);
    memcpy(out, json_string_value(v), json_string_length(v) + 1);
    return 0;
}

int jb_job_from_json(const json_t *jj, jb_job_t *j, jb_err_t *err) {
    json_t *js = (json_t *)jj;
    if (!json_is_object(js)) return jb_err_set(err, JB_EINVAL, "job: spec is not a JSON object");
    const char *key;
    json_t *v;
    json_object_foreach(js, key, v) {
        int rc = 0;
        if (!strcmp(key, "id")) rc = get_string(v, key, j->id, sizeof j->id, err);
        else if (!strcmp(key, "mode")) {
            if (!json_is_string(v)) rc = jb_err_set(err, JB_EINVAL, "job: 'mode' is not a string");
            else rc = jb_job_mode_parse(json_string_value(v), &j->mode, err);
        } else if (!strcmp(key, "artist")) rc = get_string(v, key, j->artist, sizeof j->artist, err);
        else if (!strcmp(key, "genre")) rc = get_string(v, key, j->genre, sizeof j->genre, err);
        else if (!strcmp(key, "artist_id")) rc = get_level_i(v, key, j->artist_id, err);
        else if (!strcmp(key, "genre_ids")) {
            if (!json_is_array(v) || json_array_size(v) != JB_JOB_LEVELS) {
                rc = jb_err_set(err, JB_EINVAL, "job: 'genre_ids' must be [[..], [..], [..]]");
            } else {
                for (int l = 0; l < JB_JOB_LEVELS && !rc; l++) {
                    json_t *a = json_array_get(v, (size_t)l);
                    if (!json_is_array(a) || json_array_size(a) > JB_JOB_MAX_GENRES) {
                        rc = jb_err_set(err, JB_EINVAL, "job: genre_ids[%d]: a list of at most %d ids",
                                        l, JB_JOB_MAX_GENRES);
                        break;
                    }
                    j->n_genre_ids[l] = (int)json_array_size(a);
                    for (int k = 0; k < j->n_genre_ids[l]; k++) {
                        json_t *e = json_array_get(a, (size_t)k);
                        if (!json_is_integer(e) || json_integer_value(e) < 0 ||
                            json_integer_value(e) > 1000000000) {
                            rc = jb_err_set(err, JB_EINVAL, "job: genre_ids[%d][%d] is not an id", l, k);
                            break;
                        }
                        j->genre_ids[l][k] = (int)json_integer_value(e);
                    }
                }
            }
        } else if (!strcmp(key, "lyrics")) {
            free(j->lyrics);
            j->lyrics = NULL;
            if (json_is_string(v)) {
                j->lyrics = strdup(json_string_value(v));
                if (!j->lyrics) rc = jb_err_set(err, JB_ENOMEM, "job: out of memory");
            } else if (!json_is_null(v)) {
                rc = jb_err_set(err, JB_EINVAL, "job: 'lyrics' is not a string");
            }
        } else if (!strcmp(key, "total_seconds") || !strcmp(key, "sample_seconds") ||
                   !strcmp(key, "prompt_seconds")) {
            if (!json_is_number(v)) rc = jb_err_set(err, JB_EINVAL, "job: '%s' is not a number", key);
            else if (key[0] == 't') j->total_seconds = json_number_value(v);
            else if (key[0] == 's') j->sample_seconds = json_number_value(v);
            else j->prompt_seconds = json_number_value(v);
        } else if (!strcmp(key, "n_samples")) {
            if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 1000000)
                rc = jb_err_set(err, JB_EINVAL, "job: 'n_samples' is not a count");
            else j->n_samples = (int)json_integer_value(v);
        } else if (!strcmp(key, "temp")) rc = get_level_d(v, key, j->temp, err);
        else if (!strcmp(key, "top_k")) rc = get_level_i(v, key, j->top_k, err);
        else if (!strcmp(key, "top_p")) rc = get_level_d(v, key, j->top_p, err);
        else if (!strcmp(key, "hop_fraction")) rc = get_level_d(v, key, j->hop_fraction, err);
        else if (!strcmp(key, "max_batch_size")) rc = get_level_i(v, key, j->max_batch_size, err);
        else if (!strcmp(key, "chunk_size")) rc = get_level_i(v, key, j->chunk_size, err);
        else if (!strcmp(key, "seed")) {
            if (json_is_integer(v) && json_integer_value(v) >= 0) {
                j->seed = (uint64_t)json_integer_value(v);
            } else if (json_is_string(v)) {
                char *end;
                const char *s = json_string_value(v);
                unsigned long long x = strtoull(s, &end, 10);
                if (!*s || *end || s[0] == '-') rc = jb_err_set(err, JB_EINVAL, "job: bad seed '%s'", s);
                else j->seed = x;
            } else {
                rc = jb_err_set(err, JB_EINVAL, "job: 'seed' is not a non-negative integer");
            }
        } else if (!strcmp(key, "pick")) {
            if (!json_is_array(v) || json_array_size(v) > JB_JOB_MAX_PICK) {
                rc = jb_err_set(err, JB_EINVAL, "job: 'pick' must be a list of at most %d indices",
                                JB_JOB_MAX_PICK);
            } else {
                j->n_pick = (int)json_array_size(v);
                for (int i = 0; i < j->n_pick && !rc; i++) {
                    json_t *e = json_array_get(v, (size_t)i);
                    if (!json_is_integer(e) || json_integer_value(e) < 0 ||
                        json_integer_value(e) > 1000000)
                        rc = jb_err_set(err, JB_EINVAL, "job: pick[%d] is not a sample index", i);
                    else j->pick[i] = (int)json_integer_value(e);
                }
            }
        } else {
            rc = jb_err_set(err, JB_EINVAL, "job: unknown field '%s'", key);
        }
        if (rc) return -1;
    }
    return 0;
}
