// jb_wire.h: the messages the stages exchange, and the frame stream that carries
// them over a pipe or in a codes file (spec: docs/wire.md).
//
//   message = MessagePack header (a map with string keys) + optional payload
//             (LZ4 block of little-endian int32: codes (batch, count) row-major, or
//             alignment weights (batch, count, cols))
//   frame   = "JBX1" | u32 header length | u32 payload length | u32 CRC-32 | header | payload
//
// Over ZeroMQ a message is two parts (header, payload); over a pipe or in a file
// it is one frame. A codes file is a frame stream saved to disk (jb_codes.h).
// How the stages order a job's messages (the job stream): docs/wire.md section 8.
//
//   jb_msg_t m; jb_msg_init(&m);
//   m.type = JB_MSG_CODES; strcpy(m.job_id, "job1"); m.level = 2; m.offset = 0;
//   m.batch = 1; m.count = n; m.codes = codes;          // codes now owned by m
//   jb_bytes_t hdr = {0}, pl = {0};
//   jb_wire_encode(&m, &hdr, &pl, &err);                // then send hdr/pl or frame them
//   jb_wire_decode(hdr.data, hdr.len, pl.data, pl.len, 2048, &m2, &err);
//
// Decoders check everything: every field's type and range, the version, which
// fields each message type must / may carry, sizes against the caps below, the
// decompressed length against the header, codes against the codebook size, and
// (for frames) magic, lengths and checksum. Bad input is a JB_EFORMAT (or
// JB_EUNSUP for another version) error naming the job and token offset when
// known, or the byte offset for frames; never a crash, never a silent truncation.
//
// Thread rules: no global state; a jb_msg_t or jb_bytes_t belongs to one thread.
// Ownership: a jb_msg_t owns spec, text and codes (malloc'd; freed by
// jb_msg_clear). A jb_bytes_t owns its data (freed by jb_bytes_free) and is
// reused across calls to avoid reallocating.
#ifndef JB_WIRE_H
#define JB_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "jb_err.h"

#define JB_WIRE_VERSION 1

// Caps. A message or frame over them is refused before anything is allocated.
#define JB_WIRE_JOB_ID_MAX 63                  // bytes, [A-Za-z0-9._:-], not starting with '.'
#define JB_WIRE_MAX_OBJECTS 65536              // MessagePack objects in one header
#define JB_WIRE_MAX_HEADER (4u << 20)          // encoded header, bytes
#define JB_WIRE_MAX_TEXT (1u << 20)            // spec / text strings, bytes
#define JB_WIRE_MAX_RAW (1u << 24)             // decompressed payload, bytes (16 MiB: 4 Mi codes)
#define JB_WIRE_MAX_PAYLOAD 16843025u          // LZ4_COMPRESSBOUND(JB_WIRE_MAX_RAW)
#define JB_WIRE_MAX_LEVEL 7                    // levels 0..7 (Jukebox uses 0..2)
#define JB_WIRE_MAX_CODEBOOK (1 << 24)
#define JB_WIRE_MAX_OFFSET (INT64_C(1) << 40)  // token offsets and lengths
#define JB_WIRE_MAX_RATE 1000000               // Hz
#define JB_WIRE_MAX_SEQ (INT64_C(1) << 53)     // so a JSON reader keeps it exact
#define JB_WIRE_MAX_COLS (1 << 20)             // align: lyric characters
#define JB_WIRE_ALIGN_ONE 65535                // align: weight 1.0 (w quantised round(w * 65535))

typedef enum {
    JB_MSG_NONE = 0,
    JB_MSG_JOB,        // a job: spec (JSON object)
    JB_MSG_CODES,      // codes of one level: level, offset, batch, count + payload
    JB_MSG_END,        // end of a job (level < 0) or of one level of it
    JB_MSG_ERROR,      // the job failed: text says why, code is its sysexits class
    JB_MSG_ACK,        // receipt of message seq of a job (reliable transport, later)
    JB_MSG_HEARTBEAT,  // liveness (later)
    JB_MSG_STATUS,     // a stage's status: text is a JSON object (later)
    JB_MSG_ALIGN,      // lyric alignment of a job: level, batch, count, cols + payload of
                       // weights round(w * 65535); text = the lyrics, one character a column
    // The reliable link (jb_link.h, docs/reliability.md):
    JB_MSG_HELLO,      // a peer introduces itself: text = {"name","role","stage","want"}, credit
    JB_MSG_DONE,       // job finished at the end of the pipeline: the producer may forget it
    JB_MSG_CANCEL,     // producer -> consumer: drop this job, it went elsewhere
    JB_MSG_RELEASE,    // consumer -> producer: job handed back, give it to another consumer
    JB_MSG_TYPE_COUNT
} jb_msg_type_t;

// One message. Integer fields are -1 when absent (the encoder leaves them out);
// strings are NULL / "" when absent. Which fields each type requires or allows
// is in docs/wire.md; jb_wire_encode refuses a message the decoder would refuse.
typedef struct {
    jb_msg_type_t type;
    char job_id[JB_WIRE_JOB_ID_MAX + 1];  // "" = none
    int level;              // 0..JB_WIRE_MAX_LEVEL, -1 = none
    int64_t offset;         // token offset of the first code (codes); level length (end)
    int64_t count;          // tokens per row (codes, align), 1..
    int64_t batch;          // rows = samples (codes, align), 1..; end: samples of the level
    int64_t sample0;        // codes: sample index of the first row (absent, -1, means 0)
    int64_t cols;           // align: lyric characters per token, 1..JB_WIRE_MAX_COLS
    int64_t codebook;       // codebook size: every code is in [0, codebook)
    int64_t sample_rate;    // Hz of the audio the codes stand for
    int64_t audio_len;      // true audio length in samples before padding (to trim)
    int64_t seq;            // sender's sequence number (acks); on the link: index of the
                            // message in its job's stream from this producer
    int64_t credit;         // ack, heartbeat, hello: messages the receiver can take more
    int64_t code;           // error: sysexits value, jb_err_exit_code() (65 bad data, ...)
    char *spec;             // job: JSON object text, owned
    char *text;             // error: message (UTF-8); status, end, hello, heartbeat, done,
                            // cancel, release: JSON object text (info);
                            // align: the lyrics, exactly cols characters; owned
    int32_t *codes;         // codes: (batch, count) row-major; align: (batch, count, cols)
                            // weights in [0, JB_WIRE_ALIGN_ONE]; owned
} jb_msg_t;

// What waiting for one message gave (jb_endpoint_recv, jb_link_recv): here, below both,
// so that the endpoint and the link it may wrap share it without including each other.
typedef enum {
    JB_RECV_ERROR = -1,  // the endpoint is unusable (read error, truncated or corrupt
                         // stream); err says why with the byte offset. Sticky.
    JB_RECV_MSG = 0,     // *msg holds a message (owned by msg: jb_msg_clear it)
    JB_RECV_EOF,         // stream ended cleanly at a frame boundary (never for ZeroMQ)
    JB_RECV_TIMEOUT,     // nothing within timeout_ms, or a signal arrived
    JB_RECV_BAD,         // a malformed message was dropped (err says why; msg->job_id and
                         // msg->type are set when its header named them); keep going
} jb_recv_t;

// A growable byte buffer. Zero-initialise ({0}); data owned.
typedef struct {
    uint8_t *data;
    size_t len, cap;
} jb_bytes_t;

void jb_bytes_free(jb_bytes_t *b);

// Every field absent, type JB_MSG_NONE. Does not free (use on uninitialised memory).
void jb_msg_init(jb_msg_t *msg);
// Frees spec, text, codes and re-initialises. Accepts NULL.
void jb_msg_clear(jb_msg_t *msg);
// "job", "codes", "end", "error", "ack", "heartbeat", "status", "align", "hello", "done",
// "cancel", "release"; "?" otherwise.
const char *jb_msg_type_name(int type);
// Whether job_id is a valid job id: 1..JB_WIRE_JOB_ID_MAX bytes of [A-Za-z0-9._:-], the
// first not '.' (a job id names directories and files: no ".", "..", hidden names).
// The one definition: the encoder, jukebox-job, the spec (jb_job) and every stage use it.
int jb_wire_job_id_ok(const char *job_id);
// Elements of the payload of msg (batch x count for codes, x cols for align;
// 0 for types without one or when a dimension is absent).
size_t jb_msg_payload_elems(const jb_msg_t *msg);

// Convenience setters: copy their argument (the old value is freed). 0 / -1 + err.
int jb_msg_set_job_id(jb_msg_t *msg, const char *job_id, jb_err_t *err);
int jb_msg_set_spec(jb_msg_t *msg, const char *json, jb_err_t *err);
int jb_msg_set_text(jb_msg_t *msg, const char *text, jb_err_t *err);
// codes: (batch, count), copied. Sets batch and count.
int jb_msg_set_codes(jb_msg_t *msg, const int32_t *codes, int64_t batch, int64_t count,
                     jb_err_t *err);
// align weights: (batch, count, cols), copied. Sets batch, count and cols.
int jb_msg_set_align(jb_msg_t *msg, const int32_t *weights, int64_t batch, int64_t count,
                     int64_t cols, jb_err_t *err);

// Checks msg against the rules the decoder applies (types, ranges, required
// fields, codes in range when codebook >= 0). 0 / -1 + err (JB_EINVAL).
int jb_wire_check(const jb_msg_t *msg, jb_err_t *err);

// Encodes msg: the MessagePack header into *hdr and the LZ4 payload into *payload
// (len 0 for types without codes or weights). Both buffers are overwritten, not appended.
// 0 / -1 + err (JB_EINVAL for a message that breaks the rules, JB_ENOMEM).
int jb_wire_encode(const jb_msg_t *msg, jb_bytes_t *hdr, jb_bytes_t *payload, jb_err_t *err);

// Decodes one message into *out (cleared first; on failure left cleared except job_id
// and type, when the header got that far: "" / JB_MSG_NONE otherwise).
// hdr: hdr_len bytes; payload: payload_len bytes (NULL when 0).
// codebook: the receiver's codebook size (codes must be below it; the header's
// codebook, when present, must equal it), or -1 to check only against the header's.
// 0 / -1 + err (JB_EFORMAT, JB_EUNSUP for another version, JB_ENOMEM).
int jb_wire_decode(const uint8_t *hdr, size_t hdr_len, const uint8_t *payload,
                   size_t payload_len, int64_t codebook, jb_msg_t *out, jb_err_t *err);

// Admission: what a receiver lets a message claim before its payload is decompressed
// (docs/wire.md section 3.1). Called by jb_wire_decode_admit once the header is decoded
// and checked, with hdr's fields set (hdr->codes still NULL) and raw_len the payload's
// claimed decompressed size (0 for types without a payload). 0 lets the message through;
// -1 + err refuses it before anything is allocated for its payload. jb_admit.h has the
// receivers' table (per-job bounds learnt from JOB messages).
typedef int (*jb_wire_admit_fn)(void *user, const jb_msg_t *hdr, uint64_t raw_len,
                                jb_err_t *err);
// jb_wire_decode with an admission check (admit NULL: none).
int jb_wire_decode_admit(const uint8_t *hdr, size_t hdr_len, const uint8_t *payload,
                         size_t payload_len, int64_t codebook, jb_wire_admit_fn admit,
                         void *admit_user, jb_msg_t *out, jb_err_t *err);

// ---- frames (pipes and codes files) ----

#define JB_FRAME_MAGIC "JBX1"     // the last byte is the frame format version
#define JB_FRAME_PREFIX 16        // magic, header length, payload length, CRC-32

// CRC-32 (ISO-HDLC, as zlib's crc32()): pass 0 first, then the previous result.
uint32_t jb_frame_crc32(uint32_t crc, const uint8_t *data, size_t len);

// Writes the 16-byte prefix of a frame holding hdr and payload into prefix.
// 0 / -1 + err (JB_EINVAL when a length is over its cap).
int jb_frame_prefix(uint8_t prefix[JB_FRAME_PREFIX], const uint8_t *hdr, size_t hdr_len,
                    const uint8_t *payload, size_t payload_len, jb_err_t *err);

// Appends one frame to *out. 0 / -1 + err.
int jb_frame_append(jb_bytes_t *out, const uint8_t *hdr, size_t hdr_len,
                    const uint8_t *payload, size_t payload_len, jb_err_t *err);

// A frame found in a buffer: pointers into that buffer.
typedef struct {
    const uint8_t *hdr;
    size_t hdr_len;
    const uint8_t *payload;
    size_t payload_len;
    size_t size;              // whole frame, prefix included
} jb_frame_t;

// Looks for one frame at the start of buf. base: buf's byte offset in the stream
// (for messages). Returns 1 with *frame filled, 0 when buf holds only the start
// of a frame (*need = bytes the whole frame takes, or JB_FRAME_PREFIX when even
// the prefix is incomplete), -1 + err (JB_EFORMAT) on bad magic, a length over
// its cap or a checksum mismatch.
int jb_frame_parse(const uint8_t *buf, size_t len, uint64_t base, jb_frame_t *frame,
                   size_t *need, jb_err_t *err);

// A growable list of messages, e.g. a spooled file read whole (jb_spool_read(...,
// jb_msg_list_take, &list, err)). Zero-initialise ({0}); owns its messages.
typedef struct {
    jb_msg_t *v;   // (n) messages; v[i] owns its pointers until taken out
    int n, cap;
} jb_msg_list_t;

// A jb_frame_msg_fn: appends *msg to the list (user: a jb_msg_list_t), taking its owned
// pointers (msg's are set NULL). 0, or -1 out of memory (msg unchanged).
int jb_msg_list_take(jb_msg_t *msg, uint64_t byte_offset, void *user);
// Clears messages [from, n) (those before from were moved out by the caller), frees the
// array and zeroes the list.
void jb_msg_list_free(jb_msg_list_t *list, int from);

// Encodes msg and appends it as one frame to *out (scratch: reused buffers). 0 / -1.
int jb_frame_append_msg(jb_bytes_t *out, const jb_msg_t *msg, jb_bytes_t *scratch_hdr,
                        jb_bytes_t *scratch_payload, jb_err_t *err);

// Decodes a whole buffer holding a frame stream (a codes file in memory):
// calls fn for each message (msg valid during the call only; fn may take its
// pointers and NULL them). Stops at the first bad frame or message, or when
// fn returns non-zero (returned). Returns 0 at a clean end, -1 + err with byte offset.
typedef int (*jb_frame_msg_fn)(jb_msg_t *msg, uint64_t byte_offset, void *user);
int jb_frame_decode_all(const uint8_t *buf, size_t len, int64_t codebook, jb_frame_msg_fn fn,
                        void *user, jb_err_t *err);

#endif
