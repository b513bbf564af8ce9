// jb_link.h: the reliable link between stages (issue 5). Protocol, options and
// guarantees: docs/reliability.md; message types: docs/wire.md.
//
// A link is one side of a ZeroMQ connection set with a role:
//   producer  a stage's output: assigns each job to one live consumer (the one with
//             fewest jobs that has credit; ties: most credit), numbers each job's messages (seq 0, 1,
//             ...), sends only within the consumer's credit, keeps every message of a
//             job until the job is DONE, resends a dead consumer's jobs to another one
//             (from seq 0), sends CANCEL to a returning consumer whose jobs went elsewhere.
//   consumer  a stage's input: delivers each job's messages once and in order (drops
//             seqs it already has), acks each message once accepted (after the persist
//             hook, when there is one), announces its credit (free input queue slots),
//             sends DONE / RELEASE upstream when told to.
//   control   a bound endpoint that only answers STATUS requests (--control EP).
// Endpoints (spec): one or more comma-separated ZeroMQ addresses ("tcp://h:p",
// "ipc://path"); '@' binds, '>' connects; without a prefix a consumer binds and a
// producer (or control: binds) connects. Bound addresses share one ROUTER socket; each
// connected address has its own DEALER (routing id = the instance name).
//
// Threads: jb_link_open starts an I/O thread that owns the sockets and sends
// heartbeats while the caller is busy. Every function below may be called from any
// thread (the link has its own mutex); one thread at a time should call recv, and
// send is meant for one producing thread (seqs are assigned in call order).
// The hooks (persist, on_done, status) run on the I/O thread without the link's lock
// held: they may call jb_link_* of another link (and jb_link_done / jb_link_release /
// jb_link_status_json of this one), must not block for long (heartbeats wait for them).
// The library never prints: protocol problems (garbage, unknown peers) are dropped
// and logged with jb_log(JB_WARN) naming the peer and the reason, and counted.
//
// Ownership: a received message belongs to the caller (jb_msg_clear it). Strings in
// jb_link_opts_t are copied at open.
//
// Files: jb_link.c (open/close, the I/O thread and its dispatcher, peers, heartbeats,
// sending), jb_link_producer.c (retention, assignment, the pump, reassign/unassign,
// ACK/DONE/RELEASE; send, cancel, flush), jb_link_consumer.c (data intake, ownership,
// voiding, preload, take-over, credit, CANCEL; recv, done, release, pause, preload, owner),
// jb_link_status.c (status JSON, stats, query_status); their shared state: jb_link_private.h.
#ifndef JB_LINK_H
#define JB_LINK_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "jb_err.h"
#include "jb_admit.h"
#include "jb_wire.h"

// A consumer's default byte budget: two of the largest messages (JB_WIRE_MAX_RAW).
#define JB_LINK_CREDIT_BYTES (2 * (int64_t)JB_WIRE_MAX_RAW)

typedef struct jb_link jb_link_t;

typedef enum { JB_LINK_CONSUMER = 0, JB_LINK_PRODUCER = 1, JB_LINK_CONTROL = 2 } jb_link_role_t;

// Consumer hook: called for each new in-order data message before it is queued and
// acked (the spool appends and fsyncs it here). 0: accepted (acked, delivered);
// -1 + err: not accepted (not acked, not delivered; the producer resends it later).
typedef int (*jb_link_persist_fn)(void *user, const jb_msg_t *msg, jb_err_t *err);
// Producer hook: a consumer reported the job DONE; the link has already forgotten it.
// (A stage calls jb_link_done on its input link here: DONE flows upstream.)
typedef void (*jb_link_done_fn)(void *user, const char *job_id);
// Status hook: a JSON object text (malloc'd; NULL for none) whose keys are added to
// this link's STATUS reply (stage, level, jobs in flight, tokens/s, last error ...).
typedef char *(*jb_link_status_fn)(void *user);

typedef struct jb_link_opts {
    jb_link_role_t role;
    const char *name;          // instance name (DEALER routing id); NULL: "<host>-<pid>"
    const char *stage;         // what this process is ("prior-top", "decoder", "job"), for peers
    const char *epoch;         // which run of this instance its streams belong to (NULL: a
                               // new one per open). A consumer voids what a producer of the
                               // same name sent under another epoch (its restarted stream
                               // may interleave differently). A spool that re-offers
                               // out.jbc with the same seqs keeps its epoch in the spool.
    int heartbeat_ms;          // a heartbeat after this long without sending (default 1000)
    int peer_timeout_ms;       // a peer silent this long is dead (default 5000)
    int credit;                // consumer: input queue bound = credit announced (default 16)
    int backlog;               // producer: messages not yet sent, at most (default 16):
                               // jb_link_send blocks beyond it
    int64_t codebook;          // consumer: codes must be below it (-1: only the header's)
    int64_t credit_bytes;      // consumer: bytes its input queue may hold (decompressed payload
                               // + strings of the queued messages; default JB_LINK_CREDIT_BYTES).
                               // Credit 0 is announced while the queue holds this much, and a
                               // message that would take it over is not accepted (the producer
                               // retransmits it later); one message is always let into an
                               // empty queue.
    jb_admit_model_t admit;    // consumer: the model whose level lengths bound each job's
                               // messages before decompression (jb_admit.h; levels 0: none)
    volatile sig_atomic_t *stop;   // when set, a blocked jb_link_send returns JB_ECANCEL
    int send_timeout_ms;       // a blocked jb_link_send gives up after this (JB_EUNAVAIL);
                               // -1 (default): waits for room
    jb_link_persist_fn persist;
    void *persist_user;
    jb_link_done_fn on_done;
    void *done_user;
    jb_link_status_fn status;
    void *status_user;
} jb_link_opts_t;

void jb_link_default_opts(jb_link_opts_t *o);

// Opens the sockets and starts the I/O thread. NULL + err: JB_EINVAL bad spec or
// options, JB_EUNAVAIL cannot bind/connect, JB_ENOMEM.
jb_link_t *jb_link_open(const char *spec, const jb_link_opts_t *o, jb_err_t *err);

// The first bound address as resolved ("tcp://127.0.0.1:40123" for port *), else the
// spec. Valid until destroy.
const char *jb_link_address(const jb_link_t *l);
// The instance name in use.
const char *jb_link_name(const jb_link_t *l);

// ---- producer ----

// Queues one data message (job, codes, end, error, align; msg->job_id required) for
// its job's consumer; msg->seq is ignored (the link numbers the job's messages).
// Blocks while `backlog` messages are waiting to be sent (no consumer, no credit),
// heartbeats still flowing. 0 / -1 + err: JB_EINVAL a message the wire refuses,
// JB_ECANCEL the stop flag was set while waiting, JB_ENOMEM.
int jb_link_send(jb_link_t *l, const jb_msg_t *msg, jb_err_t *err);
// Forgets a job and sends CANCEL(job) to the consumer(s) it went to (a stage that
// dropped the job: cancelled or handed back upstream). 0 (also for an unknown job).
int jb_link_cancel(jb_link_t *l, const char *job_id);
// Waits until every message sent so far is acked (want_done 0) or every job is DONE
// (want_done 1), up to timeout_ms (-1: forever). 0 / -1 + err: JB_EUNAVAIL timed out
// (err says how many messages / jobs are still open and whether any consumer was
// seen), JB_ECANCEL stop flag set.
int jb_link_flush(jb_link_t *l, int timeout_ms, int want_done, jb_err_t *err);

// ---- consumer ----

// Waits up to timeout_ms (-1: forever, 0: no wait) for the next message. Data messages
// come once each, in order within a job, msg->seq = its seq from the job's producer.
// A message of type JB_MSG_CANCEL (job_id set, nothing else) means: drop this job,
// everything of it delivered before is void (its producer gave it to another consumer,
// or its owner died and a duplicate copy from another producer takes over).
// Returns JB_RECV_MSG or JB_RECV_TIMEOUT (never EOF: a link does not end).
jb_recv_t jb_link_recv(jb_link_t *l, jb_msg_t *msg, int timeout_ms, jb_err_t *err);
// The job is finished for good (run directory written, or DONE came from below): sends
// DONE(job) to every producer that sent it and forgets it; its messages still queued
// are dropped (nothing of it is delivered after this). 0.
int jb_link_done(jb_link_t *l, const char *job_id);
// Hands the job back: RELEASE(job) to its producer (which reassigns it at once), and
// forgets it. 0.
int jb_link_release(jb_link_t *l, const char *job_id);
// Stops taking work: credit 0 announced from now on (new messages of jobs in progress
// are still accepted). Used on SIGTERM before handing back.
void jb_link_pause(jb_link_t *l);
// Spool resume: messages of job with seq < next_seq are already held here; they are
// acked and dropped when resent. Call before messages of the job arrive. 0 / -1 + err.
// The held messages' stream is unknown: the first producer to send the job gets it
// from seq 0 (the held state is voided by a CANCEL first), and any producer may cancel it.
int jb_link_preload(jb_link_t *l, const char *job_id, int64_t next_seq, jb_err_t *err);
// The same, naming the producer (name, epoch from jb_link_owner when the stream began)
// whose stream the held messages are: only that stream continues at next_seq; another
// producer's stream, or the same producer back as another run, voids them (a CANCEL
// delivered to the stage, then the job is taken from seq 0); only that producer may
// cancel the job before it sends again. Ownership rules: docs/reliability.md.
int jb_link_preload_from(jb_link_t *l, const char *job_id, int64_t next_seq,
                         const char *producer, const char *epoch, jb_err_t *err);
// The producer (name, epoch) whose stream of the job this consumer processes (for the
// spool to record, from the persist hook of its seq 0). 0, or -1 when none (yet).
int jb_link_owner(jb_link_t *l, const char *job_id, char *name, size_t n_name, char *epoch,
                  size_t n_epoch);

// ---- status ----

typedef struct jb_link_stats {
    int64_t rx, tx;            // data messages received (delivered) / sent (first time)
    int64_t resent;            // data messages sent again (rewinds, reassignment)
    int64_t acks_rx;           // acks received (producer)
    int64_t bad;               // malformed / unexpected messages dropped
    int64_t dups;              // data messages dropped as already held / duplicate job copies
    int64_t over_bytes;        // data messages not accepted: the queue's byte budget was full
    int64_t reassigned;        // jobs given to another consumer (death or RELEASE)
    int64_t cancels_tx, cancels_rx, releases_rx, done_rx, done_tx;
    int peers_alive, peers_known;
    int jobs;                  // jobs held (producer: retained; consumer: owned)
    int queue;                 // consumer: messages waiting for recv
    int64_t queue_bytes;       // consumer: their bytes, as the byte budget counts them
    int backlog;               // producer: messages not yet sent
    int64_t retained_bytes;    // producer: bytes of messages kept until DONE
} jb_link_stats_t;

void jb_link_stats(jb_link_t *l, jb_link_stats_t *st);
// This link's status as a JSON object text (malloc'd, caller frees; NULL on no memory):
// {"instance","role","address","jobs":[{"id","peer","seq","acked"}],"queue","backlog",
//  "stats":{...},"peers":[{"name","role","stage","alive","credit","last_seen_ms","info"}]}
// plus the status hook's keys.
char *jb_link_status_json(jb_link_t *l);

// Client: asks a bound link or control endpoint for its status. *info = the reply's
// JSON object text (malloc'd). 0 / -1 + err (JB_EUNAVAIL no reply within timeout_ms).
int jb_link_query_status(const char *endpoint, int timeout_ms, char **info, jb_err_t *err);

// Stops the I/O thread after giving queued outgoing messages up to timeout_ms to
// leave (DONE, RELEASE, acks; data messages are not waited for: see jb_link_flush),
// closes the sockets (removes a bound ipc socket file) and frees. Accepts NULL.
void jb_link_close(jb_link_t **l, int timeout_ms);

// Sets the options every connecting (DEALER) socket of a link uses: reconnection
// intervals and ZMQ_IMMEDIATE off (see jb_link.c for why). Exposed for its test.
void jb_link_dealer_setup(void *dealer);

#endif
