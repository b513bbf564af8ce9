// jb_vexpf.h: expf of eight floats at once with the C library's bits.
//
// The kernel bodies (jb_nn.h) call expf one value at a time; the CUDA kernels and their CPU
// emulation run those bodies, and the CPU launchers must give the same floats. A plain
// vector exp (or libmvec's) differs from libm's expf in the last bit now and then, so this
// one runs glibc's own algorithm (since 2.28; the FMA variant glibc picks on every CPU this
// build targets): x·32/ln2 = k + r in double, 2^(k/32) from a table of 32 doubles, a cubic
// in r, one rounding to float; operation for operation, fused where glibc's __expf_fma is.
//
// jb_vexpf_exact() says whether it really matches this process's expf: the first call
// compares the two on a sweep of inputs (every sign, the range where the result is normal,
// subnormal or zero, the edges) and the answer is kept. Callers use jb_vexpf8 only when it
// returns 1, and expf otherwise (another C library, another algorithm): the bits never
// depend on which path ran.
#ifndef JB_VEXPF_H
#define JB_VEXPF_H

#include <immintrin.h>
#include <stdint.h>

// 1 when jb_vexpf8 equals expf on this C library (checked once; thread-safe)
int jb_vexpf_exact(void);

// expf of each lane. Lanes with |x| >= 88 (overflow, underflow, infinities, NaN) are
// computed by expf itself.
__m256 jb_vexpf8(__m256 x);

// out[i] = expf(in[i] - m) for i < n (a softmax's numerators; out may be in): jb_vexpf8
// where it is exact, expf otherwise. The same floats either way.
void jb_vexpf_shifted(float *out, const float *in, float m, int64_t n);

// out[i] = expf(a * in[i]) for i < n (quick_gelu's exp(-1.702 x); out may be in). The same
// floats as the scalar expression.
void jb_vexpf_scaled(float *out, const float *in, float a, int64_t n);

#endif
