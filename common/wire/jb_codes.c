// jb_codes.c: see jb_codes.h; the file format is docs/wire.md section 5.
#include "jb_codes.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <jansson.h>

#include "jb_publish.h"

// Tokens per row in one CODES message of a saved file: a few MiB of codes per
// frame keeps the writer's and reader's buffers small without many frames.
#define SAVE_CHUNK_CODES (INT64_C(1) << 22)

int jb_codes_init(jb_codes_t *c, const char *job_id, int levels, int n_samples, int64_t codebook,
                  jb_err_t *err) {
    memset(c, 0, sizeof *c);
    if (!jb_wire_job_id_ok(job_id))
        return jb_err_set(err, JB_EINVAL, "codes: job id '%.80s' is not 1..%d of "
                          "[A-Za-z0-9._:-]", job_id ? job_id : "(null)", JB_WIRE_JOB_ID_MAX);
    if (levels < 1 || levels > JB_CODES_MAX_LEVELS)
        return jb_err_set(err, JB_EINVAL, "job %s: %d levels, expected 1..%d", job_id, levels,
                          JB_CODES_MAX_LEVELS);
    if (n_samples < 1 || n_samples > JB_CODES_MAX_SAMPLES)
        return jb_err_set(err, JB_EINVAL, "job %s: %d samples, expected 1..%d", job_id,
                          n_samples, JB_CODES_MAX_SAMPLES);
    if (codebook != -1 && (codebook < 1 || codebook > JB_WIRE_MAX_CODEBOOK))
        return jb_err_set(err, JB_EINVAL, "job %s: codebook size %" PRId64 ", expected 1..%d "
                          "or -1", job_id, codebook, JB_WIRE_MAX_CODEBOOK);
    strcpy(c->job_id, job_id);
    c->levels = levels;
    c->n_samples = n_samples;
    c->codebook = codebook;
    return 0;
}

void jb_codes_free(jb_codes_t *c) {
    if (!c) return;
    free(c->spec);
    for (int l = 0; l < JB_CODES_MAX_LEVELS; l++) {
        free(c->codes[l]);
        free(c->slen[l]);
    }
    memset(c, 0, sizeof *c);
}

static bool level_ok(const jb_codes_t *c, int level) { return level >= 0 && level < c->levels; }

int64_t jb_codes_len(const jb_codes_t *c, int level) {
    return level_ok(c, level) ? c->len[level] : 0;
}

int64_t jb_codes_sample_len(const jb_codes_t *c, int level, int sample) {
    if (!level_ok(c, level) || sample < 0 || sample >= c->n_samples || !c->slen[level]) return 0;
    return c->slen[level][sample];
}

const int32_t *jb_codes_row(const jb_codes_t *c, int level, int sample) {
    if (!level_ok(c, level) || sample < 0 || sample >= c->n_samples || !c->codes[level])
        return NULL;
    return c->codes[level] + (size_t)sample * (size_t)c->cap[level];
}

int64_t jb_codes_stride(const jb_codes_t *c, int level) {
    return level_ok(c, level) ? c->cap[level] : 0;
}

static void update_len(jb_codes_t *c, int level) {
    int64_t m = c->slen[level][0];
    for (int s = 1; s < c->n_samples; s++)
        if (c->slen[level][s] < m) m = c->slen[level][s];
    c->len[level] = m;
}

// Makes room for `need` tokens per sample at a level. Rows move to the new
// stride in place after realloc (last row first, since the stride grows), so
// growth costs one array, not two, at the peak.
static int reserve(jb_codes_t *c, int level, int64_t need, jb_err_t *err) {
    if (!c->slen[level]) {
        c->slen[level] = calloc((size_t)c->n_samples, sizeof *c->slen[level]);
        if (!c->slen[level])
            return jb_err_set(err, JB_ENOMEM, "job %s level %d: out of memory", c->job_id,
                              level);
    }
    int64_t old = c->cap[level];
    if (need <= old) return 0;
    int64_t cap = old * 2 > need ? old * 2 : need;
    if (cap < 1024) cap = 1024;
    if ((uint64_t)cap > SIZE_MAX / sizeof(int32_t) / (uint64_t)c->n_samples)
        return jb_err_set(err, JB_ENOMEM, "job %s level %d: %" PRId64 " tokens x %d samples "
                          "do not fit in memory", c->job_id, level, cap, c->n_samples);
    int32_t *p = realloc(c->codes[level], (size_t)cap * (size_t)c->n_samples * sizeof *p);
    if (!p)
        return jb_err_set(err, JB_ENOMEM, "job %s level %d: out of memory for %" PRId64
                          " tokens x %d samples", c->job_id, level, cap, c->n_samples);
    for (int s = c->n_samples - 1; s > 0 && old > 0; s--)
        memmove(p + (size_t)s * (size_t)cap, p + (size_t)s * (size_t)old,
                (size_t)c->slen[level][s] * sizeof *p);
    c->codes[level] = p;
    c->cap[level] = cap;
    return 0;
}

int jb_codes_grow_samples(jb_codes_t *c, int n_samples, jb_err_t *err) {
    if (n_samples <= c->n_samples) return 0;
    if (n_samples > JB_CODES_MAX_SAMPLES)
        return jb_err_set(err, JB_EINVAL, "job %s: %d samples, at most %d", c->job_id,
                          n_samples, JB_CODES_MAX_SAMPLES);
    // Rows are (n_samples, cap) row-major: the new rows go after the old ones.
    int32_t *codes[JB_CODES_MAX_LEVELS] = {0};
    int64_t *slen[JB_CODES_MAX_LEVELS] = {0};
    for (int l = 0; l < c->levels; l++) {
        if (!c->slen[l]) continue;
        slen[l] = calloc((size_t)n_samples, sizeof *slen[l]);
        codes[l] = c->cap[l] ? malloc((size_t)n_samples * (size_t)c->cap[l] * sizeof *codes[l])
                             : NULL;
        if (!slen[l] || (c->cap[l] && !codes[l])) {
            for (int k = 0; k <= l; k++) {
                free(slen[k]);
                free(codes[k]);
            }
            return jb_err_set(err, JB_ENOMEM, "job %s: out of memory for %d samples",
                              c->job_id, n_samples);
        }
        memcpy(slen[l], c->slen[l], (size_t)c->n_samples * sizeof *slen[l]);
        if (c->cap[l])
            memcpy(codes[l], c->codes[l], (size_t)c->n_samples * (size_t)c->cap[l] *
                                              sizeof *codes[l]);
    }
    for (int l = 0; l < c->levels; l++) {
        if (!c->slen[l]) continue;
        free(c->codes[l]);
        free(c->slen[l]);
        c->codes[l] = codes[l];
        c->slen[l] = slen[l];
    }
    c->n_samples = n_samples;
    for (int l = 0; l < c->levels; l++)
        if (c->slen[l]) update_len(c, l);
    return 0;
}

int jb_codes_put(jb_codes_t *c, int level, int64_t offset, int sample0, int64_t batch,
                 int64_t count, const int32_t *codes, jb_err_t *err) {
    if (!level_ok(c, level))
        return jb_err_set(err, JB_EINVAL, "job %s: level %d out of range 0..%d", c->job_id,
                          level, c->levels - 1);
    if (sample0 < 0 || batch < 1 || batch > c->n_samples - sample0)
        return jb_err_set(err, JB_EINVAL, "job %s level %d offset %" PRId64 ": samples [%d, %"
                          PRId64 ") outside the job's %d", c->job_id, level, offset, sample0,
                          sample0 + batch, c->n_samples);
    if (offset < 0 || count < 0 || offset > JB_WIRE_MAX_OFFSET - count)
        return jb_err_set(err, JB_EINVAL, "job %s level %d: tokens [%" PRId64 ", %" PRId64
                          " + %" PRId64 ") out of range", c->job_id, level, offset, offset,
                          count);
    if (count == 0) return 0;
    // Check everything first so that a refused message leaves the store as it was.
    for (int64_t r = 0; r < batch; r++) {
        int s = sample0 + (int)r;
        int64_t have = c->slen[level] ? c->slen[level][s] : 0;
        if (offset > have)
            return jb_err_set(err, JB_EFORMAT, "job %s level %d sample %d: codes at offset %"
                              PRId64 " but only %" PRId64 " tokens present (out of order or a "
                              "window missing)", c->job_id, level, s, offset, have);
        const int32_t *src = codes + (size_t)r * (size_t)count;
        for (int64_t t = 0; t < count; t++) {
            int32_t v = src[t];
            if (v < 0 && c->codebook <= 0)   // no codebook known: only the sign is checked
                return jb_err_set(err, JB_EFORMAT, "job %s level %d sample %d offset %" PRId64
                                  ": code %" PRId32 " is negative", c->job_id, level, s,
                                  offset + t, v);
            if (v < 0 || (c->codebook > 0 && v >= c->codebook))
                return jb_err_set(err, JB_EFORMAT, "job %s level %d sample %d offset %" PRId64
                                  ": code %" PRId32 " outside the codebook [0, %" PRId64 ")",
                                  c->job_id, level, s, offset + t, v, c->codebook);
        }
        int64_t overlap = have - offset < count ? have - offset : count;
        if (overlap <= 0) continue;   // (and the level may have no array yet)
        const int32_t *row = c->codes[level] + (size_t)s * (size_t)c->cap[level] + offset;
        for (int64_t t = 0; t < overlap; t++)
            if (row[t] != src[t])
                return jb_err_set(err, JB_EFORMAT, "job %s level %d sample %d offset %" PRId64
                                  ": restated code %" PRId32 " differs from the %" PRId32
                                  " already held", c->job_id, level, s, offset + t, src[t],
                                  row[t]);
    }
    if (reserve(c, level, offset + count, err)) return -1;
    for (int64_t r = 0; r < batch; r++) {
        int s = sample0 + (int)r;
        int64_t have = c->slen[level][s];
        if (offset + count <= have) continue;
        int32_t *row = c->codes[level] + (size_t)s * (size_t)c->cap[level];
        memcpy(row + have, codes + (size_t)r * (size_t)count + (have - offset),
               (size_t)(offset + count - have) * sizeof *row);
        c->slen[level][s] = offset + count;
    }
    update_len(c, level);
    return 0;
}

int jb_codes_pick(jb_codes_t *c, const int *pick, int n_pick, jb_err_t *err) {
    if (n_pick < 1 || n_pick > JB_CODES_MAX_SAMPLES)
        return jb_err_set(err, JB_EINVAL, "job %s: pick of %d samples, expected 1..%d",
                          c->job_id, n_pick, JB_CODES_MAX_SAMPLES);
    for (int i = 0; i < n_pick; i++)
        if (pick[i] < 0 || pick[i] >= c->n_samples)
            return jb_err_set(err, JB_EINVAL, "job %s: pick[%d] = %d, but the codes hold "
                              "samples 0..%d", c->job_id, i, pick[i], c->n_samples - 1);
    int32_t *codes[JB_CODES_MAX_LEVELS] = {0};
    int64_t *slen[JB_CODES_MAX_LEVELS] = {0};
    for (int l = 0; l < c->levels; l++) {
        if (!c->slen[l]) continue;
        slen[l] = malloc((size_t)n_pick * sizeof *slen[l]);
        codes[l] = malloc((size_t)n_pick * (size_t)c->cap[l] * sizeof *codes[l]);
        if (!slen[l] || !codes[l]) {
            for (int k = 0; k <= l; k++) {
                free(slen[k]);
                free(codes[k]);
            }
            return jb_err_set(err, JB_ENOMEM, "job %s: out of memory picking samples",
                              c->job_id);
        }
        for (int i = 0; i < n_pick; i++) {
            slen[l][i] = c->slen[l][pick[i]];
            memcpy(codes[l] + (size_t)i * (size_t)c->cap[l],
                   c->codes[l] + (size_t)pick[i] * (size_t)c->cap[l],
                   (size_t)slen[l][i] * sizeof *codes[l]);
        }
    }
    c->n_samples = n_pick;
    for (int l = 0; l < c->levels; l++) {
        if (!c->slen[l]) continue;
        free(c->codes[l]);
        free(c->slen[l]);
        c->codes[l] = codes[l];
        c->slen[l] = slen[l];
        update_len(c, l);
    }
    return 0;
}

// Codebook, rate and audio length carried by a message.
static int apply_common(jb_codes_t *c, const jb_msg_t *m, jb_err_t *err) {
    if (m->codebook >= 1 && m->codebook != c->codebook) {
        if (c->codebook > 0)
            return jb_err_set(err, JB_EFORMAT, "job %s: %s message for a codebook of %" PRId64
                              " entries, these codes have %" PRId64 " (another model)",
                              c->job_id, jb_msg_type_name(m->type), m->codebook, c->codebook);
        for (int l = 0; l < c->levels; l++)
            for (int s = 0; c->slen[l] && s < c->n_samples; s++) {
                const int32_t *row = jb_codes_row(c, l, s);
                for (int64_t t = 0; t < c->slen[l][s]; t++)
                    if (row[t] >= m->codebook)
                        return jb_err_set(err, JB_EFORMAT, "job %s level %d sample %d offset %"
                                          PRId64 ": code %" PRId32 " held outside the "
                                          "codebook of %" PRId64 " the %s message gives",
                                          c->job_id, l, s, t, row[t], m->codebook,
                                          jb_msg_type_name(m->type));
            }
        c->codebook = m->codebook;
    }
    if (m->sample_rate >= 1) c->sample_rate = m->sample_rate;
    if (m->audio_len >= 0) c->audio_len = m->audio_len;
    return 0;
}

int jb_codes_apply(jb_codes_t *c, const jb_msg_t *m, jb_err_t *err) {
    if (strcmp(m->job_id, c->job_id) != 0) return 0;
    switch (m->type) {
    case JB_MSG_JOB:
        if (c->spec && m->spec && strcmp(c->spec, m->spec) != 0)
            return jb_err_set(err, JB_EFORMAT, "job %s: a second job message with another "
                              "spec", c->job_id);
        if (apply_common(c, m, err)) return -1;
        if (!c->spec && m->spec) {
            c->spec = strdup(m->spec);
            if (!c->spec) return jb_err_set(err, JB_ENOMEM, "job %s: out of memory", c->job_id);
        }
        return 0;
    case JB_MSG_CODES: {
        if (!m->codes || m->batch < 1 || m->count < 1)
            return jb_err_set(err, JB_EINVAL, "job %s level %d: codes message without codes",
                              c->job_id, m->level);
        int64_t s0 = m->sample0 > 0 ? m->sample0 : 0;
        if (s0 > INT32_MAX)
            return jb_err_set(err, JB_EINVAL, "job %s level %d: sample0 %" PRId64
                              " out of range", c->job_id, m->level, s0);
        if (level_ok(c, m->level) && c->complete[m->level])
            return jb_err_set(err, JB_EFORMAT, "job %s level %d offset %" PRId64 ": codes "
                              "after the level's end", c->job_id, m->level, m->offset);
        // The codebook first: codes checked against a codebook the message brings.
        if (apply_common(c, m, err)) return -1;
        return jb_codes_put(c, m->level, m->offset, (int)s0, m->batch, m->count, m->codes,
                            err);
    }
    case JB_MSG_END:
        if (m->level < 0) {
            if (apply_common(c, m, err)) return -1;
            c->ended = 1;
            return 0;
        }
        if (!level_ok(c, m->level))
            return jb_err_set(err, JB_EFORMAT, "job %s: end of level %d, the job has levels "
                              "0..%d", c->job_id, m->level, c->levels - 1);
        if (c->complete[m->level])
            return jb_err_set(err, JB_EFORMAT, "job %s: a second end of level %d", c->job_id,
                              m->level);
        if (m->batch >= 1 && m->batch != c->n_samples)
            return jb_err_set(err, JB_EFORMAT, "job %s level %d: end message for %" PRId64
                              " samples, the job has %d", c->job_id, m->level, m->batch,
                              c->n_samples);
        if (m->offset >= 0)
            for (int s = 0; s < c->n_samples; s++)
                if (jb_codes_sample_len(c, m->level, s) != m->offset)
                    return jb_err_set(err, JB_EFORMAT, "job %s level %d sample %d: end message "
                                      "says %" PRId64 " tokens, %" PRId64 " present", c->job_id,
                                      m->level, s, m->offset,
                                      jb_codes_sample_len(c, m->level, s));
        if (apply_common(c, m, err)) return -1;
        c->complete[m->level] = 1;
        return 0;
    default:
        return 0;
    }
}

// ---------------------------------------------------------------- save

typedef struct {
    int fd;
    const char *path;
    uint64_t written;
    jb_bytes_t hdr, payload;
} writer_t;

static int write_all(writer_t *w, struct iovec *iov, int n, jb_err_t *err) {
    while (n > 0) {
        ssize_t k = writev(w->fd, iov, n);
        if (k < 0) {
            if (errno == EINTR) continue;
            return jb_err_set(err, JB_EIO, "%s: write failed at byte %" PRIu64 ": %s", w->path,
                              w->written, strerror(errno));
        }
        w->written += (uint64_t)k;
        while (n > 0 && (size_t)k >= iov->iov_len) {
            k -= (ssize_t)iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (char *)iov->iov_base + k;
            iov->iov_len -= (size_t)k;
        }
    }
    return 0;
}

static int write_msg(writer_t *w, const jb_msg_t *m, jb_err_t *err) {
    if (jb_wire_encode(m, &w->hdr, &w->payload, err))
        return jb_err_prefix(err, "%s", w->path);
    uint8_t prefix[JB_FRAME_PREFIX];
    if (jb_frame_prefix(prefix, w->hdr.data, w->hdr.len, w->payload.data, w->payload.len, err))
        return jb_err_prefix(err, "%s", w->path);
    struct iovec iov[3] = {
        {prefix, sizeof prefix}, {w->hdr.data, w->hdr.len}, {w->payload.data, w->payload.len},
    };
    return write_all(w, iov, w->payload.len ? 3 : 2, err);
}

// CODES messages of rows [s0, s0 + batch) of a level, tokens [0, n), in chunks.
static int write_rows(writer_t *w, const jb_codes_t *c, int level, int s0, int batch, int64_t n,
                      int32_t *buf, jb_err_t *err) {
    int64_t chunk = SAVE_CHUNK_CODES / batch;
    if (chunk < 1) chunk = 1;
    for (int64_t off = 0; off < n; off += chunk) {
        int64_t cnt = n - off < chunk ? n - off : chunk;
        for (int r = 0; r < batch; r++)
            memcpy(buf + (size_t)r * (size_t)cnt, jb_codes_row(c, level, s0 + r) + off,
                   (size_t)cnt * sizeof *buf);
        jb_msg_t m;
        jb_msg_init(&m);
        m.type = JB_MSG_CODES;
        strcpy(m.job_id, c->job_id);
        m.level = level;
        m.offset = off;
        m.batch = batch;
        m.count = cnt;
        m.sample0 = s0;
        m.codebook = c->codebook > 0 ? c->codebook : -1;
        m.codes = buf;   // borrowed: not cleared
        if (write_msg(w, &m, err)) return -1;
    }
    return 0;
}

static int write_file(writer_t *w, const jb_codes_t *c, jb_err_t *err) {
    jb_msg_t m;
    jb_msg_init(&m);
    strcpy(m.job_id, c->job_id);
    if (c->spec) {
        m.type = JB_MSG_JOB;
        m.spec = c->spec;   // borrowed
        m.codebook = c->codebook > 0 ? c->codebook : -1;
        m.sample_rate = c->sample_rate > 0 ? c->sample_rate : -1;
        m.audio_len = c->audio_len > 0 ? c->audio_len : -1;
        if (write_msg(w, &m, err)) return -1;
        m.spec = NULL;
    }
    int64_t most = 0;
    for (int l = 0; l < c->levels; l++)
        for (int s = 0; s < c->n_samples; s++)
            if (jb_codes_sample_len(c, l, s) > most) most = jb_codes_sample_len(c, l, s);
    int64_t buf_n = most * c->n_samples < SAVE_CHUNK_CODES ? most * c->n_samples
                                                             : SAVE_CHUNK_CODES + c->n_samples;
    int32_t *buf = malloc((size_t)(buf_n > 0 ? buf_n : 1) * sizeof *buf);
    if (!buf) return jb_err_set(err, JB_ENOMEM, "%s: out of memory", w->path);
    int rc = 0;
    for (int l = c->levels - 1; l >= 0 && rc == 0; l--) {
        bool same = true;
        for (int s = 1; s < c->n_samples; s++)
            same = same && jb_codes_sample_len(c, l, s) == jb_codes_sample_len(c, l, 0);
        if (same) {
            rc = write_rows(w, c, l, 0, c->n_samples, jb_codes_len(c, l), buf, err);
        } else {   // samples of different lengths: one row at a time
            for (int s = 0; s < c->n_samples && rc == 0; s++)
                rc = write_rows(w, c, l, s, 1, jb_codes_sample_len(c, l, s), buf, err);
        }
        if (rc) break;
        jb_msg_init(&m);
        m.type = JB_MSG_END;
        strcpy(m.job_id, c->job_id);
        m.level = l;
        m.offset = same ? jb_codes_len(c, l) : -1;
        m.batch = c->n_samples;
        rc = write_msg(w, &m, err);
    }
    free(buf);
    if (rc) return -1;
    jb_msg_init(&m);
    m.type = JB_MSG_END;
    strcpy(m.job_id, c->job_id);
    m.sample_rate = c->sample_rate > 0 ? c->sample_rate : -1;
    m.audio_len = c->audio_len > 0 ? c->audio_len : -1;
    return write_msg(w, &m, err);
}

int jb_codes_save(const jb_codes_t *c, const char *path, jb_err_t *err) {
    if (!path || !*path) return jb_err_set(err, JB_EINVAL, "codes file: empty path");
    jb_publish_t p;
    if (jb_publish_open(&p, path, err)) {
        if (errno == ENOENT) err->code = JB_ENOENT;   // the directory is missing
        return -1;
    }
    writer_t w = {.fd = p.fd, .path = path};
    int rc = write_file(&w, c, err);
    if (rc) jb_publish_abort(&p);
    else rc = jb_publish_commit(&p, err);
    jb_bytes_free(&w.hdr);
    jb_bytes_free(&w.payload);
    return rc;
}

// ---------------------------------------------------------------- load

typedef struct {
    jb_msg_t msg;
    uint64_t at;   // byte offset of its frame
} held_t;

typedef struct {
    const char *path;
    held_t *msgs;
    size_t n, cap;
    char job[JB_WIRE_JOB_ID_MAX + 1];
    uint64_t job_at;
    int max_level;
    int64_t rows;        // samples from codes rows and END batch
    bool ended;
    bool level_end[JB_CODES_MAX_LEVELS];   // END(level) seen
    jb_err_t err;
} load_t;

static int collect(jb_msg_t *m, uint64_t at, void *user) {
    load_t *ld = user;
    if (!m->job_id[0]) return 0;   // heartbeat, status: not about a job
    if (!ld->job[0]) {
        strcpy(ld->job, m->job_id);
        ld->job_at = at;
    } else if (strcmp(ld->job, m->job_id) != 0) {
        jb_err_set(&ld->err, JB_EFORMAT, "%s byte %" PRIu64 ": holds several jobs ('%s' from "
                   "byte %" PRIu64 ", then '%s'); a codes file holds one", ld->path, at, ld->job,
                   ld->job_at, m->job_id);
        return 1;
    }
    if (ld->ended) {
        jb_err_set(&ld->err, JB_EFORMAT, "%s byte %" PRIu64 ": job %s: a '%s' message after "
                   "the job's end", ld->path, at, ld->job, jb_msg_type_name(m->type));
        return 1;
    }
    switch (m->type) {
    case JB_MSG_ERROR:
        jb_err_set(&ld->err, JB_EFORMAT, "%s byte %" PRIu64 ": job %s failed: %.300s", ld->path,
                   at, ld->job, m->text ? m->text : "");
        return 1;
    case JB_MSG_JOB: case JB_MSG_CODES: case JB_MSG_END: break;
    default: return 0;   // align, ack: not part of the codes
    }
    if (m->type == JB_MSG_END && m->level < 0) ld->ended = true;
    if (m->type == JB_MSG_END && m->level >= 0) {
        // Downstream of the stages (and in a producer's stream) each level has
        // exactly one end (docs/wire.md section 8): a second one is not a codes file.
        if (ld->level_end[m->level]) {
            jb_err_set(&ld->err, JB_EFORMAT, "%s byte %" PRIu64 ": job %s: a second end of "
                       "level %d", ld->path, at, ld->job, m->level);
            return 1;
        }
        ld->level_end[m->level] = true;
    }
    if (m->level > ld->max_level) ld->max_level = m->level;
    int64_t rows = m->type == JB_MSG_CODES ? (m->sample0 > 0 ? m->sample0 : 0) + m->batch
                   : m->type == JB_MSG_END ? m->batch : -1;
    if (rows > ld->rows) ld->rows = rows;
    if (ld->n == ld->cap) {
        size_t cap = ld->cap ? ld->cap * 2 : 64;
        held_t *p = realloc(ld->msgs, cap * sizeof *p);
        if (!p) {
            jb_err_set(&ld->err, JB_ENOMEM, "%s: out of memory", ld->path);
            return 1;
        }
        ld->msgs = p;
        ld->cap = cap;
    }
    ld->msgs[ld->n].msg = *m;   // takes its arrays
    ld->msgs[ld->n].at = at;
    ld->n++;
    jb_msg_init(m);
    return 0;
}

// The spec's n_samples, for a file whose levels are all empty and carry no batch.
static int64_t spec_samples(const char *spec) {
    json_t *j = spec ? json_loads(spec, 0, NULL) : NULL;
    json_t *v = json_object_get(j, "n_samples");
    int64_t n = json_is_integer(v) ? (int64_t)json_integer_value(v) : -1;
    json_decref(j);
    return n;
}

// The whole file, or stdin for "-" (a pipe from jukebox-encoder): read to the end,
// growing the buffer; capped so a runaway stream cannot take all memory.
#define JB_CODES_MAX_FILE ((size_t)4 << 30)
static int read_file(const char *path, uint8_t **data, size_t *len, jb_err_t *err) {
    *data = NULL;
    *len = 0;
    int is_stdin = !strcmp(path, "-");
    int fd = is_stdin ? 0 : open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return jb_err_set(err, errno == ENOENT ? JB_ENOENT : JB_EIO, "%s: %s", path,
                          strerror(errno));
    struct stat st;
    if (fstat(fd, &st) || S_ISDIR(st.st_mode)) {   // an input that is not there: 66
        if (!is_stdin) close(fd);
        return jb_err_set(err, JB_ENOENT, "%s: is a directory, not a file", path);
    }
    size_t cap = S_ISREG(st.st_mode) && st.st_size > 0 ? (size_t)st.st_size + 1 : 65536, n = 0;
    uint8_t *buf = malloc(cap);
    int rc = -1;
    if (!buf) {
        jb_err_set(err, JB_ENOMEM, "%s: out of memory for %zu bytes", path, cap);
        goto done;
    }
    for (;;) {
        if (n == cap) {
            if (cap >= JB_CODES_MAX_FILE) {
                jb_err_set(err, JB_EFORMAT, "%s: more than %zu bytes: not a codes file", path,
                           JB_CODES_MAX_FILE);
                goto done;
            }
            uint8_t *b2 = realloc(buf, cap * 2);
            if (!b2) {
                jb_err_set(err, JB_ENOMEM, "%s: out of memory for %zu bytes", path, cap * 2);
                goto done;
            }
            buf = b2, cap *= 2;
        }
        ssize_t k = read(fd, buf + n, cap - n);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) {
            jb_err_set(err, JB_EIO, "%s byte %zu: read: %s", path, n, strerror(errno));
            goto done;
        }
        if (k == 0) break;
        n += (size_t)k;
    }
    *data = buf;
    *len = n;
    buf = NULL;
    rc = 0;
done:
    free(buf);
    if (!is_stdin) close(fd);
    return rc;
}

int jb_codes_load(jb_codes_t *c, const char *path, jb_err_t *err) {
    memset(c, 0, sizeof *c);
    uint8_t *data;
    size_t len;
    if (read_file(path, &data, &len, err)) return -1;
    if (strcmp(path, "-") == 0) path = "stdin";
    load_t ld = {.path = path, .max_level = -1, .rows = -1};
    int rc = jb_frame_decode_all(data, len, -1, collect, &ld, err);
    free(data);
    if (rc > 0) {
        *err = ld.err;
        goto fail;
    }
    if (rc < 0) {
        jb_err_prefix(err, "%s", path);
        goto fail;
    }
    if (!ld.job[0]) {
        jb_err_set(err, JB_EFORMAT, "%s: no job in it (%zu bytes): not a codes file", path, len);
        goto fail;
    }
    if (!ld.ended) {
        jb_err_set(err, JB_EFORMAT, "%s byte %zu: job %s: the file ends without the job's end "
                   "message (truncated?)", path, len, ld.job);
        goto fail;
    }
    if (ld.max_level < 0) {   // only the job's end (and maybe its job message)
        jb_err_set(err, JB_EFORMAT, "%s: job %s: no codes and no level in it: not a codes "
                   "file", path, ld.job);
        goto fail;
    }
    const char *spec = NULL;
    int64_t codebook = -1;
    for (size_t i = 0; i < ld.n; i++) {
        if (ld.msgs[i].msg.spec && !spec) spec = ld.msgs[i].msg.spec;
        if (ld.msgs[i].msg.codebook >= 1 && codebook < 0) codebook = ld.msgs[i].msg.codebook;
    }
    int64_t rows = ld.rows >= 1 ? ld.rows : spec_samples(spec);
    if (rows < 1) rows = 1;
    if (rows > JB_CODES_MAX_SAMPLES) {
        jb_err_set(err, JB_EFORMAT, "%s: job %s: %" PRId64 " samples, at most %d", path, ld.job,
                   rows, JB_CODES_MAX_SAMPLES);
        goto fail;
    }
    if (jb_codes_init(c, ld.job, ld.max_level >= 0 ? ld.max_level + 1 : 1, (int)rows, codebook,
                      err)) {
        jb_err_prefix(err, "%s", path);
        goto fail;
    }
    // Room for each level's final length at once: no regrowth while applying.
    int64_t need[JB_CODES_MAX_LEVELS] = {0};
    for (size_t i = 0; i < ld.n; i++) {
        const jb_msg_t *m = &ld.msgs[i].msg;
        if (m->type == JB_MSG_CODES && m->offset + m->count > need[m->level])
            need[m->level] = m->offset + m->count;
    }
    for (int l = 0; l < c->levels; l++)
        if (need[l] && reserve(c, l, need[l], err)) {
            jb_err_prefix(err, "%s", path);
            goto fail;
        }
    for (size_t i = 0; i < ld.n; i++) {
        if (jb_codes_apply(c, &ld.msgs[i].msg, err)) {
            jb_err_prefix(err, "%s byte %" PRIu64, path, ld.msgs[i].at);
            goto fail;
        }
        jb_msg_clear(&ld.msgs[i].msg);
    }
    free(ld.msgs);
    return 0;
fail:
    for (size_t i = 0; i < ld.n; i++) jb_msg_clear(&ld.msgs[i].msg);
    free(ld.msgs);
    jb_codes_free(c);
    return -1;
}
