// test_jb_music.c: the musical figures of jb_music against signals whose answer is known:
// a sine on a semitone is pitched and in tune, one 50 cents off is pitched and out of tune,
// noise has no clear pitch, silence has no loud frames, tone bursts give their onset rate,
// a steady sine under noise is a spectral line and noise is not; Spearman's rank correlation
// and the alignment monotonicity of diagonal, reversed and tied alignments.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "jb_music.h"
#include "jb_test.h"

#define SR 44100

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static double unif(void) {   // [0, 1)
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (double)(rng >> 11) * (1.0 / 9007199254740992.0);
}
static double gauss(void) {
    double u = unif() + 1e-12, v = unif();
    return sqrt(-2.0 * log(u)) * cos(2.0 * M_PI * v);
}

static float *sine(int64_t n, double f, double a) {
    float *x = malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++) x[i] = (float)(a * sin(2.0 * M_PI * f * (double)i / SR));
    return x;
}

static jb_music_stats_t analyse(const float *x, int64_t n) {
    jb_music_stats_t st = {0};
    jb_err_t err = {0};
    JB_CHECK_OK(jb_music_analyse(x, n, SR, &st, &err), &err, "analyse");
    return st;
}

static void check_pitch(void) {
    int64_t n = 2 * SR;
    const double in_tune[] = {440.0, 261.6256, 110.0, 987.7666};   // A4, C4, A2, B5
    for (size_t i = 0; i < sizeof in_tune / sizeof in_tune[0]; i++) {
        float *x = sine(n, in_tune[i], 0.5);
        jb_music_stats_t st = analyse(x, n);
        JB_CHECK(st.loud >= st.frames - 4 && st.loud > 100, "%.1f Hz: every frame loud (%lld of %lld)",
                 in_tune[i], (long long)st.loud, (long long)st.frames);
        JB_CHECK(st.pitched >= 0.95 * st.loud, "%.1f Hz sine: a clear pitch in %lld of %lld loud frames",
                 in_tune[i], (long long)st.pitched, (long long)st.loud);
        JB_CHECK(st.in_tune >= 0.95 * st.pitched, "%.1f Hz sine: in tune in %lld of %lld",
                 in_tune[i], (long long)st.in_tune, (long long)st.pitched);
        free(x);
    }
    // 50 cents above A4 and 40 cents below C4: pitched, out of tune
    const double off[] = {440.0 * 1.0293022366, 261.6256 / 1.0233738920};
    for (size_t i = 0; i < 2; i++) {
        float *x = sine(n, off[i], 0.5);
        jb_music_stats_t st = analyse(x, n);
        JB_CHECK(st.pitched >= 0.95 * st.loud, "%.2f Hz sine: a clear pitch in %lld of %lld",
                 off[i], (long long)st.pitched, (long long)st.loud);
        JB_CHECK(st.in_tune <= 0.05 * st.pitched, "%.2f Hz sine: out of tune (%lld of %lld in tune)",
                 off[i], (long long)st.in_tune, (long long)st.pitched);
        free(x);
    }
    // white noise: loud, no clear pitch
    float *x = malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++) x[i] = (float)(0.2 * gauss());
    jb_music_stats_t st = analyse(x, n);
    JB_CHECK(st.loud > 0.9 * st.frames, "noise: loud (%lld of %lld)", (long long)st.loud,
             (long long)st.frames);
    JB_CHECK(st.pitched <= 0.05 * st.loud, "noise: a clear pitch in only %lld of %lld loud frames",
             (long long)st.pitched, (long long)st.loud);
    // silence (and a -70 dBFS sine): no loud frames; counts accumulate over calls
    for (int64_t i = 0; i < n; i++) x[i] = (float)(3e-4 * sin(2.0 * M_PI * 440.0 * i / SR));
    jb_music_stats_t acc = st;
    jb_err_t err = {0};
    JB_CHECK_OK(jb_music_analyse(x, n, SR, &acc, &err), &err, "quiet sine");
    JB_CHECK(acc.loud == st.loud && acc.frames == 2 * st.frames && fabs(acc.seconds - 4.0) < 1e-9,
             "a -70 dBFS sine adds frames and seconds but no loud frames (%lld, %lld, %.3f)",
             (long long)acc.loud, (long long)acc.frames, acc.seconds);
    JB_CHECK(jb_music_analyse(x, 100, SR, &acc, &err) == -1 && err.code == JB_EINVAL,
             "too short a signal is refused (%s)", err.msg);
    free(x);
}

static void check_onsets(void) {
    int64_t n = 4 * SR;
    float *x = calloc((size_t)n, sizeof(float));
    int bursts = 0;
    for (int64_t s = SR / 10; s + SR / 20 < n; s += SR / 4, bursts++)   // 4 a second, 50 ms each
        for (int64_t i = 0; i < SR / 20; i++)
            x[s + i] = (float)(0.6 * exp(-(double)i / 400.0) * sin(2.0 * M_PI * 1000.0 * i / SR));
    jb_music_stats_t st = analyse(x, n);
    double rate = st.onsets / st.seconds;
    JB_CHECK(llabs(st.onsets - bursts) <= 1, "tone bursts: %lld onsets for %d bursts (%.2f/s)",
             (long long)st.onsets, bursts, rate);
    float *y = sine(n, 440.0, 0.5);
    jb_music_stats_t sy = analyse(y, n);
    JB_CHECK(sy.onsets <= 1, "a steady sine: at most its start is an onset (%lld)", (long long)sy.onsets);
    free(x), free(y);
}

// Notes of 0.25 s each (a harmonic tone: fundamental and two partials), given as semitones
// above A4; one phase running through, so a change of note is a change of frequency only.
static float *tune(const int *semis, int n_notes, int64_t *n_out) {
    int64_t per = SR / 4, n = per * n_notes;
    float *x = malloc(sizeof(float) * (size_t)n);
    double ph = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double f = 440.0 * pow(2.0, semis[i / per] / 12.0);
        ph += 2.0 * M_PI * f / SR;
        x[i] = (float)(0.4 * sin(ph) + 0.15 * sin(2 * ph) + 0.08 * sin(3 * ph));
    }
    *n_out = n;
    return x;
}

static void check_note_changes(void) {
    int64_t n;
    const int melody[] = {0, 2, 4, 5, 7, 5, 4, 2, 0, -3, -5, -3};   // 12 notes, 11 moves
    float *x = tune(melody, 12, &n);
    jb_music_stats_t st = analyse(x, n);
    JB_CHECK(st.note_changes == 11, "a tune of 12 notes: %lld note changes (11), %.2f a second",
             (long long)st.note_changes, st.note_changes / st.seconds);
    free(x);
    const int drone[] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    x = tune(drone, 12, &n);
    st = analyse(x, n);
    JB_CHECK(st.pitched >= 0.95 * st.loud && st.in_tune >= 0.95 * st.pitched &&
             st.note_changes == 0, "a drone (3 s of A4): pitched %lld of %lld, in tune, "
             "0 note changes (%lld)", (long long)st.pitched, (long long)st.loud,
             (long long)st.note_changes);
    free(x);
    // The same tune with a 40 ms gap of silence between notes (every note re-attacked) and
    // a repeated note: the gaps do not count, the repetition is no move.
    const int rep[] = {0, 0, 3, 3, 7};
    x = tune(rep, 5, &n);
    for (int k = 1; k < 5; k++)
        for (int64_t i = 0; i < SR / 25; i++) x[k * (SR / 4) - SR / 50 + i] = 0.0f;
    st = analyse(x, n);
    JB_CHECK(st.note_changes == 2, "notes 0 0 3 3 7 with gaps: 2 changes (%lld)",
             (long long)st.note_changes);
    free(x);
    // Noise: no held pitch at all.
    x = malloc(sizeof(float) * (size_t)(2 * SR));
    for (int64_t i = 0; i < 2 * SR; i++) x[i] = (float)(0.2 * gauss());
    st = analyse(x, 2 * SR);
    JB_CHECK(st.note_changes <= 1, "noise: no note changes (%lld)", (long long)st.note_changes);
    free(x);
}

static void check_line(void) {
    int64_t n = 5 * SR;
    float *x = malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++) x[i] = (float)(0.1 * gauss());
    double noise = jb_music_line_db(x, n, SR, 11025.0);
    for (int64_t i = 0; i < n; i++) x[i] += (float)(0.05 * sin(2.0 * M_PI * 11025.0 * i / SR));
    double line = jb_music_line_db(x, n, SR, 11025.0);
    JB_CHECK(noise < 8.0, "noise: no line at 11025 Hz (%.1f dB)", noise);
    JB_CHECK(line > 20.0, "a sine 9 dB under the noise's RMS is a line (%.1f dB)", line);
    JB_CHECK(isnan(jb_music_line_db(x, 100, SR, 11025.0)) &&
             isnan(jb_music_line_db(x, n, SR, 22000.0)), "bad size or frequency: NAN");
    free(x);
}

static void check_rank(void) {
    double a[6] = {1, 2, 3, 4, 5, 6}, b[6] = {10, 20, 30, 40, 50, 60}, c[6] = {6, 5, 4, 3, 2, 1};
    double d[6] = {1, 1, 2, 2, 3, 3}, k[6] = {2, 2, 2, 2, 2, 2};
    JB_CHECK(fabs(jb_music_spearman(a, b, 6) - 1.0) < 1e-12, "spearman: increasing = 1");
    JB_CHECK(fabs(jb_music_spearman(a, c, 6) + 1.0) < 1e-12, "spearman: reversed = -1");
    // ties get average ranks: ranks of d are 1.5 1.5 3.5 3.5 5.5 5.5; rho = 0.956182887 (by hand)
    double r = jb_music_spearman(a, d, 6);
    JB_CHECK(fabs(r - 0.9561828875) < 1e-9, "spearman with ties (%.10f)", r);
    JB_CHECK(isnan(jb_music_spearman(a, k, 6)) && isnan(jb_music_spearman(a, b, 1)),
             "spearman: no spread or n < 2 is NAN");
    enum { F = 8, C = 10 };
    double att[F * C] = {0};   // frame f attends most to position f + 1, less to f + 2
    for (int f = 0; f < F; f++) att[f * C + f + 1] = 1.0, att[f * C + f + 2] = 0.5;
    JB_CHECK(fabs(jb_music_alignment_rank(att, F, C) - 1.0) < 1e-9, "a diagonal alignment: 1 (%.3f)",
             jb_music_alignment_rank(att, F, C));
    double rev[F * C] = {0};
    for (int f = 0; f < F; f++) rev[f * C + (C - 1 - f)] = 0.3;
    JB_CHECK(fabs(jb_music_alignment_rank(rev, F, C) + 1.0) < 1e-9, "a reversed alignment: -1");
    double part[F * C] = {0};   // frames 0, 2 and 5 attend nowhere: skipped
    for (int f = 0; f < F; f++)
        if (f != 0 && f != 2 && f != 5) part[f * C + f] = 1.0;
    JB_CHECK(fabs(jb_music_alignment_rank(part, F, C) - 1.0) < 1e-9, "all-zero frames skipped");
    double flat[F * C] = {0};
    for (int f = 0; f < F; f++) flat[f * C + 2] = 1.0;
    JB_CHECK(isnan(jb_music_alignment_rank(flat, F, C)), "one position throughout: NAN");
    // spans: the diagonal attends to 1..8 of 10 characters, the reversed to 2..9, the partial
    // to 1..7 (frames 1, 3, 4, 6, 7), one position to 1 of 10, nothing to none
    int lo = -2, hi = -2;
    double sp = jb_music_alignment_span(att, F, C, &lo, &hi);
    JB_CHECK(fabs(sp - 0.8) < 1e-12 && lo == 1 && hi == 8, "span of the diagonal: 0.8 (%.3f, %d..%d)",
             sp, lo, hi);
    JB_CHECK(fabs(jb_music_alignment_span(rev, F, C, &lo, &hi) - 0.8) < 1e-12 && lo == 2 && hi == 9,
             "span of the reversed alignment: 0.8 (%d..%d)", lo, hi);
    JB_CHECK(fabs(jb_music_alignment_span(part, F, C, &lo, &hi) - 0.7) < 1e-12 && lo == 1 && hi == 7,
             "span of the partial alignment: 0.7 (%d..%d)", lo, hi);
    JB_CHECK(fabs(jb_music_alignment_span(flat, F, C, NULL, NULL) - 0.1) < 1e-12,
             "span of one position: 0.1");
    double none[F * C] = {0};
    JB_CHECK(jb_music_alignment_span(none, F, C, &lo, &hi) == 0.0 && lo == -1 && hi == -1,
             "span when no frame attends: 0");
}

int main(void) {
    check_pitch();
    check_onsets();
    check_note_changes();
    check_line();
    check_rank();
    return jb_test_summary("test_jb_music");
}
