// jb_tensor.h: a small tensor type (dtype, shape, data on the CPU or a GPU)
// and the float16 / bfloat16 conversions every backend shares.
//
// Tensors are C-contiguous (row-major), shapes as in PyTorch. A tensor either
// owns its data (jb_tensor_new) or borrows it (jb_tensor_view: a model file's
// mmap, a caller's buffer). Thread rules: a tensor is not locked; share it
// read-only between threads.
#ifndef JB_TENSOR_H
#define JB_TENSOR_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "jb_err.h"
#include "jb_kernels.h"   // JB_HD

#define JB_MAX_DIMS 8

typedef enum {
    JB_F32 = 0,
    JB_F16,
    JB_BF16,
    JB_I32,
    JB_I64,
    JB_F64,
    JB_U8,
    JB_I8,
    JB_I16,
    JB_BOOL,
    JB_DTYPE_COUNT
} jb_dtype_t;

// Where the data lives: JB_DEVICE_CPU, or a CUDA device index >= 0.
#define JB_DEVICE_CPU (-1)

typedef struct jb_tensor {
    jb_dtype_t dtype;
    int ndim;
    int64_t shape[JB_MAX_DIMS];
    void *data;
    int device;   // JB_DEVICE_CPU or CUDA ordinal
    int owns;     // 1: data freed by jb_tensor_destroy
} jb_tensor_t;

size_t jb_dtype_size(jb_dtype_t dt);
// safetensors spelling: "F32", "F16", "BF16", "I32", "I64", "F64", "U8", "I8", "I16", "BOOL".
const char *jb_dtype_name(jb_dtype_t dt);
// Returns 0 and sets *out, or -1 for an unknown name.
int jb_dtype_from_name(const char *name, jb_dtype_t *out);

int64_t jb_tensor_numel(const jb_tensor_t *t);
size_t jb_tensor_nbytes(const jb_tensor_t *t);
// "[2, 64, 16]" into buf (always NUL-terminated). Returns buf.
char *jb_shape_str(const int64_t *shape, int ndim, char *buf, size_t size);

// New zero-filled CPU tensor (64-byte aligned data). NULL + err on failure.
jb_tensor_t *jb_tensor_new(jb_dtype_t dt, int ndim, const int64_t *shape, jb_err_t *err);
// Tensor header around borrowed data (not freed by destroy). NULL + err on failure.
jb_tensor_t *jb_tensor_view(jb_dtype_t dt, int ndim, const int64_t *shape, void *data,
                            jb_err_t *err);
// Frees owned data and the header; sets *t_p to NULL; accepts NULL.
void jb_tensor_destroy(jb_tensor_t **t_p);

// Same dtype and shape?
int jb_tensor_same_shape(const jb_tensor_t *t, int ndim, const int64_t *shape);

// Widen any float dtype (F32/F16/BF16/F64) or integer dtype to float32.
// dst holds numel floats. Returns 0, or -1 for a dtype that cannot be widened.
int jb_tensor_to_f32(const jb_tensor_t *t, float *dst, jb_err_t *err);
// Convert to int32 (I32/I64/U8/I8/I16). Returns 0, or -1 (unsupported / out of range).
int jb_tensor_to_i32(const jb_tensor_t *t, int32_t *dst, jb_err_t *err);

// Aligned allocation helpers (64 bytes; 2 MiB and madvise(MADV_HUGEPAGE) from 2 MiB up,
// so that streamed weights and caches sit on huge pages). jb_free accepts NULL.
void *jb_alloc(size_t bytes);
void *jb_calloc(size_t bytes);
void jb_free(void *p);

// ---- half precision, written once for host and device -------------------

JB_HD static inline float jb_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    uint32_t bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else {   // subnormal: renormalise
            exp = 127 - 15 + 1;
            while (!(man & 0x400)) { man <<= 1; exp--; }
            man &= 0x3ff;
            bits = sign | (exp << 23) | (man << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

// Round to nearest even, as PyTorch's .half().
JB_HD static inline uint16_t jb_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t absx = x & 0x7fffffffu;
    if (absx >= 0x7f800000u) return (uint16_t)(sign | 0x7c00 | (absx > 0x7f800000u ? 0x200 : 0));
    if (absx >= 0x477ff000u) return (uint16_t)(sign | 0x7c00);   // overflow -> inf
    if (absx < 0x38800000u) {                                    // subnormal or zero
        if (absx < 0x33000000u) return (uint16_t)sign;
        uint32_t e = absx >> 23;
        uint32_t m = (absx & 0x7fffff) | 0x800000;
        uint32_t shift = 126 - e;                                // 14..24
        uint32_t half = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1);
        uint32_t mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t h = ((absx - 0x38000000u) >> 13);
    uint32_t rem = absx & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;
    return (uint16_t)(sign | h);
}

JB_HD static inline float jb_bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

JB_HD static inline uint16_t jb_f32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40);   // quiet NaN
    uint32_t lsb = (x >> 16) & 1;
    x += 0x7fff + lsb;
    return (uint16_t)(x >> 16);
}

#endif
