// jb_reader.h: the receiving end of a job stream (docs/wire.md section 8.4): one set of
// rules for every reader that keeps whole jobs, the decoder's -o (jb_codec.h) and
// --outdir (jb_collect.h).
//
//   jb_reader_t *r = jb_reader_new(&(jb_reader_opts_t){.levels = 3, .codebook = 2048}, &err);
//   while (recv(&m) == JB_RECV_MSG) {
//       jb_reader_ev_t ev;
//       jb_reader_feed(r, &m, &ev);       // ev.kind: what happened to which job
//       if (ev.kind == JB_READ_DONE) { ... ev.job complete ...; jb_reader_job_free(&ev.job); }
//       if (ev.kind == JB_READ_FAILED) { ... one error record for ev.id ... }
//   }
//
// The rules, per job id:
//   * JOB, CODES, END, ALIGN open the job (at most opts.max_jobs open; a job past that
//     fails). JOB keeps the spec; its n_samples fixes the sample count. Without a job
//     message the sample count is the largest sample0 + batch seen (grown as rows
//     arrive, at most JB_JOB_MAX_SAMPLES) and the job's codes may fill at most
//     JB_READER_UNKNOWN_CODES codes (samples x tokens summed over levels).
//   * CODES go through jb_codes_apply (order per sample, restated tokens equal, codebook);
//     codes of a level after that level's END, of a level the model does not have, or of
//     samples past the spec's count fail the job. END(level) checks its offset (the
//     level's length) and batch against the codes held; a second END of a level fails.
//   * END (no level) completes the job: JB_READ_DONE, or JB_READ_FAILED when no level
//     holds codes. ERROR fails it with the code it carries (JB_READ_FAILED).
//   * A job that failed or completed is closed: every later message of that id is
//     dropped (JB_READ_DROPPED), so one job gives exactly one result (one run directory
//     or one error record). The reader remembers the last JB_READER_CLOSED ids.
//   * CANCEL (the link: the job went elsewhere) forgets the job without a result
//     (JB_READ_CANCEL); it is not closed.
//   * A message the transport refused (JB_RECV_BAD) whose header named a job:
//     jb_reader_refused fails that job.
// At the end of the input, jb_reader_take_open hands over the jobs still open.
//
// Thread rules: one thread. Ownership: the reader owns its open jobs; a job handed out
// in an event (ev.job) or by jb_reader_take_open belongs to the caller
// (jb_reader_job_free). The caller's per-job state hangs on job->user, freed by the
// caller's opts.free_user.
#ifndef JB_READER_H
#define JB_READER_H

#include <stdint.h>

#include "jb_codes.h"
#include "jb_err.h"
#include "jb_wire.h"

#define JB_READER_CLOSED 4096                  // closed job ids remembered
#define JB_READER_UNKNOWN_CODES (INT64_C(1) << 24)   // codes of a job without a job message

typedef struct jb_reader_job {
    char id[JB_WIRE_JOB_ID_MAX + 1];
    jb_codes_t codes;            // every level (initialised: inited)
    int inited;
    int spec_samples;            // n_samples of the spec, 0 when no job message said it
    char *spec;                  // the job message's spec (before codes arrive), owned
    char *labels[JB_CODES_MAX_LEVELS];   // END(level) info texts, owned
    float *align;                // (batch, align_tokens, align_cols) weights in [0, 1]
    int64_t align_tokens;
    int align_cols;
    char *align_lyrics;
    void *user;                  // the caller's state (freed by opts.free_user)
    void (*free_user)(void *);
    struct jb_reader_job *next;
} jb_reader_job_t;

typedef enum {
    JB_READ_NONE = 0,    // taken (or a message without a job / of no concern)
    JB_READ_OPENED,      // a new job (ev.job, still owned by the reader)
    JB_READ_CODES,       // codes of ev.level were added to ev.job (owned by the reader;
                         // also when the message opened the job)
    JB_READ_DONE,        // END of ev.job: complete; ev.job is the caller's now
    JB_READ_FAILED,      // ev.id failed: ev.code (sysexits), ev.why; its state is gone
    JB_READ_CANCEL,      // ev.id cancelled by its producer; its state is gone
    JB_READ_DROPPED,     // a message of a closed job (ev.id), dropped
} jb_reader_kind_t;

typedef struct {
    jb_reader_kind_t kind;
    char id[JB_WIRE_JOB_ID_MAX + 1];
    int level;                   // CODES, FAILED: the level concerned (-1: none)
    int code;                    // FAILED: sysexits class (65 bad data, 69 unavailable, ...)
    char why[512];               // FAILED: what went wrong, naming job, level and offset
    jb_reader_job_t *job;        // OPENED, CODES (borrowed), DONE (the caller's)
} jb_reader_ev_t;

typedef struct {
    int levels;                  // the model's levels (codes of other levels fail the job)
    int64_t codebook;            // the model's codebook size, or -1
    int max_jobs;                // open at once (0: 256)
    void (*free_user)(void *);   // frees job->user (NULL: free())
} jb_reader_opts_t;

typedef struct jb_reader jb_reader_t;

jb_reader_t *jb_reader_new(const jb_reader_opts_t *opts, jb_err_t *err);
// Frees the reader and every open job. Accepts NULL.
void jb_reader_destroy(jb_reader_t **self_p);

// One received message (its arrays may be taken: m is left for jb_msg_clear). Fills ev.
// 0, or -1 + err for the reader's own failure (out of memory): not a job's problem.
int jb_reader_feed(jb_reader_t *r, jb_msg_t *m, jb_reader_ev_t *ev, jb_err_t *err);

// A message the transport refused (JB_RECV_BAD): when its header named an open (or a
// new) job, the job fails (ev FAILED, code 65, why = the refusal); otherwise ev NONE.
void jb_reader_refused(jb_reader_t *r, const jb_msg_t *m, const jb_err_t *why,
                       jb_reader_ev_t *ev);

// The jobs still open (the input ended or stops), oldest first, handed to the caller
// (a list through ->next); the reader holds none after. Each is closed.
jb_reader_job_t *jb_reader_take_open(jb_reader_t *r);

// The open job of that id, or NULL (borrowed).
jb_reader_job_t *jb_reader_find(jb_reader_t *r, const char *id);

// Number of jobs open now.
int jb_reader_n_open(const jb_reader_t *r);

void jb_reader_job_free(jb_reader_job_t **job_p);

#endif
