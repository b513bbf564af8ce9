// fuzz_torch.c: libFuzzer target for the PyTorch checkpoint reader (jb_torch).
// Any input must load or fail with a message: never crash, leak or read out of bounds.
// Seeds: tests/golden/checkpoints/*.pth.tar and tests/fixtures/torch/*.pth.tar.
// fuzz-sources: common/jb_torch.c common/jb_err.c common/jb_tensor.c
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "jb_torch.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    // An exact-size copy, so that ASan catches a read one byte past the end.
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy) return 0;
    memcpy(copy, data, size);
    jb_err_t err = {0};
    jb_torch_t *ck = jb_torch_open_mem(copy, size, "fuzz", &err);
    if (ck) {
        // Touch every byte handed out.
        volatile uint8_t sink = 0;
        for (int i = 0; i < jb_torch_count(ck); i++) {
            const jb_torch_tensor_t *t = jb_torch_tensor(ck, i);
            for (size_t b = 0; b < t->nbytes; b++) sink ^= ((const uint8_t *)t->data)[b];
        }
        (void)sink;
        char *s = jb_torch_hps(ck) ? json_dumps(jb_torch_hps(ck), 0) : NULL;
        free(s);
    } else if (!err.msg[0]) {
        abort();   // a failure must say why
    }
    jb_torch_destroy(&ck);
    free(copy);
    return 0;
}
