// fuzz_torch.c: libFuzzer target for the PyTorch checkpoint reader (jb_torch).
// Any input must load or fail with a message: never crash, leak or read out of bounds.
// Seeds (JB_FUZZ_WRITE_SEEDS=DIR): tests/fixtures/torch/*.pth.tar (small legacy and zip
// checkpoints of every kind the reader handles) and the first 16 KiB of the golden
// vqvae_tiny checkpoints (their pickles).
// fuzz-sources: common/convert/jb_torch.c common/convert/jb_pickle.c common/convert/jb_zip.c
// fuzz-sources: common/core/jb_err.c common/core/jb_tensor.c
// fuzz-libs: -ljansson -lz -lm
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jb_torch.h"

static void copy_seed(const char *from, const char *dir, const char *name, size_t max) {
    FILE *in = fopen(from, "rb");
    if (!in) return;
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *out = fopen(path, "wb");
    char buf[4096];
    size_t n, total = 0;
    while (out && total < max && (n = fread(buf, 1, sizeof buf, in)) > 0) {
        if (n > max - total) n = max - total;
        fwrite(buf, 1, n, out);
        total += n;
    }
    if (out) fclose(out);
    fclose(in);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    const char *dir = getenv("JB_FUZZ_WRITE_SEEDS");
    if (!dir) return 0;
    DIR *d = opendir("tests/fixtures/torch");
    struct dirent *de;
    while (d && (de = readdir(d))) {
        size_t l = strlen(de->d_name);
        if (l < 8 || strcmp(de->d_name + l - 8, ".pth.tar")) continue;
        char from[1024];
        snprintf(from, sizeof from, "tests/fixtures/torch/%s", de->d_name);
        copy_seed(from, dir, de->d_name, 1u << 20);
    }
    if (d) closedir(d);
    copy_seed("tests/golden/checkpoints/vqvae_tiny.pth.tar", dir, "vqvae_tiny.head", 16384);
    copy_seed("tests/golden/checkpoints/vqvae_tiny.zip.pth.tar", dir, "vqvae_tiny.zip.head",
              16384);
    exit(0);
}

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
