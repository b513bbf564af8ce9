// jb_collect.h: the end of the pipeline: gather each job's messages and, when the job is
// complete, write its run directory (jb_outdir.h). Used by `jukebox-decoder --outdir`.
//
// Per job it keeps the spec (JOB), the codes of every level (CODES), what each stage
// used (END(level) texts), the lyric alignment (ALIGN); END(-1) completes the job and
// its directory is written; ERROR writes an error record instead. A job whose stream
// stops in the middle (the input ends) gets an error record too: nothing is lost
// silently and no half-written run appears.
//
// Thread rules: runs on the calling thread. Ownership: the caller keeps vq and in.
#ifndef JB_COLLECT_H
#define JB_COLLECT_H

#include <signal.h>

#include "jb_err.h"
#include "jb_transport.h"
#include "jb_vqvae.h"

typedef struct {
    const char *root;              // run directories go to ROOT/<job id>/
    int max_jobs;                  // return after this many jobs ended (0: until input ends)
    volatile sig_atomic_t *stop;   // polled while waiting
    int64_t decode_step;           // bottom codes decoded at a time as they stream in
                                   // (0: one second of audio; < 0: only at the end)
} jb_collect_opts_t;

typedef struct {
    int jobs_done;                 // run directories written
    int jobs_failed;               // error records written
    double first_audio_s;          // seconds from the first message to the first bottom-level
                                   // audio decoded (the decoder decodes as codes stream in)
    double total_s;                // seconds from the first message to the last run written
} jb_collect_stats_t;

// 0 when the input ended (or max_jobs were done, or stop), -1 + err when the stream
// broke or a directory could not be written.
int jb_collect_run(jb_vqvae_t *vq, jb_endpoint_t *in, const jb_collect_opts_t *o,
                   jb_collect_stats_t *stats, jb_err_t *err);

#endif
