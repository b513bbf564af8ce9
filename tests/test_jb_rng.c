// test_jb_rng.c: Philox4x32 against Random123's published known-answer vectors
// (random123 tests/kat_vectors: "philox4x32 R ctr[4] key[2] -> out[4]"), keying
// properties (batch independence, determinism, streams differ), uniform/Gumbel ranges
// and moments.
#include <stdint.h>
#include <string.h>

#include "jb_rng.h"
#include "jb_test.h"

static const struct {
    int rounds;
    uint32_t ctr[4], key[2], out[4];
} KAT[] = {
    {7, {0, 0, 0, 0}, {0, 0}, {0x5f6fb709, 0x0d893f64, 0x4f121f81, 0x4f730a48}},
    {7, {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, {0xffffffff, 0xffffffff},
     {0x5207ddc2, 0x45165e59, 0x4d8ee751, 0x8c52f662}},
    {7, {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0},
     {0x4dfccaba, 0x190a87f0, 0xc47362ba, 0xb6b5242a}},
    {10, {0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
    {10, {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, {0xffffffff, 0xffffffff},
     {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
    {10, {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0},
     {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
};

int main(void) {
    for (size_t k = 0; k < sizeof KAT / sizeof KAT[0]; k++) {
        uint32_t out[4];
        jb_rng_philox4x32(KAT[k].ctr, KAT[k].key, KAT[k].rounds, out);
        JB_CHECK(memcmp(out, KAT[k].out, sizeof out) == 0,
                 "philox4x32-%d KAT %zu: got %08x %08x %08x %08x", KAT[k].rounds, k, out[0],
                 out[1], out[2], out[3]);
    }

    // FNV-1a 64 published values: "" -> cbf29ce484222325, "a" -> af63dc4c8601ec8c.
    JB_CHECK(jb_rng_hash_job("") == 0xcbf29ce484222325ull, "fnv1a64('')");
    JB_CHECK(jb_rng_hash_job("a") == 0xaf63dc4c8601ec8cull, "fnv1a64('a')");

    // Batch independence: a sample's draws depend on (seed, job, sample, level, position)
    // only. Compute sample 5's draws as row 3 of a batch of 8 samples (2..9) and alone.
    uint64_t job = jb_rng_hash_job("job-7f3a");
    int same = 1;
    for (uint64_t pos = 0; pos < 1000; pos++) {
        jb_rng_stream_t batch[8];
        for (int b = 0; b < 8; b++)
            batch[b] = jb_rng_stream(42, job, (uint32_t)(2 + b), 2);
        jb_rng_stream_t alone = jb_rng_stream(42, job, 5, 2);
        same &= jb_rng_uniform(batch[3], pos, 0) == jb_rng_uniform(alone, pos, 0);
        same &= jb_rng_uniform_f64(batch[3], pos, 7) == jb_rng_uniform_f64(alone, pos, 7);
    }
    JB_CHECK(same, "sample 5 draws equal in a batch and alone");

    // Different seed, job, sample, level, position or draw give different streams.
    jb_rng_stream_t s0 = jb_rng_stream(42, job, 0, 2);
    float u0 = jb_rng_uniform(s0, 100, 0);
    JB_CHECK(u0 != jb_rng_uniform(jb_rng_stream(43, job, 0, 2), 100, 0), "seed changes draws");
    JB_CHECK(u0 != jb_rng_uniform(jb_rng_stream(42, jb_rng_hash_job("job-7f3b"), 0, 2), 100, 0),
             "job changes draws");
    JB_CHECK(u0 != jb_rng_uniform(jb_rng_stream(42, job, 1, 2), 100, 0), "sample changes draws");
    JB_CHECK(u0 != jb_rng_uniform(jb_rng_stream(42, job, 0, 1), 100, 0), "level changes draws");
    JB_CHECK(u0 != jb_rng_uniform(s0, 101, 0), "position changes draws");
    JB_CHECK(u0 != jb_rng_uniform(s0, 100, 1), "draw index changes draws");
    JB_CHECK(u0 != jb_rng_uniform(s0, 100 + (1ull << 32), 0), "position high word is used");
    // Keying is a fixed function: the counter layout documented in jb_rng.h.
    uint32_t w[4], ctr[4] = {100, 0, 0, 2 | (3u << 8)};
    jb_rng_philox4x32(ctr, s0.key, 10, w);
    JB_CHECK(jb_rng_uniform(s0, 100, 3) == (float)(w[0] >> 8) / 16777216.0f,
             "uniform = word 0 >> 8 on the 2^-24 grid at counter {pos, pos>>32, sample, level|draw<<8}");

    // Moments over 200000 draws: mean 1/2 (sd 1/sqrt(12 n) = 6.5e-4), variance 1/12;
    // Gumbel mean = Euler-Mascheroni 0.5772, variance pi^2/6 = 1.6449.
    const int n = 200000;
    double su = 0, su2 = 0, sd = 0, sg = 0, sg2 = 0;
    float umin = 1, umax = 0;
    double dmin = 1, dmax = 0;
    for (int i = 0; i < n; i++) {
        float u = jb_rng_uniform(s0, (uint64_t)i, 0);
        double d = jb_rng_uniform_f64(s0, (uint64_t)i, 1);
        float g = jb_rng_gumbel(s0, (uint64_t)i, 2);
        su += u;
        su2 += (double)u * u;
        sd += d;
        sg += g;
        sg2 += (double)g * g;
        if (u < umin) umin = u;
        if (u > umax) umax = u;
        if (d < dmin) dmin = d;
        if (d > dmax) dmax = d;
    }
    double mu = su / n, vu = su2 / n - mu * mu, mg = sg / n, vg = sg2 / n - mg * mg;
    JB_CHECK(umin >= 0 && umax < 1 && dmin >= 0 && dmax < 1, "uniforms in [0, 1)");
    JB_CHECK(fabs(mu - 0.5) < 4 * 6.5e-4 && fabs(sd / n - 0.5) < 4 * 6.5e-4,
             "uniform mean %.5f %.5f within 4 sd of 1/2", mu, sd / n);
    JB_CHECK(fabs(vu - 1.0 / 12) < 1e-3, "uniform variance %.5f ~ 1/12", vu);
    // sd of the Gumbel mean: sqrt(1.645 / n) = 2.9e-3
    JB_CHECK(fabs(mg - 0.5772157) < 4 * 2.9e-3, "gumbel mean %.4f ~ 0.5772", mg);
    JB_CHECK(fabs(vg - 1.6449341) < 0.03, "gumbel variance %.4f ~ pi^2/6", vg);

    // Gumbel-max: frequencies follow softmax (chi-square, 2 dof for 3 finite bins, p=0.001 -> 13.82).
    float logits[4] = {0.0f, 1.0f, -1.0f, -INFINITY};
    double p[4], z = 0;
    for (int i = 0; i < 4; i++)
        z += (p[i] = exp((double)logits[i]));
    int cnt[4] = {0};
    const int m = 60000;
    for (int i = 0; i < m; i++) {
        int32_t t = jb_rng_gumbel_argmax(logits, 4, s0, (uint64_t)i + 1000000);
        if (t >= 0)
            cnt[t]++;
    }
    double chi = 0;
    for (int i = 0; i < 3; i++) {
        double e = m * p[i] / z;
        chi += (cnt[i] - e) * (cnt[i] - e) / e;
    }
    JB_CHECK(cnt[3] == 0 && chi < 13.82, "gumbel-max: -inf never drawn, chi2 %.2f < 13.82 (2 dof)",
             chi);
    float all_inf[2] = {-INFINITY, -INFINITY};
    JB_CHECK(jb_rng_gumbel_argmax(all_inf, 2, s0, 0) == -1, "gumbel-max of all -inf -> -1");
    return jb_test_summary("test_jb_rng");
}
