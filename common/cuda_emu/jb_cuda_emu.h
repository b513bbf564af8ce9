// jb_cuda_emu.h: controls of the CPU emulation of CUDA (common/cuda_emu), callable from C tests.
// Only in programs linked with build/libjukebox-emu.a.
// Thread rules: set the memory size before allocating; the counters may be read any time.
#ifndef JB_CUDA_EMU_H
#define JB_CUDA_EMU_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif
// Fake device memory size in bytes (0: back to the default, 16 GiB or $JB_CUDA_EMU_MEM).
// Returns the previous size.
size_t jb_cuda_emu_set_mem(size_t bytes);
// Bytes currently allocated through cudaMalloc.
size_t jb_cuda_emu_used(void);
// Kernel launches and cuBLAS calls run so far.
uint64_t jb_cuda_emu_launches(void);
uint64_t jb_cuda_emu_blas_calls(void);
#ifdef __cplusplus
}
#endif

#endif
