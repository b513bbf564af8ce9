// test_jb_wire.c: messages and frames (common/jb_wire.h) against the spec in
// docs/wire.md: round trips of every type, headers built by hand with msgpack-c
// and payloads with liblz4 directly (independent of our encoder), every
// truncation, random byte flips, out-of-range codes and a big batch.
#include <inttypes.h>
#include <stdint.h>
#include <string.h>

#include <lz4.h>
#include <msgpack.h>

#include "jb_test.h"
#include "jb_wire.h"

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rng(void) {   // xorshift64*
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1Dull;
}

static int32_t *random_codes(size_t n, int32_t cb) {
    int32_t *c = malloc(n * sizeof *c);
    for (size_t i = 0; i < n; i++) c[i] = (int32_t)(rng() % (uint64_t)cb);
    return c;
}

// ---- a hand-built header: msgpack-c packer writing into an sbuffer

typedef struct {
    msgpack_sbuffer sb;
    msgpack_packer pk;
} hb_t;

static void hb_start(hb_t *h, size_t n_keys) {
    msgpack_sbuffer_init(&h->sb);
    msgpack_packer_init(&h->pk, &h->sb, msgpack_sbuffer_write);
    msgpack_pack_map(&h->pk, n_keys);
}
static void hb_key(hb_t *h, const char *k) { msgpack_pack_str_with_body(&h->pk, k, strlen(k)); }
static void hb_str(hb_t *h, const char *k, const char *v) {
    hb_key(h, k);
    msgpack_pack_str_with_body(&h->pk, v, strlen(v));
}
static void hb_uint(hb_t *h, const char *k, uint64_t v) {
    hb_key(h, k);
    msgpack_pack_uint64(&h->pk, v);
}
static void hb_free(hb_t *h) { msgpack_sbuffer_destroy(&h->sb); }

static int decode_hb(hb_t *h, const uint8_t *pl, size_t pl_len, int64_t cb, jb_msg_t *m,
                     jb_err_t *err) {
    return jb_wire_decode((const uint8_t *)h->sb.data, h->sb.size, pl, pl_len, cb, m, err);
}

// ---- round trips

static void roundtrip(const jb_msg_t *m, const char *what, jb_msg_t *out) {
    jb_err_t err = {0};
    jb_bytes_t hdr = {0}, pl = {0}, frames = {0};
    JB_CHECK_OK(jb_wire_encode(m, &hdr, &pl, &err), &err, what);
    JB_CHECK_OK(jb_wire_decode(hdr.data, hdr.len, pl.data, pl.len, -1, out, &err), &err, what);
    JB_CHECK(out->type == m->type && strcmp(out->job_id, m->job_id) == 0 && out->level == m->level
                 && out->offset == m->offset && out->count == m->count && out->batch == m->batch
                 && out->codebook == m->codebook && out->sample_rate == m->sample_rate
                 && out->audio_len == m->audio_len && out->seq == m->seq
                 && out->credit == m->credit && out->code == m->code
                 && out->sample0 == m->sample0 && out->cols == m->cols,
             "%s: every integer field survives", what);
    JB_CHECK((!m->spec && !out->spec) || (m->spec && out->spec && !strcmp(m->spec, out->spec)),
             "%s: spec survives", what);
    JB_CHECK((!m->text && !out->text) || (m->text && out->text && !strcmp(m->text, out->text)),
             "%s: text survives", what);
    if (m->codes) {
        size_t n = jb_msg_payload_elems(m);
        JB_CHECK(n > 0 && out->codes && memcmp(out->codes, m->codes, n * 4) == 0,
                 "%s: %zu codes survive", what, n);
    } else {
        JB_CHECK(!out->codes, "%s: no codes", what);
    }
    jb_bytes_free(&hdr);
    jb_bytes_free(&pl);
    jb_bytes_free(&frames);
}

static void test_roundtrips(void) {
    jb_err_t err = {0};
    jb_msg_t m, out;
    jb_msg_init(&m);
    jb_msg_init(&out);

    m.type = JB_MSG_JOB;
    jb_msg_set_job_id(&m, "job-7f3a.1", &err);
    jb_msg_set_spec(&m, "{\"mode\":\"ancestral\",\"artist\":\"Joni Mitchell\","
                        "\"lyrics\":\"caf\xc3\xa9 \xe2\x99\xaa\",\"temp\":[0.99,0.99,0.99]}", &err);
    m.sample_rate = 44100;
    m.audio_len = 44100 * 20 + 17;
    m.codebook = 2048;
    m.seq = 1;
    roundtrip(&m, "job", &out);
    jb_msg_clear(&m);

    m.type = JB_MSG_CODES;
    jb_msg_set_job_id(&m, "job1", &err);
    m.level = 2;
    m.offset = 8192;
    m.codebook = 2048;
    m.sample_rate = 44100;
    m.audio_len = 1234567;
    m.seq = (int64_t)1 << 52;
    int32_t *c = random_codes(3 * 1000, 2048);
    c[0] = 0;
    c[1] = 2047;
    JB_CHECK_OK(jb_msg_set_codes(&m, c, 3, 1000, &err), &err, "set codes");
    free(c);
    roundtrip(&m, "codes", &out);
    jb_msg_clear(&m);

    m.type = JB_MSG_END;
    jb_msg_set_job_id(&m, "job1", &err);
    roundtrip(&m, "end of job", &out);
    m.level = 0;
    m.offset = 262144;
    m.audio_len = 2097152;
    roundtrip(&m, "end of level", &out);
    jb_msg_clear(&m);

    m.type = JB_MSG_ERROR;
    jb_msg_set_job_id(&m, "job1", &err);
    jb_msg_set_text(&m, "lyrics: character '\xe2\x98\x83' dropped; length 900 s over the "
                        "model's 600 s", &err);
    m.code = jb_err_exit_code(JB_EFORMAT);
    m.level = 1;
    m.offset = 4096;
    roundtrip(&m, "error", &out);
    jb_msg_clear(&m);

    m.type = JB_MSG_ACK;
    jb_msg_set_job_id(&m, "job1", &err);
    m.seq = 12;
    m.credit = 4;
    m.level = 1;
    m.offset = 0;
    roundtrip(&m, "ack", &out);
    jb_msg_clear(&m);

    m.type = JB_MSG_HEARTBEAT;
    roundtrip(&m, "heartbeat", &out);
    m.seq = 99;
    m.credit = 0;
    roundtrip(&m, "heartbeat with seq and credit", &out);
    jb_msg_clear(&m);

    m.type = JB_MSG_STATUS;
    jb_msg_set_text(&m, "{\"stage\":\"upsampler-mid\",\"jobs\":2,\"tok_s\":41.5}", &err);
    roundtrip(&m, "status", &out);
    jb_msg_clear(&m);
    jb_msg_clear(&out);

    JB_CHECK(strcmp(jb_msg_type_name(JB_MSG_CODES), "codes") == 0
                 && strcmp(jb_msg_type_name(99), "?") == 0, "type names");
}

// ---- the format as docs/wire.md writes it, built without our encoder

static void test_hand_built(void) {
    jb_err_t err = {0};
    jb_msg_t m;
    jb_msg_init(&m);
    // codes: (2, 5) little-endian int32 compressed by liblz4 directly.
    int32_t codes[10] = {0, 1, 2, 3, 2047, 5, 6, 7, 8, 9};
    uint8_t raw[40];
    for (int i = 0; i < 10; i++)
        for (int b = 0; b < 4; b++) raw[4 * i + b] = (uint8_t)((uint32_t)codes[i] >> (8 * b));
    char pl[128];
    int pl_len = LZ4_compress_default((const char *)raw, pl, 40, sizeof pl);
    hb_t h;
    hb_start(&h, 10);
    hb_str(&h, "type", "codes");
    hb_uint(&h, "v", 1);
    hb_str(&h, "job", "abc");
    hb_uint(&h, "level", 1);
    hb_uint(&h, "offset", 32);
    hb_uint(&h, "count", 5);
    hb_uint(&h, "batch", 2);
    hb_str(&h, "dtype", "i32");
    hb_uint(&h, "raw_len", 40);
    hb_str(&h, "x-future-field", "ignored");   // unknown keys are ignored
    JB_CHECK_OK(decode_hb(&h, (uint8_t *)pl, (size_t)pl_len, 2048, &m, &err), &err,
                "hand-built codes message decodes");
    JB_CHECK(m.type == JB_MSG_CODES && m.level == 1 && m.offset == 32 && m.batch == 2
                 && m.count == 5 && m.codes && memcmp(m.codes, codes, sizeof codes) == 0
                 && strcmp(m.job_id, "abc") == 0 && m.codebook == -1,
             "hand-built codes message: fields and codes as built");
    JB_CHECK(decode_hb(&h, (uint8_t *)pl, (size_t)pl_len, 2047, &m, &err) == -1
                 && err.code == JB_EFORMAT && strstr(err.msg, "job abc") && strstr(err.msg, "2047")
                 && strstr(err.msg, "token 36"),
             "code 2047 refused by a 2047-entry codebook, naming job and token (%s)", err.msg);
    // Frame: our prefix over the hand-built header; CRC-32 is zlib's (check value).
    JB_CHECK(jb_frame_crc32(0, (const uint8_t *)"123456789", 9) == 0xCBF43926u,
             "CRC-32 check value");
    JB_CHECK(jb_frame_crc32(jb_frame_crc32(0, (const uint8_t *)"1234", 4),
                            (const uint8_t *)"56789", 5) == 0xCBF43926u, "CRC-32 incremental");
    uint8_t prefix[JB_FRAME_PREFIX];
    JB_CHECK_OK(jb_frame_prefix(prefix, (uint8_t *)h.sb.data, h.sb.size, (uint8_t *)pl,
                                (size_t)pl_len, &err), &err, "prefix");
    JB_CHECK(memcmp(prefix, "JBX1", 4) == 0 && prefix[4] == (h.sb.size & 0xFF)
                 && prefix[5] == (h.sb.size >> 8 & 0xFF) && prefix[6] == 0 && prefix[7] == 0
                 && prefix[8] == (uint8_t)pl_len && prefix[9] == 0,
             "prefix: magic, little-endian lengths");
    hb_free(&h);
    // Integers in any MessagePack width, signed ones included when >= 0.
    uint8_t wide[] = {0x84, 0xa4, 't', 'y', 'p', 'e', 0xa3, 'e', 'n', 'd', 0xa1, 'v', 0xd0, 0x01,
                      0xa3, 'j', 'o', 'b', 0xa1, 'w', 0xa5, 'l', 'e', 'v', 'e', 'l',
                      0xcf, 0, 0, 0, 0, 0, 0, 0, 0x02};
    JB_CHECK_OK(jb_wire_decode(wide, sizeof wide, NULL, 0, -1, &m, &err), &err,
                "int8 version and uint64 level accepted");
    JB_CHECK(m.type == JB_MSG_END && m.level == 2, "int8 / uint64 values read");
    jb_msg_clear(&m);
}

// ---- bad headers: each must fail with the expected class and words

typedef struct {
    const char *name;
    int code;
    const char *words;
} expect_t;

static void expect_fail(hb_t *h, const uint8_t *pl, size_t pl_len, int64_t cb, expect_t e) {
    jb_err_t err = {0};
    jb_msg_t m;
    jb_msg_init(&m);
    int rc = decode_hb(h, pl, pl_len, cb, &m, &err);
    // Cleared, but the job id and type stay when the header named them (the receiver
    // fails that job: wire.md 8.3).
    JB_CHECK(rc == -1 && err.code == e.code && strstr(err.msg, e.words) && !m.codes && !m.spec
                 && !m.text && m.level == -1 && m.batch == -1,
             "%s refused (%s: %s)", e.name, jb_err_name(err.code), err.msg);
    jb_msg_clear(&m);
    hb_free(h);
}

// A valid "end" header with one key changed by the caller.
static void end_hdr(hb_t *h, int extra_keys) {
    hb_start(h, 3 + extra_keys);
    hb_str(h, "type", "end");
    hb_uint(h, "v", 1);
    hb_str(h, "job", "j9");
}

static void test_bad_headers(void) {
    hb_t h;
    end_hdr(&h, 0);
    jb_err_t err = {0};
    jb_msg_t m;
    jb_msg_init(&m);
    JB_CHECK_OK(decode_hb(&h, NULL, 0, -1, &m, &err), &err, "baseline end header decodes");
    hb_free(&h);

    hb_start(&h, 3);
    hb_str(&h, "type", "end");
    hb_uint(&h, "v", 2);
    hb_str(&h, "job", "j9");
    expect_fail(&h, NULL, 0, -1, (expect_t){"version 2", JB_EUNSUP, "version 2"});

    hb_start(&h, 3);
    hb_str(&h, "type", "end");
    hb_str(&h, "v", "1");
    hb_str(&h, "job", "j9");
    expect_fail(&h, NULL, 0, -1, (expect_t){"version as a string", JB_EFORMAT, "'v'"});

    hb_start(&h, 2);
    hb_str(&h, "type", "end");
    hb_str(&h, "job", "j9");
    expect_fail(&h, NULL, 0, -1, (expect_t){"no version", JB_EFORMAT, "'v'"});

    hb_start(&h, 3);
    hb_str(&h, "type", "bogus");
    hb_uint(&h, "v", 1);
    hb_str(&h, "job", "j9");
    expect_fail(&h, NULL, 0, -1, (expect_t){"unknown type", JB_EFORMAT, "unknown message type"});

    hb_start(&h, 2);
    hb_str(&h, "type", "end");
    hb_uint(&h, "v", 1);
    expect_fail(&h, NULL, 0, -1, (expect_t){"end without job", JB_EFORMAT, "without field 'job'"});

    hb_start(&h, 3);
    hb_str(&h, "type", "end");
    hb_uint(&h, "v", 1);
    hb_str(&h, "job", "bad job/id");
    expect_fail(&h, NULL, 0, -1, (expect_t){"job id with '/'", JB_EFORMAT, "'job'"});

    end_hdr(&h, 1);
    hb_key(&h, "level");
    msgpack_pack_int64(&h.pk, -1);
    expect_fail(&h, NULL, 0, -1, (expect_t){"negative level", JB_EFORMAT, "'level'"});

    end_hdr(&h, 1);
    hb_uint(&h, "level", 8);
    expect_fail(&h, NULL, 0, -1, (expect_t){"level 8", JB_EFORMAT, "out of range"});

    end_hdr(&h, 1);
    hb_uint(&h, "offset", UINT64_MAX);
    expect_fail(&h, NULL, 0, -1, (expect_t){"offset 2^64-1", JB_EFORMAT, "offset"});

    end_hdr(&h, 1);
    hb_key(&h, "offset");
    msgpack_pack_double(&h.pk, 3.0);
    expect_fail(&h, NULL, 0, -1, (expect_t){"offset as a float", JB_EFORMAT, "'offset'"});

    end_hdr(&h, 1);
    hb_str(&h, "spec", "{}");
    expect_fail(&h, NULL, 0, -1, (expect_t){"spec in an end message", JB_EFORMAT, "not allowed"});

    end_hdr(&h, 1);
    hb_str(&h, "job", "j10");
    expect_fail(&h, NULL, 0, -1, (expect_t){"duplicate key", JB_EFORMAT, "twice"});

    end_hdr(&h, 1);
    hb_key(&h, "x");
    for (int i = 0; i < 12; i++) msgpack_pack_array(&h.pk, 1);
    msgpack_pack_nil(&h.pk);
    expect_fail(&h, NULL, 0, -1, (expect_t){"unknown key nested 12 deep", JB_EFORMAT, "deeper"});

    end_hdr(&h, 0);
    msgpack_pack_nil(&h.pk);   // a second object after the map
    expect_fail(&h, NULL, 0, -1, (expect_t){"trailing bytes", JB_EFORMAT, "after the header"});

    end_hdr(&h, 0);
    uint8_t one = 1;
    expect_fail(&h, &one, 1, -1, (expect_t){"end message with a payload", JB_EFORMAT, "payload"});

    hb_start(&h, 4);
    hb_str(&h, "type", "error");
    hb_uint(&h, "v", 1);
    hb_str(&h, "job", "j9");
    hb_str(&h, "msg", "bad \xc3\x28 utf8");
    expect_fail(&h, NULL, 0, -1, (expect_t){"invalid UTF-8", JB_EFORMAT, "UTF-8"});

    hb_start(&h, 4);
    hb_str(&h, "type", "error");
    hb_uint(&h, "v", 1);
    hb_str(&h, "job", "j9");
    hb_str(&h, "msg", "overlong \xc0\xaf slash");
    expect_fail(&h, NULL, 0, -1, (expect_t){"overlong UTF-8", JB_EFORMAT, "UTF-8"});

    hb_start(&h, 4);
    hb_str(&h, "type", "error");
    hb_uint(&h, "v", 1);
    hb_str(&h, "job", "j9");
    hb_key(&h, "msg");
    msgpack_pack_str_with_body(&h.pk, "a\0b", 3);
    expect_fail(&h, NULL, 0, -1, (expect_t){"NUL in a string", JB_EFORMAT, "NUL"});

    hb_start(&h, 4);
    hb_str(&h, "type", "job");
    hb_uint(&h, "v", 1);
    hb_str(&h, "job", "j9");
    hb_str(&h, "spec", "[1,2]");
    expect_fail(&h, NULL, 0, -1, (expect_t){"spec not an object", JB_EFORMAT, "object"});

    hb_start(&h, 4);
    hb_str(&h, "type", "job");
    hb_uint(&h, "v", 1);
    hb_str(&h, "job", "j9");
    hb_str(&h, "spec", "{\"a\":1,\"a\":2}");
    expect_fail(&h, NULL, 0, -1, (expect_t){"spec with duplicate keys", JB_EFORMAT, "spec"});

    hb_start(&h, 4);
    hb_str(&h, "type", "job");
    hb_uint(&h, "v", 1);
    hb_str(&h, "job", "j9");
    hb_str(&h, "spec", "{\"mode\":");
    expect_fail(&h, NULL, 0, -1, (expect_t){"spec cut short", JB_EFORMAT, "spec"});

    // Container and string lengths that the bytes cannot back: refused before
    // anything is allocated (a 4-billion-entry map would otherwise be allocated).
    uint8_t map32[] = {0xdf, 0xff, 0xff, 0xff, 0xff, 0xa1, 'v', 0x01};
    JB_CHECK(jb_wire_decode(map32, sizeof map32, NULL, 0, -1, &m, &err) == -1
                 && err.code == JB_EFORMAT, "map32 claiming 2^32-1 entries (%s)", err.msg);
    uint8_t str32[] = {0x81, 0xa4, 't', 'y', 'p', 'e', 0xdb, 0xff, 0xff, 0xff, 0xf0, 'c'};
    JB_CHECK(jb_wire_decode(str32, sizeof str32, NULL, 0, -1, &m, &err) == -1
                 && err.code == JB_EFORMAT, "str32 claiming 4 GB (%s)", err.msg);
    uint8_t notmap[] = {0x93, 0x01, 0x02, 0x03};
    JB_CHECK(jb_wire_decode(notmap, sizeof notmap, NULL, 0, -1, &m, &err) == -1
                 && strstr(err.msg, "not a MessagePack map"), "array header (%s)", err.msg);
    uint8_t c1[] = {0x81, 0xc1, 0x01};
    JB_CHECK(jb_wire_decode(c1, sizeof c1, NULL, 0, -1, &m, &err) == -1,
             "reserved byte 0xc1 (%s)", err.msg);
    JB_CHECK(jb_wire_decode(c1, 0, NULL, 0, -1, &m, &err) == -1, "empty header (%s)", err.msg);
    jb_msg_clear(&m);
}

// Codes headers: (batch, count) with raw_len; payload from liblz4 over raw.
static void codes_hdr(hb_t *h, int64_t batch, int64_t count, uint64_t raw_len, int64_t cb) {
    hb_start(h, 9 + (cb > 0));
    hb_str(h, "type", "codes");
    hb_uint(h, "v", 1);
    hb_str(h, "job", "jc");
    hb_uint(h, "level", 0);
    hb_uint(h, "offset", 100);
    hb_uint(h, "count", (uint64_t)count);
    hb_uint(h, "batch", (uint64_t)batch);
    hb_str(h, "dtype", "i32");
    hb_uint(h, "raw_len", raw_len);
    if (cb > 0) hb_uint(h, "codebook", (uint64_t)cb);
}

static void test_bad_codes(void) {
    int32_t codes[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    char pl[128];
    int n = LZ4_compress_default((const char *)codes, pl, sizeof codes, sizeof pl);
    const uint8_t *p = (const uint8_t *)pl;
    hb_t h;
    jb_err_t err = {0};
    jb_msg_t m;
    jb_msg_init(&m);
    codes_hdr(&h, 2, 4, 32, 0);
    JB_CHECK_OK(decode_hb(&h, p, (size_t)n, 9, &m, &err), &err, "baseline codes decode");
    hb_free(&h);

    codes_hdr(&h, 2, 4, 32, 0);
    expect_fail(&h, p, (size_t)n, 8, (expect_t){"code 8 in a codebook of 8", JB_EFORMAT,
                                                "outside the codebook"});
    codes_hdr(&h, 2, 4, 32, 8);
    expect_fail(&h, p, (size_t)n, -1, (expect_t){"code 8 against the header's codebook of 8",
                                                 JB_EFORMAT, "outside the codebook"});
    codes_hdr(&h, 2, 4, 32, 1024);
    expect_fail(&h, p, (size_t)n, 2048, (expect_t){"codebook 1024 sent to a 2048 stage",
                                                   JB_EFORMAT, "codebook of 1024"});
    codes_hdr(&h, 2, 4, 36, 0);
    expect_fail(&h, p, (size_t)n, -1, (expect_t){"raw_len 36 for 2x4", JB_EFORMAT, "raw_len"});
    codes_hdr(&h, 3, 4, 48, 0);
    expect_fail(&h, p, (size_t)n, -1, (expect_t){"3x4 header over 8 codes", JB_EFORMAT,
                                                 "decompresses to 32"});
    codes_hdr(&h, 1, 4, 16, 0);
    expect_fail(&h, p, (size_t)n, -1, (expect_t){"1x4 header over 8 codes", JB_EFORMAT, "LZ4"});
    codes_hdr(&h, 2, 4, 32, 0);
    expect_fail(&h, NULL, 0, -1, (expect_t){"codes without payload", JB_EFORMAT, "payload"});
    codes_hdr(&h, 0, 4, 0, 0);
    expect_fail(&h, p, (size_t)n, -1, (expect_t){"batch 0", JB_EFORMAT, "out of range"});
    codes_hdr(&h, (int64_t)1 << 16, (int64_t)1 << 16, (uint64_t)1 << 34, 0);
    expect_fail(&h, p, (size_t)n, -1, (expect_t){"2^16 x 2^16 codes", JB_EFORMAT, "cap"});
    codes_hdr(&h, (int64_t)1 << 31, (int64_t)1 << 31, 0, 0);   // product overflows 64 bits *4
    expect_fail(&h, p, (size_t)n, -1, (expect_t){"2^31 x 2^31 codes", JB_EFORMAT, "range"});
    codes_hdr(&h, 1024, 1024, 4 << 20, 0);
    expect_fail(&h, p, (size_t)n, -1, (expect_t){"4 MB of codes claimed from 20 bytes",
                                                 JB_EFORMAT, "cannot hold"});
    int32_t neg[8] = {1, 2, 3, -4, 5, 6, 7, 8};
    n = LZ4_compress_default((const char *)neg, pl, sizeof neg, sizeof pl);
    codes_hdr(&h, 2, 4, 32, 0);
    expect_fail(&h, p, (size_t)n, -1, (expect_t){"negative code", JB_EFORMAT, "code -4 at row 0 "
                                                 "token 103"});

    // The encoder refuses what the decoder would refuse.
    jb_bytes_t hb = {0}, pb = {0};
    m.type = JB_MSG_CODES;
    jb_msg_set_job_id(&m, "jc", &err);
    m.level = 0;
    m.offset = 0;
    m.codebook = 8;
    jb_msg_set_codes(&m, codes, 2, 4, &err);
    JB_CHECK(jb_wire_encode(&m, &hb, &pb, &err) == -1 && err.code == JB_EINVAL
                 && strstr(err.msg, "outside the codebook"), "encoder: code 8 of 8 (%s)", err.msg);
    m.codebook = 9;
    m.level = 3 + JB_WIRE_MAX_LEVEL;
    JB_CHECK(jb_wire_encode(&m, &hb, &pb, &err) == -1 && err.code == JB_EINVAL,
             "encoder: level out of range (%s)", err.msg);
    m.level = 0;
    jb_msg_set_spec(&m, "{}", &err);
    JB_CHECK(jb_wire_encode(&m, &hb, &pb, &err) == -1 && strstr(err.msg, "not allowed"),
             "encoder: spec on codes (%s)", err.msg);
    jb_msg_clear(&m);
    m.type = JB_MSG_CODES;
    jb_msg_set_job_id(&m, "jc", &err);
    m.level = 0;
    m.offset = 0;
    m.batch = (int64_t)1 << 20;
    m.count = (int64_t)1 << 20;
    m.codes = codes;   // never read: the size is refused first
    JB_CHECK(jb_wire_encode(&m, &hb, &pb, &err) == -1 && strstr(err.msg, "cap"),
             "encoder: 2^40 codes over the cap (%s)", err.msg);
    m.codes = NULL;
    JB_CHECK(jb_msg_set_codes(&m, codes, 0, 4, &err) == -1, "set_codes: batch 0");
    JB_CHECK(jb_msg_set_job_id(&m, "0123456789012345678901234567890123456789012345678901234567"
                                   "890123456789", &err) == -1, "set_job_id: too long");
    jb_msg_clear(&m);
    jb_bytes_free(&hb);
    jb_bytes_free(&pb);
}

// ---- frames: a stream of several messages, then damage it

typedef struct {
    int n;
    int types[16];
} seen_t;

static int count_msg(jb_msg_t *msg, uint64_t off, void *user) {
    seen_t *s = user;
    if (s->n < 16) s->types[s->n] = msg->type;
    s->n++;
    return 0;
}

static void build_stream(jb_bytes_t *out) {
    jb_err_t err = {0};
    jb_bytes_t h = {0}, p = {0};
    jb_msg_t m;
    jb_msg_init(&m);
    out->len = 0;
    m.type = JB_MSG_JOB;
    jb_msg_set_job_id(&m, "s1", &err);
    jb_msg_set_spec(&m, "{\"mode\":\"upsample\",\"seed\":3}", &err);
    m.sample_rate = 44100;
    m.audio_len = 100000;
    jb_frame_append_msg(out, &m, &h, &p, &err);
    jb_msg_clear(&m);
    for (int lvl = 2; lvl >= 1; lvl--) {
        m.type = JB_MSG_CODES;
        jb_msg_set_job_id(&m, "s1", &err);
        m.level = lvl;
        m.offset = 0;
        m.codebook = 2048;
        int32_t *c = random_codes(2 * 64, 2048);
        jb_msg_set_codes(&m, c, 2, 64, &err);
        free(c);
        jb_frame_append_msg(out, &m, &h, &p, &err);
        jb_msg_clear(&m);
    }
    m.type = JB_MSG_END;
    jb_msg_set_job_id(&m, "s1", &err);
    JB_CHECK_OK(jb_frame_append_msg(out, &m, &h, &p, &err), &err, "stream built");
    jb_msg_clear(&m);
    jb_bytes_free(&h);
    jb_bytes_free(&p);
}

static void test_frames(void) {
    jb_err_t err = {0};
    jb_bytes_t s = {0};
    build_stream(&s);
    seen_t seen = {0};
    JB_CHECK_OK(jb_frame_decode_all(s.data, s.len, 2048, count_msg, &seen, &err), &err,
                "stream decodes");
    JB_CHECK(seen.n == 4 && seen.types[0] == JB_MSG_JOB && seen.types[1] == JB_MSG_CODES
                 && seen.types[3] == JB_MSG_END, "stream: job, codes, codes, end");
    JB_CHECK(jb_frame_decode_all(s.data, 0, 2048, count_msg, &seen, &err) == 0,
             "empty stream is a clean end");

    // Every truncation fails cleanly, naming a byte offset; none decodes silently.
    int bad = 0, silent = 0;
    for (size_t len = 1; len < s.len; len++) {
        seen_t t = {0};
        int rc = jb_frame_decode_all(s.data, len, 2048, count_msg, &t, &err);
        // A cut exactly at a frame boundary is a valid shorter stream.
        if (rc == 0) {
            jb_frame_t f;
            size_t need, pos = 0;
            int boundary = 0;
            while (pos < len && jb_frame_parse(s.data + pos, len - pos, pos, &f, &need, &err) == 1)
                pos += f.size;
            boundary = pos == len;
            if (!boundary) silent++;
        } else if (!strstr(err.msg, "byte ") || err.code != JB_EFORMAT) {
            bad++;
        }
    }
    JB_CHECK(silent == 0 && bad == 0, "%zu truncations: %d silent, %d without byte offset",
             s.len - 1, silent, bad);

    // Every truncation of a header and of a payload, bypassing the frame's CRC.
    jb_frame_t f;
    size_t need;
    size_t second = 0;
    jb_frame_parse(s.data, s.len, 0, &f, &need, &err);
    second = f.size;
    JB_CHECK(jb_frame_parse(s.data + second, s.len - second, second, &f, &need, &err) == 1
                 && f.payload_len > 0, "second frame carries codes");
    jb_msg_t m;
    jb_msg_init(&m);
    int ok_hdr = 0, ok_pl = 0;
    for (size_t k = 0; k < f.hdr_len; k++)
        ok_hdr += jb_wire_decode(f.hdr, k, f.payload, f.payload_len, 2048, &m, &err) == 0;
    for (size_t k = 0; k < f.payload_len; k++)
        ok_pl += jb_wire_decode(f.hdr, f.hdr_len, f.payload, k, 2048, &m, &err) == 0;
    JB_CHECK(ok_hdr == 0 && ok_pl == 0, "every cut header (%zu) and payload (%zu) refused",
             f.hdr_len, f.payload_len);

    // Damaged prefixes.
    jb_bytes_t d = {0};
    d.data = malloc(s.len);
    memcpy(d.data, s.data, s.len);
    d.len = s.len;
    d.data[0] = 'X';
    JB_CHECK(jb_frame_decode_all(d.data, d.len, 2048, NULL, NULL, &err) == -1
                 && strstr(err.msg, "magic") && strstr(err.msg, "byte 0"), "bad magic (%s)",
             err.msg);
    d.data[0] = 'J';
    d.data[3] = '2';
    JB_CHECK(jb_frame_decode_all(d.data, d.len, 2048, NULL, NULL, &err) == -1
                 && err.code == JB_EUNSUP, "frame version 2 (%s)", err.msg);
    d.data[3] = '1';
    d.data[second + 7] = 0x7f;   // header length ~2 GB
    JB_CHECK(jb_frame_decode_all(d.data, d.len, 2048, NULL, NULL, &err) == -1
                 && strstr(err.msg, "header length") && strstr(err.msg, "byte "),
             "oversized header length (%s)", err.msg);
    d.data[second + 7] = s.data[second + 7];
    d.data[second + 11] = 0x50;  // payload length 1.3 GB
    JB_CHECK(jb_frame_decode_all(d.data, d.len, 2048, NULL, NULL, &err) == -1
                 && strstr(err.msg, "payload length"), "oversized payload length (%s)", err.msg);
    d.data[second + 11] = s.data[second + 11];
    d.data[second + 30] ^= 1;
    JB_CHECK(jb_frame_decode_all(d.data, d.len, 2048, NULL, NULL, &err) == -1
                 && strstr(err.msg, "checksum"), "flipped bit caught by the checksum (%s)",
             err.msg);

    // Random byte flips: whole stream (mostly caught by the checksum), and inside
    // header and payload directly (the decoder proper). Nothing may crash; the
    // ASan build (make asan) checks memory.
    int n_ok = 0, n_fail = 0, bad_code = 0;
    for (int it = 0; it < 20000; it++) {
        memcpy(d.data, s.data, s.len);
        int flips = 1 + (int)(rng() % 4);
        for (int k = 0; k < flips; k++) d.data[rng() % s.len] ^= (uint8_t)(1 + rng() % 255);
        seen_t t = {0};
        if (jb_frame_decode_all(d.data, d.len, 2048, count_msg, &t, &err) == 0) n_ok++;
        else { n_fail++; bad_code += err.code != JB_EFORMAT && err.code != JB_EUNSUP; }
    }
    JB_CHECK(n_fail > 19000 && bad_code == 0,
             "20000 flipped streams: %d refused, %d accepted, %d with an unexpected class",
             n_fail, n_ok, bad_code);
    uint8_t hb[4096], pb[4096];
    int hdr_ok = 0;
    for (int it = 0; it < 40000; it++) {
        memcpy(hb, f.hdr, f.hdr_len);
        memcpy(pb, f.payload, f.payload_len);
        int flips = 1 + (int)(rng() % 3);
        for (int k = 0; k < flips; k++) {
            if (rng() & 1) hb[rng() % f.hdr_len] ^= (uint8_t)(1 + rng() % 255);
            else pb[rng() % f.payload_len] ^= (uint8_t)(1 + rng() % 255);
        }
        if (jb_wire_decode(hb, f.hdr_len, pb, f.payload_len, 2048, &m, &err) == 0) {
            hdr_ok++;
            // Anything accepted must satisfy every rule.
            for (int64_t i = 0; i < m.batch * m.count; i++)
                if (m.codes[i] < 0 || m.codes[i] >= 2048) bad_code++;
        }
    }
    JB_CHECK(bad_code == 0, "40000 flipped messages: %d accepted, all codes in range", hdr_ok);
    jb_msg_clear(&m);
    free(d.data);
    jb_bytes_free(&s);
}

// ---- a big batch, and maximally compressible codes

static void test_big(void) {
    jb_err_t err = {0};
    jb_msg_t m, out;
    jb_msg_init(&m);
    jb_msg_init(&out);
    const int64_t B = 4, T = 1 << 20;   // 4M codes, 16 MiB: the largest message
    m.type = JB_MSG_CODES;
    jb_msg_set_job_id(&m, "big", &err);
    m.level = 0;
    m.offset = 0;
    m.codebook = 2048;
    m.batch = B;
    m.count = T;
    m.codes = random_codes((size_t)(B * T), 2048);
    jb_bytes_t h = {0}, p = {0}, fr = {0};
    JB_CHECK_OK(jb_wire_encode(&m, &h, &p, &err), &err, "encode 4 x 1048576");
    JB_CHECK_OK(jb_frame_append(&fr, h.data, h.len, p.data, p.len, &err), &err, "frame it");
    jb_frame_t f;
    size_t need;
    JB_CHECK(jb_frame_parse(fr.data, fr.len, 0, &f, &need, &err) == 1, "big frame parses");
    JB_CHECK_OK(jb_wire_decode(f.hdr, f.hdr_len, f.payload, f.payload_len, 2048, &out, &err), &err,
                "decode 4 x 1048576");
    JB_CHECK(out.batch == B && out.count == T
                 && memcmp(out.codes, m.codes, (size_t)(B * T) * 4) == 0,
             "big batch round trip (payload %zu bytes for %lld raw)", p.len,
             (long long)(B * T * 4));
    // All zeros: LZ4 at its best ratio must still pass the decoder's ratio bound.
    memset(m.codes, 0, (size_t)(B * T) * 4);
    JB_CHECK_OK(jb_wire_encode(&m, &h, &p, &err), &err, "encode zeros");
    JB_CHECK_OK(jb_wire_decode(h.data, h.len, p.data, p.len, 2048, &out, &err), &err,
                "decode zeros");
    JB_CHECK(out.codes && out.codes[B * T - 1] == 0, "zeros: %zu payload bytes for %lld raw "
             "(ratio %.1f)", p.len, (long long)(B * T * 4), (double)(B * T * 4) / (double)p.len);
    // One code more is over the cap: refused by the encoder, and by the decoder from
    // the header alone (raw_len 16 MiB + 4) before any allocation.
    m.count = T + 1;
    free(m.codes);
    m.codes = calloc((size_t)(B * (T + 1)), 4);
    JB_CHECK(jb_wire_encode(&m, &h, &p, &err) == -1 && strstr(err.msg, "over the cap"),
             "encode 4 x 1048577 refused (%s)", err.msg);
    jb_msg_clear(&m);
    jb_msg_clear(&out);
    jb_bytes_free(&h);
    jb_bytes_free(&p);
    jb_bytes_free(&fr);
}


// ---- additions to version 1: sample0 on codes, batch and info on end, align

static void align_hdr(hb_t *h, int64_t batch, int64_t count, int64_t cols, uint64_t raw_len,
                      const char *lyrics, int extra_keys) {
    hb_start(h, 10 + extra_keys);
    hb_str(h, "type", "align");
    hb_uint(h, "v", 1);
    hb_str(h, "job", "ja");
    hb_uint(h, "level", 2);
    hb_uint(h, "count", (uint64_t)count);
    hb_uint(h, "batch", (uint64_t)batch);
    hb_uint(h, "cols", (uint64_t)cols);
    hb_str(h, "dtype", "i32");
    hb_uint(h, "raw_len", raw_len);
    hb_str(h, "lyrics", lyrics);
}

static void test_additions(void) {
    jb_err_t err = {0};
    jb_msg_t m, out;
    jb_msg_init(&m);
    jb_msg_init(&out);
    jb_bytes_t hdr = {0}, pl = {0};

    // codes with sample0: rows 2..3 of a job's samples.
    m.type = JB_MSG_CODES;
    jb_msg_set_job_id(&m, "j", &err);
    m.level = 1;
    m.offset = 64;
    m.sample0 = 2;
    int32_t *c = random_codes(2 * 50, 2048);
    jb_msg_set_codes(&m, c, 2, 50, &err);
    free(c);
    roundtrip(&m, "codes with sample0", &out);
    m.sample0 = INT32_MAX - 1;   // + batch 2 > INT32_MAX
    JB_CHECK(jb_wire_encode(&m, &hdr, &pl, &err) == -1 && strstr(err.msg, "sample0"),
             "sample0 + batch past 2^31-1 refused (%s)", err.msg);
    m.sample0 = -1;
    JB_CHECK_OK(jb_wire_encode(&m, &hdr, &pl, &err), &err, "codes without sample0");
    JB_CHECK(memmem(hdr.data, hdr.len, "sample0", 7) == NULL, "absent sample0 is not written");
    jb_msg_clear(&m);

    // end with batch and info (the labels a stage used).
    m.type = JB_MSG_END;
    jb_msg_set_job_id(&m, "j", &err);
    m.level = 2;
    m.offset = 1722;
    m.batch = 3;
    jb_msg_set_text(&m, "{\"artist_id\":77,\"genre_ids\":[5],\"dropped\":\"\xe2\x99\xaa\","
                        "\"warnings\":[]}", &err);
    roundtrip(&m, "end of level with batch and info", &out);
    jb_msg_set_text(&m, "labels: 77", &err);
    JB_CHECK(jb_wire_encode(&m, &hdr, &pl, &err) == -1 && strstr(err.msg, "info"),
             "end info that is not a JSON object refused (%s)", err.msg);
    jb_msg_clear(&m);
    m.type = JB_MSG_END;
    jb_msg_set_job_id(&m, "j", &err);
    m.sample0 = 0;
    JB_CHECK(jb_wire_encode(&m, &hdr, &pl, &err) == -1 && strstr(err.msg, "sample0"),
             "sample0 on an end refused (%s)", err.msg);
    jb_msg_clear(&m);
    hb_t h;
    end_hdr(&h, 1);
    hb_str(&h, "msg", "why");
    expect_fail(&h, NULL, 0, -1, (expect_t){"end with msg", JB_EFORMAT, "'msg' is not allowed"});
    end_hdr(&h, 1);
    hb_uint(&h, "batch", 0);
    expect_fail(&h, NULL, 0, -1, (expect_t){"end with batch 0", JB_EFORMAT, "batch"});
    end_hdr(&h, 1);
    hb_str(&h, "info", "[1,2]");
    expect_fail(&h, NULL, 0, -1, (expect_t){"end with array info", JB_EFORMAT, "JSON object"});
    end_hdr(&h, 2);
    hb_uint(&h, "batch", 4);
    hb_str(&h, "info", "{\"artist_id\":1}");
    JB_CHECK_OK(decode_hb(&h, NULL, 0, -1, &out, &err), &err, "hand-built end with info");
    JB_CHECK(out.batch == 4 && out.text && strcmp(out.text, "{\"artist_id\":1}") == 0,
             "end info and batch read");
    hb_free(&h);

    // align: (batch 2, count 3, cols 4) weights, lyrics of 4 characters (é is 2 bytes).
    const char *lyr = "ab\xc3\xa9 ";
    int32_t w[24];
    for (int i = 0; i < 24; i++) w[i] = (int32_t)(rng() % 65536);
    w[0] = 0;
    w[1] = JB_WIRE_ALIGN_ONE;
    m.type = JB_MSG_ALIGN;
    jb_msg_set_job_id(&m, "j", &err);
    m.level = 2;
    JB_CHECK_OK(jb_msg_set_align(&m, w, 2, 3, 4, &err), &err, "set align");
    jb_msg_set_text(&m, lyr, &err);
    roundtrip(&m, "align", &out);
    m.offset = 4096;   // optional: first token of the rows
    roundtrip(&m, "align with offset", &out);
    JB_CHECK(jb_wire_encode(&m, &hdr, &pl, &err) == 0, "align encodes");
    JB_CHECK_OK(jb_wire_decode(hdr.data, hdr.len, pl.data, pl.len, 16, &out, &err), &err,
                "align: weights are not checked against the receiver's codebook");
    m.codes[7] = 65536;
    JB_CHECK(jb_wire_encode(&m, &hdr, &pl, &err) == -1 && strstr(err.msg, "65536")
                 && strstr(err.msg, "column 3"),
             "a weight over 65535 refused naming its place (%s)", err.msg);
    m.codes[7] = -1;
    JB_CHECK(jb_wire_encode(&m, &hdr, &pl, &err) == -1, "a negative weight refused");
    m.codes[7] = 5;
    jb_msg_set_text(&m, "abc", &err);
    JB_CHECK(jb_wire_encode(&m, &hdr, &pl, &err) == -1 && strstr(err.msg, "3 characters"),
             "lyrics of 3 characters for 4 columns refused (%s)", err.msg);
    jb_msg_set_text(&m, NULL, &err);
    JB_CHECK(jb_wire_encode(&m, &hdr, &pl, &err) == -1 && strstr(err.msg, "lyrics"),
             "align without lyrics refused (%s)", err.msg);
    jb_msg_set_text(&m, lyr, &err);
    m.codebook = 2048;
    JB_CHECK(jb_wire_encode(&m, &hdr, &pl, &err) == -1 && strstr(err.msg, "codebook"),
             "codebook on align refused");
    m.codebook = -1;
    m.cols = JB_WIRE_MAX_COLS + 1;
    JB_CHECK(jb_wire_encode(&m, &hdr, &pl, &err) == -1 && strstr(err.msg, "cols"),
             "cols over the cap refused (%s)", err.msg);
    JB_CHECK(jb_msg_set_align(&m, w, 1 << 20, 1 << 20, 1 << 10, &err) == -1,
             "an alignment over the raw cap refused before allocating");
    jb_msg_clear(&m);
    m.type = JB_MSG_CODES;
    jb_msg_set_job_id(&m, "j", &err);
    m.level = 0;
    m.offset = 0;
    jb_msg_set_codes(&m, w, 1, 1, &err);
    m.cols = 4;
    JB_CHECK(jb_wire_encode(&m, &hdr, &pl, &err) == -1 && strstr(err.msg, "cols"),
             "cols on codes refused (%s)", err.msg);
    jb_msg_clear(&m);

    // Hand-built align: the header of docs/wire.md, the payload from liblz4.
    char lz[256];
    int lz_n = LZ4_compress_default((const char *)w, lz, sizeof w, sizeof lz);
    const uint8_t *p = (const uint8_t *)lz;
    align_hdr(&h, 2, 3, 4, 96, lyr, 0);
    JB_CHECK_OK(decode_hb(&h, p, (size_t)lz_n, 2048, &out, &err), &err, "hand-built align");
    JB_CHECK(out.type == JB_MSG_ALIGN && out.batch == 2 && out.count == 3 && out.cols == 4
                 && out.level == 2 && out.offset == -1 && out.text && !strcmp(out.text, lyr)
                 && memcmp(out.codes, w, sizeof w) == 0,
             "hand-built align: fields, lyrics and weights as built");
    hb_free(&h);
    align_hdr(&h, 2, 3, 4, 92, lyr, 0);
    expect_fail(&h, p, (size_t)lz_n, -1, (expect_t){"align raw_len != batch*count*cols*4",
                                                     JB_EFORMAT, "raw_len 92"});
    align_hdr(&h, 2, 3, 5, 120, lyr, 0);
    expect_fail(&h, p, (size_t)lz_n, -1, (expect_t){"align lyrics/cols mismatch", JB_EFORMAT,
                                                     "5 alignment columns"});
    align_hdr(&h, 2, 3, 4, 96, lyr, 0);
    expect_fail(&h, NULL, 0, -1, (expect_t){"align without payload", JB_EFORMAT, "payload"});
    align_hdr(&h, 2, 3, 4, 96, lyr, 1);
    hb_uint(&h, "sample0", 1);
    expect_fail(&h, p, (size_t)lz_n, -1, (expect_t){"align with sample0", JB_EFORMAT,
                                                     "'sample0' is not allowed"});
    hb_start(&h, 9);
    hb_str(&h, "type", "align");
    hb_uint(&h, "v", 1);
    hb_str(&h, "job", "ja");
    hb_uint(&h, "level", 2);
    hb_uint(&h, "count", 3);
    hb_uint(&h, "batch", 2);
    hb_str(&h, "dtype", "i32");
    hb_uint(&h, "raw_len", 96);
    hb_str(&h, "lyrics", lyr);
    expect_fail(&h, p, (size_t)lz_n, -1, (expect_t){"align without cols", JB_EFORMAT, "cols"});
    // Huge dimensions whose product overflows 64 bits: refused, nothing allocated.
    char *long_lyr = malloc(JB_WIRE_MAX_COLS + 1);
    memset(long_lyr, 'a', JB_WIRE_MAX_COLS);
    long_lyr[JB_WIRE_MAX_COLS] = 0;
    align_hdr(&h, INT32_MAX, INT32_MAX, JB_WIRE_MAX_COLS, 96, long_lyr, 0);
    expect_fail(&h, p, (size_t)lz_n, -1, (expect_t){"align of 2^82 weights", JB_EFORMAT,
                                                     "over the cap"});
    free(long_lyr);
    w[5] = 70000;
    lz_n = LZ4_compress_default((const char *)w, lz, sizeof w, sizeof lz);
    align_hdr(&h, 2, 3, 4, 96, lyr, 0);
    expect_fail(&h, p, (size_t)lz_n, -1, (expect_t){"align weight 70000", JB_EFORMAT,
                                                     "70000"});
    // lyrics is the align's text: refused on the other types.
    end_hdr(&h, 1);
    hb_str(&h, "lyrics", "x");
    expect_fail(&h, NULL, 0, -1, (expect_t){"end with lyrics", JB_EFORMAT,
                                             "'lyrics' is not allowed"});
    JB_CHECK(strcmp(jb_msg_type_name(JB_MSG_ALIGN), "align") == 0, "align type name");
    JB_CHECK(jb_wire_job_id_ok("a-b.c:d_1") && !jb_wire_job_id_ok("") && !jb_wire_job_id_ok("a b")
                 && !jb_wire_job_id_ok(NULL), "jb_wire_job_id_ok");
    jb_msg_clear(&out);
    jb_bytes_free(&hdr);
    jb_bytes_free(&pl);
}

// A message list takes each message's pointers; freeing from k leaves the first k to
// whoever moved them out (a spool replayed message by message).
static void test_msg_list(void) {
    jb_msg_list_t list = {0};
    jb_err_t err = {0};
    int ok = 1;
    for (int i = 0; i < 70 && ok; i++) {   // past the first growth (64)
        jb_msg_t m;
        jb_msg_init(&m);
        m.type = JB_MSG_ERROR;
        snprintf(m.job_id, sizeof m.job_id, "j%d", i);
        ok = jb_msg_set_text(&m, "why", &err) == 0 && jb_msg_list_take(&m, 0, &list) == 0 &&
             m.text == NULL;
        jb_msg_clear(&m);
    }
    JB_CHECK(ok && list.n == 70 && !strcmp(list.v[69].job_id, "j69") &&
             !strcmp(list.v[69].text, "why"), "list: 70 messages taken, pointers moved");
    jb_msg_t first = list.v[0];   // moved out: the list no longer frees it
    jb_msg_list_free(&list, 1);
    JB_CHECK(list.v == NULL && list.n == 0 && !strcmp(first.text, "why"),
             "list: freed from 1, the moved message intact");
    jb_msg_clear(&first);
    jb_msg_list_free(&list, 0);   // empty: nothing to do
}

int main(void) {
    test_roundtrips();
    test_hand_built();
    test_bad_headers();
    test_bad_codes();
    test_frames();
    test_big();
    test_additions();
    test_msg_list();
    return jb_test_summary("test_jb_wire");
}
