// jb_cuda_device.cu: device discovery with every failure turned into a message.
#include <cuda_runtime.h>
#include <stdio.h>

extern "C" {
#include "jb_err.h"

int jb_cuda_device_open(int ordinal, char *name, size_t name_size, size_t *mem_free,
                        size_t *mem_total, jb_err_t *err) {
    int driver = 0, runtime = 0, count = 0;
    cudaError_t rc = cudaDriverGetVersion(&driver);
    if (rc != cudaSuccess || driver == 0)
        return jb_err_set(err, JB_EUNAVAIL, "cuda:%d: no NVIDIA driver found (%s)", ordinal,
                          rc != cudaSuccess ? cudaGetErrorString(rc)
                                            : "the driver library is not installed or not loaded");
    cudaRuntimeGetVersion(&runtime);
    if (driver < runtime)
        return jb_err_set(err, JB_EUNAVAIL,
                          "cuda:%d: driver too old: it supports CUDA %d.%d, this build needs %d.%d",
                          ordinal, driver / 1000, (driver % 1000) / 10, runtime / 1000,
                          (runtime % 1000) / 10);
    rc = cudaGetDeviceCount(&count);
    if (rc != cudaSuccess || count == 0)
        return jb_err_set(err, JB_EUNAVAIL, "cuda:%d: no CUDA device available (%s)", ordinal,
                          rc == cudaSuccess ? "0 devices" : cudaGetErrorString(rc));
    if (ordinal >= count)
        return jb_err_set(err, JB_EUNAVAIL, "cuda:%d: only %d CUDA device(s) present", ordinal,
                          count);
    rc = cudaSetDevice(ordinal);
    if (rc != cudaSuccess)
        return jb_err_set(err, JB_EUNAVAIL, "cuda:%d: cannot use device: %s", ordinal,
                          cudaGetErrorString(rc));
    cudaDeviceProp prop;
    rc = cudaGetDeviceProperties(&prop, ordinal);
    if (rc != cudaSuccess)
        return jb_err_set(err, JB_EUNAVAIL, "cuda:%d: %s", ordinal, cudaGetErrorString(rc));
    snprintf(name, name_size, "cuda:%d %s (sm_%d%d)", ordinal, prop.name, prop.major, prop.minor);
    rc = cudaMemGetInfo(mem_free, mem_total);
    if (rc != cudaSuccess)
        return jb_err_set(err, JB_EUNAVAIL, "cuda:%d: %s", ordinal, cudaGetErrorString(rc));
    return 0;
}
}
