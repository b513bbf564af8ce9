// test_jb_device.c: --device parsing and opening, on any build and any machine (GPU or not).
#include <string.h>

#include "jb_device.h"
#include "jb_test.h"

int main(void) {
    jb_device_t d;
    jb_err_t err = {0};
    JB_CHECK(jb_device_parse("cpu", &d, &err) == 0 && !d.is_cuda, "cpu");
    JB_CHECK(jb_device_parse("cuda", &d, &err) == 0 && d.is_cuda && d.ordinal == 0, "cuda");
    JB_CHECK(jb_device_parse("cuda:3", &d, &err) == 0 && d.is_cuda && d.ordinal == 3, "cuda:3");
    JB_CHECK(jb_device_parse("cuda:", &d, &err) != 0 && err.code == JB_EINVAL, "cuda: refused");
    JB_CHECK(jb_device_parse("cuda:x", &d, &err) != 0, "cuda:x refused");
    JB_CHECK(jb_device_parse("gpu", &d, &err) != 0 && strstr(err.msg, "gpu"), "gpu refused: %s",
             err.msg);
    JB_CHECK(jb_device_parse("cpu", &d, &err) == 0 && jb_device_open(&d, &err) == 0, "cpu opens");
    // Whether cuda:0 opens depends on the build and the machine, and neither is assumed:
    // a CPU-only build (plain make) refuses it on any machine, naming the fix; a CUDA build
    // opens it where a GPU is and refuses it with JB_EUNAVAIL where none is usable.
    jb_device_parse("cuda:0", &d, &err);
    err = (jb_err_t){0};
    int rc = jb_device_open(&d, &err);
    if (!jb_device_have_cuda()) {
        JB_CHECK(rc != 0 && err.code == JB_EUNAVAIL && strstr(err.msg, "cuda:0") &&
                     strstr(err.msg, "make CUDA=1"),
                 "cuda in a CPU-only build: clear error naming the fix (%s)", err.msg);
    } else if (rc == 0) {
        JB_CHECK(d.is_cuda && d.name[0] && strcmp(d.name, "cuda:0") != 0 && d.mem_total > 0 &&
                     d.mem_free <= d.mem_total,
                 "CUDA build, GPU present: cuda:0 opens (%s, %zu of %zu MiB free)", d.name,
                 d.mem_free >> 20, d.mem_total >> 20);
    } else {
        JB_CHECK(err.code == JB_EUNAVAIL && strstr(err.msg, "cuda:0"),
                 "CUDA build, no usable GPU: cuda:0 refused with a clear error (%s)", err.msg);
    }
    // No machine has 1025 GPUs: the highest ordinal --device accepts is always refused.
    jb_device_parse("cuda:1024", &d, &err);
    err = (jb_err_t){0};
    rc = jb_device_open(&d, &err);
    JB_CHECK(rc != 0 && err.code == JB_EUNAVAIL && strstr(err.msg, "cuda:1024"),
             "cuda:1024: refused, naming the device (%s)", err.msg);
    JB_CHECK(jb_err_exit_code(err.code) == 69, "maps to exit code 69 (EX_UNAVAILABLE)");
    return jb_test_summary("test_jb_device");
}
