// jb_collect.h: the end of the pipeline: gather each job's messages and, when the job is
// complete, write its run directory (jb_outdir.h). Used by `jukebox-decoder --outdir`.
//
// Per job it keeps the spec (JOB), the codes of every level (CODES), what each stage
// used (END(level) texts), the lyric alignment (ALIGN); END(-1) completes the job and
// its directory is written; ERROR writes an error record instead. A job whose stream
// stops in the middle (the input ends) gets an error record too: nothing is lost
// silently and no half-written run appears.
//
// With a spool (opts.spool, jb_spool.h) every message of a job goes to the job's in.jbc
// before it is acted on, and the job's spool is removed once its run directory (or
// error record) is in place. On start the spooled jobs are decoded again from their
// in.jbc; what upstream sends again of them afterwards (the first in.jbc-count
// messages of a job) is dropped. A job whose ROOT/<id> already exists is done: its
// spool is removed and its messages dropped (no ROOT/<id>.1 copy). A job the input
// leaves unfinished stays in the spool (stats.jobs_kept) instead of an error record.
//
// Thread rules: runs on the calling thread. Ownership: the caller keeps vq and in.
#ifndef JB_COLLECT_H
#define JB_COLLECT_H

#include <signal.h>
#include <stdatomic.h>

#include "jb_err.h"
#include "jb_spool.h"
#include "jb_transport.h"
#include "jb_vqvae.h"

typedef struct {
    const char *root;              // run directories go to ROOT/<job id>/
    int max_jobs;                  // return after this many jobs ended (0: until input ends)
    volatile sig_atomic_t *stop;   // polled while waiting
    int64_t decode_step;           // bottom codes decoded at a time as they stream in
                                   // (0: one second of audio; < 0: only at the end)
    jb_spool_t *spool;             // or NULL (borrowed)
    jb_endpoint_t *in;             // the input (set once open), or NULL: the persist hook
                                   // records which producer's stream each spooled job is
    atomic_int *spool_ready;       // with a spool over a link: set to 1 once the spooled
                                   // jobs are replayed (jb_collect_persist refuses before)
} jb_collect_opts_t;

// A link input's persist hook (jb_link_opts_t.persist) for a decoder with a spool;
// user: the jb_collect_opts_t given to jb_collect_run. Runs on the link's I/O thread.
int jb_collect_persist(void *user, const jb_msg_t *msg, jb_err_t *err);

typedef struct {
    int jobs_done;                 // run directories written
    int jobs_failed;               // error records written
    int jobs_kept;                 // unfinished when the input ended: kept in the spool
    int first_fail_code;           // exit status the first error record gives: 69 a job the
                                   // input left unfinished, 65 any other (0: none)
    int msgs_skipped;              // refused messages that named no job (skipped)
    double first_audio_s;          // seconds from the first message to the first bottom-level
                                   // audio decoded (the decoder decodes as codes stream in)
    double total_s;                // seconds from the first message to the last run written
} jb_collect_stats_t;

// 0 when the input ended (or max_jobs were done, or stop), -1 + err when the stream
// broke or a directory could not be written.
int jb_collect_run(jb_vqvae_t *vq, jb_endpoint_t *in, const jb_collect_opts_t *o,
                   jb_collect_stats_t *stats, jb_err_t *err);

#endif
