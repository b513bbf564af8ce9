// jb_outdir.c: see jb_outdir.h.
#include "jb_outdir.h"

#include <errno.h>
#include <ftw.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "jb_audio.h"
#include "jb_html.h"
#include "jb_job.h"
#include "jb_log.h"
#include "jb_publish.h"

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(path) != 0 && errno != ENOENT ? -1 : 0;
}

// Only ever called on our own ".partial" directory: depth first, links not followed.
static int rm_rf(const char *path) {
    return nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static int make_dir(const char *path, jb_err_t *err) {
    if (mkdir(path, 0755) != 0 && errno != EEXIST)
        // An output that cannot be made is an I/O failure (exit 74, wire.md 8.5), also
        // when its parent is missing: 66 is for inputs (the model, the codes file).
        return jb_err_set(err, JB_EIO, "%s: cannot create: %s", path, strerror(errno));
    return 0;
}

static int write_json(const char *path, json_t *j, jb_err_t *err) {
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);
    if (!text) return jb_err_set(err, JB_ENOMEM, "%s: cannot serialise", path);
    int rc = jb_publish_bytes(path, text, strlen(text), err);
    free(text);
    return rc;
}

// ROOT/.<id>.partial, and the final name that does not exist yet.
static int pick_names(const char *root, const char *id, char *partial, char *final, size_t n,
                      jb_err_t *err) {
    if (make_dir(root, err)) return -1;
    snprintf(partial, n, "%s/.%s.partial", root, id);
    if (access(partial, F_OK) == 0 && rm_rf(partial) != 0)
        return jb_err_set(err, JB_EIO, "%s: cannot remove a stale partial run", partial);
    snprintf(final, n, "%s/%s", root, id);
    for (int k = 1; access(final, F_OK) == 0; k++) {
        if (k > 999) return jb_err_set(err, JB_EIO, "%s: too many runs with this id", final);
        snprintf(final, n, "%s/%s.%d", root, id, k);
    }
    return make_dir(partial, err);
}

static int publish(const char *partial, const char *final, char **final_dir, jb_err_t *err) {
    if (rename(partial, final) != 0) {
        int e = errno;
        rm_rf(partial);
        return jb_err_set(err, JB_EIO, "%s: cannot rename to %s: %s", partial, final, strerror(e));
    }
    if (jb_publish_sync_dir(final, err)) return -1;   // the new name survives a crash
    if (final_dir) *final_dir = strdup(final);
    return 0;
}

int jb_outdir_write_error(const char *root, const char *job_id, int level, int code,
                          const char *message, jb_err_t *err) {
    char partial[4096], final[4096], path[4200];
    if (pick_names(root, job_id, partial, final, sizeof partial, err)) return -1;
    json_t *j = json_pack("{s:s, s:i, s:i, s:s}", "job", job_id, "level", level, "code", code,
                          "error", message ? message : "");
    snprintf(path, sizeof path, "%s/error.json", partial);
    int rc = j ? write_json(path, j, err) : jb_err_set(err, JB_ENOMEM, "out of memory");
    json_decref(j);
    if (rc) {
        rm_rf(partial);
        return -1;
    }
    return publish(partial, final, NULL, err);
}

// job.json (the spec), labels.json (each level's labels as its stage reported them) and
// codes.jbc into the partial directory; *spec and *labels are kept for the page.
static int write_meta(const char *partial, const jb_outdir_job_t *o, json_t **spec,
                      json_t **labels, jb_err_t *err) {
    const jb_codes_t *c = o->codes;
    char path[4400];
    json_error_t jerr;
    *spec = c->spec ? json_loads(c->spec, 0, &jerr) : json_object();
    if (!*spec) return jb_err_set(err, JB_EFORMAT, "job %s: spec: %s", c->job_id, jerr.text);
    snprintf(path, sizeof path, "%s/job.json", partial);
    if (write_json(path, *spec, err)) return -1;
    *labels = json_object();
    if (!*labels) return jb_err_set(err, JB_ENOMEM, "out of memory");
    for (int l = 0; l < c->levels && l < JB_CODES_MAX_LEVELS; l++) {
        json_t *v = o->labels[l] ? json_loads(o->labels[l], 0, NULL) : NULL;
        char key[32];
        snprintf(key, sizeof key, "level_%d", l);
        json_object_set_new(*labels, key, v ? v : json_null());
    }
    snprintf(path, sizeof path, "%s/labels.json", partial);
    if (write_json(path, *labels, err)) return -1;
    snprintf(path, sizeof path, "%s/codes.jbc", partial);
    return jb_codes_save(c, path, err);
}

// Per sample and level: the audio and waveform names the page links ("level_L/sample_K").
typedef char level_names_t[2][48];

// level_L/sample_K.wav and its waveform level_L/sample_K.png of every level present, top
// first (the preview is the quickest): the audio decoded while the codes streamed in, or
// decoded here. *best: the lowest level written (-1: none). samples[k].levels lists what was
// written for the page, finest first (names in lnames, JB_HTML_MAX_LEVELS per sample).
static int write_audio(const char *partial, jb_vqvae_t *vq, const jb_outdir_job_t *o, int *best,
                       jb_html_sample_t *samples, level_names_t *lnames, jb_err_t *err) {
    const jb_codes_t *c = o->codes;
    const jb_vqvae_hparams_t *hp = jb_vqvae_hparams(vq);
    char path[4400];
    int n = c->n_samples, rc = -1;
    float *audio = NULL;
    int32_t *row = NULL;
    *best = -1;
    for (int l = c->levels - 1; l >= 0; l--) {
        int64_t T_L = jb_codes_len(c, l);
        if (T_L <= 0 || l >= hp->levels) continue;
        int64_t T = T_L * hp->hop_lengths[l];
        int64_t keep = c->audio_len > 0 && c->audio_len < T ? c->audio_len : T;
        free(audio), free(row);
        audio = malloc(sizeof(float) * (size_t)T);
        row = malloc(sizeof(int32_t) * (size_t)T_L);
        if (!audio || !row) {
            jb_err_set(err, JB_ENOMEM, "job %s: out of memory for %lld samples", c->job_id,
                       (long long)T);
            goto done;
        }
        snprintf(path, sizeof path, "%s/level_%d", partial, l);
        if (make_dir(path, err)) goto done;
        for (int k = 0; k < n; k++) {
            if (o->audio[l] && o->audio_len[l] >= T) {   // decoded while it streamed in
                memcpy(audio, o->audio[l] + (size_t)k * o->audio_len[l], sizeof(float) * (size_t)T);
            } else if (memcpy(row, jb_codes_row(c, l, k), sizeof(int32_t) * (size_t)T_L),
                       jb_vqvae_decode(vq, row, 1, T_L, l, audio, 0, err)) {
                jb_err_prefix(err, "job %s level %d sample %d", c->job_id, l, k);
                goto done;
            }
            snprintf(path, sizeof path, "%s/level_%d/sample_%d.wav", partial, l, k);
            if (jb_audio_write(path, audio, keep, hp->sr, JB_AUDIO_WAV_PCM16, err)) goto done;
            snprintf(path, sizeof path, "%s/level_%d/sample_%d.png", partial, l, k);
            if (jb_html_write_waveform(path, audio, keep, 800, 64, err)) goto done;
            jb_html_sample_t *hs = &samples[k];
            if (hs->n_levels < JB_HTML_MAX_LEVELS) {
                memmove(&hs->levels[1], &hs->levels[0], sizeof hs->levels[0] * hs->n_levels);
                char (*nm)[48] = lnames[(size_t)k * JB_HTML_MAX_LEVELS + hs->n_levels];
                snprintf(nm[0], sizeof nm[0], "level_%d/sample_%d.wav", l, k);
                snprintf(nm[1], sizeof nm[1], "level_%d/sample_%d.png", l, k);
                hs->levels[0] = (jb_html_level_t){.level = l, .audio_href = nm[0],
                                                  .picture_href = nm[1],
                                                  .seconds = (double)keep / hp->sr,
                                                  .ready_s = o->level_seconds[l]};
                hs->n_levels++;
                hs->seconds = (double)keep / hp->sr;   // the finest level decoded so far
            }
        }
        jb_log(JB_INFO, "job=%s level=%d decoded %d sample(s), %.2f s", c->job_id, l, n,
               (double)keep / hp->sr);
        *best = l;
    }
    rc = 0;
done:
    free(audio), free(row);
    return rc;
}

// The names the page shows: as given in the job, else the ids the top stage used.
static void page_names(const jb_job_t *job, json_t *labels, char *artist, size_t an,
                       char *genre, size_t gn) {
    json_t *top_labels = json_object_get(labels, "level_2");
    snprintf(artist, an, "%s", job->artist);
    snprintf(genre, gn, "%s", job->genre);
    if (!artist[0] && json_is_integer(json_object_get(top_labels, "artist_id")))
        snprintf(artist, an, "id %lld",
                 (long long)json_integer_value(json_object_get(top_labels, "artist_id")));
    json_t *gids = json_object_get(top_labels, "genre_ids");
    if (!genre[0] && json_is_array(gids) && json_array_size(gids) > 0) {
        size_t len = (size_t)snprintf(genre, gn, "ids");
        for (size_t i = 0; i < json_array_size(gids) && len < gn; i++)
            len += (size_t)snprintf(genre + len, gn - len, " %lld",
                                    (long long)json_integer_value(json_array_get(gids, i)));
    }
}

// index.html: each sample's audio (the lowest level written) and the top level's preview,
// the lyric alignment, the job's settings.
static int write_page(const char *partial, jb_vqvae_t *vq, const jb_outdir_job_t *o, int best,
                      json_t *spec, json_t *labels, jb_html_sample_t *samples, jb_err_t *err) {
    const jb_codes_t *c = o->codes;
    const jb_vqvae_hparams_t *hp = jb_vqvae_hparams(vq);
    int n = c->n_samples, top = c->levels - 1, rc = -1;
    char **hrefs = calloc((size_t)(2 * n + 1), sizeof *hrefs);
    if (!hrefs) {
        jb_err_set(err, JB_ENOMEM, "out of memory");
        goto done;
    }
    for (int k = 0; k < n; k++) {
        char h[64];
        if (best >= 0) {
            snprintf(h, sizeof h, "level_%d/sample_%d.wav", best, k);
            hrefs[2 * k] = strdup(h);
            samples[k].audio_href = hrefs[2 * k];
        }
        if (best >= 0 && best != top && jb_codes_len(c, top) > 0) {
            snprintf(h, sizeof h, "level_%d/sample_%d.wav", top, k);
            hrefs[2 * k + 1] = strdup(h);
            samples[k].preview_href = hrefs[2 * k + 1];
        }
        if (o->alignment && o->align_cols > 0) {
            samples[k].alignment = o->alignment + (size_t)k * o->align_tokens * o->align_cols;
            samples[k].n_frames = (int)o->align_tokens;
            samples[k].n_chars = o->align_cols;
            samples[k].rows_per_frame = 1;   // the top stage sends one row per animation frame
        }
    }
    jb_job_t job;
    jb_job_defaults(&job);
    jb_err_t jerr2 = {0};
    jb_job_from_json(spec, &job, &jerr2);   // best effort: the page shows what it can
    char details[512];
    snprintf(details, sizeof details, "mode %s, %d sample(s), %.2f s of a %g s song, "
             "temperature %.3g/%.3g/%.3g, top-k %d/%d/%d, top-p %.3g/%.3g/%.3g, "
             "hop fraction %.3g/%.3g/%.3g (top/middle/bottom), seed %llu",
             jb_job_mode_name(job.mode), n, jb_job_sample_length(&job, hp->sr, hp->hop_lengths[top]) /
             (double)hp->sr, job.total_seconds, job.temp[2], job.temp[1], job.temp[0],
             job.top_k[2], job.top_k[1], job.top_k[0], job.top_p[2], job.top_p[1], job.top_p[0],
             job.hop_fraction[2], job.hop_fraction[1], job.hop_fraction[0],
             (unsigned long long)job.seed);
    const char *lyrics = o->align_lyrics;
    if (!lyrics) {   // the top level's cleaned lyrics, as its stage reported them
        json_t *lt = json_object_get(json_object_get(labels, "level_2"), "lyrics");
        lyrics = json_string_value(lt);
    }
    char artist[160], genre[160];
    page_names(&job, labels, artist, sizeof artist, genre, sizeof genre);
    jb_html_page_t page = {.title = c->job_id, .artist = artist, .genre = genre,
                           .lyrics = lyrics ? lyrics : (job.lyrics ? job.lyrics : ""),
                           .details = details, .n_samples = n, .samples = samples};
    rc = jb_html_write(partial, &page, err);
    jb_job_free(&job);
done:
    for (int k = 0; hrefs && k < 2 * n; k++) free(hrefs[k]);
    free(hrefs);
    return rc;
}

int jb_outdir_write(const char *root, jb_vqvae_t *vq, const jb_outdir_job_t *o,
                    char **final_dir, jb_err_t *err) {
    char partial[4096], final[4096];
    json_t *spec = NULL, *labels = NULL;
    int best = -1, n = o->codes->n_samples;
    jb_html_sample_t *samples = calloc((size_t)(n ? n : 1), sizeof *samples);
    level_names_t *lnames = calloc((size_t)(n ? n : 1) * JB_HTML_MAX_LEVELS, sizeof *lnames);
    if (!samples || !lnames) {
        free(samples);
        free(lnames);
        return jb_err_set(err, JB_ENOMEM, "job %s: out of memory", o->codes->job_id);
    }
    if (pick_names(root, o->codes->job_id, partial, final, sizeof partial, err)) {
        free(samples);
        free(lnames);
        return -1;
    }
    int rc = write_meta(partial, o, &spec, &labels, err) ||
                     write_audio(partial, vq, o, &best, samples, lnames, err) ||
                     write_page(partial, vq, o, best, spec, labels, samples, err) ||
                     publish(partial, final, final_dir, err)
                 ? -1
                 : 0;
    if (rc) rm_rf(partial);
    free(samples);
    free(lnames);
    json_decref(spec);
    json_decref(labels);
    return rc;
}
