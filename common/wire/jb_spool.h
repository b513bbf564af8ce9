// jb_spool.h: a stage's durable record of its jobs (--spool DIR), so that a job
// interrupted by a crash, a kill or a stop resumes from its last completed window.
//
// Layout (docs/reliability.md, "Spool"):
//
//   DIR/lock                 flock'd by the running instance; holds its pid
//   DIR/<job id>/in.jbc      every input message of the job, in the order received
//   DIR/<job id>/out.jbc     every output message of the job, in the order sent
//   DIR/.trash.<id>.<pid>.<n>  a job being removed (renamed first, then deleted)
//
// in.jbc and out.jbc are frame streams (jb_wire.h), the codes-file format, so
// `jukebox-codes` can read them. They are append-only: jb_spool_append writes one
// frame and fsyncs the file (and, when it created the file or the job directory,
// the directory above) before it returns, so a caller that acks or sends only
// after a successful append never confirms anything that a crash can take back.
// A failed append (disk full, EIO, file size limit) is cut back to the last whole
// frame and reported (JB_EIO naming the file); the caller must not ack or send.
//
// On open the spool is locked (a second instance on the same DIR gets a clear
// error naming the pid that holds it), leftover .trash.* directories are
// deleted, and every job directory is listed and checked: a torn or corrupt
// last frame (a crash in the middle of a write) is cut off and reported as a
// warning (jb_spool_warning), not as an error. Removing a job (its DONE) renames
// its directory to a trash name, fsyncs DIR, then deletes it: a crash leaves the
// job either whole or gone, never half.
//
//   jb_spool_t *sp = jb_spool_open("/var/spool/jukebox/top", &err);
//   for (int i = 0; i < jb_spool_n_warnings(sp); i++)
//       jb_log(JB_WARN, "%s", jb_spool_warning(sp, i));
//   for (int i = 0; i < jb_spool_n_jobs(sp); i++) replay(jb_spool_job_id(sp, i));
//   ... on each input:  if (jb_spool_append(sp, id, JB_SPOOL_IN, &m, &err)) don't ack;
//   ... each output:    if (jb_spool_append(sp, id, JB_SPOOL_OUT, &m, &err)) don't send;
//   ... on DONE:        jb_spool_remove(sp, id, &err);
//   jb_spool_destroy(&sp);
//
// Thread rules: append, read, count, has and remove may be called from several
// threads (a link's I/O thread persists input while the stage thread writes output);
// the listing (n_jobs, job_id, warnings) is for the thread that opened it, at start.
// Ownership: strings returned are owned by the spool (valid until the job is
// removed or the spool destroyed); messages passed in are borrowed.
#ifndef JB_SPOOL_H
#define JB_SPOOL_H

#include <stdint.h>

#include "jb_err.h"
#include "jb_wire.h"

typedef struct jb_spool jb_spool_t;   // opaque

typedef enum { JB_SPOOL_IN = 0, JB_SPOOL_OUT = 1 } jb_spool_file_t;

// Opens (creating DIR, and its parent, if missing) and locks a spool, lists its
// jobs and repairs torn tails. NULL + err: JB_EUNAVAIL when another process
// holds the lock (the message names its pid), JB_EIO when DIR cannot be
// created, read or locked.
jb_spool_t *jb_spool_open(const char *dir, jb_err_t *err);
// Closes the files and releases the lock; the spool's contents stay. Accepts
// NULL and *sp_p == NULL.
void jb_spool_destroy(jb_spool_t **sp_p);

const char *jb_spool_dir(const jb_spool_t *sp);

// The default instance name of a process with a spool: "<host>:<absolute spool path>"
// (cut to fit; the same after a restart, so its link peers know it again). Writes at
// most n bytes into buf; returns buf.
char *jb_spool_instance_name(const jb_spool_t *sp, char *buf, size_t n);

// Jobs present (listed on open, sorted by id; jobs appended to later follow in
// the order they were created). jb_spool_job_id: i in [0, n), NULL otherwise.
int jb_spool_n_jobs(const jb_spool_t *sp);
const char *jb_spool_job_id(const jb_spool_t *sp, int i);
int jb_spool_has(const jb_spool_t *sp, const char *job_id);

// What the open repaired: one line per torn or corrupt tail cut off, naming the
// file, the byte offset and the bytes dropped.
int jb_spool_n_warnings(const jb_spool_t *sp);
const char *jb_spool_warning(const jb_spool_t *sp, int i);

// Messages in a job's file (0 for a job or file that does not exist). The index
// of the next appended message, so out.jbc's count is a producer's next `seq`.
int64_t jb_spool_count(const jb_spool_t *sp, const char *job_id, jb_spool_file_t which);

// Appends msg (encoded as one frame) to the job's file and fsyncs; creates the
// job directory and the file on first use (and fsyncs their directories).
// job_id must be a valid wire job id not starting with '.'. 0 / -1 + err
// (JB_EINVAL bad id or message; JB_EIO write or fsync failed: the file is cut
// back to its previous size, nothing of msg is kept).
int jb_spool_append(jb_spool_t *sp, const char *job_id, jb_spool_file_t which,
                    const jb_msg_t *msg, jb_err_t *err);

// Calls fn for each message of the job's file, in order (msg valid during the
// call; fn may take its pointers and NULL them); stops when fn returns non-zero
// (returned). 0 (also for a file that does not exist) / -1 + err.
int jb_spool_read(const jb_spool_t *sp, const char *job_id, jb_spool_file_t which,
                  jb_frame_msg_fn fn, void *user, jb_err_t *err);

// The job is done: its directory is renamed to a trash name, DIR fsynced, then
// deleted; it leaves the listing. Removing a job that is not there is not an
// error. 0 / -1 + err (JB_EIO).
int jb_spool_remove(jb_spool_t *sp, const char *job_id, jb_err_t *err);

#endif
