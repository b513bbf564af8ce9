// convert.c: jukebox-convert, PyTorch checkpoints (*.pth.tar) -> our model files
// (safetensors with "kind", "hparams" and, for label-conditioned priors,
// "artists"/"genres" vocabularies in __metadata__). No Python needed.
//
//   jukebox-convert CHECKPOINT.pth.tar -o MODEL.safetensors [--preset NAME] [--ids DIR]
//   jukebox-convert --model 5b|5b_lyrics|1b_lyrics --in DIR --ids DIR --out DIR
//                   [--hps preset|checkpoint]
//
// Every tensor the model expects (jb_expect.h) is checked: present, right shape,
// right dtype; missing and extra tensors are listed by name and nothing is
// written. Dtypes are kept (fp16 stays fp16). A release is checked whole before
// its first file is written. Files appear only complete (temporary name, rename).
// See docs/convert.md.
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include "jb_err.h"
#include "jb_expect.h"
#include "jb_hparams.h"
#include "jb_log.h"
#include "jb_publish.h"
#include "jb_safetensors.h"
#include "jb_torch.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: jukebox-convert CHECKPOINT.pth.tar -o MODEL.safetensors [--preset NAME] "
            "[--ids DIR]\n"
            "       jukebox-convert --model 5b|5b_lyrics|1b_lyrics --in DIR --ids DIR --out DIR "
            "[--hps preset|checkpoint]\n"
            "\n"
            "Converts OpenAI Jukebox checkpoints (legacy or zip torch.save files) to model files.\n"
            "  -o FILE        output model file (single checkpoint)\n"
            "  --preset NAME  hyper-parameters: vqvae, upsampler_level_0, upsampler_level_1,\n"
            "                 prior_5b, prior_5b_lyrics, prior_1b_lyrics (default: the\n"
            "                 checkpoint's own 'hps' entry)\n"
            "  --ids DIR      directory with v2_artist_ids.txt, v2_genre_ids.txt (and v3_* for\n"
            "                 1b_lyrics): the artist/genre vocabularies of labelled priors\n"
            "  --model NAME   convert a whole release: DIR/vqvae.pth.tar, prior_level_0..2.pth.tar\n"
            "                 -> OUT/vqvae.safetensors, prior_level_0..2.safetensors\n"
            "  --hps WHERE    release mode: hyper-parameters from the presets (default) or from\n"
            "                 each checkpoint's own 'hps' entry\n"
            "  -q             quieter: warnings and errors only\n"
            "Exit codes: 0 done, 64 usage, 65 bad or mismatching checkpoint, 66 file missing,\n"
            "70 internal error, 74 write failed.\n");
}

// ---- vocabularies ------------------------------------------------------------

// Reads "name;id" lines into {"name": id, ...} (names lower-cased, last one wins as in
// a Python dict built from the lines). Ids must be below n_ids (the embedding's rows).
static json_t *read_ids(const char *path, int n_ids, jb_err_t *err) {
    FILE *f = fopen(path, "r");
    if (!f) {
        jb_err_set(err, errno == ENOENT ? JB_ENOENT : JB_EIO, "%s: %s", path, strerror(errno));
        return NULL;
    }
    json_t *o = json_object();
    char line[4096];
    int lineno = 0;
    while (o && fgets(line, sizeof line, f)) {
        lineno++;
        size_t n = strlen(line);
        if (n == sizeof line - 1 && line[n - 1] != '\n') {
            jb_err_set(err, JB_EFORMAT, "%s:%d: line too long", path, lineno);
            goto fail;
        }
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
        if (!n) continue;
        char *semi = strrchr(line, ';');
        char *end = NULL;
        long id = semi ? strtol(semi + 1, &end, 10) : -1;
        if (!semi || semi == line || end == semi + 1 || *end || id < 0) {
            jb_err_set(err, JB_EFORMAT, "%s:%d: expected 'name;id'", path, lineno);
            goto fail;
        }
        if (id >= n_ids) {
            jb_err_set(err, JB_EFORMAT, "%s:%d: id %ld, but the model has %d rows", path,
                       lineno, id, n_ids);
            goto fail;
        }
        *semi = 0;
        for (char *p = line; *p; p++) *p = (char)tolower((unsigned char)*p);
        json_t *v = json_integer(id);
        if (!v || json_object_set_new(o, line, v) != 0) {   // also refuses bad UTF-8
            jb_err_set(err, JB_EFORMAT, "%s:%d: name is not UTF-8", path, lineno);
            goto fail;
        }
    }
    if (ferror(f)) {
        jb_err_set(err, JB_EIO, "%s: read error", path);
        goto fail;
    }
    fclose(f);
    if (!o) jb_err_set(err, JB_ENOMEM, "%s: out of memory", path);
    return o;
fail:
    fclose(f);
    json_decref(o);
    return NULL;
}

// ---- one stage ---------------------------------------------------------------

typedef struct {
    const char *ckpt_path;
    const char *out_path;
    jb_torch_t *ck;
    json_t *hp;          // complete hparams (owned)
    int is_prior;
    jb_expect_t *expect;
    char *artists, *genres;   // vocabularies as JSON text, or NULL
} stage_t;

static void stage_free(stage_t *s) {
    jb_torch_destroy(&s->ck);
    json_decref(s->hp);
    jb_expect_destroy(&s->expect);
    free(s->artists);
    free(s->genres);
    memset(s, 0, sizeof *s);
}

static int kind_from_tensors(const jb_torch_t *ck) {
    for (int i = 0; i < jb_torch_count(ck); i++)
        if (!strncmp(jb_torch_tensor(ck, i)->name, "encoders.", 9) ||
            !strncmp(jb_torch_tensor(ck, i)->name, "bottleneck.", 11))
            return 0;
    return 1;
}

// The VQ-VAE a prior was built on, for a prior hps without one: the given
// dictionary or the preset, with the window of this level as sample_length.
static int nest_vqvae(json_t *hp, const json_t *vq_given, jb_err_t *err) {
    if (json_is_object(json_object_get(hp, "vqvae"))) return 0;
    json_t *vq = vq_given ? json_deep_copy(vq_given) : jb_hparams_preset("vqvae", err);
    if (!vq) return -1;
    jb_vqvae_hparams_t v;
    int level = 0, n_ctx = 0;
    if (jb_vqvae_hparams_parse(vq, &v, err) || jb_hp_int(hp, "level", &level, err) ||
        jb_hp_int(hp, "n_ctx", &n_ctx, err)) {
        json_decref(vq);
        return -1;
    }
    if (level < 0 || level >= v.levels) {
        json_decref(vq);
        return jb_err_set(err, JB_EFORMAT, "hps: level %d outside the VQ-VAE's %d levels", level,
                          v.levels);
    }
    json_object_set_new(vq, "sample_length", json_integer((json_int_t)n_ctx * v.hop_lengths[level]));
    json_object_set_new(hp, "vqvae", vq);
    return 0;
}

// Open, choose hparams, check every tensor. preset may be NULL (use the checkpoint's
// hps); prefer_ckpt: use the checkpoint's hps when it has one even though preset is set.
static int stage_prepare(stage_t *s, const char *preset, int prefer_ckpt, const json_t *vq_hp,
                         const char *ids_dir, jb_err_t *err) {
    jb_log(JB_INFO, "reading %s", s->ckpt_path);
    if (!(s->ck = jb_torch_open(s->ckpt_path, err))) return -1;
    const json_t *own = jb_torch_hps(s->ck);
    size_t bytes = 0;
    for (int i = 0; i < jb_torch_count(s->ck); i++) bytes += jb_torch_tensor(s->ck, i)->nbytes;
    jb_log(JB_INFO, "%s: %s format, %d tensors, %d storages, %.1f MB, step %lld, %s hps",
           s->ckpt_path, jb_torch_format(s->ck) == JB_TORCH_ZIP ? "zip" : "legacy",
           jb_torch_count(s->ck), jb_torch_n_storages(s->ck), bytes / 1e6,
           (long long)jb_torch_step(s->ck), own ? "with" : "no");
    const char *source;
    if (preset && !(prefer_ckpt && own)) {
        if (!(s->hp = jb_hparams_preset(preset, err))) return -1;
        s->is_prior = strcmp(preset, "vqvae") != 0;
        source = preset;
    } else if (own) {
        if (!(s->hp = json_deep_copy(own)))
            return jb_err_set(err, JB_ENOMEM, "out of memory");
        s->is_prior = kind_from_tensors(s->ck);
        if (s->is_prior && nest_vqvae(s->hp, vq_hp, err))
            return jb_err_prefix(err, "%s: hps", s->ckpt_path);
        source = "the checkpoint's hps";
    } else {
        return jb_err_set(err, JB_EINVAL,
                          "%s: the checkpoint has no 'hps' entry: name a --preset", s->ckpt_path);
    }
    jb_log(JB_INFO, "%s: %s, hyper-parameters from %s", s->ckpt_path,
           s->is_prior ? "prior" : "vqvae", source);
    s->expect = s->is_prior ? jb_expect_prior(s->hp, err) : jb_expect_vqvae(s->hp, err);
    if (!s->expect) return jb_err_prefix(err, "%s: hyper-parameters from %s", s->ckpt_path, source);

    // Compare: every problem is listed before failing.
    int missing = 0, extra = 0, wrong = 0;
    for (int i = 0; i < jb_torch_count(s->ck); i++) {
        const jb_torch_tensor_t *t = jb_torch_tensor(s->ck, i);
        int k = jb_expect_find(s->expect, t->name);
        if (k < 0) {
            char sh[96];
            jb_log(JB_ERROR, "%s: extra tensor '%s' %s %s", s->ckpt_path, t->name,
                   jb_dtype_name(t->dtype), jb_shape_str(t->shape, t->ndim, sh, sizeof sh));
            extra++;
        } else if (jb_expect_check(s->expect, k, t->dtype, t->ndim, t->shape, err) != 0) {
            jb_log(JB_ERROR, "%s: %s", s->ckpt_path, err->msg);
            wrong++;
        }
    }
    for (int k = 0; k < s->expect->n; k++)
        if (!jb_torch_find(s->ck, s->expect->t[k].name)) {
            char sh[96];
            jb_log(JB_ERROR, "%s: missing tensor '%s' %s", s->ckpt_path, s->expect->t[k].name,
                   jb_shape_str(s->expect->t[k].shape, s->expect->t[k].ndim, sh, sizeof sh));
            missing++;
        }
    if (missing || extra || wrong)
        return jb_err_set(err, JB_EFORMAT,
                          "%s: does not match its hyper-parameters (%s): %d missing, %d extra, "
                          "%d of wrong shape or dtype (listed above)",
                          s->ckpt_path, source, missing, extra, wrong);
    int by_dt[JB_DTYPE_COUNT] = {0};
    for (int i = 0; i < jb_torch_count(s->ck); i++) by_dt[jb_torch_tensor(s->ck, i)->dtype]++;
    char dts[128] = "";
    for (int k = 0; k < JB_DTYPE_COUNT; k++)
        if (by_dt[k])
            snprintf(dts + strlen(dts), sizeof dts - strlen(dts), " %s:%d",
                     jb_dtype_name((jb_dtype_t)k), by_dt[k]);
    jb_log(JB_INFO, "%s: all %d expected tensors present with the right shapes and dtypes "
           "(%.3g parameters; dtypes kept:%s)", s->ckpt_path, s->expect->n,
           (double)s->expect->n_params, dts);

    // Vocabularies of a label-conditioned prior.
    int labels = 0, v3 = 0;
    if (s->is_prior && (jb_hp_bool(s->hp, "labels", &labels, err) ||
                        jb_hp_bool(s->hp, "labels_v3", &v3, err)))
        return -1;
    if (s->is_prior && labels) {
        if (!ids_dir) {
            jb_log(JB_WARN, "%s: labelled prior but no --ids: no artist/genre vocabularies "
                   "written", s->ckpt_path);
            return 0;
        }
        jb_prior_hparams_t ph;
        if (jb_prior_hparams_parse(s->hp, &ph, err)) return -1;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s_artist_ids.txt", ids_dir, v3 ? "v3" : "v2");
        json_t *a = read_ids(path, ph.y_bins[1], err);
        if (!a) return -1;
        snprintf(path, sizeof path, "%s/%s_genre_ids.txt", ids_dir, v3 ? "v3" : "v2");
        json_t *g = read_ids(path, ph.y_bins[0], err);
        if (!g) {
            json_decref(a);
            return -1;
        }
        s->artists = json_dumps(a, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII);
        s->genres = json_dumps(g, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII);
        jb_log(JB_INFO, "%s: vocabularies %s: %zu artist names, %zu genre names", s->ckpt_path,
               v3 ? "v3" : "v2", json_object_size(a), json_object_size(g));
        json_decref(a);
        json_decref(g);
        if (!s->artists || !s->genres) return jb_err_set(err, JB_ENOMEM, "out of memory");
    }
    return 0;
}

static void progress(size_t done, size_t total, void *user) {
    size_t *next = user;
    if (done >= *next || done == total) {
        jb_log(JB_INFO, "writing: %.1f / %.1f MB (%d%%)", done / 1e6, total / 1e6,
               total ? (int)(100.0 * done / total) : 100);
        *next = done + total / 10 + 1;
    }
}

static int stage_write(stage_t *s, jb_err_t *err) {
    jb_st_writer_t *w = jb_st_writer_new(err);
    if (!w) return -1;
    char *hp = json_dumps(s->hp, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII);
    int rc = -1;
    if (!hp) {
        jb_err_set(err, JB_ENOMEM, "out of memory");
        goto out;
    }
    if (jb_st_writer_meta(w, "kind", s->is_prior ? "prior" : "vqvae", err) ||
        jb_st_writer_meta(w, "hparams", hp, err) ||
        (s->artists && jb_st_writer_meta(w, "artists", s->artists, err)) ||
        (s->genres && jb_st_writer_meta(w, "genres", s->genres, err)))
        goto out;
    size_t total = 0;
    for (int i = 0; i < jb_torch_count(s->ck); i++) {
        const jb_torch_tensor_t *t = jb_torch_tensor(s->ck, i);
        if (jb_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data, err)) goto out;
        total += t->nbytes;
    }
    jb_log(JB_INFO, "writing %s: %d tensors, %.1f MB", s->out_path, jb_torch_count(s->ck),
           total / 1e6);
    size_t next = 0;
    if (jb_st_writer_write(w, s->out_path, progress, &next, err)) goto out;
    jb_log(JB_INFO, "wrote %s: %d tensors, %zu bytes of tensor data", s->out_path,
           jb_torch_count(s->ck), total);
    rc = 0;
out:
    free(hp);
    jb_st_writer_destroy(&w);
    return rc;
}

// ---- main --------------------------------------------------------------------

static int fail(jb_err_t *err) {
    jb_log(JB_ERROR, "%s", err->msg);
    return jb_err_exit_code(err->code);
}

int main(int argc, char **argv) {
    jb_log_set_stage("convert");
    const char *in = NULL, *out = NULL, *preset = NULL, *ids = NULL, *model = NULL,
               *in_dir = NULL, *out_dir = NULL, *hps_from = "preset";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has = i + 1 < argc;
#define OPT(name, var)                                                                     \
    if (!strcmp(a, name)) {                                                                \
        if (!has) {                                                                        \
            fprintf(stderr, "jukebox-convert: %s needs a value\n", name);                  \
            return EX_USAGE;                                                               \
        }                                                                                  \
        var = argv[++i];                                                                   \
        continue;                                                                          \
    }
        OPT("-o", out) OPT("--out", out_dir) OPT("--preset", preset) OPT("--ids", ids)
        OPT("--model", model) OPT("--in", in_dir) OPT("--hps", hps_from)
#undef OPT
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(a, "-q")) {
            jb_log_set_level(JB_WARN);
            continue;
        }
        if (a[0] == '-' && a[1]) {
            fprintf(stderr, "jukebox-convert: unknown option %s\n", a);
            usage(stderr);
            return EX_USAGE;
        }
        if (in) {
            fprintf(stderr, "jukebox-convert: one checkpoint at a time (%s, %s)\n", in, a);
            return EX_USAGE;
        }
        in = a;
    }
    jb_err_t err = {0};
    if (!model) {
        if (!in || !out || in_dir || out_dir) {
            usage(stderr);
            return EX_USAGE;
        }
        if (preset) {
            json_t *p = jb_hparams_preset(preset, &err);
            if (!p) return fail(&err);
            json_decref(p);
        }
        stage_t s = {.ckpt_path = in, .out_path = out};
        int rc = stage_prepare(&s, preset, 0, NULL, ids, &err) || stage_write(&s, &err);
        stage_free(&s);
        return rc ? fail(&err) : 0;
    }

    // A whole release.
    static const char *stage_names[4] = {"vqvae", "prior_level_0", "prior_level_1",
                                         "prior_level_2"};
    const char *presets[4] = {"vqvae", "upsampler_level_0", "upsampler_level_1", NULL};
    if (!strcmp(model, "5b")) presets[3] = "prior_5b";
    else if (!strcmp(model, "5b_lyrics")) presets[3] = "prior_5b_lyrics";
    else if (!strcmp(model, "1b_lyrics")) presets[3] = "prior_1b_lyrics";
    if (!presets[3] || in || out || preset || !in_dir || !out_dir || !ids ||
        (strcmp(hps_from, "preset") && strcmp(hps_from, "checkpoint"))) {
        if (!presets[3]) fprintf(stderr, "jukebox-convert: --model is 5b, 5b_lyrics or 1b_lyrics\n");
        if (!ids) fprintf(stderr, "jukebox-convert: --ids DIR is needed for a release\n");
        usage(stderr);
        return EX_USAGE;
    }
    int prefer_ckpt = !strcmp(hps_from, "checkpoint");
    stage_t st[4] = {{0}};
    char paths[4][2][4096];
    int rc = 0;
    // Check everything first: a release is written only if all of it converts.
    for (int k = 0; k < 4 && !rc; k++) {
        snprintf(paths[k][0], sizeof paths[k][0], "%s/%s.pth.tar", in_dir, stage_names[k]);
        snprintf(paths[k][1], sizeof paths[k][1], "%s/%s.safetensors", out_dir, stage_names[k]);
        st[k].ckpt_path = paths[k][0];
        st[k].out_path = paths[k][1];
        jb_log(JB_INFO, "stage %s (%d/4)", stage_names[k], k + 1);
        const json_t *vq = k > 0 ? st[0].hp : NULL;   // the release's own VQ-VAE
        rc = stage_prepare(&st[k], presets[k], prefer_ckpt, vq, ids, &err);
    }
    if (!rc) rc = jb_publish_mkdirs(out_dir, &err);   // README: --out models/5b_lyrics
    for (int k = 0; k < 4 && !rc; k++) rc = stage_write(&st[k], &err);
    for (int k = 0; k < 4; k++) stage_free(&st[k]);
    if (rc) return fail(&err);
    jb_log(JB_INFO, "release %s converted into %s", model, out_dir);
    return 0;
}
