// jb_tensor.c: see jb_tensor.h.
#include "jb_tensor.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

static const struct {
    const char *name;
    size_t size;
} g_dtypes[JB_DTYPE_COUNT] = {
    [JB_F32] = {"F32", 4}, [JB_F16] = {"F16", 2}, [JB_BF16] = {"BF16", 2},
    [JB_I32] = {"I32", 4}, [JB_I64] = {"I64", 8}, [JB_F64] = {"F64", 8},
    [JB_U8] = {"U8", 1},   [JB_I8] = {"I8", 1},   [JB_I16] = {"I16", 2},
    [JB_BOOL] = {"BOOL", 1},
};

size_t jb_dtype_size(jb_dtype_t dt) {
    return (unsigned)dt < JB_DTYPE_COUNT ? g_dtypes[dt].size : 0;
}

const char *jb_dtype_name(jb_dtype_t dt) {
    return (unsigned)dt < JB_DTYPE_COUNT ? g_dtypes[dt].name : "?";
}

int jb_dtype_from_name(const char *name, jb_dtype_t *out) {
    for (int i = 0; i < JB_DTYPE_COUNT; i++)
        if (name && strcmp(name, g_dtypes[i].name) == 0) {
            *out = (jb_dtype_t)i;
            return 0;
        }
    return -1;
}

int64_t jb_tensor_numel(const jb_tensor_t *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

size_t jb_tensor_nbytes(const jb_tensor_t *t) {
    return (size_t)jb_tensor_numel(t) * jb_dtype_size(t->dtype);
}

char *jb_shape_str(const int64_t *shape, int ndim, char *buf, size_t size) {
    size_t used = 0;
    if (size == 0) return buf;
    buf[0] = '\0';
    used += (size_t)snprintf(buf, size, "[");
    for (int i = 0; i < ndim && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, "%s%lld", i ? ", " : "",
                                 (long long)shape[i]);
    if (used < size) snprintf(buf + used, size - used, "]");
    return buf;
}

// Buffers of several MiB (weights, caches) are streamed: on 2 MiB pages a stream of
// weights takes 1/512 of the TLB misses (where the kernel's transparent huge pages are
// "madvise", as on Debian, only madvise'd ranges get them).
#define HUGE_PAGE ((size_t)2 << 20)

void *jb_alloc(size_t bytes) {
    void *p = NULL;
    size_t rounded = (bytes + 63) & ~(size_t)63;
    if (rounded >= HUGE_PAGE) {
        if (posix_memalign(&p, HUGE_PAGE, rounded) != 0) return NULL;
        (void)madvise(p, rounded & ~(HUGE_PAGE - 1), MADV_HUGEPAGE);   // a hint: may fail
        return p;
    }
    if (posix_memalign(&p, 64, rounded ? rounded : 64) != 0) return NULL;
    return p;
}

void *jb_calloc(size_t bytes) {
    void *p = jb_alloc(bytes);
    if (p) memset(p, 0, bytes);
    return p;
}

void jb_free(void *p) { free(p); }

static jb_tensor_t *tensor_header(jb_dtype_t dt, int ndim, const int64_t *shape, jb_err_t *err) {
    if ((unsigned)dt >= JB_DTYPE_COUNT || ndim < 0 || ndim > JB_MAX_DIMS) {
        jb_err_set(err, JB_EINVAL, "tensor: bad dtype %d or ndim %d", (int)dt, ndim);
        return NULL;
    }
    for (int i = 0; i < ndim; i++)
        if (shape[i] < 0) {
            jb_err_set(err, JB_EINVAL, "tensor: negative dimension %lld", (long long)shape[i]);
            return NULL;
        }
    jb_tensor_t *t = calloc(1, sizeof *t);
    if (!t) {
        jb_err_set(err, JB_ENOMEM, "tensor: out of memory");
        return NULL;
    }
    t->dtype = dt;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->device = JB_DEVICE_CPU;
    return t;
}

jb_tensor_t *jb_tensor_new(jb_dtype_t dt, int ndim, const int64_t *shape, jb_err_t *err) {
    jb_tensor_t *t = tensor_header(dt, ndim, shape, err);
    if (!t) return NULL;
    size_t bytes = jb_tensor_nbytes(t);
    t->data = jb_calloc(bytes);
    if (!t->data) {
        char s[128];
        jb_err_set(err, JB_ENOMEM, "tensor %s %s: cannot allocate %zu bytes", jb_dtype_name(dt),
                   jb_shape_str(shape, ndim, s, sizeof s), bytes);
        free(t);
        return NULL;
    }
    t->owns = 1;
    return t;
}

jb_tensor_t *jb_tensor_view(jb_dtype_t dt, int ndim, const int64_t *shape, void *data,
                            jb_err_t *err) {
    jb_tensor_t *t = tensor_header(dt, ndim, shape, err);
    if (!t) return NULL;
    t->data = data;
    t->owns = 0;
    return t;
}

void jb_tensor_destroy(jb_tensor_t **t_p) {
    if (!t_p || !*t_p) return;
    if ((*t_p)->owns) jb_free((*t_p)->data);
    free(*t_p);
    *t_p = NULL;
}

int jb_tensor_same_shape(const jb_tensor_t *t, int ndim, const int64_t *shape) {
    if (t->ndim != ndim) return 0;
    for (int i = 0; i < ndim; i++)
        if (t->shape[i] != shape[i]) return 0;
    return 1;
}

int jb_tensor_to_f32(const jb_tensor_t *t, float *dst, jb_err_t *err) {
    int64_t n = jb_tensor_numel(t);
    const void *s = t->data;
    switch (t->dtype) {
    case JB_F32: memcpy(dst, s, (size_t)n * 4); return 0;
    case JB_F16:
        for (int64_t i = 0; i < n; i++) dst[i] = jb_f16_to_f32(((const uint16_t *)s)[i]);
        return 0;
    case JB_BF16:
        for (int64_t i = 0; i < n; i++) dst[i] = jb_bf16_to_f32(((const uint16_t *)s)[i]);
        return 0;
    case JB_F64:
        for (int64_t i = 0; i < n; i++) dst[i] = (float)((const double *)s)[i];
        return 0;
    case JB_I32:
        for (int64_t i = 0; i < n; i++) dst[i] = (float)((const int32_t *)s)[i];
        return 0;
    case JB_I64:
        for (int64_t i = 0; i < n; i++) dst[i] = (float)((const int64_t *)s)[i];
        return 0;
    case JB_U8:
    case JB_BOOL:
        for (int64_t i = 0; i < n; i++) dst[i] = (float)((const uint8_t *)s)[i];
        return 0;
    case JB_I8:
        for (int64_t i = 0; i < n; i++) dst[i] = (float)((const int8_t *)s)[i];
        return 0;
    case JB_I16:
        for (int64_t i = 0; i < n; i++) dst[i] = (float)((const int16_t *)s)[i];
        return 0;
    default: return jb_err_set(err, JB_EUNSUP, "tensor: cannot widen dtype %d", (int)t->dtype);
    }
}

int jb_tensor_to_i32(const jb_tensor_t *t, int32_t *dst, jb_err_t *err) {
    int64_t n = jb_tensor_numel(t);
    const void *s = t->data;
    switch (t->dtype) {
    case JB_I32: memcpy(dst, s, (size_t)n * 4); return 0;
    case JB_I64:
        for (int64_t i = 0; i < n; i++) {
            int64_t v = ((const int64_t *)s)[i];
            if (v < INT32_MIN || v > INT32_MAX)
                return jb_err_set(err, JB_EFORMAT, "tensor: element %lld = %lld out of int32 range",
                                  (long long)i, (long long)v);
            dst[i] = (int32_t)v;
        }
        return 0;
    case JB_U8:
    case JB_BOOL:
        for (int64_t i = 0; i < n; i++) dst[i] = ((const uint8_t *)s)[i];
        return 0;
    case JB_I8:
        for (int64_t i = 0; i < n; i++) dst[i] = ((const int8_t *)s)[i];
        return 0;
    case JB_I16:
        for (int64_t i = 0; i < n; i++) dst[i] = ((const int16_t *)s)[i];
        return 0;
    default:
        return jb_err_set(err, JB_EUNSUP, "tensor: dtype %s is not an integer type",
                          jb_dtype_name(t->dtype));
    }
}
