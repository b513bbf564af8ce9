// jb_outdir.c: see jb_outdir.h.
#include "jb_outdir.h"

#include <errno.h>
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

static int rm_rf(const char *path) {
    // Only ever called on our own ".partial" directory.
    char cmd[4400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    return system(cmd);
}

static int make_dir(const char *path, jb_err_t *err) {
    if (mkdir(path, 0755) != 0 && errno != EEXIST)
        return jb_err_set(err, errno == ENOENT ? JB_ENOENT : JB_EIO, "%s: cannot create: %s", path,
                          strerror(errno));
    return 0;
}

static int write_json(const char *path, json_t *j, jb_err_t *err) {
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    if (json_dump_file(j, tmp, JSON_INDENT(2) | JSON_SORT_KEYS) != 0 || rename(tmp, path) != 0) {
        unlink(tmp);
        return jb_err_set(err, JB_EIO, "%s: write failed: %s", path, strerror(errno));
    }
    return 0;
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

int jb_outdir_write(const char *root, jb_vqvae_t *vq, const jb_outdir_job_t *o,
                    char **final_dir, jb_err_t *err) {
    const jb_codes_t *c = o->codes;
    const jb_vqvae_hparams_t *hp = jb_vqvae_hparams(vq);
    char partial[4096], final[4096], path[4400];
    float *audio = NULL;
    json_t *spec = NULL, *labels = NULL;
    jb_html_sample_t *samples = NULL;
    char **hrefs = NULL;
    int rc = -1, n = c->n_samples;
    if (pick_names(root, c->job_id, partial, final, sizeof partial, err)) return -1;

    // job.json, labels.json, codes.jbc
    json_error_t jerr;
    spec = c->spec ? json_loads(c->spec, 0, &jerr) : json_object();
    if (!spec) {
        jb_err_set(err, JB_EFORMAT, "job %s: spec: %s", c->job_id, jerr.text);
        goto done;
    }
    snprintf(path, sizeof path, "%s/job.json", partial);
    if (write_json(path, spec, err)) goto done;
    labels = json_object();
    for (int l = 0; l < c->levels && l < JB_CODES_MAX_LEVELS; l++) {
        json_t *v = o->labels[l] ? json_loads(o->labels[l], 0, NULL) : NULL;
        char key[32];
        snprintf(key, sizeof key, "level_%d", l);
        json_object_set_new(labels, key, v ? v : json_null());
    }
    snprintf(path, sizeof path, "%s/labels.json", partial);
    if (write_json(path, labels, err)) goto done;
    snprintf(path, sizeof path, "%s/codes.jbc", partial);
    if (jb_codes_save(c, path, err)) goto done;

    // Audio of every level present, top first (the preview is the quickest).
    int best = -1;
    for (int l = c->levels - 1; l >= 0; l--) {
        int64_t T_L = jb_codes_len(c, l);
        if (T_L <= 0 || l >= hp->levels) continue;
        int64_t T = T_L * hp->hop_lengths[l];
        int64_t keep = c->audio_len > 0 && c->audio_len < T ? c->audio_len : T;
        free(audio);
        audio = malloc(sizeof(float) * (size_t)T);
        int32_t *row = malloc(sizeof(int32_t) * (size_t)T_L);
        if (!audio || !row) {
            free(row);
            jb_err_set(err, JB_ENOMEM, "job %s: out of memory for %lld samples", c->job_id,
                       (long long)T);
            goto done;
        }
        snprintf(path, sizeof path, "%s/level_%d", partial, l);
        if (make_dir(path, err)) {
            free(row);
            goto done;
        }
        for (int k = 0; k < n; k++) {
            if (o->audio[l] && o->audio_len[l] >= T) {   // decoded while it streamed in
                memcpy(audio, o->audio[l] + (size_t)k * o->audio_len[l], sizeof(float) * (size_t)T);
            } else if (memcpy(row, jb_codes_row(c, l, k), sizeof(int32_t) * (size_t)T_L),
                       jb_vqvae_decode(vq, row, 1, T_L, l, audio, 0, err)) {
                free(row);
                jb_err_prefix(err, "job %s level %d sample %d", c->job_id, l, k);
                goto done;
            }
            snprintf(path, sizeof path, "%s/level_%d/sample_%d.wav", partial, l, k);
            if (jb_audio_write(path, audio, keep, hp->sr, JB_AUDIO_WAV_PCM16, err)) {
                free(row);
                goto done;
            }
        }
        free(row);
        jb_log(JB_INFO, "job=%s level=%d decoded %d sample(s), %.2f s", c->job_id, l, n,
               (double)keep / hp->sr);
        best = l;
    }

    // The page.
    samples = calloc((size_t)(n ? n : 1), sizeof *samples);
    hrefs = calloc((size_t)(2 * n + 1), sizeof *hrefs);
    if (!samples || !hrefs) {
        jb_err_set(err, JB_ENOMEM, "out of memory");
        goto done;
    }
    int top = c->levels - 1;
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
    char details[256];
    snprintf(details, sizeof details, "mode %s, %d sample(s), %.2f s, temperature %.3g/%.3g/%.3g, seed %llu",
             jb_job_mode_name(job.mode), n, jb_job_sample_length(&job, hp->sr, hp->hop_lengths[top]) /
             (double)hp->sr, job.temp[2], job.temp[1], job.temp[0], (unsigned long long)job.seed);
    const char *lyrics = o->align_lyrics;
    if (!lyrics) {   // the top level's cleaned lyrics, as its stage reported them
        json_t *lt = json_object_get(json_object_get(labels, "level_2"), "lyrics");
        lyrics = json_string_value(lt);
    }
    // Names as given, else the ids the top stage used.
    char artist[160], genre[160];
    json_t *top_labels = json_object_get(labels, "level_2");
    snprintf(artist, sizeof artist, "%s", job.artist);
    snprintf(genre, sizeof genre, "%s", job.genre);
    if (!artist[0] && json_is_integer(json_object_get(top_labels, "artist_id")))
        snprintf(artist, sizeof artist, "id %lld",
                 (long long)json_integer_value(json_object_get(top_labels, "artist_id")));
    json_t *gids = json_object_get(top_labels, "genre_ids");
    if (!genre[0] && json_is_array(gids) && json_array_size(gids) > 0) {
        size_t len = (size_t)snprintf(genre, sizeof genre, "ids");
        for (size_t i = 0; i < json_array_size(gids) && len < sizeof genre; i++)
            len += (size_t)snprintf(genre + len, sizeof genre - len, " %lld",
                                    (long long)json_integer_value(json_array_get(gids, i)));
    }
    jb_html_page_t page = {.title = c->job_id, .artist = artist, .genre = genre,
                           .lyrics = lyrics ? lyrics : (job.lyrics ? job.lyrics : ""),
                           .details = details, .n_samples = n, .samples = samples};
    int hrc = jb_html_write(partial, &page, err);
    jb_job_free(&job);
    if (hrc) goto done;
    rc = publish(partial, final, final_dir, err);
done:
    if (rc) rm_rf(partial);
    free(audio);
    json_decref(spec);
    json_decref(labels);
    for (int k = 0; hrefs && k < 2 * n; k++) free(hrefs[k]);
    free(hrefs);
    free(samples);
    return rc;
}
