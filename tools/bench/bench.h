// bench.h: what the subcommands of jukebox-bench share.
//
// A subcommand is `int bench_<name>(int argc, char **argv)` in tools/bench/<name>.c
// (argv[0] is the subcommand's name), listed in the table of tools/bench.c. It prints a
// human-readable report on stdout and returns an exit code (sysexits: 0, 64 bad usage, ...).
#ifndef JB_BENCH_H
#define JB_BENCH_H

#include <stddef.h>

#include "jb_err.h"

int bench_vqvae(int argc, char **argv);
int bench_prior(int argc, char **argv);
int bench_stage(int argc, char **argv);
int bench_pipeline(int argc, char **argv);

// Monotonic clock, seconds.
double bench_now(void);
// CPU time of the whole process (all threads), seconds.
double bench_cpu_now(void);
// Peak resident set size of this process so far (or since bench_peak_rss_reset), MiB.
double bench_peak_rss_mib(void);
// The peak from now on: what was freed before (the bandwidth probe's 512 MiB) is not counted.
void bench_peak_rss_reset(void);
// OpenMP and OpenBLAS threads.
void bench_set_threads(int n);
// Machine description on one line (CPU model, cores, how OpenMP threads wait) into buf:
// this process's threads, or (stages 1) those of the stage executables it starts.
void bench_machine(char *buf, size_t size, int stages);
// How idle OpenMP threads wait (OMP_WAIT_POLICY / GOMP_SPINCOUNT), in words: this
// process's, and that of a stage executable started with this environment.
void bench_wait_policy(char *buf, size_t size);
void bench_stage_wait_policy(char *buf, size_t size);

// The machine's read bandwidth with the current OpenMP threads, GB/s, best of `reps` passes
// over 512 MiB. plain: one sequential stream per thread, no software prefetch (a simple read
// loop). multi: the best of 1, 2, 4 and 8 interleaved streams per thread with software
// prefetch 0, 1 KiB or 4 KiB ahead (what a weight-streaming kernel can do: the bound).
typedef struct {
    double plain, multi;     // GB/s
    int streams, prefetch;   // the multi-stream case that gave `multi`
} bench_bw_t;
// Zeros when 512 MiB cannot be allocated.
bench_bw_t bench_read_bandwidth(int reps);

// The machine's peak rate of f32 multiply-adds with the current OpenMP threads, GFLOP/s
// (all threads together, best of `reps` runs of ~20 ms): independent FMA chains in the
// vectors of the matrix kernel jb_matmul chose (AVX2 or AVX-512). A step of many rows is
// bound by it where a step of one row is bound by the weights' bytes.
double bench_fma_peak_gflops(int reps);

// A step's bound: the longer of reading `bytes` at `gbs` GB/s (mem: one row's bound) and
// doing `flops` at `gflops` GFLOP/s (fma: many rows'); seconds; by: "bw" or "FMA".
typedef struct {
    double mem, fma, bound;
    const char *by;
} bench_bound_t;
bench_bound_t bench_step_bound(double bytes, double gbs, double flops, double gflops);

// An option's value as a whole number in [lo, hi] (all of s): 0, or -1 (out untouched).
int bench_parse_int(const char *s, long lo, long hi, int *out);

// s as the inside of a JSON string (quotes, backslashes and control characters escaped)
// into buf; returns buf.
const char *bench_json_text(const char *s, char *buf, size_t size);

// Writes a prior model file of random values for the hyper-parameters hp (a json_t *: the
// preset of jb_hparams_preset, depth as wanted); LayerNorm gains 1. 0 / -1 + err.
struct json_t;
int bench_write_random_prior(const char *path, struct json_t *hp, jb_err_t *err);

#endif
