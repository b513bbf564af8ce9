// jb_device.c: see jb_device.h. The CUDA queries live in common/cuda/jb_cuda_device.cu.
#include "jb_device.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef JB_HAVE_CUDA
int jb_cuda_device_open(int ordinal, char *name, size_t name_size, size_t *mem_free,
                        size_t *mem_total, jb_err_t *err);
#endif

int jb_device_have_cuda(void) {
#ifdef JB_HAVE_CUDA
    return 1;
#else
    return 0;
#endif
}

int jb_device_parse(const char *spec, jb_device_t *dev, jb_err_t *err) {
    memset(dev, 0, sizeof *dev);
    if (!spec || !strcmp(spec, "cpu")) {
        snprintf(dev->name, sizeof dev->name, "cpu");
        return 0;
    }
    if (!strncmp(spec, "cuda", 4) && (spec[4] == '\0' || spec[4] == ':')) {
        dev->is_cuda = 1;
        if (spec[4] == ':') {
            char *end;
            long n = strtol(spec + 5, &end, 10);
            if (spec[5] == '\0' || *end != '\0' || n < 0 || n > 1024)
                return jb_err_set(err, JB_EINVAL, "--device %s: expected cuda:N with N >= 0", spec);
            dev->ordinal = (int)n;
        }
        snprintf(dev->name, sizeof dev->name, "cuda:%d", dev->ordinal);
        return 0;
    }
    return jb_err_set(err, JB_EINVAL, "--device %s: expected cpu, cuda or cuda:N", spec);
}

int jb_device_open(jb_device_t *dev, jb_err_t *err) {
    if (!dev->is_cuda) return 0;
#ifdef JB_HAVE_CUDA
    return jb_cuda_device_open(dev->ordinal, dev->name, sizeof dev->name, &dev->mem_free,
                               &dev->mem_total, err);
#else
    return jb_err_set(err, JB_EUNAVAIL,
                      "--device %s: this build has no CUDA support (rebuild with make CUDA=1)",
                      dev->name);
#endif
}
