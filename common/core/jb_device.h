// jb_device.h: choosing where a stage computes (`--device cpu|cuda[:N]`).
//
// The CPU is always available. CUDA exists only in a `make CUDA=1` build; there
// jb_device_open checks that the driver, the runtime and the device are usable
// and turns each failure into a clear message ("no CUDA device", "driver too
// old", ...). Thread rules: call from the main thread before starting work.
#ifndef JB_DEVICE_H
#define JB_DEVICE_H

#include <stddef.h>

#include "jb_err.h"

typedef struct {
    int is_cuda;     // 0: CPU
    int ordinal;     // CUDA device index
    char name[128];  // "cpu" or the GPU's name once opened
    size_t mem_free, mem_total;   // bytes, CUDA only (after open)
} jb_device_t;

// Parse "cpu", "cuda", "cuda:N". JB_EINVAL on anything else.
int jb_device_parse(const char *spec, jb_device_t *dev, jb_err_t *err);
// Make the device current and read its properties. For CUDA in a CPU-only
// build: JB_EUNAVAIL "this build has no CUDA support (rebuild with make CUDA=1)".
int jb_device_open(jb_device_t *dev, jb_err_t *err);
// 1 when this binary was built with CUDA.
int jb_device_have_cuda(void);

#endif
