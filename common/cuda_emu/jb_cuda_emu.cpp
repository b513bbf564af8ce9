// jb_cuda_emu.cpp: the CPU emulation of the CUDA runtime and cuBLAS declared in
// cuda_runtime.h and cublas_v2.h of this directory. See those headers for what is emulated
// and what is checked.
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <ucontext.h>

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "cublas_v2.h"
#include "cuda_runtime.h"

extern "C" {
#include "jb_tensor.h"
}

thread_local uint3 threadIdx;
thread_local uint3 blockIdx;
thread_local dim3 blockDim;
thread_local dim3 gridDim;

namespace {

const size_t kDefaultMem = (size_t)16 << 30;

std::mutex g_mu;
std::map<uintptr_t, size_t> g_allocs;   // start -> bytes
size_t g_used = 0, g_limit = 0;
std::atomic<uint64_t> g_launches{0}, g_blas{0};
thread_local cudaError_t g_last = cudaSuccess;

size_t limit_locked() {
    if (g_limit == 0) {
        const char *e = getenv("JB_CUDA_EMU_MEM");
        g_limit = e && *e ? (size_t)strtoull(e, NULL, 10) : kDefaultMem;
        if (g_limit == 0) g_limit = kDefaultMem;
    }
    return g_limit;
}

cudaError_t fail(cudaError_t e) {
    g_last = e;
    return e;
}

// The allocation holding [p, p + bytes), if any: 1 inside one, 0 outside every one,
// -1 straddling (partly inside).
int where(const void *p, size_t bytes) {
    uintptr_t a = (uintptr_t)p;
    std::lock_guard<std::mutex> lk(g_mu);
    auto it = g_allocs.upper_bound(a);
    if (it != g_allocs.begin()) {
        --it;
        if (a < it->first + it->second) return a + bytes <= it->first + it->second ? 1 : -1;
    }
    auto nx = g_allocs.upper_bound(a);
    if (nx != g_allocs.end() && bytes > 0 && a + bytes > nx->first) return -1;
    return 0;
}

}  // namespace

struct jb_emu_stream {
    bool capturing = false, invalid = false;
    std::vector<std::function<void()>> ops;
};
struct jb_emu_graph {
    std::vector<std::function<void()>> ops;
};
struct jb_emu_event {
    double t;
};
struct jb_emu_cublas {
    cudaStream_t st;
    void *ws;
    size_t ws_bytes;
};

namespace {
std::atomic<int> g_captures{0};                 // streams capturing now
std::vector<cudaStream_t> g_capturing_streams;  // guarded by g_mu
}  // namespace

int jb_emu_capture(cudaStream_t st, const std::function<void()> &op) {
    if (st && st->capturing) {
        st->ops.push_back(op);
        return 1;
    }
    if (!st && g_captures.load() > 0) {   // legacy stream during a capture: invalidates it
        std::lock_guard<std::mutex> lk(g_mu);
        for (cudaStream_t s : g_capturing_streams) s->invalid = true;
        g_last = cudaErrorStreamCaptureImplicit;
        return -1;
    }
    return 0;
}

int jb_cuda_emu_is_device(const void *p, size_t bytes) { return where(p, bytes) == 1; }

extern "C" size_t jb_cuda_emu_set_mem(size_t bytes) {
    std::lock_guard<std::mutex> lk(g_mu);
    size_t old = limit_locked();
    g_limit = bytes;
    limit_locked();
    return old;
}
extern "C" size_t jb_cuda_emu_used(void) {
    std::lock_guard<std::mutex> lk(g_mu);
    return g_used;
}
extern "C" uint64_t jb_cuda_emu_launches(void) { return g_launches.load(); }
extern "C" uint64_t jb_cuda_emu_blas_calls(void) { return g_blas.load(); }

const char *cudaGetErrorName(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInitializationError: return "cudaErrorInitializationError";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidMemcpyDirection: return "cudaErrorInvalidMemcpyDirection";
    case cudaErrorInsufficientDriver: return "cudaErrorInsufficientDriver";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    case cudaErrorStreamCaptureUnsupported: return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorStreamCaptureInvalidated: return "cudaErrorStreamCaptureInvalidated";
    case cudaErrorStreamCaptureUnmatched: return "cudaErrorStreamCaptureUnmatched";
    case cudaErrorStreamCaptureImplicit: return "cudaErrorStreamCaptureImplicit";
    }
    return "cudaErrorUnknown";
}

const char *cudaGetErrorString(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInitializationError: return "initialization error";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidMemcpyDirection: return "invalid copy direction for memcpy";
    case cudaErrorInsufficientDriver:
        return "CUDA driver version is insufficient for CUDA runtime version";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    case cudaErrorStreamCaptureUnsupported:
        return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated:
        return "operation failed due to a previous error during capture";
    case cudaErrorStreamCaptureUnmatched: return "capture was not initiated in this stream";
    case cudaErrorStreamCaptureImplicit:
        return "operation would make the legacy stream depend on a capturing blocking stream";
    }
    return "unknown error";
}

cudaError_t cudaGetLastError(void) {
    cudaError_t e = g_last;
    g_last = cudaSuccess;
    return e;
}
cudaError_t cudaPeekAtLastError(void) { return g_last; }
cudaError_t cudaDriverGetVersion(int *v) {
    if (!v) return fail(cudaErrorInvalidValue);
    *v = CUDART_VERSION;
    return cudaSuccess;
}
cudaError_t cudaRuntimeGetVersion(int *v) { return cudaDriverGetVersion(v); }
cudaError_t cudaGetDeviceCount(int *n) {
    if (!n) return fail(cudaErrorInvalidValue);
    *n = 1;
    return cudaSuccess;
}
cudaError_t cudaSetDevice(int d) { return d == 0 ? cudaSuccess : fail(cudaErrorInvalidDevice); }
cudaError_t cudaGetDevice(int *d) {
    if (!d) return fail(cudaErrorInvalidValue);
    *d = 0;
    return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int d) {
    if (!p) return fail(cudaErrorInvalidValue);
    if (d != 0) return fail(cudaErrorInvalidDevice);
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "JB CUDA emulation");
    {
        std::lock_guard<std::mutex> lk(g_mu);
        p->totalGlobalMem = limit_locked();
    }
    p->major = 9, p->minor = 0, p->multiProcessorCount = 1, p->maxThreadsPerBlock = 1024;
    p->maxThreadsDim[0] = 1024, p->maxThreadsDim[1] = 1024, p->maxThreadsDim[2] = 64;
    p->maxGridSize[0] = 2147483647, p->maxGridSize[1] = 65535, p->maxGridSize[2] = 65535;
    p->warpSize = 32;
    return cudaSuccess;
}
cudaError_t cudaMemGetInfo(size_t *free_b, size_t *total_b) {
    if (!free_b || !total_b) return fail(cudaErrorInvalidValue);
    std::lock_guard<std::mutex> lk(g_mu);
    size_t lim = limit_locked();
    *total_b = lim;
    *free_b = g_used < lim ? lim - g_used : 0;
    return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize(void) { return cudaSuccess; }

cudaError_t cudaMalloc(void **p, size_t bytes) {
    if (!p) return fail(cudaErrorInvalidValue);
    *p = NULL;
    std::lock_guard<std::mutex> lk(g_mu);
    size_t lim = limit_locked();
    size_t sz = bytes ? (bytes + 255) / 256 * 256 : 256;   // allocation granularity
    if (g_used + sz > lim) return fail(cudaErrorMemoryAllocation);
    void *q = aligned_alloc(256, sz);
    if (!q) return fail(cudaErrorMemoryAllocation);
    // Fresh device memory holds garbage on a GPU: a pattern that reads as NaN catches
    // kernels that read what they never wrote.
    memset(q, 0xff, sz);
    g_allocs[(uintptr_t)q] = bytes;
    *p = q;
    g_used += sz;
    return cudaSuccess;
}

cudaError_t cudaFree(void *p) {
    if (!p) return cudaSuccess;
    std::lock_guard<std::mutex> lk(g_mu);
    auto it = g_allocs.find((uintptr_t)p);
    if (it == g_allocs.end()) return fail(cudaErrorInvalidValue);   // not a device pointer
    size_t sz = it->second ? (it->second + 255) / 256 * 256 : 256;
    g_used -= sz;
    g_allocs.erase(it);
    free(p);
    return cudaSuccess;
}

static cudaError_t copy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind) {
    if (bytes == 0) return cudaSuccess;
    if (!dst || !src) return fail(cudaErrorInvalidValue);
    int d = where(dst, bytes), s = where(src, bytes);
    if (d < 0 || s < 0) return fail(cudaErrorInvalidValue);   // runs past an allocation
    bool ok;
    switch (kind) {
    case cudaMemcpyHostToHost: ok = d == 0 && s == 0; break;
    case cudaMemcpyHostToDevice: ok = d == 1 && s == 0; break;
    case cudaMemcpyDeviceToHost: ok = d == 0 && s == 1; break;
    case cudaMemcpyDeviceToDevice: ok = d == 1 && s == 1; break;
    case cudaMemcpyDefault: ok = true; break;
    default: ok = false;
    }
    if (!ok) return fail(cudaErrorInvalidMemcpyDirection);
    memmove(dst, src, bytes);
    return cudaSuccess;
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind) {
    if (jb_emu_capture(0, [] {}) < 0) return fail(cudaErrorStreamCaptureImplicit);
    return copy(dst, src, bytes, kind);
}
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t st) {
    if (st && st->capturing) {   // checked now, copied at replay
        int d = where(dst, bytes), s = where(src, bytes);
        if (d < 0 || s < 0) return fail(cudaErrorInvalidValue);
        jb_emu_capture(st, [=] { copy(dst, src, bytes, kind); });
        return cudaSuccess;
    }
    if (jb_emu_capture(st, [] {}) < 0) return fail(cudaErrorStreamCaptureImplicit);
    return copy(dst, src, bytes, kind);
}
static cudaError_t set2d(void *p, size_t pitch, int value, size_t width, size_t height,
                         cudaStream_t st) {
    if (height == 0 || width == 0) return cudaSuccess;
    if (width > pitch || where(p, pitch * (height - 1) + width) != 1)
        return fail(cudaErrorInvalidValue);
    auto op = [=] {
        for (size_t r = 0; r < height; r++) memset((char *)p + r * pitch, value, width);
    };
    int c = jb_emu_capture(st, op);
    if (c < 0) return fail(cudaErrorStreamCaptureImplicit);
    if (c == 0) op();
    return cudaSuccess;
}
cudaError_t cudaMemset(void *p, int value, size_t bytes) {
    return set2d(p, bytes, value, bytes, 1, 0);
}
cudaError_t cudaMemsetAsync(void *p, int value, size_t bytes, cudaStream_t st) {
    return set2d(p, bytes, value, bytes, 1, st);
}
cudaError_t cudaMemset2DAsync(void *p, size_t pitch, int value, size_t width, size_t height,
                              cudaStream_t st) {
    return set2d(p, pitch, value, width, height, st);
}

cudaError_t cudaStreamCreate(cudaStream_t *st) {
    if (!st) return fail(cudaErrorInvalidValue);
    *st = new jb_emu_stream();
    return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t st) {
    if (st && st->capturing) {
        std::lock_guard<std::mutex> lk(g_mu);
        for (size_t i = 0; i < g_capturing_streams.size(); i++)
            if (g_capturing_streams[i] == st)
                g_capturing_streams.erase(g_capturing_streams.begin() + (long)i);
        g_captures--;
    }
    delete st;
    return cudaSuccess;
}
cudaError_t cudaStreamBeginCapture(cudaStream_t st, cudaStreamCaptureMode) {
    if (!st) return fail(cudaErrorStreamCaptureUnsupported);   // not the legacy stream
    if (st->capturing) return fail(cudaErrorStreamCaptureUnsupported);
    st->capturing = true, st->invalid = false;
    st->ops.clear();
    std::lock_guard<std::mutex> lk(g_mu);
    g_capturing_streams.push_back(st);
    g_captures++;
    return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t st, cudaGraph_t *graph) {
    if (!graph) return fail(cudaErrorInvalidValue);
    *graph = NULL;
    if (!st || !st->capturing) return fail(cudaErrorStreamCaptureUnmatched);
    {
        std::lock_guard<std::mutex> lk(g_mu);
        for (size_t i = 0; i < g_capturing_streams.size(); i++)
            if (g_capturing_streams[i] == st)
                g_capturing_streams.erase(g_capturing_streams.begin() + (long)i);
        g_captures--;
    }
    st->capturing = false;
    if (st->invalid) {
        st->ops.clear();
        return fail(cudaErrorStreamCaptureInvalidated);
    }
    *graph = new jb_emu_graph{std::move(st->ops)};
    st->ops.clear();
    return cudaSuccess;
}
cudaError_t cudaStreamIsCapturing(cudaStream_t st, cudaStreamCaptureStatus *status) {
    if (!status) return fail(cudaErrorInvalidValue);
    *status = st && st->capturing ? (st->invalid ? cudaStreamCaptureStatusInvalidated
                                                 : cudaStreamCaptureStatusActive)
                                  : cudaStreamCaptureStatusNone;
    return cudaSuccess;
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t graph, unsigned long long) {
    if (!exec || !graph) return fail(cudaErrorInvalidValue);
    *exec = new jb_emu_graph{graph->ops};
    return cudaSuccess;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t st) {
    if (!exec) return fail(cudaErrorInvalidResourceHandle);
    auto op = [exec] {
        for (auto &f : exec->ops) f();
    };
    int c = jb_emu_capture(st, op);
    if (c < 0) return fail(cudaErrorStreamCaptureImplicit);
    if (c == 0) op();
    return cudaSuccess;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
    delete exec;
    return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
    delete graph;
    return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaEventCreate(cudaEvent_t *ev) {
    if (!ev) return fail(cudaErrorInvalidValue);
    *ev = new jb_emu_event{0};
    return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t ev) {
    delete ev;
    return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t ev, cudaStream_t) {
    if (!ev) return fail(cudaErrorInvalidResourceHandle);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ev->t = (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
    return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t ev) {
    return ev ? cudaSuccess : fail(cudaErrorInvalidResourceHandle);
}
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b) {
    if (!ms || !a || !b) return fail(cudaErrorInvalidValue);
    *ms = (float)(b->t - a->t);
    return cudaSuccess;
}

namespace {

bool bad_config(dim3 grid, dim3 block) {
    uint64_t threads = (uint64_t)block.x * block.y * block.z;
    return grid.x == 0 || grid.y == 0 || grid.z == 0 || block.x == 0 || block.y == 0 ||
           block.z == 0 || threads > 1024 || block.x > 1024 || block.y > 1024 || block.z > 64 ||
           grid.x > 2147483647u || grid.y > 65535 || grid.z > 65535;
}

void set_block(dim3 grid, dim3 block, int64_t bi) {
    gridDim = grid;
    blockDim = block;
    blockIdx.x = (unsigned)(bi % grid.x);
    blockIdx.y = (unsigned)((bi / grid.x) % grid.y);
    blockIdx.z = (unsigned)(bi / ((int64_t)grid.x * grid.y));
}

// ---- block-cooperative launches: one coroutine per thread of a block ----------------------

const size_t kFiberStack = (size_t)128 << 10;

// Context switches. glibc's swapcontext makes a system call (the signal mask) per switch, and
// a block of 256 threads switches ~40 times per thread and barrier phase; on x86-64 a switch
// of the callee-saved registers in user space replaces it (not under AddressSanitizer, which
// has to see the stack changes: it intercepts swapcontext).
#if defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__)
#define JB_EMU_ASM_SWITCH 1
extern "C" void jb_emu_ctx_switch(void **save_sp, void *load_sp);
__asm__(".text\n"
        ".globl jb_emu_ctx_switch\n"
        ".type jb_emu_ctx_switch,@function\n"
        "jb_emu_ctx_switch:\n"
        "    pushq %rbp\n"
        "    pushq %rbx\n"
        "    pushq %r12\n"
        "    pushq %r13\n"
        "    pushq %r14\n"
        "    pushq %r15\n"
        "    subq $8, %rsp\n"
        "    stmxcsr (%rsp)\n"
        "    fnstcw 4(%rsp)\n"
        "    movq %rsp, (%rdi)\n"
        "    movq %rsi, %rsp\n"
        "    ldmxcsr (%rsp)\n"
        "    fldcw 4(%rsp)\n"
        "    addq $8, %rsp\n"
        "    popq %r15\n"
        "    popq %r14\n"
        "    popq %r13\n"
        "    popq %r12\n"
        "    popq %rbx\n"
        "    popq %rbp\n"
        "    ret\n"
        ".size jb_emu_ctx_switch, .-jb_emu_ctx_switch\n");
#endif

// A thread of a cooperative block: a coroutine with its own stack, made once per CPU thread and
// reused for every block (a finished body waits for the next one), so a block costs context
// switches only.
struct Fiber {
#ifdef JB_EMU_ASM_SWITCH
    void *sp;
#else
    ucontext_t ctx;
#endif
    int state;       // 0 runnable, 1 waiting at the barrier, 2 done
    bool live;       // the coroutine exists and waits in fiber_main's loop
    uint3 idx;
    std::unique_ptr<char[]> stack;
};

thread_local bool t_coop = false;             // inside a cooperative block
thread_local bool t_barrier_misuse = false;   // __syncthreads reached in a plain launch
#ifdef JB_EMU_ASM_SWITCH
thread_local void *t_sched_sp;
#else
thread_local ucontext_t t_sched;
#endif
thread_local Fiber *t_cur = nullptr;
thread_local const std::function<void()> *t_body = nullptr;
thread_local std::vector<std::unique_ptr<Fiber>> t_fibers;

// From the running fiber back to the scheduler.
void to_scheduler(Fiber *me) {
#ifdef JB_EMU_ASM_SWITCH
    jb_emu_ctx_switch(&me->sp, t_sched_sp);
#else
    swapcontext(&me->ctx, &t_sched);
#endif
}

// From the scheduler into fiber f.
void to_fiber(Fiber *f) {
#ifdef JB_EMU_ASM_SWITCH
    jb_emu_ctx_switch(&t_sched_sp, f->sp);
#else
    swapcontext(&t_sched, &f->ctx);
#endif
}

void fiber_main() {
    for (;;) {
        (*t_body)();
        t_cur->state = 2;
        to_scheduler(t_cur);   // resumed for the next block
    }
}

void make_fiber(Fiber &f) {
    if (!f.stack) f.stack.reset(new char[kFiberStack]);
#ifdef JB_EMU_ASM_SWITCH
    // The frame jb_emu_ctx_switch pops: mxcsr/x87 control word, r15..r12, rbx, rbp, then the
    // return address fiber_main, entered with rsp = top - 8 as after a call (top 16-aligned).
    uintptr_t top = ((uintptr_t)f.stack.get() + kFiberStack) & ~(uintptr_t)15;
    uint64_t *q = (uint64_t *)top;
    *--q = 0;                            // fiber_main's (never used) return address
    *--q = (uint64_t)(uintptr_t)&fiber_main;
    for (int r = 0; r < 6; r++) *--q = 0;   // rbp, rbx, r12, r13, r14, r15
    *--q = 0x1F80ull | (0x037Full << 32);   // default MXCSR, x87 control word
    f.sp = q;
#else
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = f.stack.get();
    f.ctx.uc_stack.ss_size = kFiberStack;
    f.ctx.uc_link = nullptr;
    makecontext(&f.ctx, fiber_main, 0);
#endif
    f.live = true;
}

// Runs one block, phase by phase between barriers; false on barrier divergence.
bool run_block_coop(dim3 block, const std::function<void()> &body, uint64_t seed) {
    unsigned n = block.x * block.y * block.z;
    while (t_fibers.size() < n) t_fibers.emplace_back(new Fiber());
    t_body = &body;
    for (unsigned i = 0; i < n; i++) {
        Fiber &f = *t_fibers[i];
        if (!f.live) make_fiber(f);
        f.state = 0;
        f.idx.x = i % block.x, f.idx.y = (i / block.x) % block.y, f.idx.z = i / (block.x * block.y);
    }
    std::vector<unsigned> order(n);
    for (unsigned i = 0; i < n; i++) order[i] = i;
    bool ok = true;
    t_coop = true;
    for (;;) {
        for (unsigned i = n; i > 1; i--) {   // a new order for every phase (xorshift)
            seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
            unsigned j = (unsigned)(seed % i);
            unsigned t = order[i - 1];
            order[i - 1] = order[j], order[j] = t;
        }
        for (unsigned k = 0; k < n; k++) {
            Fiber &f = *t_fibers[order[k]];
            if (f.state != 0) continue;
            threadIdx = f.idx;
            t_cur = &f;
            to_fiber(&f);
        }
        unsigned waiting = 0, done = 0;
        for (unsigned i = 0; i < n; i++) {
            waiting += t_fibers[i]->state == 1;
            done += t_fibers[i]->state == 2;
        }
        if (waiting == 0) break;
        if (done > 0) {   // some threads left while others wait: divergent barrier
            ok = false;
            for (unsigned i = 0; i < n; i++)   // abandon the waiting ones: made afresh next time
                if (t_fibers[i]->state == 1) t_fibers[i]->live = false;
            break;
        }
        for (unsigned i = 0; i < n; i++) t_fibers[i]->state = 0;
    }
    t_coop = false;
    t_cur = nullptr;
    return ok;
}

}  // namespace

void __syncthreads(void) {
    if (!t_coop || !t_cur) {
        t_barrier_misuse = true;
        return;
    }
    t_cur->state = 1;
    to_scheduler(t_cur);
}

void jb_emu_launch_body(dim3 grid, dim3 block, cudaStream_t st,
                        const std::function<void()> &body) {
    uint64_t threads = (uint64_t)block.x * block.y * block.z;
    if (bad_config(grid, block)) {
        g_last = cudaErrorInvalidConfiguration;
        return;
    }
    auto run = [grid, block, threads, body] {
        g_launches++;
        int64_t nblocks = (int64_t)grid.x * grid.y * grid.z;
        std::atomic<bool> misuse{false};
#pragma omp parallel for schedule(static) if (nblocks * (int64_t)threads >= 4096)
        for (int64_t bi = 0; bi < nblocks; bi++) {
            set_block(grid, block, bi);
            t_barrier_misuse = false;
            for (unsigned z = 0; z < block.z; z++)
                for (unsigned y = 0; y < block.y; y++)
                    for (unsigned x = 0; x < block.x; x++) {
                        threadIdx.x = x, threadIdx.y = y, threadIdx.z = z;
                        body();
                    }
            if (t_barrier_misuse) misuse = true;
        }
        if (misuse) {
            fprintf(stderr, "jb_cuda_emu: a kernel reached __syncthreads in a plain launch "
                            "(use JB_LAUNCH_COOP)\n");
            g_last = cudaErrorLaunchFailure;
        }
    };
    if (jb_emu_capture(st, run) == 0) run();
}

void jb_emu_launch_coop_body(dim3 grid, dim3 block, cudaStream_t st,
                             const std::function<void()> &body) {
    if (bad_config(grid, block)) {
        g_last = cudaErrorInvalidConfiguration;
        return;
    }
    auto run = [grid, block, body] {
        uint64_t launch = ++g_launches;
        int64_t nblocks = (int64_t)grid.x * grid.y * grid.z;
        std::atomic<bool> diverged{false};
        // Threads only for launches worth a parallel region: on a loaded 2-core machine one
        // costs up to milliseconds, far more than a few small blocks (a one-token product).
        int64_t threads = (int64_t)block.x * block.y * block.z;
#pragma omp parallel for schedule(static) if (nblocks >= 4 && nblocks * threads >= 8192)
        for (int64_t bi = 0; bi < nblocks; bi++) {
            set_block(grid, block, bi);
            if (!run_block_coop(block, body, 0x9E3779B97F4A7C15ull * (launch + 1) + (uint64_t)bi))
                diverged = true;
        }
        if (diverged) {
            fprintf(stderr, "jb_cuda_emu: threads of a block left the kernel while others "
                            "waited at __syncthreads (a barrier in divergent code)\n");
            g_last = cudaErrorLaunchFailure;
        }
    };
    if (jb_emu_capture(st, run) == 0) run();
}

// ---- cuBLAS -------------------------------------------------------------------------------

cublasStatus_t cublasCreate(cublasHandle_t *h) {
    if (!h) return CUBLAS_STATUS_INVALID_VALUE;
    *h = new jb_emu_cublas{0, NULL, 0};
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy(cublasHandle_t h) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t st) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    h->st = st;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasGetStream(cublasHandle_t h, cudaStream_t *st) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!st) return CUBLAS_STATUS_INVALID_VALUE;
    *st = h->st;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetWorkspace(cublasHandle_t h, void *ws, size_t bytes) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (bytes && where(ws, bytes) != 1) return CUBLAS_STATUS_INVALID_VALUE;
    h->ws = ws, h->ws_bytes = bytes;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t) {
    return h ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_NOT_INITIALIZED;
}
const char *cublasGetStatusString(cublasStatus_t s) {
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "the library was not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED: return "the resource allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE: return "an invalid numeric value was used as an argument";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "the functionality requested is not supported";
    default: return "cuBLAS error";
    }
}

namespace {

size_t dt_size(cudaDataType_t t) {
    switch (t) {
    case CUDA_R_32F: return 4;
    case CUDA_R_16F:
    case CUDA_R_16BF: return 2;
    }
    return 0;
}

// A column-major (rows, cols) matrix with leading dimension ld: rows <= ld, and its last
// element inside the allocation holding its first.
bool mat_ok(const void *p, int rows, int cols, int ld, size_t es) {
    if (rows <= 0 || cols <= 0) return true;
    if (!p || ld < rows) return false;
    size_t extent = ((size_t)(cols - 1) * (size_t)ld + (size_t)rows) * es;
    return where(p, extent) == 1;
}

// Checks shared by the gemms; returns the status.
cublasStatus_t gemm_check(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
                          int n, int k, const void *A, int lda, size_t ea, const void *B, int ldb,
                          size_t eb, const void *C, int ldc, size_t ec) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (m < 0 || n < 0 || k < 0 || (ta != CUBLAS_OP_N && ta != CUBLAS_OP_T) ||
        (tb != CUBLAS_OP_N && tb != CUBLAS_OP_T))
        return CUBLAS_STATUS_INVALID_VALUE;
    int ar = ta == CUBLAS_OP_N ? m : k, ac = ta == CUBLAS_OP_N ? k : m;
    int br = tb == CUBLAS_OP_N ? k : n, bc = tb == CUBLAS_OP_N ? n : k;
    if (lda < (ar > 1 ? ar : 1) || ldb < (br > 1 ? br : 1) || ldc < (m > 1 ? m : 1))
        return CUBLAS_STATUS_INVALID_VALUE;
    if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
    if (!mat_ok(C, m, n, ldc, ec)) return CUBLAS_STATUS_INVALID_VALUE;
    if (k > 0 && (!mat_ok(A, ar, ac, lda, ea) || !mat_ok(B, br, bc, ldb, eb)))
        return CUBLAS_STATUS_INVALID_VALUE;
    return CUBLAS_STATUS_SUCCESS;
}

CBLAS_TRANSPOSE tr(cublasOperation_t t) { return t == CUBLAS_OP_N ? CblasNoTrans : CblasTrans; }

// A column-major (rows, cols) matrix widened to f32, packed with leading dimension rows.
void widen(std::vector<float> &out, const void *p, cudaDataType_t t, int rows, int cols, int ld) {
    out.resize((size_t)rows * (size_t)cols);
    const uint16_t *h = (const uint16_t *)p;
    for (int c = 0; c < cols; c++)
        for (int r = 0; r < rows; r++) {
            uint16_t v = h[(size_t)c * (size_t)ld + (size_t)r];
            out[(size_t)c * (size_t)rows + (size_t)r] =
                t == CUDA_R_16F ? jb_f16_to_f32(v) : jb_bf16_to_f32(v);
        }
}

}  // namespace

cublasStatus_t cublasSgemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
                           int n, int k, const float *alpha, const float *A, int lda,
                           const float *B, int ldb, const float *beta, float *C, int ldc) {
    cublasStatus_t s = gemm_check(h, ta, tb, m, n, k, A, lda, 4, B, ldb, 4, C, ldc, 4);
    if (s != CUBLAS_STATUS_SUCCESS) return s;
    if (!alpha || !beta) return CUBLAS_STATUS_INVALID_VALUE;
    if (m == 0 || n == 0) return s;
    float al = *alpha, be = *beta;   // host pointer mode: read at the call, as cuBLAS does
    auto op = [=] {
        g_blas++;
        cblas_sgemm(CblasColMajor, tr(ta), tr(tb), m, n, k, al, A, lda, B, ldb, be, C, ldc);
    };
    int c = jb_emu_capture(h->st, op);
    if (c < 0) return CUBLAS_STATUS_EXECUTION_FAILED;
    if (c == 0) op();
    return s;
}

cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t h, cublasOperation_t ta,
                                         cublasOperation_t tb, int m, int n, int k,
                                         const float *alpha, const float *A, int lda,
                                         long long strideA, const float *B, int ldb,
                                         long long strideB, const float *beta, float *C, int ldc,
                                         long long strideC, int batch) {
    if (batch < 0) return CUBLAS_STATUS_INVALID_VALUE;
    for (int i = 0; i < batch; i++) {
        cublasStatus_t s = cublasSgemm(h, ta, tb, m, n, k, alpha, A + i * strideA, lda,
                                       B + i * strideB, ldb, beta, C + i * strideC, ldc);
        if (s != CUBLAS_STATUS_SUCCESS) return s;
    }
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
                            int n, int k, const void *alpha, const void *A, cudaDataType_t Atype,
                            int lda, const void *B, cudaDataType_t Btype, int ldb,
                            const void *beta, void *C, cudaDataType_t Ctype, int ldc,
                            cublasComputeType_t compute, cublasGemmAlgo_t) {
    size_t ea = dt_size(Atype), eb = dt_size(Btype);
    // What the project uses: f32 output, f32 accumulation, inputs f32 or f16/bf16.
    if (!ea || !eb || Ctype != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
    if (compute != CUBLAS_COMPUTE_32F && compute != CUBLAS_COMPUTE_32F_FAST_16F &&
        compute != CUBLAS_COMPUTE_32F_FAST_16BF && compute != CUBLAS_COMPUTE_32F_FAST_TF32)
        return CUBLAS_STATUS_NOT_SUPPORTED;
    cublasStatus_t s = gemm_check(h, ta, tb, m, n, k, A, lda, ea, B, ldb, eb, C, ldc, 4);
    if (s != CUBLAS_STATUS_SUCCESS) return s;
    if (!alpha || !beta) return CUBLAS_STATUS_INVALID_VALUE;
    if (m == 0 || n == 0) return s;
    float al = *(const float *)alpha, be = *(const float *)beta;
    auto op = [=] {
        g_blas++;
        int ar = ta == CUBLAS_OP_N ? m : k, ac = ta == CUBLAS_OP_N ? k : m;
        int br = tb == CUBLAS_OP_N ? k : n, bc = tb == CUBLAS_OP_N ? n : k;
        std::vector<float> wa, wb;
        const float *pa = (const float *)A, *pb = (const float *)B;
        int la = lda, lb = ldb;
        if (Atype != CUDA_R_32F) widen(wa, A, Atype, ar, ac, lda), pa = wa.data(), la = ar;
        if (Btype != CUDA_R_32F) widen(wb, B, Btype, br, bc, ldb), pb = wb.data(), lb = br;
        cblas_sgemm(CblasColMajor, tr(ta), tr(tb), m, n, k, al, pa, la, pb, lb, be, (float *)C,
                    ldc);
    };
    int c = jb_emu_capture(h->st, op);
    if (c < 0) return CUBLAS_STATUS_EXECUTION_FAILED;
    if (c == 0) op();
    return s;
}
