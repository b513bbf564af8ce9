// test_jb_torch_oom.c: the checkpoint reader under allocation failure.
//
// As SQLite's test_malloc does, allocation N fails, for N = 0, 1, 2, ... until a
// load succeeds: every attempt must return a checkpoint or NULL with a message,
// and leave no allocation behind. malloc, calloc, realloc, posix_memalign and free
// are interposed here (glibc lets a program replace them; its strdup and jansson
// call them too). Sanitizer builds replace the allocator themselves, so there
// this test reports nothing to check.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jb_test.h"
#include "jb_torch.h"

#if defined(__SANITIZE_ADDRESS__)
#define JB_OOM_SKIP 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define JB_OOM_SKIP 1
#endif
#endif

#ifndef JB_OOM_SKIP
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);

static int g_armed;       // counting and failing only while armed
static long g_countdown;  // allocations left before the failing one (-1: never fail)
static long g_live;       // allocations made while armed, minus those freed

static int should_fail(void) {
    if (!g_armed || g_countdown < 0) return 0;
    return g_countdown-- == 0;
}

void *malloc(size_t n) {
    if (should_fail()) return NULL;
    void *p = __libc_malloc(n);
    if (p && g_armed) g_live++;
    return p;
}

void *calloc(size_t a, size_t b) {
    if (should_fail()) return NULL;
    void *p = __libc_calloc(a, b);
    if (p && g_armed) g_live++;
    return p;
}

void *realloc(void *old, size_t n) {
    if (should_fail()) return NULL;
    void *p = __libc_realloc(old, n);
    if (p && !old && g_armed) g_live++;
    return p;
}

int posix_memalign(void **out, size_t align, size_t n) {
    if (should_fail()) return 12;   // ENOMEM
    void *p = __libc_memalign(align, n);
    if (!p) return 12;
    if (g_armed) g_live++;
    *out = p;
    return 0;
}

void free(void *p) {
    if (p && g_armed) g_live--;
    __libc_free(p);
}

static void *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *d = __libc_malloc(sz > 0 ? (size_t)sz : 1);
    *n = d ? fread(d, 1, (size_t)sz, f) : 0;
    fclose(f);
    return d;
}

static void sweep(const char *path) {
    size_t n = 0;
    void *d = slurp(path, &n);
    JB_CHECK(d != NULL, "%s read", path);
    if (!d) return;
    long attempts = 0, silent = 0, leaked = 0, ok_at = -1;
    for (long fail_at = 0; fail_at < 200000; fail_at++) {
        jb_err_t err = {0};
        g_live = 0;
        g_countdown = fail_at;
        g_armed = 1;
        jb_torch_t *ck = jb_torch_open_mem(d, n, path, &err);
        int ok = ck != NULL;
        if (!ck && !err.msg[0]) silent++;
        jb_torch_destroy(&ck);
        g_armed = 0;
        if (g_live != 0) leaked++;
        attempts++;
        if (ok) {
            ok_at = fail_at;
            break;
        }
    }
    __libc_free(d);
    JB_CHECK(ok_at >= 0, "%s: loads once allocation %ld is allowed (%ld attempts)", path, ok_at,
             attempts);
    JB_CHECK(silent == 0, "%s: every failed attempt has a message (%ld silent)", path, silent);
    JB_CHECK(leaked == 0, "%s: no attempt leaks (%ld did)", path, leaked);
}
#endif

int main(void) {
#ifndef JB_OOM_SKIP
    sweep("tests/fixtures/torch/nested_hps.zip.pth.tar");   // zip, hps, Adam opt, numpy
    sweep("tests/fixtures/torch/nested_hps.pth.tar");       // legacy
    sweep("tests/fixtures/torch/offsets.pth.tar");          // strided copies
    sweep("tests/fixtures/torch/legacy_view.pth.tar");
    sweep("tests/fixtures/torch/offsets.zip64.pth.tar");
#else
    JB_SKIP("sanitizer build: the allocator cannot be replaced here (the plain build runs this)");
#endif
    return jb_test_summary("test_jb_torch_oom");
}
