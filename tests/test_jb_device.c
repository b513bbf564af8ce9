// test_jb_device.c: --device parsing and the CPU-only build's answer to "cuda".
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
    // This machine has no GPU: with or without CUDA in the build, opening one must
    // fail with JB_EUNAVAIL and a message, not crash.
    jb_device_parse("cuda:0", &d, &err);
    int rc = jb_device_open(&d, &err);
    JB_CHECK(rc != 0 && err.code == JB_EUNAVAIL && strstr(err.msg, "cuda:0"),
             "cuda on a machine without a GPU: clear error (%s)", err.msg);
    JB_CHECK(jb_err_exit_code(err.code) == 69, "maps to exit code 69 (EX_UNAVAILABLE)");
    return jb_test_summary("test_jb_device");
}
