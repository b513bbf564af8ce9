// jb_stage.h: the loop of a prior stage (jukebox-prior-top, jukebox-upsampler-mid,
// jukebox-upsampler-bottom): read a job stream, pass it on, add this level's codes.
//
// The job stream protocol is in docs/wire.md ("Job stream"). In short, stage l:
//   - forwards every message downstream as it arrives, except the upstream END(l)
//     (which only closes the prefix of level l) and END(-1) (held back);
//   - samples level l window by window (the reference's sample_level) as soon as
//     the prefix of level l is closed and, for an upsampler, the codes of level
//     l+1 that a window conditions on have arrived; emits each window's new codes;
//   - then emits END(l) (text: the labels it used), then the held END(-1).
// A job that is invalid for this model (lengths out of range, a codes file of
// another model, ...) is refused before any work: the stage emits ERROR for it
// and drops its later messages; the stage keeps serving other jobs.
//
// With a spool (opts.spool, jb_spool.h) every input message of a job is recorded
// before it is accepted and every output message before it is sent. On start the
// stage replays each spooled job: re-sends its out.jbc downstream (same order),
// rebuilds the job from in.jbc, forwards the inputs it had not forwarded yet, takes
// the windows of its level already in out.jbc as done and goes on at the next one
// (log: "job=J level=L resumed at window k of n"). Messages of a spooled job that
// upstream sends again after a restart (the first in.jbc-count of them) are dropped.
// A job's spool is removed once the job is finished here and the next stage has
// it: in a shell pipe, when the pipe is empty (jb_endpoint_unread); otherwise when
// the output is closed cleanly. Input that ends in the middle of a job leaves the
// job in the spool (exit 69) instead of an error record.
//
// Over a reliable link (docs/reliability.md) a stage also: drops a job its producer
// CANCELs (and cancels what it sent of it downstream); reports a job DONE upstream
// when its downstream reported it DONE (or, with a stream output, when it finished
// the job); on stop hands back (RELEASE) every job it has not finished and cancels
// their partial output downstream, after finishing the window it was sampling.
//
// Thread rules: one stage per process; the loop runs on the calling thread
// (sampling uses the OpenMP pool); the links' I/O threads run beside it. stop is
// polled between windows and while waiting for input: when set, the stage stops
// reading and returns JB_ECANCEL.
#ifndef JB_STAGE_H
#define JB_STAGE_H

#include <signal.h>

#include "jb_err.h"

// The top prior sends its lyric alignment averaged over groups of this many top-level
// tokens (about 46 ms at hop 128): the page animates at that rate, and a 10-minute
// song's alignment stays a few MB instead of a few hundred.
#define JB_STAGE_ALIGN_TOKENS 16

typedef struct {
    const char *stage;        // "prior-top", for logs
    int level;                // level this executable serves: the model must match (-1: any)
    const char *model_path;   // prior model file
    const char *in;           // input endpoint ("-", file, tcp://, ipc://)
    const char *out;          // output endpoint
    int max_batch;            // sampler capacity: samples sampled together (>= a job's batch)
    int max_chunk;            // priming chunk capacity
    int weights;              // JB_WEIGHTS_* (jb_transformer.h): matrix weights as stored or converted
    int packed;               // 1: matrix weights repacked for the sampling kernel (jb_matmul_pack)
    int cuda;                 // sample on the current CUDA device (a CUDA build, device opened)
    const char *spool;        // spool directory (jb_spool.h) or NULL: jobs in memory only
    volatile sig_atomic_t *stop;   // SIGTERM: the window being sampled is finished (spooled
                                   // and sent), then the stage returns JB_ECANCEL; the
                                   // rest of its jobs stay in the spool
    // Reliable link (tcp:// / ipc:// endpoints; docs/reliability.md)
    const char *name;         // instance name (NULL: <host>-<pid>)
    int heartbeat_ms;         // 0: default 1000
    int peer_timeout_ms;      // 0: default 5000
    const char *control;      // bound endpoint answering STATUS requests, or NULL
} jb_stage_opts_t;

// Runs until the input ends (0), a fatal error (-1 + err), or stop (-1, JB_ECANCEL).
// Jobs refused for bad input do not make it fail; a stream that breaks does.
int jb_stage_prior_run(const jb_stage_opts_t *o, jb_err_t *err);

#endif

// The whole command line of a prior stage executable (argument parsing, --help,
// signals, logging setup, exit codes); main() of prior-top, upsampler-mid and
// upsampler-bottom is one call to this. Returns the process exit code.
int jb_stage_prior_main(int argc, char **argv, const char *stage, int level);
