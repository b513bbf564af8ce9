// golden_pipeline.c: kind `pipeline` (README section C): the sample.py flow over the three
// levels, ancestral and then primed from the stored prompt codes; codes must be equal.
// The window starts of every level are checked against case.json too; the prompt codes
// are the VQ-VAE's encoding of the prompt audio (checked), and the audio is the level-0
// decode of the codes (checked against `audio` / `primed.audio`).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "golden.h"
#include "golden_device.h"
#include "jb_labels.h"
#include "jb_prior.h"
#include "jb_safetensors.h"
#include "jb_sample.h"
#include "jb_vqvae.h"

#define LEVELS 3

static int run(const golden_case_t *c, golden_result_t *r, jb_st_t *io, jb_prior_t **priors,
               jb_vqvae_t *vq, int primed) {
    jb_err_t err = {0};
    json_t *js = c->json;
    int N = (int)json_integer_value(json_object_get(js, "n_samples"));
    int sample_length = (int)json_integer_value(json_object_get(js, "sample_length"));
    int prompt_length = (int)json_integer_value(json_object_get(js, "prompt_length"));
    json_t *metas = json_object_get(js, "metas");
    int32_t *zs[LEVELS] = {0};
    int len[LEVELS] = {0}, rc = -1;
    int32_t *lyr_buf[16] = {0};
    jb_sample_lyrics_t lyrics[16];
    if (N < 1 || N > 16 || (int)json_array_size(metas) != N) {
        golden_fail(r, "case.json: n_samples %d, %d metas", N, (int)json_array_size(metas));
        return -1;
    }
    for (int i = 0; i < N; i++) {
        json_t *ft = json_object_get(json_array_get(metas, i), "full_lyric_tokens");
        int n = (int)json_array_size(ft);
        lyr_buf[i] = malloc(sizeof(int32_t) * (size_t)(n ? n : 1));
        for (int k = 0; k < n; k++) lyr_buf[i][k] = (int32_t)json_integer_value(json_array_get(ft, k));
        lyrics[i].tokens = lyr_buf[i], lyrics[i].n = n;
    }
    for (int level = LEVELS - 1; level >= 0; level--) {
        jb_prior_t *p = priors[level];
        const jb_prior_info_t *in = jb_prior_info(p);
        char key[16], name[64];
        snprintf(key, sizeof key, "%d", level);
        json_t *sk = json_object_get(json_object_get(js, "sampling"), key);
        double hopf = json_real_value(json_array_get(json_object_get(js, "hop_fraction"), level));
        int total = sample_length / in->raw_to_tokens, stride = total + in->n_ctx;
        int hop = (int)(hopf * in->n_ctx);
        zs[level] = calloc((size_t)N * stride, sizeof(int32_t));
        int have = 0;
        if (primed) {
            snprintf(name, sizeof name, "primed.prompt_zs.%d", level);
            int32_t *pz = jb_st_get_i32(io, name, -1, NULL, &err);
            have = prompt_length / in->raw_to_tokens;
            if (!pz) {
                golden_fail(r, "%s", err.msg);
                goto done;
            }
            for (int i = 0; i < N; i++)
                memcpy(zs[level] + (int64_t)i * stride, pz + (int64_t)i * have,
                       sizeof(int32_t) * (size_t)have);
            jb_free(pz);
        }
        if (primed && level == LEVELS - 1) {   // the prompt codes: encode(prompt_audio)
            float *pa = jb_st_get_f32(io, "prompt_audio", -1, NULL, &err);
            for (int l = 0; pa && l < LEVELS; l++) {
                int hl = jb_vqvae_hparams(vq)->hop_lengths[l], nl = prompt_length / hl;
                int32_t *enc = malloc(sizeof(int32_t) * (size_t)N * nl);
                snprintf(name, sizeof name, "primed.prompt_zs.%d", l);
                int32_t *want = jb_st_get_i32(io, name, -1, NULL, &err);
                if (!enc || !want || jb_vqvae_encode(vq, pa, N, prompt_length, l, enc, 0, &err))
                    golden_fail(r, "encode prompt level %d: %s", l, err.msg);
                else
                    golden_check_equal_i32(r, name, enc, want, (int64_t)N * nl);
                free(enc);
                jb_free(want);
            }
            jb_free(pa);
        }
        if (!primed) {   // window starts as the reference computed them
            json_t *ws = json_object_get(json_object_get(json_object_get(js, "windows"), key),
                                         "starts");
            int64_t st[4096], ns = 0;
            int32_t ours[4096], ref[4096];
            int nref = (int)json_array_size(ws);
            if (nref <= 4096 && !jb_labels_starts(total, in->n_ctx, hop, st, 4096, &ns, &err) &&
                ns == nref) {
                for (int k = 0; k < nref; k++) {
                    ours[k] = (int32_t)st[k];
                    ref[k] = (int32_t)json_integer_value(json_array_get(ws, k));
                }
                snprintf(name, sizeof name, "starts.%d", level);
                golden_check_equal_i32(r, name, ours, ref, nref);
            } else {
                golden_fail(r, "level %d: %lld window starts, reference %d", level,
                            (long long)ns, nref);
            }
        }
        json_t *tk = json_object_get(sk, "top_k");
        jb_sample_opts_t o = {
            .sampling = jb_sampling_default_params(),
            .chunk_size = (int)json_integer_value(json_object_get(sk, "chunk_size")),
            .max_batch_size = (int)json_integer_value(json_object_get(sk, "max_batch_size")),
            .hop_length = hop, .seed = 0, .job_hash = jb_rng_hash_job(c->name)};
        o.sampling.temp = (float)json_number_value(json_object_get(sk, "temp"));
        o.sampling.top_k = tk ? (int)json_integer_value(tk) : 0;
        snprintf(name, sizeof name, "labels.y.%d", level);
        int32_t *y = jb_st_get_i32(io, name, -1, NULL, &err);
        jb_prior_sampler_t *s = jb_prior_sampler_new(p, o.max_batch_size, o.chunk_size, &err);
        void *dev = NULL;
        int out_len = 0;
        int e = !s || golden_prior_device(s, &dev, &err) || (in->labels && !y) ||
                jb_sample_level(s, &o, N, total, zs[level], stride, have,
                                level + 1 < LEVELS ? zs[level + 1] : NULL,
                                level + 1 < LEVELS ? len[level + 1] : 0, y, lyrics, &out_len,
                                &err);
        golden_prior_release(s, &dev);
        jb_prior_sampler_destroy(&s);
        jb_free(y);
        if (e) {
            golden_fail(r, "%s level %d: %s", primed ? "primed" : "ancestral", level, err.msg);
            goto done;
        }
        len[level] = stride;   // row stride of the level for the one below
        snprintf(name, sizeof name, primed ? "primed.zs.%d" : "zs.%d", level);
        int32_t *ref = jb_st_get_i32(io, name, -1, NULL, &err);
        if (!ref) {
            golden_fail(r, "%s", err.msg);
            goto done;
        }
        if (out_len != total) {
            golden_fail(r, "%s: %d codes, expected %d", name, out_len, total);
        } else {
            int32_t *ours = malloc(sizeof(int32_t) * (size_t)N * total);
            for (int i = 0; i < N; i++)
                memcpy(ours + (int64_t)i * total, zs[level] + (int64_t)i * stride,
                       sizeof(int32_t) * (size_t)total);
            golden_check_equal_i32(r, name, ours, ref, (int64_t)N * total);
            free(ours);
        }
        jb_free(ref);
    }
    {   // audio: decode of the level-0 codes
        int T0 = sample_length / jb_vqvae_hparams(vq)->hop_lengths[0];
        int32_t *z0 = malloc(sizeof(int32_t) * (size_t)N * T0);
        float *audio = malloc(sizeof(float) * (size_t)N * sample_length);
        const char *an = primed ? "primed.audio" : "audio";
        float *want = jb_st_get_f32(io, an, -1, NULL, &err);
        for (int i = 0; z0 && i < N; i++)
            memcpy(z0 + (int64_t)i * T0, zs[0] + (int64_t)i * len[0], sizeof(int32_t) * T0);
        if (!z0 || !audio || !want || jb_vqvae_decode(vq, z0, N, T0, 0, audio, 0, &err)) {
            golden_fail(r, "%s: %s", an, err.msg);
        } else {
            double rel, abs;
            golden_tolerance(c, an, want, (int64_t)N * sample_length, &rel, &abs);
            golden_check_close(r, an, audio, want, (int64_t)N * sample_length, rel, abs);
        }
        free(z0), free(audio);
        jb_free(want);
    }
    rc = 0;
done:
    for (int l = 0; l < LEVELS; l++) free(zs[l]);
    for (int i = 0; i < N && i < 16; i++) free(lyr_buf[i]);
    return rc;
}

int golden_run_pipeline(const golden_case_t *c, golden_result_t *r) {
    jb_err_t err = {0};
    jb_prior_t *priors[LEVELS] = {0};
    jb_vqvae_t *vq = NULL;
    void *dev = NULL;
    jb_st_t *vst = NULL;
    int rc = -1;
    jb_st_t *io = jb_st_open(golden_path(c, "io.safetensors"), &err);
    if (!io) {
        golden_fail(r, "%s", err.msg);
        return -1;
    }
    for (int l = 0; l < LEVELS; l++) {
        char f[64];
        snprintf(f, sizeof f, "prior_level_%d.safetensors", l);
        if (!(priors[l] = jb_prior_new(golden_path(c, f), &err))) {
            golden_fail(r, "load: %s", err.msg);
            goto done;
        }
    }
    if (!(vst = jb_st_open(golden_path(c, "vqvae.safetensors"), &err)) ||
        !(vq = jb_vqvae_new(vst, 0, &err)) || golden_vqvae_device(vq, &dev, &err)) {
        golden_fail(r, "vqvae: %s", err.msg);
        goto done;
    }
    if (run(c, r, io, priors, vq, 0) == 0 && run(c, r, io, priors, vq, 1) == 0) rc = 0;
done:
    golden_vqvae_release(vq, &dev);
    jb_vqvae_destroy(&vq);
    jb_st_close(&vst);
    for (int l = 0; l < LEVELS; l++) jb_prior_destroy(&priors[l]);
    jb_st_close(&io);
    return rc;
}
