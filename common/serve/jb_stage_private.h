// jb_stage_private.h: what the parts of a prior stage share (not an API: jb_stage.h is).
//   jb_stage.c         the loop: messages, this level's windows, a job's end, the run
//   jb_stage_replay.c  the spool: recording input, replaying a spooled job after a restart,
//                      the finished jobs whose spool waits, DONE from below
//   jb_stage_status.c  the status the links' I/O threads report (jobs, tokens/s, last error)
// Thread rules: the stage thread owns stage_t; the links' I/O threads touch only what
// status_mu and done_mu guard (stage_status, stage_control_status, stage_on_done,
// stage_persist).
#ifndef JB_STAGE_PRIVATE_H
#define JB_STAGE_PRIVATE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "jb_codes.h"
#include "jb_job.h"
#include "jb_labels.h"
#include "jb_link.h"
#include "jb_prior.h"
#include "jb_progress.h"
#include "jb_sample.h"
#include "jb_spool.h"
#include "jb_stage.h"
#include "jb_transport.h"

// A message a stage generated, as far as a resumed job compares them: the same type,
// level, offset and first sample (codes are sent window by window from offset 0).
typedef struct {
    int type, level;
    int64_t offset, sample0;
} jb_stage_gen_t;

typedef struct job {
    struct job *next;
    jb_job_t spec;
    jb_codes_t codes;        // everything received for this job, every level
    int failed;              // refused or failed: its later messages are dropped
    int prefix_done;         // upstream END(level): the prefix of this level is closed
    int upstream_done;       // upstream END(-1), held back until this level is done
    int started, level_done;
    // this stage's level
    int total;               // codes of this level the job wants
    int64_t total_above;     // codes of the level above it will have (upsamplers)
    int32_t *zs;             // (n_samples, total)
    int have;
    jb_sample_window_t *windows;
    int n_windows, next_window;
    int32_t *y;              // (n_samples, label_len) base labels, or NULL
    int32_t *full_tokens;    // lyric tokens of the song (one list for every sample)
    int n_full;
    jb_sample_lyrics_t *lyrics;   // (n_samples) all pointing at full_tokens
    char *labels_json;       // END(level) text: what this stage used
    jb_progress_t progress;
    double busy_s;           // wall seconds this stage spent sampling the job's windows (a
                             // batch of several jobs split by their samples; sending and
                             // spooling not counted): "done ... busy=" in the log
    int64_t sampled;         // codes this stage sampled for the job in this run, every sample
    // spool
    int64_t n_in;            // messages of this job in in.jbc
    int64_t recv_n;          // messages of this job received from upstream in this run: the
                             // first n_in of them (resent after a restart) are dropped
    uint32_t *in_sum;        // (n_in) checksums of the spooled inputs (pipe input after a
                             // restart): a resent message must be the same
    jb_stage_gen_t *gen;     // (n_gen) the messages this stage had generated before a
                             // restart (in out.jbc): not sent again
    int n_gen, gen_idx;
    jb_codes_t mine;         // codes of this level from out.jbc (resumed job), or zeroed
    int resumed;
} job_t;

typedef struct {
    const jb_stage_opts_t *o;
    jb_prior_t *prior;
    const jb_prior_info_t *info;
    const jb_prior_hparams_t *hp;
    jb_st_t *st;                      // the model file again, for its vocabularies
    jb_labels_vocab_t *artists, *genres;
    jb_prior_sampler_t *sampler;      // on the CPU or the device (jb_sample_sampler_new)
    jb_endpoint_t *in, *out;
    job_t *jobs;
    int levels;                       // VQ-VAE levels (3)
    // Ids of the last jobs refused or failed here: their later messages (codes,
    // alignment) are dropped, not passed on after the ERROR record.
    char failed_ids[32][JB_WIRE_JOB_ID_MAX + 1];
    int n_failed;
    // Ids of the last 256 jobs this stage forgot (finished, failed, cancelled): a late
    // message of one of them is dropped, where a message of a job never seen here fails
    // that job (wire.md 8.3: a stage samples a job only from its `job` message).
    char gone_ids[256][JB_WIRE_JOB_ID_MAX + 1];
    int n_gone;
    jb_spool_t *spool;
    char model_id[160];      // the model and settings that make this stage's codes
    atomic_int spool_ready;  // replay done: a link input's persist hook may spool
    // Jobs finished here whose spool waits until the next stage has them.
    char (*finished)[JB_WIRE_JOB_ID_MAX + 1];
    int n_finished, cap_finished;
    // Replay of a spooled job: what on_message would send is captured here instead.
    int replaying;
    int out_broken;          // a send or spool write failed: the stage stops (not the job's fault)
    jb_msg_t *cap;
    int n_cap, cap_cap;
    // --control (NULL without) and the status the links' I/O threads report.
    jb_link_t *control;
    pthread_mutex_t status_mu;
    char *status;                     // JSON object text: stage, jobs, tokens/s, last error
    char last_error[512];
    double last_error_t;
    double rate_t[64];                // (time, tokens emitted so far) after each window
    int64_t rate_tok[64], tokens;
    int n_rate;
    double t_start, t_status;         // jb_now() at start-up, and of the last status snapshot
    // DONE from below (the output link's I/O thread): the job is finished for good
    // downstream (another copy may have got there first). The stage thread drops it and
    // its spool (drain_done); until then nothing more of it is sent or spooled.
    pthread_mutex_t done_mu;
    char (*done_q)[JB_WIRE_JOB_ID_MAX + 1];
    int n_done_q, cap_done_q;
    // The last 64 jobs DONE from below: the input link's persist hook spools nothing more
    // of them (a message it was persisting when the DONE came would recreate the spool
    // directory after drain_done removed it).
    char done_recent[64][JB_WIRE_JOB_ID_MAX + 1];
    int n_done_recent;
    // The last sampling step ran new jobs' first windows: the next one goes to the older
    // jobs when one of them can move (step()), so a stream of new jobs cannot stall them.
    int first_windows_last;
} stage_t;

// ---- jb_stage.c: jobs and messages
job_t *stage_find_job(stage_t *s, const char *id);
void stage_drop_job(stage_t *s, job_t *j);
// Every message out goes through here: with a spool, into the job's out.jbc first.
int stage_send_msg(stage_t *s, const jb_msg_t *m, jb_err_t *err);
// Refuse or abandon a job: an ERROR record downstream, then forget it.
int stage_fail_job(stage_t *s, job_t *j, const jb_err_t *why, jb_err_t *err);
// Whether job id ended here with an ERROR record (its later messages are dropped).
int stage_failed_before(const stage_t *s, const char *id);
// Whether job id was here before (one of the last 256 forgotten, or finished with a spool).
int stage_seen_before(const stage_t *s, const char *id);
// A message of a job this stage has no `job` message for: the job fails here (an ERROR
// record with why), unless it was here before (a late message: dropped). 0 / -1 + err.
int stage_fail_unknown(stage_t *s, const char *id, const jb_err_t *why, jb_err_t *err);
int stage_on_message(stage_t *s, jb_msg_t *m, jb_err_t *err);

// ---- jb_stage_replay.c: the spool
// Each spooled job's model identity must be this stage's (fills s->model_id).
int stage_check_spool_model(stage_t *s, jb_err_t *err);
// A link input's persist hook (jb_link_opts_t.persist; the link's I/O thread).
int stage_persist(void *user, const jb_msg_t *m, jb_err_t *err);
// One input message: into in.jbc first (a stream input with a spool), then on_message.
int stage_accept_msg(stage_t *s, jb_msg_t *m, jb_err_t *err);
// A spooled job after a restart: resent, rebuilt, forwarded (jb_stage.h).
int stage_replay_job(stage_t *s, const char *id, jb_err_t *err);
// Every spooled job replayed, then a link input may persist (s->spool_ready).
int stage_replay_all(stage_t *s, jb_err_t *err);
// While replaying, what the stage would send is captured here instead.
int stage_capture(stage_t *s, const jb_msg_t *m, jb_err_t *err);
int stage_is_finished(const stage_t *s, const char *id);
// The job is over here: forgotten; its spool goes once the next stage has it.
int stage_finish_job(stage_t *s, job_t *j, jb_err_t *err);
int stage_release_finished(stage_t *s, int wait, int closed, jb_err_t *err);
// DONE from below (the output link's on_done hook), queued for the stage thread.
void stage_on_done(void *user, const char *job_id);
int stage_done_pending(stage_t *s, const char *id);
void stage_drain_done(stage_t *s);

// ---- jb_stage_status.c
void stage_update_status(stage_t *s);
// The links' status hook: the stage's JSON object text (malloc'd) or NULL.
char *stage_status(void *user);
// --control: the stage's status plus both links'.
char *stage_control_status(void *user);
void stage_note_error(stage_t *s, const char *text);
// n tokens emitted now: the tokens/s over the last minute counts them.
void stage_count_tokens(stage_t *s, int64_t n);

#endif
