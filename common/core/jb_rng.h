// jb_rng.h: counter-based random numbers (Philox4x32-10, Salmon et al., SC'11,
// "Parallel random numbers: as easy as 1, 2, 3"; the Random123 reference algorithm).
//
// A draw is a pure function of (seed, job, sample, level, position, draw index), so
// the same seed and settings give the same draws on every run, in any process, on the
// CPU or the GPU, and a sample's draws do not depend on the batch it is computed in
// (the batch slot is not an input, the sample's index within the job is).
//
//   key     = splitmix64(seed ^ splitmix64(job_hash))            2 x 32 bits
//   counter = { position low 32, position high 32, sample, level | draw << 8 }
//
// job_hash = jb_rng_hash_job(job id string) (FNV-1a 64). Levels are 0..255; draw
// indices 0..2^24-1 (several numbers at one position: e.g. one per vocabulary bin
// for Gumbel-max). Each Philox call gives 4 words; jb_rng_uniform uses word 0,
// jb_rng_uniform_f64 words 0 and 1.
//
// The bodies are JB_HD static inline (common/jb_kernels.h) so CUDA kernels use them.
// Thread rules: no state; everything is reentrant.
#ifndef JB_RNG_H
#define JB_RNG_H

#include <math.h>
#include <stdint.h>

#include "jb_kernels.h"

typedef struct {
    uint32_t key[2];    // from seed and job
    uint32_t sample;    // the sample's index within its job (not its batch slot)
    uint32_t level;     // 0..255
} jb_rng_stream_t;

// FNV-1a 64 of a job id (NUL-terminated). Stable across platforms and builds.
uint64_t jb_rng_hash_job(const char *job_id);

JB_HD static inline uint64_t jb_rng_splitmix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

JB_HD static inline jb_rng_stream_t jb_rng_stream(uint64_t seed, uint64_t job_hash,
                                                  uint32_t sample, uint32_t level) {
    uint64_t k = jb_rng_splitmix64(seed ^ jb_rng_splitmix64(job_hash));
    jb_rng_stream_t s;
    s.key[0] = (uint32_t)k;
    s.key[1] = (uint32_t)(k >> 32);
    s.sample = sample;
    s.level = level & 0xFFu;
    return s;
}

// Philox4x32 with R rounds (R = 10 is Philox4x32-10). ctr: (4), key: (2), out: (4).
JB_HD static inline void jb_rng_philox4x32(const uint32_t ctr[4], const uint32_t key[2],
                                           int rounds, uint32_t out[4]) {
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
    uint32_t k0 = key[0], k1 = key[1];
    for (int r = 0; r < rounds; r++) {
        if (r > 0) {            // key schedule: Weyl sequence, bumped between rounds
            k0 += 0x9E3779B9u;
            k1 += 0xBB67AE85u;
        }
        uint64_t p0 = (uint64_t)0xD2511F53u * c0;
        uint64_t p1 = (uint64_t)0xCD9E8D57u * c2;
        uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
        uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
        c0 = hi1 ^ c1 ^ k0;
        c1 = lo1;
        c2 = hi0 ^ c3 ^ k1;
        c3 = lo0;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

// The 4 words at (stream, position, draw).
JB_HD static inline void jb_rng_words(jb_rng_stream_t s, uint64_t position, uint32_t draw,
                                      uint32_t out[4]) {
    uint32_t ctr[4] = {(uint32_t)position, (uint32_t)(position >> 32), s.sample,
                       s.level | (draw << 8)};
    jb_rng_philox4x32(ctr, s.key, 10, out);
}

// Uniform in [0, 1) on a 2^-24 grid (exactly representable in float).
JB_HD static inline float jb_rng_uniform(jb_rng_stream_t s, uint64_t position, uint32_t draw) {
    uint32_t w[4];
    jb_rng_words(s, position, draw, w);
    return (float)(w[0] >> 8) * (1.0f / 16777216.0f);
}

// Uniform in [0, 1) on a 2^-53 grid.
JB_HD static inline double jb_rng_uniform_f64(jb_rng_stream_t s, uint64_t position,
                                              uint32_t draw) {
    uint32_t w[4];
    jb_rng_words(s, position, draw, w);
    uint64_t m = ((uint64_t)w[0] << 21) ^ (uint64_t)(w[1] >> 11);   // 53 bits
    return (double)m * (1.0 / 9007199254740992.0);
}

// Standard Gumbel: -log(-log(u)) with u in (0, 1) (the 24-bit grid shifted by half a
// step, so neither log sees 0 or 1).
JB_HD static inline float jb_rng_gumbel(jb_rng_stream_t s, uint64_t position, uint32_t draw) {
    uint32_t w[4];
    jb_rng_words(s, position, draw, w);
    float u = ((float)(w[0] >> 8) + 0.5f) * (1.0f / 16777216.0f);
    return -logf(-logf(u));
}

// Categorical draw by Gumbel-max: argmax_i(logits[i] + gumbel(draw = i)). logits: (n),
// -inf entries are never chosen; returns -1 when all are -inf. An alternative to the
// inverse-CDF draw of jb_sampling (one uniform per bin instead of one per row): it
// parallelises over bins on the GPU, but gives different tokens for the same key.
JB_HD static inline int32_t jb_rng_gumbel_argmax(const float *logits, int n, jb_rng_stream_t s,
                                                 uint64_t position) {
    int32_t best = -1;
    float best_v = 0.0f;
    for (int i = 0; i < n; i++) {
        if (isinf(logits[i]) && logits[i] < 0)
            continue;
        float v = logits[i] + jb_rng_gumbel(s, position, (uint32_t)i);
        if (best < 0 || v > best_v) {
            best = i;
            best_v = v;
        }
    }
    return best;
}

#endif
