// jukebox-bench: per-stage benchmarks.
//
//   jukebox-bench <subcommand> [options]      jukebox-bench <subcommand> --help
//
// Each subcommand lives in tools/bench/<name>.c (see tools/bench/bench.h); add one by
// writing that file and a line in the table below.
#include <stdio.h>
#include <string.h>
#include <sysexits.h>

#include "bench/bench.h"

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *what;
} commands[] = {
    {"vqvae", bench_vqvae, "VQ-VAE encode/decode: seconds of compute per second of audio"},
    {"prior", bench_prior, "prior sampling steps: ms/token, tokens/s, fraction of read bandwidth"},
    {"stage", bench_stage, "a prior stage serving N concurrent jobs: tokens/s, latency, memory"},
    {"pipeline", bench_pipeline, "the stage executables as one pipeline on N jobs: each stage's "
                                 "share, the balance, time to first audio"},
};

static void usage(FILE *to) {
    fprintf(to, "usage: jukebox-bench <subcommand> [options]   (<subcommand> --help for its options)\n"
                "subcommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(to, "  %-10s %s\n", commands[i].name, commands[i].what);
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? EX_USAGE : 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "jukebox-bench: unknown subcommand '%s'\n", argv[1]);
    usage(stderr);
    return EX_USAGE;
}
