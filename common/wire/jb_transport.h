// jb_transport.h: where a stage's messages come from and go to.
//
// An endpoint is named by a string:
//   "-"                 stdin (input) or stdout (output), as a frame stream
//   a file path         a frame stream in a file (a codes file); an output file is
//                       written under a temporary name and published by a successful
//                       jb_endpoint_close() (jb_publish.h: fsync, rename, fsync of the
//                       directory), so a reader never sees a partial file
//   "tcp://host:port"   ZeroMQ; one message = two parts (header, payload)
//   "ipc://path"        ZeroMQ over a Unix socket
// A ZeroMQ input binds and an output connects (downstream listens, upstream dials);
// a leading '@' forces bind and '>' forces connect ("@tcp://*:5555", ">ipc://x").
// A ZeroMQ endpoint is a reliable link (jb_link.h, docs/reliability.md): an output is a
// producer, an input a consumer; several comma-separated addresses may be given
// ("'>tcp://a:5601,>tcp://b:5601'"). Messages of one job go to one consumer, are acked,
// kept by the producer until the job is DONE, and resent to another consumer when
// theirs dies. Queues are bounded (opts.hwm: the input's credit and the output's unsent
// backlog), so a slow reader slows the writer. A link input never reports EOF.
//
//   jb_endpoint_opts_t o; jb_endpoint_default_opts(&o);
//   jb_endpoint_t *in = jb_endpoint_open_in("-", &o, &err);
//   jb_msg_t m; jb_msg_init(&m);
//   for (;;) {
//       jb_recv_t r = jb_endpoint_recv(in, &m, 1000, &err);
//       if (r == JB_RECV_EOF) break;
//       if (r == JB_RECV_TIMEOUT) continue;            // check a stop flag here
//       if (r == JB_RECV_BAD) { jb_log(JB_WARN, "%s", err.msg); continue; }
//       if (r == JB_RECV_ERROR) break;                 // stream unusable
//       ... use m ...
//   }
//   jb_msg_clear(&m); jb_endpoint_destroy(&in);
//
// Thread rules: an endpoint belongs to one thread at a time (ZeroMQ sockets are
// not thread-safe); separate endpoints may be used from separate threads.
// Signals: writes to a pipe whose reader is gone fail with JB_EUNAVAIL instead of
// raising SIGPIPE (it is blocked around the write); a signal during a wait makes
// recv return JB_RECV_TIMEOUT so the caller can check its stop flag.
#ifndef JB_TRANSPORT_H
#define JB_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

#include "jb_admit.h"
#include "jb_err.h"
#include "jb_wire.h"

typedef struct jb_endpoint jb_endpoint_t;   // opaque
struct jb_link_opts;                        // jb_link.h
struct jb_link_stats;

typedef struct {
    int hwm;              // ZeroMQ: input credit / output unsent backlog (default 16)
    int send_timeout_ms;  // ZeroMQ: send waits this long for room, -1 = forever (default)
    int linger_ms;        // ZeroMQ: close waits this long for the output to be acked (10000)
    int64_t codebook;     // input: codes must be below this (-1 = only the header's)
    // input: the receiver's model, whose level lengths bound each known job's messages
    // before their payload is decompressed (jb_admit.h; levels 0: sample counts and the
    // unknown-job cap only). Passed to a link unless the template sets one.
    jb_admit_model_t admit;
    // ZeroMQ: the link's options (name, heartbeat, hooks ...; jb_link.h), or NULL for
    // the defaults. role comes from the direction; credit / backlog from hwm, and
    // codebook from above, unless the template sets them (> 0 / >= 0).
    const struct jb_link_opts *link;
    // output: the input a job's DONE passes on to (jb_endpoint_finished), or NULL.
    // Over a link the template's on_done hook is still called, after the DONE passed on.
    jb_endpoint_t *upstream;
} jb_endpoint_opts_t;

void jb_endpoint_default_opts(jb_endpoint_opts_t *opts);

// Opens an input / output endpoint (see above). opts may be NULL (defaults).
// NULL + err on failure: JB_EINVAL bad spec, JB_ENOENT missing input file,
// JB_EIO cannot create the output, JB_EUNAVAIL cannot bind/connect.
jb_endpoint_t *jb_endpoint_open_in(const char *spec, const jb_endpoint_opts_t *opts,
                                   jb_err_t *err);
jb_endpoint_t *jb_endpoint_open_out(const char *spec, const jb_endpoint_opts_t *opts,
                                    jb_err_t *err);

// A frame stream over an open file descriptor (a pipe, socket or file): output
// when is_out, else input. owns: destroy closes fd. name: for messages (copied).
jb_endpoint_t *jb_endpoint_from_fd(int fd, int is_out, int owns, const char *name,
                                   const jb_endpoint_opts_t *opts, jb_err_t *err);

// Whether spec names a ZeroMQ endpoint (a reliable link), '@' / '>' prefix allowed.
int jb_endpoint_spec_is_link(const char *spec);

// Resolved address (ZeroMQ: "tcp://127.0.0.1:40123" after binding "tcp://127.0.0.1:*"),
// or the spec. Valid until destroy.
const char *jb_endpoint_address(const jb_endpoint_t *ep);

// Sends one message (encoded here; msg is not changed). 0 / -1 + err:
// JB_EINVAL msg breaks the format rules (nothing sent; endpoint still usable),
// JB_EUNAVAIL the reader is gone or no peer took it within send_timeout_ms,
// JB_ECANCEL a signal arrived while waiting (nothing sent), JB_EIO write failed.
// After JB_EIO or JB_EUNAVAIL on a stream the endpoint is broken: sends fail.
int jb_endpoint_send(jb_endpoint_t *ep, const jb_msg_t *msg, jb_err_t *err);

// Waits up to timeout_ms (-1 = forever, 0 = do not wait) for one message.
// On a stream, a frame whose checksum is right but whose message breaks the
// rules is JB_RECV_BAD (the stream stays in step); a bad magic, length or
// checksum is JB_RECV_ERROR (the stream cannot be trusted past it).
jb_recv_t jb_endpoint_recv(jb_endpoint_t *ep, jb_msg_t *msg, int timeout_ms, jb_err_t *err);

// How much of what was sent the reader has not taken yet, for an output stream
// on a pipe (FIONREAD: bytes still in the pipe). A stage with a spool uses it in
// a shell pipeline, where no acknowledgement exists: once the pipe is empty the
// next stage has read (and, with its own spool, recorded) every message.
// Returns 1 with *bytes set, 0 when not known here (a file, a socket, ZeroMQ),
// -1 when the reader is gone (the pipe's read end is closed).
int jb_endpoint_unread(jb_endpoint_t *ep, int64_t *bytes);

// ---- what only a reliable link does: on a pipe or a file these do nothing ----
// The caller does not ask which transport it has: a stage calls them at the points of a
// job's life where they mean something, and a stream simply has nothing to tell.

// What an endpoint does for its caller (capabilities, not the transport's name):
// Input: 1 when it records each message before delivering it (its persist hook) and drops
// what it already holds (jb_endpoint_preload), so that its caller neither spools nor
// de-duplicates input (a reliable link, docs/reliability.md); 0 when that is the caller's
// work (a pipe or a file: no sequence numbers, no hook).
int jb_endpoint_records_input(const jb_endpoint_t *in);
// Output: 1 when its reader confirms what it takes: acknowledgements (jb_endpoint_flush
// waits for them) and each job's DONE (a reliable link); 0 for a stream, whose reader says
// nothing back.
int jb_endpoint_confirms(const jb_endpoint_t *out);

// Input: the job is finished for good here: DONE to every producer that sent it (the
// link forgets it). A stream: nothing.
void jb_endpoint_done(jb_endpoint_t *in, const char *job_id);
// Input: hands the job back (RELEASE to its producer, which reassigns it). 1 when it
// did, 0 on a stream.
int jb_endpoint_release(jb_endpoint_t *in, const char *job_id);
// Input: takes no new work from now on (credit 0; SIGTERM, before handing back).
void jb_endpoint_pause(jb_endpoint_t *in);
// Input, spool resume: the first next_seq messages of the job, from the producer
// (name, epoch; NULL: unknown) whose stream they are, are held here already
// (jb_link_preload_from). 0 / -1 + err; a stream: 0.
int jb_endpoint_preload(jb_endpoint_t *in, const char *job_id, int64_t next_seq,
                        const char *producer, const char *epoch, jb_err_t *err);
// Input: the producer (name, epoch) whose stream of the job is processed here
// (jb_link_owner). 0, or -1 when none (yet), and always on a stream.
int jb_endpoint_owner(jb_endpoint_t *in, const char *job_id, char *name, size_t n_name,
                      char *epoch, size_t n_epoch);

// Output: the job is dropped here: CANCEL to the consumer(s) it went to (the link
// forgets it). 1 when it did, 0 on a stream.
int jb_endpoint_cancel(jb_endpoint_t *out, const char *job_id);
// Output: the job's last message (END(-1) or its ERROR) is sent. A stream holds the job
// from here: DONE passes on to opts.upstream at once. A link passes it on later, when
// its consumer reports the job DONE (then the template's on_done hook runs).
void jb_endpoint_finished(jb_endpoint_t *out, const char *job_id);
// Output: waits up to timeout_ms (-1: forever) until every message sent so far is acked
// (want_done 0) or every job is DONE (want_done 1) (jb_link_flush). 0 / -1 + err
// (JB_EUNAVAIL timed out, JB_ECANCEL stop flag); a stream: 0 at once.
int jb_endpoint_flush(jb_endpoint_t *out, int timeout_ms, int want_done, jb_err_t *err);

// The link's status as a JSON object text (jb_link_status_json; malloc'd, caller
// frees), NULL for a stream (or no memory).
char *jb_endpoint_status_json(jb_endpoint_t *ep);
// The link's counters (jb_link_stats). 0, or -1 for a stream (*st untouched).
int jb_endpoint_stats(jb_endpoint_t *ep, struct jb_link_stats *st);

// Finishes an output: file -> published under its name (fsync, rename, fsync of the
// directory); ZeroMQ -> waits up to linger_ms for every message to be acked (JB_EUNAVAIL
// when not). Frees the endpoint and sets *ep_p NULL either way. 0 / -1 + err (an output file that failed is removed, not renamed).
int jb_endpoint_close(jb_endpoint_t **ep_p, jb_err_t *err);

// Frees without finishing: an output file's temporary is removed, ZeroMQ data queues
// are dropped (an input's last DONE / RELEASE get up to 1 s to leave). Accepts NULL and *ep_p == NULL.
void jb_endpoint_destroy(jb_endpoint_t **ep_p);

#endif
