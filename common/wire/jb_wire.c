// jb_wire.c: see jb_wire.h; the format is specified in docs/wire.md.
#include "jb_wire.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <lz4.h>
#include <msgpack.h>

_Static_assert(JB_WIRE_MAX_PAYLOAD == LZ4_COMPRESSBOUND(JB_WIRE_MAX_RAW),
               "the payload cap is LZ4's bound for the largest codes");

// ---------------------------------------------------------------- buffers

void jb_bytes_free(jb_bytes_t *b) {
    if (!b) return;
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

static int bytes_reserve(jb_bytes_t *b, size_t extra) {
    if (extra > SIZE_MAX - b->len) return -1;
    size_t need = b->len + extra;
    if (need <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need) cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    uint8_t *p = realloc(b->data, cap);
    if (!p) return -1;
    b->data = p;
    b->cap = cap;
    return 0;
}

static int bytes_append(jb_bytes_t *b, const void *data, size_t len) {
    if (len == 0) return 0;
    if (bytes_reserve(b, len)) return -1;
    memcpy(b->data + b->len, data, len);
    b->len += len;
    return 0;
}

// ---------------------------------------------------------------- messages

static const char *const type_names[JB_MSG_TYPE_COUNT] = {
    [JB_MSG_JOB] = "job",     [JB_MSG_CODES] = "codes",         [JB_MSG_END] = "end",
    [JB_MSG_ERROR] = "error", [JB_MSG_ACK] = "ack",             [JB_MSG_HEARTBEAT] = "heartbeat",
    [JB_MSG_STATUS] = "status", [JB_MSG_ALIGN] = "align",      [JB_MSG_HELLO] = "hello",
    [JB_MSG_DONE] = "done",   [JB_MSG_CANCEL] = "cancel",       [JB_MSG_RELEASE] = "release",
};

const char *jb_msg_type_name(int type) {
    if (type <= JB_MSG_NONE || type >= JB_MSG_TYPE_COUNT) return "?";
    return type_names[type];
}

void jb_msg_init(jb_msg_t *msg) {
    memset(msg, 0, sizeof *msg);
    msg->type = JB_MSG_NONE;
    msg->level = -1;
    msg->offset = msg->count = msg->batch = msg->sample0 = msg->cols = msg->codebook = -1;
    msg->sample_rate = msg->audio_len = msg->seq = msg->credit = msg->code = -1;
}

void jb_msg_clear(jb_msg_t *msg) {
    if (!msg) return;
    free(msg->spec);
    free(msg->text);
    free(msg->codes);
    jb_msg_init(msg);
}

static int set_string(char **dst, const char *src, const char *what, jb_err_t *err) {
    char *copy = NULL;
    if (src) {
        copy = strdup(src);
        if (!copy) return jb_err_set(err, JB_ENOMEM, "message %s: out of memory", what);
    }
    free(*dst);
    *dst = copy;
    return 0;
}

int jb_msg_set_job_id(jb_msg_t *msg, const char *job_id, jb_err_t *err) {
    size_t n = strlen(job_id);
    if (n > JB_WIRE_JOB_ID_MAX)
        return jb_err_set(err, JB_EINVAL, "job id is %zu bytes, at most %d", n,
                          JB_WIRE_JOB_ID_MAX);
    memcpy(msg->job_id, job_id, n + 1);
    return 0;
}

int jb_msg_set_spec(jb_msg_t *msg, const char *json, jb_err_t *err) {
    return set_string(&msg->spec, json, "spec", err);
}

int jb_msg_set_text(jb_msg_t *msg, const char *text, jb_err_t *err) {
    return set_string(&msg->text, text, "text", err);
}

int jb_msg_set_codes(jb_msg_t *msg, const int32_t *codes, int64_t batch, int64_t count,
                     jb_err_t *err) {
    if (batch < 1 || count < 1 || (uint64_t)batch * (uint64_t)count > JB_WIRE_MAX_RAW / 4)
        return jb_err_set(err, JB_EINVAL, "codes (%" PRId64 ", %" PRId64 ") out of range",
                          batch, count);
    size_t n = (size_t)batch * (size_t)count;
    int32_t *copy = malloc(n * sizeof *copy);
    if (!copy) return jb_err_set(err, JB_ENOMEM, "codes: out of memory (%zu codes)", n);
    memcpy(copy, codes, n * sizeof *copy);
    free(msg->codes);
    msg->codes = copy;
    msg->batch = batch;
    msg->count = count;
    return 0;
}

int jb_msg_set_align(jb_msg_t *msg, const int32_t *weights, int64_t batch, int64_t count,
                     int64_t cols, jb_err_t *err) {
    if (cols < 1 || cols > JB_WIRE_MAX_COLS || batch < 1 || count < 1
        || (uint64_t)batch * (uint64_t)count > JB_WIRE_MAX_RAW / 4 / (uint64_t)cols)
        return jb_err_set(err, JB_EINVAL, "alignment (%" PRId64 ", %" PRId64 ", %" PRId64
                          ") out of range", batch, count, cols);
    size_t n = (size_t)batch * (size_t)count * (size_t)cols;
    int32_t *copy = malloc(n * sizeof *copy);
    if (!copy) return jb_err_set(err, JB_ENOMEM, "alignment: out of memory (%zu weights)", n);
    memcpy(copy, weights, n * sizeof *copy);
    free(msg->codes);
    msg->codes = copy;
    msg->batch = batch;
    msg->count = count;
    msg->cols = cols;
    return 0;
}

static bool has_payload(int type) { return type == JB_MSG_CODES || type == JB_MSG_ALIGN; }

size_t jb_msg_payload_elems(const jb_msg_t *msg) {
    if (!has_payload(msg->type) || msg->batch < 1 || msg->count < 1) return 0;
    if (msg->type == JB_MSG_ALIGN && msg->cols < 1) return 0;
    size_t n = (size_t)msg->batch * (size_t)msg->count;
    return msg->type == JB_MSG_ALIGN ? n * (size_t)msg->cols : n;
}

// ---------------------------------------------------------------- field rules

// Header keys. The table says, per message type, whether a key is required (R),
// allowed (O) or not allowed (absent from both masks). Unknown keys are ignored,
// so a later minor addition does not break older readers.
enum {
    K_TYPE, K_V, K_JOB, K_LEVEL, K_OFFSET, K_COUNT, K_BATCH, K_DTYPE, K_RAW_LEN, K_CODEBOOK,
    K_RATE, K_AUDIO_LEN, K_SEQ, K_CREDIT, K_CODE, K_SPEC, K_MSG, K_INFO, K_SAMPLE0, K_COLS,
    K_LYRICS, K_COUNT_KEYS
};

#define T(x) (1u << (x))
#define ALL (T(JB_MSG_JOB) | T(JB_MSG_CODES) | T(JB_MSG_END) | T(JB_MSG_ERROR) | T(JB_MSG_ACK) \
             | T(JB_MSG_HEARTBEAT) | T(JB_MSG_STATUS) | T(JB_MSG_ALIGN) | T(JB_MSG_HELLO) \
             | LINKJOB)
// Link messages about one job (reliable link: done, cancel, release).
#define LINKJOB (T(JB_MSG_DONE) | T(JB_MSG_CANCEL) | T(JB_MSG_RELEASE))
#define PAYLOAD (T(JB_MSG_CODES) | T(JB_MSG_ALIGN))

typedef struct {
    const char *name;
    unsigned required, allowed;   // masks of message types
} key_rule_t;

static const key_rule_t key_rules[K_COUNT_KEYS] = {
    [K_TYPE] = {"type", ALL, ALL},
    [K_V] = {"v", ALL, ALL},
    [K_JOB] = {"job", T(JB_MSG_JOB) | T(JB_MSG_CODES) | T(JB_MSG_END) | T(JB_MSG_ERROR)
                          | T(JB_MSG_ACK) | T(JB_MSG_ALIGN) | LINKJOB,
               T(JB_MSG_JOB) | T(JB_MSG_CODES) | T(JB_MSG_END) | T(JB_MSG_ERROR) | T(JB_MSG_ACK)
                   | T(JB_MSG_ALIGN) | LINKJOB},
    [K_LEVEL] = {"level", PAYLOAD,
                 PAYLOAD | T(JB_MSG_END) | T(JB_MSG_ERROR) | T(JB_MSG_ACK)},
    [K_OFFSET] = {"offset", T(JB_MSG_CODES),
                  PAYLOAD | T(JB_MSG_END) | T(JB_MSG_ERROR) | T(JB_MSG_ACK)},
    [K_COUNT] = {"count", PAYLOAD, PAYLOAD},
    [K_BATCH] = {"batch", PAYLOAD, PAYLOAD | T(JB_MSG_END)},
    [K_DTYPE] = {"dtype", PAYLOAD, PAYLOAD},
    [K_RAW_LEN] = {"raw_len", PAYLOAD, PAYLOAD},
    [K_CODEBOOK] = {"codebook", 0, T(JB_MSG_JOB) | T(JB_MSG_CODES)},
    [K_RATE] = {"rate", 0, T(JB_MSG_JOB) | T(JB_MSG_CODES) | T(JB_MSG_END)},
    [K_AUDIO_LEN] = {"audio_len", 0, T(JB_MSG_JOB) | T(JB_MSG_CODES) | T(JB_MSG_END)},
    [K_SEQ] = {"seq", T(JB_MSG_ACK), ALL},
    [K_CREDIT] = {"credit", 0, T(JB_MSG_ACK) | T(JB_MSG_HEARTBEAT) | T(JB_MSG_HELLO)},
    [K_CODE] = {"code", 0, T(JB_MSG_ERROR)},
    [K_SPEC] = {"spec", T(JB_MSG_JOB), T(JB_MSG_JOB)},
    [K_MSG] = {"msg", T(JB_MSG_ERROR), T(JB_MSG_ERROR)},
    // status without info is a status request (the reply carries info).
    [K_INFO] = {"info", 0, T(JB_MSG_STATUS) | T(JB_MSG_END) | T(JB_MSG_HELLO)
                               | T(JB_MSG_HEARTBEAT) | LINKJOB},
    [K_SAMPLE0] = {"sample0", 0, T(JB_MSG_CODES)},
    [K_COLS] = {"cols", T(JB_MSG_ALIGN), T(JB_MSG_ALIGN)},
    [K_LYRICS] = {"lyrics", T(JB_MSG_ALIGN), T(JB_MSG_ALIGN)},
};

// The header key that carries msg->text in a message of this type.
static int text_key(int type) {
    return type == JB_MSG_ERROR ? K_MSG : type == JB_MSG_ALIGN ? K_LYRICS : K_INFO;
}

// Code points in well-formed UTF-8.
static size_t utf8_chars(const char *s, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += ((uint8_t)s[i] & 0xC0) != 0x80;
    return k;
}

// Where an error happened, for messages: "job X level L offset O".
static void msg_context(char *buf, size_t size, const char *job, int level, int64_t offset) {
    int n = snprintf(buf, size, "%s%s", job[0] ? "job " : "message", job);
    if (n < 0 || (size_t)n >= size) return;
    if (level >= 0) n += snprintf(buf + n, size - n, " level %d", level);
    if (n < 0 || (size_t)n >= size) return;
    if (offset >= 0) snprintf(buf + n, size - n, " offset %" PRId64, offset);
}

static bool job_id_ok(const char *s, size_t n) {
    if (n < 1 || n > JB_WIRE_JOB_ID_MAX || s[0] == '.') return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
                  || c == '.' || c == '_' || c == ':' || c == '-';
        if (!ok) return false;
    }
    return true;
}

// Well-formed UTF-8 (no overlongs, surrogates or code points past U+10FFFF), no NUL.
static bool utf8_ok(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c == 0) return false;
        if (c < 0x80) { i++; continue; }
        int len;
        uint32_t cp, min;
        if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1F; min = 0x80; }
        else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; min = 0x800; }
        else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; min = 0x10000; }
        else return false;
        if (n - i < (size_t)len) return false;
        for (int k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
        i += len;
    }
    return true;
}

// A JSON object, no duplicate keys. (jansson also checks the UTF-8.)
static bool json_object_ok(const char *s, size_t n, char *why, size_t why_size) {
    json_error_t jerr;
    json_t *j = json_loadb(s, n, JSON_REJECT_DUPLICATES, &jerr);
    if (!j) {
        snprintf(why, why_size, "line %d column %d: %s", jerr.line, jerr.column, jerr.text);
        return false;
    }
    bool ok = json_is_object(j);
    if (!ok) snprintf(why, why_size, "not a JSON object");
    json_decref(j);
    return ok;
}

static bool present_i(int64_t v) { return v >= 0; }

// The numeric fields that are present, each within its range.
static int check_ranges(const jb_msg_t *m, const bool *have, size_t job_len, int code,
                        const char *ctx, jb_err_t *err) {
    if (have[K_JOB] && !job_id_ok(m->job_id, job_len))
        return jb_err_set(err, code, "%s: job id must be 1..%d of [A-Za-z0-9._:-], not "
                          "starting with '.'", ctx, JB_WIRE_JOB_ID_MAX);
    if (have[K_LEVEL] && (m->level < 0 || m->level > JB_WIRE_MAX_LEVEL))
        return jb_err_set(err, code, "%s: level %d out of range 0..%d", ctx, m->level,
                          JB_WIRE_MAX_LEVEL);
    if (have[K_OFFSET] && (m->offset < 0 || m->offset > JB_WIRE_MAX_OFFSET))
        return jb_err_set(err, code, "%s: offset %" PRId64 " out of range", ctx, m->offset);
    if (have[K_CODEBOOK] && (m->codebook < 1 || m->codebook > JB_WIRE_MAX_CODEBOOK))
        return jb_err_set(err, code, "%s: codebook size %" PRId64 " out of range 1..%d", ctx,
                          m->codebook, JB_WIRE_MAX_CODEBOOK);
    if (have[K_RATE] && (m->sample_rate < 1 || m->sample_rate > JB_WIRE_MAX_RATE))
        return jb_err_set(err, code, "%s: sample rate %" PRId64 " out of range 1..%d", ctx,
                          m->sample_rate, JB_WIRE_MAX_RATE);
    if (have[K_AUDIO_LEN] && (m->audio_len < 0 || m->audio_len > JB_WIRE_MAX_OFFSET))
        return jb_err_set(err, code, "%s: audio length %" PRId64 " out of range", ctx,
                          m->audio_len);
    if (have[K_SEQ] && (m->seq < 0 || m->seq > JB_WIRE_MAX_SEQ))
        return jb_err_set(err, code, "%s: seq %" PRId64 " out of range", ctx, m->seq);
    if (have[K_CREDIT] && (m->credit < 0 || m->credit > INT32_MAX))
        return jb_err_set(err, code, "%s: credit %" PRId64 " out of range", ctx, m->credit);
    if (have[K_CODE] && (m->code < 1 || m->code > 255))
        return jb_err_set(err, code, "%s: error code %" PRId64 " out of range 1..255", ctx,
                          m->code);
    if (have[K_BATCH] && (m->batch < 1 || m->batch > INT32_MAX))
        return jb_err_set(err, code, "%s: batch %" PRId64 " out of range 1..%d", ctx, m->batch,
                          INT32_MAX);
    if (have[K_SAMPLE0] && (m->sample0 < 0 || m->sample0 >= INT32_MAX
                            || m->sample0 + (m->batch > 0 ? m->batch : 1) > INT32_MAX))
        return jb_err_set(err, code, "%s: sample0 %" PRId64 " out of range (rows up to %d)",
                          ctx, m->sample0, INT32_MAX);
    if (have[K_COLS] && (m->cols < 1 || m->cols > JB_WIRE_MAX_COLS))
        return jb_err_set(err, code, "%s: cols %" PRId64 " out of range 1..%d", ctx, m->cols,
                          JB_WIRE_MAX_COLS);
    return 0;
}

// The strings: length, UTF-8, JSON objects (spec, info), the lyrics' length (cols).
static int check_texts(const jb_msg_t *m, const bool *have, int code, const char *ctx,
                       jb_err_t *err) {
    for (int k = K_SPEC; k < K_COUNT_KEYS; k++) {
        if (!have[k] || (k != K_SPEC && k != K_MSG && k != K_INFO && k != K_LYRICS)) continue;
        const char *s = k == K_SPEC ? m->spec : m->text;
        const char *name = key_rules[k].name;
        size_t n = strnlen(s, JB_WIRE_MAX_TEXT + 1);
        if (n > JB_WIRE_MAX_TEXT)
            return jb_err_set(err, code, "%s: %s is over %u bytes", ctx, name,
                              JB_WIRE_MAX_TEXT);
        if (!utf8_ok((const uint8_t *)s, n))
            return jb_err_set(err, code, "%s: %s is not valid UTF-8", ctx, name);
        char why[200];
        if ((k == K_SPEC || k == K_INFO) && !json_object_ok(s, n, why, sizeof why))
            return jb_err_set(err, code, "%s: %s: %s", ctx, name, why);
        if (k == K_LYRICS && have[K_COLS] && utf8_chars(s, n) != (size_t)m->cols)
            return jb_err_set(err, code, "%s: lyrics of %zu characters for %" PRId64
                              " alignment columns", ctx, utf8_chars(s, n), m->cols);
    }
    return 0;
}

// A payload's shape within the caps, its codebook, and its values when present.
static int check_payload(const jb_msg_t *m, const bool *have, int code, int64_t codebook_arg,
                         const char *ctx, jb_err_t *err) {
    const char *what = m->type == JB_MSG_CODES ? "codes" : "alignment";
    uint64_t cols = m->type == JB_MSG_ALIGN ? (uint64_t)m->cols : 1;
    if (m->count < 1 || m->count > INT32_MAX || m->batch < 1 || m->batch > INT32_MAX)
        return jb_err_set(err, code, "%s: %s of shape (%" PRId64 ", %" PRId64
                          ") out of range", ctx, what, m->batch, m->count);
    if ((uint64_t)m->batch * (uint64_t)m->count > JB_WIRE_MAX_RAW / 4 / cols)
        return jb_err_set(err, code, "%s: %" PRId64 " x %" PRId64 " x %" PRIu64 " %s is "
                          "over the cap of %u bytes", ctx, m->batch, m->count, cols, what,
                          JB_WIRE_MAX_RAW);
    if ((m->offset > 0 ? m->offset : 0) + m->count > JB_WIRE_MAX_OFFSET)
        return jb_err_set(err, code, "%s: offset + count past %" PRId64, ctx,
                          (int64_t)JB_WIRE_MAX_OFFSET);
    if (m->type == JB_MSG_CODES && codebook_arg >= 0 && have[K_CODEBOOK]
        && m->codebook != codebook_arg)
        return jb_err_set(err, code, "%s: codes for a codebook of %" PRId64 " entries, "
                          "this one has %" PRId64, ctx, m->codebook, codebook_arg);
    if (m->codes && m->type == JB_MSG_CODES) {
        int64_t cb = codebook_arg >= 0 ? codebook_arg : have[K_CODEBOOK] ? m->codebook : -1;
        size_t n = (size_t)m->batch * (size_t)m->count;
        for (size_t i = 0; i < n; i++) {
            int32_t c = m->codes[i];
            if (c < 0 || (cb >= 0 && c >= cb))
                return jb_err_set(err, code, "%s: code %" PRId32 " at row %zu token %"
                                  PRId64 " is outside the codebook [0, %" PRId64 ")",
                                  ctx, c, i / (size_t)m->count,
                                  m->offset + (int64_t)(i % (size_t)m->count),
                                  cb >= 0 ? cb : (int64_t)INT32_MAX);
        }
    } else if (m->codes) {
        size_t n = jb_msg_payload_elems(m);
        for (size_t i = 0; i < n; i++) {
            int32_t w = m->codes[i];
            if (w < 0 || w > JB_WIRE_ALIGN_ONE) {
                size_t per_row = (size_t)m->count * (size_t)m->cols;
                return jb_err_set(err, code, "%s: alignment weight %" PRId32 " at row %zu "
                                  "token %zu column %zu is outside [0, %d]", ctx, w,
                                  i / per_row, i % per_row / (size_t)m->cols,
                                  i % (size_t)m->cols, JB_WIRE_ALIGN_ONE);
            }
        }
    }
    return 0;
}

// The rules shared by encoder (on the struct) and decoder (after parsing).
// code: the error class to report (JB_EINVAL for the encoder, JB_EFORMAT decoding).
static int check_msg(const jb_msg_t *m, int code, int64_t codebook_arg, jb_err_t *err) {
    char ctx[160];
    msg_context(ctx, sizeof ctx, m->job_id, m->level, m->offset);
    if (m->type <= JB_MSG_NONE || m->type >= JB_MSG_TYPE_COUNT)
        return jb_err_set(err, code, "%s: unknown message type %d", ctx, (int)m->type);
    unsigned t = T(m->type);
    const char *tn = type_names[m->type];
    size_t job_len = strnlen(m->job_id, sizeof m->job_id);
    bool have[K_COUNT_KEYS] = {
        [K_TYPE] = true, [K_V] = true, [K_JOB] = job_len > 0,
        [K_LEVEL] = m->level != -1, [K_OFFSET] = m->offset != -1, [K_COUNT] = m->count != -1,
        [K_BATCH] = m->batch != -1, [K_DTYPE] = has_payload(m->type),
        [K_RAW_LEN] = has_payload(m->type), [K_CODEBOOK] = m->codebook != -1,
        [K_RATE] = m->sample_rate != -1, [K_AUDIO_LEN] = m->audio_len != -1,
        [K_SEQ] = m->seq != -1, [K_CREDIT] = m->credit != -1, [K_CODE] = m->code != -1,
        [K_SPEC] = m->spec != NULL, [K_SAMPLE0] = m->sample0 != -1, [K_COLS] = m->cols != -1,
    };
    if (m->text) have[text_key(m->type)] = true;
    if (m->text && !(key_rules[text_key(m->type)].allowed & t))
        return jb_err_set(err, code, "%s: a '%s' message carries no text", ctx, tn);
    for (int k = 0; k < K_COUNT_KEYS; k++) {
        if (have[k] && !(key_rules[k].allowed & t))
            return jb_err_set(err, code, "%s: field '%s' is not allowed in a '%s' message", ctx,
                              key_rules[k].name, tn);
        if (!have[k] && (key_rules[k].required & t))
            return jb_err_set(err, code, "%s: '%s' message without field '%s'", ctx, tn,
                              key_rules[k].name);
    }
    if (check_ranges(m, have, job_len, code, ctx, err) || check_texts(m, have, code, ctx, err))
        return -1;
    return has_payload(m->type) ? check_payload(m, have, code, codebook_arg, ctx, err) : 0;
}

int jb_wire_check(const jb_msg_t *msg, jb_err_t *err) {
    if (has_payload(msg->type) && !msg->codes)
        return jb_err_set(err, JB_EINVAL, "job %s: '%s' message without its payload array",
                          msg->job_id, jb_msg_type_name(msg->type));
    return check_msg(msg, JB_EINVAL, -1, err);
}

int jb_wire_job_id_ok(const char *job_id) {
    return job_id && job_id_ok(job_id, strnlen(job_id, JB_WIRE_JOB_ID_MAX + 1));
}

// ---------------------------------------------------------------- encoder

static int pack_cb(void *data, const char *buf, size_t len) {
    return bytes_append(data, buf, len);
}

static int pack_str(msgpack_packer *pk, const char *s, size_t n) {
    return msgpack_pack_str(pk, n) || msgpack_pack_str_body(pk, s, n);
}

static int pack_key_uint(msgpack_packer *pk, int key, uint64_t v) {
    const char *k = key_rules[key].name;
    return pack_str(pk, k, strlen(k)) || msgpack_pack_uint64(pk, v);
}

static int pack_key_str(msgpack_packer *pk, int key, const char *s) {
    const char *k = key_rules[key].name;
    return pack_str(pk, k, strlen(k)) || pack_str(pk, s, strlen(s));
}

// Codes to little-endian bytes in place order (a copy only on big-endian hosts).
static const uint8_t *codes_le(const int32_t *codes, size_t n, uint8_t **tmp) {
    *tmp = NULL;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    (void)n;
    return (const uint8_t *)codes;
#else
    uint8_t *b = malloc(n * 4);
    if (!b) return NULL;
    for (size_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)codes[i];
        b[4 * i] = u & 0xFF; b[4 * i + 1] = (u >> 8) & 0xFF;
        b[4 * i + 2] = (u >> 16) & 0xFF; b[4 * i + 3] = u >> 24;
    }
    *tmp = b;
    return b;
#endif
}

int jb_wire_encode(const jb_msg_t *m, jb_bytes_t *hdr, jb_bytes_t *payload, jb_err_t *err) {
    if (jb_wire_check(m, err)) return -1;
    hdr->len = 0;
    payload->len = 0;
    size_t raw_len = 0;
    if (has_payload(m->type)) {
        raw_len = jb_msg_payload_elems(m) * 4;
        int bound = LZ4_compressBound((int)raw_len);
        if (bytes_reserve(payload, (size_t)bound))
            return jb_err_set(err, JB_ENOMEM, "job %s: out of memory for %d payload bytes",
                              m->job_id, bound);
        uint8_t *tmp;
        const uint8_t *src = codes_le(m->codes, raw_len / 4, &tmp);
        if (!src) return jb_err_set(err, JB_ENOMEM, "job %s: out of memory", m->job_id);
        int n = LZ4_compress_default((const char *)src, (char *)payload->data, (int)raw_len,
                                     bound);
        free(tmp);
        if (n <= 0)
            return jb_err_set(err, JB_EINTERNAL, "job %s: LZ4 compression failed", m->job_id);
        payload->len = (size_t)n;
    }

    msgpack_packer pk;
    msgpack_packer_init(&pk, hdr, pack_cb);
    size_t n_keys = 2;
    bool job = m->job_id[0] != 0;
    int64_t ints[K_COUNT_KEYS];
    for (int k = 0; k < K_COUNT_KEYS; k++) ints[k] = -1;
    ints[K_LEVEL] = m->level; ints[K_OFFSET] = m->offset; ints[K_COUNT] = m->count;
    ints[K_BATCH] = m->batch; ints[K_CODEBOOK] = m->codebook; ints[K_RATE] = m->sample_rate;
    ints[K_AUDIO_LEN] = m->audio_len; ints[K_SEQ] = m->seq; ints[K_CREDIT] = m->credit;
    ints[K_CODE] = m->code; ints[K_SAMPLE0] = m->sample0; ints[K_COLS] = m->cols;
    if (has_payload(m->type)) ints[K_RAW_LEN] = (int64_t)raw_len;
    for (int k = 0; k < K_COUNT_KEYS; k++) n_keys += present_i(ints[k]);
    n_keys += job + has_payload(m->type) + (m->spec != NULL) + (m->text != NULL);
    int rc = msgpack_pack_map(&pk, n_keys);
    rc = rc || pack_key_str(&pk, K_TYPE, type_names[m->type]);
    rc = rc || pack_key_uint(&pk, K_V, JB_WIRE_VERSION);
    if (job) rc = rc || pack_key_str(&pk, K_JOB, m->job_id);
    for (int k = 0; k < K_COUNT_KEYS; k++)
        if (present_i(ints[k])) rc = rc || pack_key_uint(&pk, k, (uint64_t)ints[k]);
    if (has_payload(m->type)) rc = rc || pack_key_str(&pk, K_DTYPE, "i32");
    if (m->spec) rc = rc || pack_key_str(&pk, K_SPEC, m->spec);
    if (m->text) rc = rc || pack_key_str(&pk, text_key(m->type), m->text);
    if (rc) return jb_err_set(err, JB_ENOMEM, "job %s: out of memory encoding header", m->job_id);
    if (hdr->len > JB_WIRE_MAX_HEADER)
        return jb_err_set(err, JB_EINVAL, "job %s: header is %zu bytes, over the cap of %u",
                          m->job_id, hdr->len, JB_WIRE_MAX_HEADER);
    return 0;
}

// ---------------------------------------------------------------- decoder

// Walks one MessagePack object at buf[*pos] without allocating, so that the
// msgpack-c unpacker (which allocates a container's elements up front, trusting
// its count) only ever sees a buffer whose counts are backed by real bytes.
// Depth is capped: a header is a flat map; unknown keys may hold small trees.
#define MP_MAX_DEPTH 8

// Reads a k-byte big-endian length at b[*p].
static int mp_be(const uint8_t *b, size_t *p, size_t *left, int k, uint64_t *n) {
    if (*left < (size_t)k) return -1;
    *n = 0;
    for (int i = 0; i < k; i++) *n = (*n << 8) | b[*p + i];
    *p += k;
    *left -= k;
    return 0;
}
// Skips one object at *pos; *objects counts every object seen (keys, values, elements),
// refused past JB_WIRE_MAX_OBJECTS so that unpacking cannot build millions of them.
static int mp_skip(const uint8_t *b, size_t len, size_t *pos, int depth, uint32_t *objects) {
    if (depth > MP_MAX_DEPTH || *pos >= len || ++*objects > JB_WIRE_MAX_OBJECTS) return -1;
    size_t p = *pos, left = len - p - 1;
    uint8_t c = b[p++];
    uint64_t n = 0;   // bytes to skip, or elements for containers
    int elems = 0;    // 1: array (n elements), 2: map (2n elements)
    int lb = 0;       // bytes of a big-endian length that follow c
    int extra = 0;    // ext: the type byte after the length
    if (c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3) n = 0;
    else if (c >= 0x80 && c <= 0x8f) { n = c & 0x0f; elems = 2; }
    else if (c >= 0x90 && c <= 0x9f) { n = c & 0x0f; elems = 1; }
    else if (c >= 0xa0 && c <= 0xbf) n = c & 0x1f;
    else switch (c) {
        case 0xc4: case 0xd9: lb = 1; break;              // bin8, str8
        case 0xc5: case 0xda: lb = 2; break;              // bin16, str16
        case 0xc6: case 0xdb: lb = 4; break;              // bin32, str32
        case 0xc7: lb = 1; extra = 1; break;              // ext8, ext16, ext32 (+ type byte)
        case 0xc8: lb = 2; extra = 1; break;
        case 0xc9: lb = 4; extra = 1; break;
        case 0xca: n = 4; break;                          // float32, float64
        case 0xcb: n = 8; break;
        case 0xcc: case 0xd0: n = 1; break;               // (u)int8..64
        case 0xcd: case 0xd1: n = 2; break;
        case 0xce: case 0xd2: n = 4; break;
        case 0xcf: case 0xd3: n = 8; break;
        case 0xd4: n = 2; break;                          // fixext1..16 (+ type byte)
        case 0xd5: n = 3; break;
        case 0xd6: n = 5; break;
        case 0xd7: n = 9; break;
        case 0xd8: n = 17; break;
        case 0xdc: lb = 2; elems = 1; break;              // array16, array32
        case 0xdd: lb = 4; elems = 1; break;
        case 0xde: lb = 2; elems = 2; break;              // map16, map32
        case 0xdf: lb = 4; elems = 2; break;
        default: return -1;                               // 0xc1: never used
    }
    if (lb && mp_be(b, &p, &left, lb, &n)) return -1;
    n += extra;
    if (!elems) {
        if (n > left) return -1;
        *pos = p + n;
        return 0;
    }
    uint64_t total = n * (uint64_t)elems;
    if (total > left) return -1;   // each element takes at least one byte
    *pos = p;
    for (uint64_t i = 0; i < total; i++)
        if (mp_skip(b, len, pos, depth + 1, objects)) return -1;
    return 0;
}

#define MAX_HEADER_KEYS 64

static bool key_is(const msgpack_object *k, const char *name) {
    size_t n = strlen(name);
    return k->via.str.size == n && memcmp(k->via.str.ptr, name, n) == 0;
}

int jb_wire_decode(const uint8_t *hdr, size_t hdr_len, const uint8_t *payload,
                   size_t payload_len, int64_t codebook, jb_msg_t *out, jb_err_t *err) {
    return jb_wire_decode_admit(hdr, hdr_len, payload, payload_len, codebook, NULL, NULL, out,
                                err);
}

// The header's bytes before unpacking: sizes, well-formed MessagePack within the caps, a map.
static int check_header_bytes(const uint8_t *hdr, size_t hdr_len, size_t payload_len,
                              jb_err_t *err) {
    if (hdr_len == 0) return jb_err_set(err, JB_EFORMAT, "message: empty header");
    if (hdr_len > JB_WIRE_MAX_HEADER)
        return jb_err_set(err, JB_EFORMAT, "message: header is %zu bytes, over the cap of %u",
                          hdr_len, JB_WIRE_MAX_HEADER);
    if (payload_len > JB_WIRE_MAX_PAYLOAD)
        return jb_err_set(err, JB_EFORMAT, "message: payload is %zu bytes, over the cap of %u",
                          payload_len, JB_WIRE_MAX_PAYLOAD);
    size_t end = 0;
    uint32_t objects = 0;
    if (mp_skip(hdr, hdr_len, &end, 0, &objects))
        return jb_err_set(err, JB_EFORMAT, "message: header is not well-formed MessagePack "
                          "(or nested deeper than %d, or over %d objects)", MP_MAX_DEPTH,
                          JB_WIRE_MAX_OBJECTS);
    if (end != hdr_len)
        return jb_err_set(err, JB_EFORMAT, "message: %zu bytes after the header's map",
                          hdr_len - end);
    if (hdr[0] != 0xde && hdr[0] != 0xdf && (hdr[0] & 0xf0) != 0x80)
        return jb_err_set(err, JB_EFORMAT, "message: header is not a MessagePack map");
    return 0;
}

// val[K_*]: the map's value of each known key (NULL when absent); keys are strings, each once.
static int header_values(const msgpack_object_map *map, const msgpack_object **val,
                         jb_err_t *err) {
    if (map->size > MAX_HEADER_KEYS)
        return jb_err_set(err, JB_EFORMAT, "message: header has %u keys, at most %d", map->size,
                          MAX_HEADER_KEYS);
    for (uint32_t i = 0; i < map->size; i++) {
        const msgpack_object *k = &map->ptr[i].key;
        if (k->type != MSGPACK_OBJECT_STR)
            return jb_err_set(err, JB_EFORMAT, "message: header key %u is not a string", i);
        for (uint32_t j = 0; j < i; j++) {
            const msgpack_object *k2 = &map->ptr[j].key;
            if (k2->via.str.size == k->via.str.size
                && memcmp(k2->via.str.ptr, k->via.str.ptr, k->via.str.size) == 0)
                return jb_err_set(err, JB_EFORMAT, "message: header key '%.*s' appears twice",
                                  (int)(k->via.str.size > 40 ? 40 : k->via.str.size),
                                  k->via.str.ptr);
        }
        for (int kk = 0; kk < K_COUNT_KEYS; kk++)
            if (key_is(k, key_rules[kk].name)) val[kk] = &map->ptr[i].val;
    }
    return 0;
}

// The job id (first, so that every later error names it), the version and the type.
static int read_id_type(const msgpack_object **val, jb_msg_t *out, jb_err_t *err) {
    const msgpack_object *o = val[K_JOB];
    if (o) {
        if (o->type != MSGPACK_OBJECT_STR || !job_id_ok(o->via.str.ptr, o->via.str.size))
            return jb_err_set(err, JB_EFORMAT, "message: field 'job' must be a string of 1..%d "
                              "of [A-Za-z0-9._:-], not starting with '.'", JB_WIRE_JOB_ID_MAX);
        memcpy(out->job_id, o->via.str.ptr, o->via.str.size);
        out->job_id[o->via.str.size] = 0;
    }
    const char *job = out->job_id[0] ? out->job_id : "?";
    o = val[K_V];
    if (!o || o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return jb_err_set(err, JB_EFORMAT, "job %s: field 'v' (version) missing or not an "
                          "unsigned integer", job);
    if (o->via.u64 != JB_WIRE_VERSION)
        return jb_err_set(err, JB_EUNSUP, "job %s: message version %" PRIu64 ", this reader "
                          "knows %d", job, o->via.u64, JB_WIRE_VERSION);
    o = val[K_TYPE];
    if (!o || o->type != MSGPACK_OBJECT_STR)
        return jb_err_set(err, JB_EFORMAT, "job %s: field 'type' missing or not a string", job);
    for (int t = JB_MSG_NONE + 1; t < JB_MSG_TYPE_COUNT; t++)
        if (key_is(o, type_names[t])) out->type = (jb_msg_type_t)t;
    if (out->type == JB_MSG_NONE)
        return jb_err_set(err, JB_EFORMAT, "job %s: unknown message type '%.*s'", job,
                          (int)(o->via.str.size > 40 ? 40 : o->via.str.size), o->via.str.ptr);
    return 0;
}

// Unsigned integer fields into out (-1: absent) and iv[K_*] (raw_len there only); ranges
// are checked by check_msg. dtype: "i32", and only in a message with a payload.
static int read_ints(const msgpack_object **val, jb_msg_t *out, int64_t *iv, jb_err_t *err) {
    static const int int_keys[] = {K_LEVEL, K_OFFSET, K_COUNT, K_BATCH, K_RAW_LEN, K_CODEBOOK,
                                   K_RATE, K_AUDIO_LEN, K_SEQ, K_CREDIT, K_CODE, K_SAMPLE0,
                                   K_COLS};
    const char *job = out->job_id[0] ? out->job_id : "?";
    for (size_t i = 0; i < sizeof int_keys / sizeof int_keys[0]; i++) {
        int k = int_keys[i];
        iv[k] = -1;
        const msgpack_object *o = val[k];
        if (!o) continue;
        if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
            return jb_err_set(err, JB_EFORMAT, "job %s: field '%s' is not an unsigned integer",
                              job, key_rules[k].name);
        if (o->via.u64 > (uint64_t)JB_WIRE_MAX_SEQ)   // the largest cap of any field
            return jb_err_set(err, JB_EFORMAT, "job %s: field '%s' = %" PRIu64 " out of range",
                              job, key_rules[k].name, o->via.u64);
        iv[k] = (int64_t)o->via.u64;
    }
    if (iv[K_LEVEL] > JB_WIRE_MAX_LEVEL)
        return jb_err_set(err, JB_EFORMAT, "job %s: level %" PRId64 " out of range 0..%d", job,
                          iv[K_LEVEL], JB_WIRE_MAX_LEVEL);
    out->level = (int)iv[K_LEVEL];
    out->offset = iv[K_OFFSET];
    out->count = iv[K_COUNT];
    out->batch = iv[K_BATCH];
    out->codebook = iv[K_CODEBOOK];
    out->sample_rate = iv[K_RATE];
    out->audio_len = iv[K_AUDIO_LEN];
    out->seq = iv[K_SEQ];
    out->credit = iv[K_CREDIT];
    out->code = iv[K_CODE];
    out->sample0 = iv[K_SAMPLE0];
    out->cols = iv[K_COLS];
    if (!has_payload(out->type) && (val[K_DTYPE] || val[K_RAW_LEN]))
        return jb_err_set(err, JB_EFORMAT, "job %s: field '%s' is not allowed in a '%s' message",
                          job, val[K_DTYPE] ? "dtype" : "raw_len", type_names[out->type]);
    const msgpack_object *o = val[K_DTYPE];
    if (o && !(o->type == MSGPACK_OBJECT_STR && key_is(o, "i32")))
        return jb_err_set(err, JB_EFORMAT, "job %s: dtype must be the string \"i32\"", job);
    return 0;
}

// Strings: copied NUL-terminated (spec, else text); check_msg checks length, UTF-8 and JSON.
static int read_strings(const msgpack_object **val, jb_msg_t *out, jb_err_t *err) {
    static const int str_keys[] = {K_SPEC, K_MSG, K_INFO, K_LYRICS};
    const char *job = out->job_id[0] ? out->job_id : "?";
    for (size_t i = 0; i < sizeof str_keys / sizeof str_keys[0]; i++) {
        int k = str_keys[i];
        const msgpack_object *o = val[k];
        if (!o) continue;
        if (o->type != MSGPACK_OBJECT_STR)
            return jb_err_set(err, JB_EFORMAT, "job %s: field '%s' is not a string", job,
                              key_rules[k].name);
        if (o->via.str.size > JB_WIRE_MAX_TEXT)
            return jb_err_set(err, JB_EFORMAT, "job %s: field '%s' is %u bytes, over the cap "
                              "of %u", job, key_rules[k].name, o->via.str.size, JB_WIRE_MAX_TEXT);
        if (memchr(o->via.str.ptr, 0, o->via.str.size))
            return jb_err_set(err, JB_EFORMAT, "job %s: field '%s' holds a NUL byte", job,
                              key_rules[k].name);
        if (!(key_rules[k].allowed & T(out->type)))
            return jb_err_set(err, JB_EFORMAT, "job %s: field '%s' is not allowed in a '%s' "
                              "message", job, key_rules[k].name, type_names[out->type]);
        char *s = malloc((size_t)o->via.str.size + 1);
        if (!s) return jb_err_set(err, JB_ENOMEM, "job %s: out of memory", job);
        memcpy(s, o->via.str.ptr, o->via.str.size);
        s[o->via.str.size] = 0;
        if (k == K_SPEC) out->spec = s;
        else out->text = s;
    }
    return 0;
}

// The payload of a message whose header is read and checked (raw_len: the header's), after
// the receiver's admit: decompressed into out->codes. 0 / -1 + err.
static int read_payload(jb_msg_t *out, int64_t raw_len, const uint8_t *payload,
                        size_t payload_len, jb_wire_admit_fn admit, void *admit_user,
                        jb_err_t *err) {
    char ctx[160];
    msg_context(ctx, sizeof ctx, out->job_id, out->level, out->offset);
    if (!has_payload(out->type)) {
        if (payload_len)
            return jb_err_set(err, JB_EFORMAT, "%s: a '%s' message with a %zu-byte payload", ctx,
                              type_names[out->type], payload_len);
        return admit ? admit(admit_user, out, 0, err) : 0;
    }
    // check_msg bounded batch x count (x cols) by the raw cap: no overflow here.
    uint64_t want = (uint64_t)jb_msg_payload_elems(out) * 4;
    if ((uint64_t)raw_len != want)
        return jb_err_set(err, JB_EFORMAT, "%s: raw_len %" PRId64 " but its %" PRIu64 " int32 "
                          "values are %" PRIu64 " bytes", ctx, raw_len, want / 4, want);
    // The receiver's bounds for this job, before anything is allocated for the payload.
    if (admit && admit(admit_user, out, want, err)) return -1;
    if (payload_len == 0)
        return jb_err_set(err, JB_EFORMAT, "%s: %s message without a payload", ctx,
                          type_names[out->type]);
    // LZ4 turns one input byte into at most 255 output bytes: a payload that
    // claims more is refused before the output buffer is allocated.
    if (want > (uint64_t)payload_len * 255 + 64)
        return jb_err_set(err, JB_EFORMAT, "%s: %zu payload bytes cannot hold %" PRIu64
                          " bytes of codes", ctx, payload_len, want);
    if (payload_len > (size_t)LZ4_compressBound((int)want))
        return jb_err_set(err, JB_EFORMAT, "%s: payload of %zu bytes is over LZ4's bound for %"
                          PRIu64 " bytes", ctx, payload_len, want);
    uint8_t *raw = malloc(want);
    if (!raw)
        return jb_err_set(err, JB_ENOMEM, "%s: out of memory for %" PRIu64 " bytes of codes",
                          ctx, want);
    int got = LZ4_decompress_safe((const char *)payload, (char *)raw, (int)payload_len,
                                  (int)want);
    if (got < 0 || (uint64_t)got != want) {
        free(raw);
        if (got < 0)
            return jb_err_set(err, JB_EFORMAT, "%s: payload is not a valid LZ4 block for %"
                              PRIu64 " bytes", ctx, want);
        return jb_err_set(err, JB_EFORMAT, "%s: payload decompresses to %d bytes, header says %"
                          PRIu64, ctx, got, want);
    }
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    out->codes = (int32_t *)(void *)raw;   // malloc'd memory is suitably aligned
#else
    out->codes = malloc(want);
    if (!out->codes) {
        free(raw);
        return jb_err_set(err, JB_ENOMEM, "%s: out of memory", ctx);
    }
    for (uint64_t i = 0; i < want / 4; i++)
        out->codes[i] = (int32_t)((uint32_t)raw[4 * i] | (uint32_t)raw[4 * i + 1] << 8
                                  | (uint32_t)raw[4 * i + 2] << 16 | (uint32_t)raw[4 * i + 3] << 24);
    free(raw);
#endif
    return 0;
}

// The header's fields into out, checked (codes are not there yet). 0 / -1 + err.
static int read_header(const msgpack_object_map *map, jb_msg_t *out, int64_t *raw_len,
                       int64_t codebook, jb_err_t *err) {
    const msgpack_object *val[K_COUNT_KEYS] = {0};
    int64_t iv[K_COUNT_KEYS];
    if (header_values(map, val, err) || read_id_type(val, out, err) ||
        read_ints(val, out, iv, err) || read_strings(val, out, err))
        return -1;
    const char *job = out->job_id[0] ? out->job_id : "?";
    if (has_payload(out->type) && !val[K_DTYPE])
        return jb_err_set(err, JB_EFORMAT, "job %s: %s message without field 'dtype'", job,
                          type_names[out->type]);
    if (has_payload(out->type) && iv[K_RAW_LEN] < 0)
        return jb_err_set(err, JB_EFORMAT, "job %s: %s message without field 'raw_len'", job,
                          type_names[out->type]);
    *raw_len = iv[K_RAW_LEN];
    // Fields, types and ranges (codes are not there yet: checked after decompression).
    return check_msg(out, JB_EFORMAT, codebook, err);
}

int jb_wire_decode_admit(const uint8_t *hdr, size_t hdr_len, const uint8_t *payload,
                         size_t payload_len, int64_t codebook, jb_wire_admit_fn admit,
                         void *admit_user, jb_msg_t *out, jb_err_t *err) {
    jb_msg_clear(out);
    if (check_header_bytes(hdr, hdr_len, payload_len, err)) return -1;
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    int rc = -1;
    int64_t raw_len = -1;
    int ur = msgpack_unpack_next(&up, (const char *)hdr, hdr_len, &off);
    if (ur == MSGPACK_UNPACK_NOMEM_ERROR)
        jb_err_set(err, JB_ENOMEM, "message: out of memory unpacking the header");
    else if (ur != MSGPACK_UNPACK_SUCCESS || off != hdr_len || up.data.type != MSGPACK_OBJECT_MAP)
        jb_err_set(err, JB_EFORMAT, "message: header is not a MessagePack map");
    else if (!read_header(&up.data.via.map, out, &raw_len, codebook, err) &&
             !read_payload(out, raw_len, payload, payload_len, admit, admit_user, err) &&
             (!out->codes || !check_msg(out, JB_EFORMAT, codebook, err)))
        rc = 0;
    msgpack_unpacked_destroy(&up);
    if (rc) {   // cleared, but the job id, type and seq stay when they were read: the
                // receiver can fail that job (wire.md 8.3) instead of going on without the
                // message, and a link can acknowledge it (the producer stops resending)
        jb_msg_type_t type = out->type;
        int64_t seq = out->seq;
        char job[JB_WIRE_JOB_ID_MAX + 1];
        memcpy(job, out->job_id, sizeof job);
        jb_msg_clear(out);
        out->type = type;
        out->seq = seq;
        memcpy(out->job_id, job, sizeof job);
    }
    return rc;
}

// ---------------------------------------------------------------- frames

static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;
static void crc_init_table(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[i] = c;
    }
}

uint32_t jb_frame_crc32(uint32_t crc, const uint8_t *data, size_t len) {
    pthread_once(&crc_once, crc_init_table);
    crc = ~crc;
    for (size_t i = 0; i < len; i++) crc = crc_table[(crc ^ data[i]) & 0xFF] ^ (crc >> 8);
    return ~crc;
}

static void put_u32(uint8_t *p, uint32_t v) {
    p[0] = v & 0xFF; p[1] = (v >> 8) & 0xFF; p[2] = (v >> 16) & 0xFF; p[3] = v >> 24;
}

static uint32_t get_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

int jb_frame_prefix(uint8_t prefix[JB_FRAME_PREFIX], const uint8_t *hdr, size_t hdr_len,
                    const uint8_t *payload, size_t payload_len, jb_err_t *err) {
    if (hdr_len == 0 || hdr_len > JB_WIRE_MAX_HEADER || payload_len > JB_WIRE_MAX_PAYLOAD)
        return jb_err_set(err, JB_EINVAL, "frame: header %zu / payload %zu bytes out of range",
                          hdr_len, payload_len);
    memcpy(prefix, JB_FRAME_MAGIC, 4);
    put_u32(prefix + 4, (uint32_t)hdr_len);
    put_u32(prefix + 8, (uint32_t)payload_len);
    uint32_t crc = jb_frame_crc32(0, prefix, 12);
    crc = jb_frame_crc32(crc, hdr, hdr_len);
    if (payload_len) crc = jb_frame_crc32(crc, payload, payload_len);
    put_u32(prefix + 12, crc);
    return 0;
}

int jb_frame_append(jb_bytes_t *out, const uint8_t *hdr, size_t hdr_len,
                    const uint8_t *payload, size_t payload_len, jb_err_t *err) {
    uint8_t prefix[JB_FRAME_PREFIX];
    if (jb_frame_prefix(prefix, hdr, hdr_len, payload, payload_len, err)) return -1;
    if (bytes_reserve(out, JB_FRAME_PREFIX + hdr_len + payload_len))
        return jb_err_set(err, JB_ENOMEM, "frame: out of memory");
    bytes_append(out, prefix, JB_FRAME_PREFIX);
    bytes_append(out, hdr, hdr_len);
    bytes_append(out, payload, payload_len);
    return 0;
}

int jb_frame_parse(const uint8_t *buf, size_t len, uint64_t base, jb_frame_t *frame,
                   size_t *need, jb_err_t *err) {
    *need = JB_FRAME_PREFIX;
    if (len == 0) return 0;
    size_t check = len < 4 ? len : 4;
    if (memcmp(buf, JB_FRAME_MAGIC, check) != 0) {
        if (check >= 3 && memcmp(buf, JB_FRAME_MAGIC, 3) == 0)
            return jb_err_set(err, JB_EUNSUP, "byte %" PRIu64 ": frame format version '%c', "
                              "this reader knows '1'", base, buf[3]);
        return jb_err_set(err, JB_EFORMAT, "byte %" PRIu64 ": bad frame magic (not a codes "
                          "stream, or out of step)", base);
    }
    if (len < JB_FRAME_PREFIX) return 0;
    uint32_t hl = get_u32(buf + 4), pl = get_u32(buf + 8);
    if (hl == 0 || hl > JB_WIRE_MAX_HEADER)
        return jb_err_set(err, JB_EFORMAT, "byte %" PRIu64 ": frame header length %" PRIu32
                          " out of range 1..%u", base, hl, JB_WIRE_MAX_HEADER);
    if (pl > JB_WIRE_MAX_PAYLOAD)
        return jb_err_set(err, JB_EFORMAT, "byte %" PRIu64 ": frame payload length %" PRIu32
                          " over the cap of %u", base, pl, JB_WIRE_MAX_PAYLOAD);
    size_t total = JB_FRAME_PREFIX + (size_t)hl + (size_t)pl;
    *need = total;
    if (len < total) return 0;
    uint32_t crc = jb_frame_crc32(0, buf, 12);
    crc = jb_frame_crc32(crc, buf + JB_FRAME_PREFIX, (size_t)hl + pl);
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
    // Fuzz builds only: let mutated frames reach the message decoder.
    crc = get_u32(buf + 12);
#endif
    if (crc != get_u32(buf + 12))
        return jb_err_set(err, JB_EFORMAT, "byte %" PRIu64 ": frame checksum mismatch "
                          "(%08" PRIx32 ", expected %08" PRIx32 ")", base, crc,
                          get_u32(buf + 12));
    frame->hdr = buf + JB_FRAME_PREFIX;
    frame->hdr_len = hl;
    frame->payload = pl ? buf + JB_FRAME_PREFIX + hl : NULL;
    frame->payload_len = pl;
    frame->size = total;
    return 1;
}

int jb_frame_append_msg(jb_bytes_t *out, const jb_msg_t *msg, jb_bytes_t *scratch_hdr,
                        jb_bytes_t *scratch_payload, jb_err_t *err) {
    if (jb_wire_encode(msg, scratch_hdr, scratch_payload, err)) return -1;
    return jb_frame_append(out, scratch_hdr->data, scratch_hdr->len, scratch_payload->data,
                           scratch_payload->len, err);
}

int jb_frame_decode_all(const uint8_t *buf, size_t len, int64_t codebook, jb_frame_msg_fn fn,
                        void *user, jb_err_t *err) {
    size_t pos = 0;
    jb_msg_t msg;
    jb_msg_init(&msg);
    while (pos < len) {
        jb_frame_t f;
        size_t need;
        int r = jb_frame_parse(buf + pos, len - pos, pos, &f, &need, err);
        if (r < 0) return -1;
        if (r == 0)
            return jb_err_set(err, JB_EFORMAT, "byte %zu: truncated frame (%zu of %zu bytes)",
                              pos, len - pos, need);
        if (jb_wire_decode(f.hdr, f.hdr_len, f.payload, f.payload_len, codebook, &msg, err))
            return jb_err_prefix(err, "byte %zu", pos);
        int stop = fn ? fn(&msg, pos, user) : 0;
        jb_msg_clear(&msg);
        if (stop) return stop;
        pos += f.size;
    }
    return 0;
}

// ---- message lists ---------------------------------------------------------------------

int jb_msg_list_take(jb_msg_t *msg, uint64_t byte_offset, void *user) {
    (void)byte_offset;
    jb_msg_list_t *a = user;
    if (a->n == a->cap) {
        int cap = a->cap ? 2 * a->cap : 64;
        jb_msg_t *p = realloc(a->v, sizeof *p * (size_t)cap);
        if (!p) return -1;
        a->v = p;
        a->cap = cap;
    }
    a->v[a->n++] = *msg;   // takes the pointers
    msg->spec = msg->text = NULL;
    msg->codes = NULL;
    return 0;
}

void jb_msg_list_free(jb_msg_list_t *list, int from) {
    for (int i = from < 0 ? 0 : from; i < list->n; i++) jb_msg_clear(&list->v[i]);
    free(list->v);
    memset(list, 0, sizeof *list);
}
