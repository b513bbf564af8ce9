// cuda_runtime.h (emulation): the part of the CUDA runtime API the project uses, on the CPU.
// Compiled only with -DJB_CUDA_EMU -Icommon/cuda_emu as C++17 (see common/jb_cuda.h).
//
//   device memory   = host memory from cudaMalloc, every allocation recorded with its size;
//                     the total is limited by a fake device size (jb_cuda_emu_set_mem, or the
//                     environment variable JB_CUDA_EMU_MEM in bytes; default 16 GiB), past
//                     which cudaMalloc fails with cudaErrorMemoryAllocation as a GPU would.
//   copies          = memcpy, with the direction checked: the device side of a copy must lie
//                     inside one allocation, the host side outside every allocation.
//   launches        = jb_emu_launch (JB_LAUNCH): the grid and block are checked as the driver
//                     checks them, then the kernel runs for every block (OpenMP) and every
//                     thread index, threadIdx/blockIdx/blockDim/gridDim being thread-locals.
//                     Such a launch may not reach __syncthreads (the launch then fails with
//                     cudaErrorLaunchFailure: its threads ran one after the other).
//   block-cooperative launches = jb_emu_launch_coop (JB_LAUNCH_COOP): the threads of a block
//                     are coroutines (ucontext, one stack each) on one CPU thread, so
//                     __shared__ variables (static thread_local here) are the block's and
//                     __syncthreads() is a real barrier: every thread runs up to the barrier
//                     (in a shuffled order, different per phase and block, so that a read of
//                     another thread's shared write without a barrier between shows), then
//                     all continue. Threads that leave the kernel while others wait at a
//                     barrier (a barrier in divergent code) fail the launch
//                     (cudaErrorLaunchFailure).
//   streams, events = synchronous: work runs when issued, in issue order.
//   graphs          = stream capture records every launch, cuBLAS call, async copy and memset
//                     issued on the capturing stream (with its arguments, as the GPU records
//                     them) instead of running it; cudaGraphLaunch replays the record in order.
//                     As on a GPU, work issued on the legacy default stream (0) or a synchronous
//                     copy while a capture is active invalidates the capture
//                     (cudaErrorStreamCaptureImplicit; cudaStreamEndCapture then fails).
//   device          = one emulated device, "JB CUDA emulation", compute capability 9.0.
//
// Thread rules: calls may come from any thread (the allocation table is locked).
#ifndef JB_CUDA_EMU_RUNTIME_H
#define JB_CUDA_EMU_RUNTIME_H

#ifndef JB_CUDA_EMU
#error "common/cuda_emu is the CPU emulation of CUDA: compile with -DJB_CUDA_EMU"
#endif

#include <stddef.h>
#include <stdint.h>

#include <functional>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static thread_local

#define CUDART_VERSION 12000

struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

extern thread_local uint3 threadIdx;
extern thread_local uint3 blockIdx;
extern thread_local dim3 blockDim;
extern thread_local dim3 gridDim;

enum cudaError_t {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInitializationError = 3,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorInvalidMemcpyDirection = 21,
    cudaErrorInsufficientDriver = 35,
    cudaErrorNoDevice = 100,
    cudaErrorInvalidDevice = 101,
    cudaErrorInvalidResourceHandle = 400,
    cudaErrorLaunchFailure = 719,
    cudaErrorStreamCaptureUnsupported = 900,
    cudaErrorStreamCaptureInvalidated = 901,
    cudaErrorStreamCaptureUnmatched = 903,
    cudaErrorStreamCaptureImplicit = 906,
};
typedef cudaError_t cudaError;

enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4,
};

typedef struct jb_emu_stream *cudaStream_t;
typedef struct jb_emu_event *cudaEvent_t;
typedef struct jb_emu_graph *cudaGraph_t;
typedef struct jb_emu_graph *cudaGraphExec_t;

enum cudaStreamCaptureMode {
    cudaStreamCaptureModeGlobal = 0,
    cudaStreamCaptureModeThreadLocal = 1,
    cudaStreamCaptureModeRelaxed = 2,
};
enum cudaStreamCaptureStatus {
    cudaStreamCaptureStatusNone = 0,
    cudaStreamCaptureStatusActive = 1,
    cudaStreamCaptureStatusInvalidated = 2,
};

struct cudaDeviceProp {
    char name[256];
    size_t totalGlobalMem;
    int major, minor;
    int multiProcessorCount;
    int maxThreadsPerBlock;
    int maxThreadsDim[3];
    int maxGridSize[3];
    int warpSize;
};

const char *cudaGetErrorString(cudaError_t e);
const char *cudaGetErrorName(cudaError_t e);
cudaError_t cudaGetLastError(void);
cudaError_t cudaPeekAtLastError(void);
cudaError_t cudaDriverGetVersion(int *v);
cudaError_t cudaRuntimeGetVersion(int *v);
cudaError_t cudaGetDeviceCount(int *n);
cudaError_t cudaSetDevice(int d);
cudaError_t cudaGetDevice(int *d);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int d);
cudaError_t cudaMemGetInfo(size_t *free_b, size_t *total_b);
cudaError_t cudaDeviceSynchronize(void);

cudaError_t cudaMalloc(void **p, size_t bytes);
template <typename T>
inline cudaError_t cudaMalloc(T **p, size_t bytes) {
    return cudaMalloc((void **)p, bytes);
}
cudaError_t cudaFree(void *p);
cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t st = 0);
cudaError_t cudaMemset(void *p, int value, size_t bytes);
cudaError_t cudaMemsetAsync(void *p, int value, size_t bytes, cudaStream_t st = 0);
cudaError_t cudaMemset2DAsync(void *p, size_t pitch, int value, size_t width, size_t height,
                              cudaStream_t st = 0);

cudaError_t cudaStreamCreate(cudaStream_t *st);
cudaError_t cudaStreamDestroy(cudaStream_t st);
cudaError_t cudaStreamSynchronize(cudaStream_t st);
cudaError_t cudaStreamBeginCapture(cudaStream_t st, cudaStreamCaptureMode mode);
cudaError_t cudaStreamEndCapture(cudaStream_t st, cudaGraph_t *graph);
cudaError_t cudaStreamIsCapturing(cudaStream_t st, cudaStreamCaptureStatus *status);
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t graph,
                                 unsigned long long flags = 0);
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t st);
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec);
cudaError_t cudaGraphDestroy(cudaGraph_t graph);
cudaError_t cudaEventCreate(cudaEvent_t *ev);
cudaError_t cudaEventDestroy(cudaEvent_t ev);
cudaError_t cudaEventRecord(cudaEvent_t ev, cudaStream_t st = 0);
cudaError_t cudaEventSynchronize(cudaEvent_t ev);
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b);

// ---- emulation only -----------------------------------------------------------------------

// Runs body once per (block, thread) after checking the configuration; records a launch error
// for cudaGetLastError on a bad one.
void jb_emu_launch_body(dim3 grid, dim3 block, cudaStream_t st, const std::function<void()> &body);

template <typename... P, typename... A>
inline void jb_emu_launch(void (*kernel)(P...), dim3 grid, dim3 block, cudaStream_t st,
                          A... args) {
    jb_emu_launch_body(grid, block, st, [=]() { kernel(args...); });
}

// The same with every block's threads as coroutines and __syncthreads as a barrier.
void jb_emu_launch_coop_body(dim3 grid, dim3 block, cudaStream_t st,
                             const std::function<void()> &body);

template <typename... P, typename... A>
inline void jb_emu_launch_coop(void (*kernel)(P...), dim3 grid, dim3 block, cudaStream_t st,
                               A... args) {
    jb_emu_launch_coop_body(grid, block, st, [=]() { kernel(args...); });
}

// Block barrier: see above.
void __syncthreads(void);

// Work issued on stream st: recorded when st is capturing (returns 1: do not run it now),
// refused when a capture is active and st is the legacy stream (returns -1, the capture is
// invalidated), else 0: run it now.
int jb_emu_capture(cudaStream_t st, const std::function<void()> &op);

// 1 when [p, p + bytes) lies inside one live device allocation.
int jb_cuda_emu_is_device(const void *p, size_t bytes);

#include "jb_cuda_emu.h"

#endif
