// test_jb_codec.c: the encoder/decoder stage work (common/jb_codec) against the golden
// vqvae_tiny fixture: codes sent by jb_codec_encode_send equal the reference's encode
// (outside near-ties); a hand-built stream (codes split over messages, a batch of two,
// a level cut short, an ignored JOB message) decodes to the reference's x_out; the true
// length trims the output; bad streams fail their job without writing; helpers.
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "jb_codec.h"
#include "jb_log.h"
#include "jb_safetensors.h"
#include "jb_tensor.h"
#include "jb_test.h"

#define CASE "tests/golden/vqvae_tiny/"

static char dir[256];
static const char *tpath(const char *name) {
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

static int exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

static void test_helpers(void) {
    jb_err_t err = {0};
    JB_CHECK(jb_codec_padded_len(1, 128) == 128 && jb_codec_padded_len(128, 128) == 128 &&
                 jb_codec_padded_len(129, 128) == 256, "padded_len rounds up to the hop");
    unsigned m = 0;
    JB_CHECK(jb_codec_parse_levels("0,2", 3, &m, &err) == 0 && m == 5u, "levels 0,2 -> 0x5");
    JB_CHECK(jb_codec_parse_levels("1", 3, &m, &err) == 0 && m == 2u, "levels 1 -> 0x2");
    const char *badl[] = {"", "3", "0,,1", "1,1", "a", "0,", "-1", "01x"};
    for (size_t i = 0; i < sizeof badl / sizeof *badl; i++)
        JB_CHECK(jb_codec_parse_levels(badl[i], 3, &m, &err) == -1 && err.code == JB_EINVAL,
                 "levels '%s' refused: %s", badl[i], err.msg);
    char id[64];
    jb_codec_job_id_from_path("/x/y/My Song (1).flac", id, sizeof id);
    JB_CHECK(!strcmp(id, "My_Song__1_"), "job id from a file name: %s", id);
    jb_codec_job_id_from_path("-", id, sizeof id);
    JB_CHECK(!strcmp(id, "stdin"), "job id of stdin: %s", id);
    jb_codec_job_id_from_path("d.x/.wav", id, sizeof id);
    // A job id never starts with '.' (docs/wire.md 2.1): a dot file's leading dot becomes '_'.
    JB_CHECK(!strcmp(id, "_wav"), "dot file: the id is its name without a leading dot: %s", id);
    JB_CHECK(jb_codec_job_id_ok("a-b.c:d_9") && !jb_codec_job_id_ok("a b") &&
                 !jb_codec_job_id_ok(""), "job id check");
    char p[256];
    JB_CHECK(jb_codec_output_path("o/out.wav", "j", 1, 2, 0, p, sizeof p, &err) == 0 &&
                 !strcmp(p, "o/out_1.wav"), "batch 2 inserts _N: %s", p);
    JB_CHECK(jb_codec_output_path("o.d/out", "j", 0, 2, 0, p, sizeof p, &err) == 0 &&
                 !strcmp(p, "o.d/out_0"), "no extension: %s", p);
    JB_CHECK(jb_codec_output_path("{job}/l{level}-{sample}.flac", "song", 3, 4, 2, p, sizeof p,
                                  &err) == 0 && !strcmp(p, "song/l2-3.flac"), "template: %s", p);
    JB_CHECK(jb_codec_output_path("out.wav", "j", 0, 1, 0, p, sizeof p, &err) == 0 &&
                 !strcmp(p, "out.wav"), "batch 1 unchanged");
    JB_CHECK(jb_codec_output_path("-", "j", 0, 2, 0, p, sizeof p, &err) == -1,
             "two samples to stdout refused");
    JB_CHECK(jb_codec_output_path("{job}{job}{job}", "abcdefgh", 0, 1, 0, p, 10, &err) == -1,
             "too long refused");
}

// Reads all messages of a codes file into msgs (up to max). Returns the count.
static int read_all(const char *path, jb_msg_t *msgs, int max) {
    jb_err_t err = {0};
    jb_endpoint_t *in = jb_endpoint_open_in(path, NULL, &err);
    if (!in) return -1;
    int n = 0;
    for (;;) {
        if (n == max) break;
        jb_msg_init(&msgs[n]);
        jb_recv_t r = jb_endpoint_recv(in, &msgs[n], -1, &err);
        if (r != JB_RECV_MSG) break;
        n++;
    }
    jb_endpoint_destroy(&in);
    return n;
}

static void test_encode(jb_vqvae_t *vq, const jb_st_t *io) {
    jb_err_t err = {0};
    int64_t xs[3] = {2, 2048, 1};
    float *x = jb_st_get_f32(io, "x", 3, xs, &err);
    // the whole first item (2048 = 16 top hops: no padding)
    jb_endpoint_t *out = jb_endpoint_open_out(tpath("enc.jbc"), NULL, &err);
    JB_CHECK_OK(jb_codec_encode_send(vq, x, 2048, "item0", 0, out, &err), &err, "encode item 0");
    JB_CHECK_OK(jb_endpoint_close(&out, &err), &err, "close codes file");
    jb_msg_t m[16];
    int n = read_all(tpath("enc.jbc"), m, 16);
    JB_CHECK(n == 7, "3 levels x (codes, end) + end of job = 7 messages (%d)", n);
    if (n == 7) {
        int k = 0;
        for (int L = 2; L >= 0; L--, k += 2) {
            int64_t TL = 2048 / (L == 0 ? 8 : L == 1 ? 32 : 128);
            JB_CHECK(m[k].type == JB_MSG_CODES && m[k].level == L && m[k].offset == 0 &&
                         m[k].batch == 1 && m[k].count == TL && m[k].codebook == 32 &&
                         m[k].sample_rate == 44100 && m[k].audio_len == 2048 &&
                         !strcmp(m[k].job_id, "item0"),
                     "codes message of level %d (top first)", L);
            JB_CHECK(m[k + 1].type == JB_MSG_END && m[k + 1].level == L &&
                         m[k + 1].offset == TL, "end of level %d says %lld tokens", L,
                     (long long)TL);
            // against the reference, skipping near-ties as the fixture's README says
            char name[32];
            snprintf(name, sizeof name, "zs.%d", L);
            int64_t zs_shape[2] = {2, TL};
            int32_t *zs = jb_st_get_i32(io, name, 2, zs_shape, &err);
            snprintf(name, sizeof name, "margin.%d", L);
            float *mg = jb_st_get_f32(io, name, 2, zs_shape, &err);
            snprintf(name, sizeof name, "dist_scale.%d", L);
            float *ds = jb_st_get_f32(io, name, 2, zs_shape, &err);
            int diff = 0, skipped = 0;
            for (int64_t t = 0; t < TL && m[k].codes && zs; t++) {
                if (mg[t] < 1e-4f * ds[t]) { skipped++; continue; }
                if (m[k].codes[t] != zs[t]) diff++;
            }
            JB_CHECK(zs && diff == 0, "level %d codes equal the reference (%d differ, %d "
                     "near-ties skipped)", L, diff, skipped);
            jb_free(zs);
            jb_free(mg);
            jb_free(ds);
        }
        JB_CHECK(m[6].type == JB_MSG_END && m[6].level < 0 && !strcmp(m[6].job_id, "item0"),
                 "end of job last");
    }
    for (int i = 0; i < n; i++) jb_msg_clear(&m[i]);

    // 2000 samples, --levels 0,2: padded to 2048, true length recorded
    out = jb_endpoint_open_out(tpath("pad.jbc"), NULL, &err);
    JB_CHECK_OK(jb_codec_encode_send(vq, x, 2000, "pad", 5u, out, &err), &err, "encode 2000");
    jb_endpoint_close(&out, &err);
    n = read_all(tpath("pad.jbc"), m, 16);
    JB_CHECK(n == 5 && m[0].level == 2 && m[0].count == 16 && m[2].level == 0 &&
                 m[2].count == 256 && m[0].audio_len == 2000 && m[3].audio_len == 2000,
             "2000 samples -> 16 top / 256 bottom codes, audio_len 2000 (%d messages)", n);
    for (int i = 0; i < n; i++) jb_msg_clear(&m[i]);
    jb_free(x);
}

// Sends a message built by the caller. codes copied.
static void send_codes(jb_endpoint_t *out, const char *job, int level, int64_t offset,
                       const int32_t *codes, int64_t batch, int64_t count, int64_t stride,
                       int64_t audio_len) {
    jb_msg_t m;
    jb_msg_init(&m);
    jb_err_t err = {0};
    m.type = JB_MSG_CODES;
    jb_msg_set_job_id(&m, job, &err);
    m.level = level;
    m.offset = offset;
    m.codebook = 32;
    m.sample_rate = 44100;
    m.audio_len = audio_len;
    int32_t *c = malloc((size_t)(batch * count) * sizeof(int32_t));
    for (int64_t r = 0; r < batch; r++)
        memcpy(c + r * count, codes + r * stride + offset, (size_t)count * sizeof(int32_t));
    m.codes = c;
    m.batch = batch;
    m.count = count;
    if (jb_endpoint_send(out, &m, &err)) JB_CHECK(0, "send codes: %s", err.msg);
    jb_msg_clear(&m);
}

static void send_end(jb_endpoint_t *out, const char *job, int level, int64_t offset) {
    jb_msg_t m;
    jb_msg_init(&m);
    jb_err_t err = {0};
    m.type = JB_MSG_END;
    jb_msg_set_job_id(&m, job, &err);
    m.level = level;
    m.offset = offset;
    if (jb_endpoint_send(out, &m, &err)) JB_CHECK(0, "send end: %s", err.msg);
}

static void test_decode(jb_vqvae_t *vq, const jb_st_t *io) {
    jb_err_t err = {0};
    int64_t zs1s[2] = {2, 64}, zs2s[2] = {2, 16}, xs[3] = {2, 2048, 1};
    int32_t *zs1 = jb_st_get_i32(io, "zs.1", 2, zs1s, &err);
    int32_t *zs2 = jb_st_get_i32(io, "zs.2", 2, zs2s, &err);
    float *ref = jb_st_get_f32(io, "x_out.1", 3, xs, &err);
    jb_endpoint_t *out = jb_endpoint_open_out(tpath("hand.jbc"), NULL, &err);
    jb_msg_t job;
    jb_msg_init(&job);
    job.type = JB_MSG_JOB;
    jb_msg_set_job_id(&job, "hand", &err);
    jb_msg_set_spec(&job, "{\"mode\":\"ancestral\"}", &err);
    JB_CHECK_OK(jb_endpoint_send(out, &job, &err), &err, "send job");
    jb_msg_clear(&job);
    // level 2 sent only partly (no end): not complete, not chosen
    send_codes(out, "hand", 2, 0, zs2, 2, 8, 16, -1);
    // level 1 in two windows, batch 2, then its end; true length 2000
    // (the second window restates tokens 30..39, as a retry would, then brings 40..49)
    send_codes(out, "hand", 1, 0, zs1, 2, 40, 64, -1);
    send_codes(out, "hand", 1, 30, zs1, 2, 20, 64, -1);
    send_codes(out, "hand", 1, 50, zs1, 2, 14, 64, 2000);
    send_end(out, "hand", 1, 64);
    // a second job that goes wrong: a window out of order
    send_codes(out, "bad", 1, 0, zs1, 1, 10, 64, -1);
    send_codes(out, "bad", 1, 20, zs1, 1, 10, 64, -1);
    send_end(out, "bad", 1, 30);
    send_end(out, "bad", -1, -1);
    // end of the first job comes last: jobs interleave
    send_end(out, "hand", -1, -1);
    JB_CHECK_OK(jb_endpoint_close(&out, &err), &err, "close hand-built stream");

    jb_endpoint_t *in = jb_endpoint_open_in(tpath("hand.jbc"), NULL, &err);
    char tmpl[512];
    snprintf(tmpl, sizeof tmpl, "%s/{job}.wav", dir);
    jb_codec_decode_opts_t o = {.level = -1, .out = tmpl, .format = JB_AUDIO_WAV_FLOAT};
    jb_codec_decode_stats_t st;
    JB_CHECK_OK(jb_codec_decode_stream(vq, in, &o, &st, &err), &err, "decode stream");
    jb_endpoint_destroy(&in);
    JB_CHECK(st.jobs_done == 1 && st.jobs_failed == 1 && st.files_written == 2,
             "1 job done (2 files), 1 failed: %d %d %d", st.jobs_done, st.jobs_failed,
             st.files_written);
    JB_CHECK(st.first_fail_code == JB_EFORMAT && strstr(st.first_fail, "bad") &&
                 strstr(st.first_fail, "offset 20"), "failure names job and offset: %s",
             st.first_fail);
    JB_CHECK(!exists(tpath("bad.wav")), "failed job wrote nothing");
    for (int s = 0; s < 2; s++) {
        char name[32];
        snprintf(name, sizeof name, "hand_%d.wav", s);
        float *y = NULL;
        int64_t n = 0;
        JB_CHECK_OK(jb_audio_read(tpath(name), 44100, &y, &n, NULL, &err), &err, name);
        JB_CHECK(n == 2000, "%s trimmed to the true length 2000 (%lld)", name, (long long)n);
        double ma = 0, mr = 0;
        if (n == 2000 && ref) {
            // tolerance of x_out.1 in case.json: rel 1e-4, abs 2e-5
            int ok = jb_test_close(y, ref + s * 2048, 2000, 1e-4, 2e-5, &ma, &mr);
            JB_CHECK(ok, "%s equals the reference decode of level 1 (max abs %.3g)", name, ma);
        }
        free(y);
    }
    // --level 2 of the same stream: incomplete level -> the job fails, nothing written
    in = jb_endpoint_open_in(tpath("hand.jbc"), NULL, &err);
    snprintf(tmpl, sizeof tmpl, "%s/l2_{job}.wav", dir);
    o.level = 2;
    JB_CHECK_OK(jb_codec_decode_stream(vq, in, &o, &st, &err), &err, "decode stream, level 2");
    jb_endpoint_destroy(&in);
    JB_CHECK(st.jobs_done == 0 && st.jobs_failed == 2, "incomplete level 2 refused (%d failed)",
             st.jobs_failed);
    JB_CHECK(!exists(tpath("l2_hand_0.wav")), "nothing written for it");

    // a stream cut before the end of its job, with level 1 complete: a cut stream is an
    // error (docs/wire.md 8.4, 8.5: exit 69, nothing written) unless --level names a
    // complete level
    out = jb_endpoint_open_out(tpath("noend.jbc"), NULL, &err);
    send_codes(out, "noend", 1, 0, zs1, 1, 64, 64, -1);
    send_end(out, "noend", 1, 64);
    jb_endpoint_close(&out, &err);
    in = jb_endpoint_open_in(tpath("noend.jbc"), NULL, &err);
    snprintf(tmpl, sizeof tmpl, "%s/{job}.flac", dir);
    o.level = -1;
    o.format = JB_AUDIO_AUTO;
    JB_CHECK_OK(jb_codec_decode_stream(vq, in, &o, &st, &err), &err, "decode without job end");
    jb_endpoint_destroy(&in);
    JB_CHECK(st.jobs_done == 0 && st.jobs_failed == 1 && st.first_fail_code == JB_EUNAVAIL &&
                 !exists(tpath("noend.flac")),
             "a cut job is not written as a lower level (%d done, %d failed, class %d)",
             st.jobs_done, st.jobs_failed, st.first_fail_code);
    in = jb_endpoint_open_in(tpath("noend.jbc"), NULL, &err);
    o.level = 1;
    JB_CHECK_OK(jb_codec_decode_stream(vq, in, &o, &st, &err), &err, "decode level 1 without job end");
    jb_endpoint_destroy(&in);
    JB_CHECK(st.jobs_done == 1 && exists(tpath("noend.flac")),
             "--level 1 of the cut job: the complete level is decoded");
    o.level = -1;

    // an ERROR message fails its job with the class of its sysexits code; a resent window
    // with other values fails its job
    out = jb_endpoint_open_out(tpath("errs.jbc"), NULL, &err);
    jb_msg_t em;
    jb_msg_init(&em);
    em.type = JB_MSG_ERROR;
    jb_msg_set_job_id(&em, "up", &err);
    jb_msg_set_text(&em, "prior-top: model file missing", &err);
    em.code = 66;
    JB_CHECK_OK(jb_endpoint_send(out, &em, &err), &err, "send error message");
    jb_msg_clear(&em);
    send_end(out, "up", -1, -1);
    int32_t other[64];
    for (int i = 0; i < 64; i++) other[i] = (zs1[i] + 1) % 32;
    send_codes(out, "resent", 1, 0, zs1, 1, 32, 64, -1);
    send_codes(out, "resent", 1, 16, other, 1, 32, 64, -1);
    send_end(out, "resent", 1, 48);
    send_end(out, "resent", -1, -1);
    jb_endpoint_close(&out, &err);
    in = jb_endpoint_open_in(tpath("errs.jbc"), NULL, &err);
    JB_CHECK_OK(jb_codec_decode_stream(vq, in, &o, &st, &err), &err, "decode failing jobs");
    jb_endpoint_destroy(&in);
    // An upstream error record fails its job as bad data (65, docs/wire.md 8.5) whatever
    // its class: the decoder's own files are all there.
    JB_CHECK(st.jobs_done == 0 && st.jobs_failed == 2 && st.first_fail_code == JB_EFORMAT &&
                 strstr(st.first_fail, "model file missing"),
             "upstream error (sysexits 66) -> bad-data class 65 (%d): %s", st.first_fail_code,
             st.first_fail);
    JB_CHECK(!exists(tpath("up.flac")) && !exists(tpath("resent.flac")),
             "failed jobs wrote nothing");

    // more unfinished jobs than the decoder holds: the extra ones are refused, the rest
    // decode at the end of the stream
    out = jb_endpoint_open_out(tpath("many.jbc"), NULL, &err);
    int n_jobs = JB_CODEC_MAX_OPEN_JOBS + 3;
    for (int k = 0; k < n_jobs; k++) {
        char id[32];
        snprintf(id, sizeof id, "j%d", k);
        send_codes(out, id, 2, 0, zs2, 1, 1, 16, -1);
    }
    for (int k = 0; k < n_jobs; k++) {
        char id[32];
        snprintf(id, sizeof id, "j%d", k);
        send_end(out, id, 2, 1);
    }
    jb_endpoint_close(&out, &err);
    in = jb_endpoint_open_in(tpath("many.jbc"), NULL, &err);
    snprintf(tmpl, sizeof tmpl, "%s/many/{job}.wav", dir);
    mkdir(tpath("many"), 0755);
    o.level = 2;
    o.format = JB_AUDIO_AUTO;
    JB_CHECK_OK(jb_codec_decode_stream(vq, in, &o, &st, &err), &err, "decode many jobs");
    jb_endpoint_destroy(&in);
    JB_CHECK(st.jobs_done == JB_CODEC_MAX_OPEN_JOBS && st.jobs_failed == 3 &&
                 strstr(st.first_fail, "jobs open at once"),
             "%d jobs held, 3 refused (codes + end each): %d done %d failed: %s",
             JB_CODEC_MAX_OPEN_JOBS, st.jobs_done, st.jobs_failed, st.first_fail);
    jb_free(zs1);
    jb_free(zs2);
    jb_free(ref);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/test_jb_codec.XXXXXX");
    if (!mkdtemp(dir)) return 1;
    jb_log_set_level(JB_WARN);   // the expected failures still show
    // One thread: the tiny model's products are too small to share, and on a loaded
    // machine OpenMP's waiting threads made this test 10x slower.
    jb_codec_set_threads(1);
    test_helpers();
    jb_err_t err = {0};
    jb_vqvae_t *vq = jb_codec_load_vqvae(CASE "model.safetensors", 0, &err);
    JB_CHECK(vq != NULL, "load tiny VQ-VAE (%s)", err.msg);
    jb_vqvae_t *bad = jb_codec_load_vqvae("tests/golden/prior_top_5b_tiny/model.safetensors", 0,
                                          &err);
    JB_CHECK(!bad && err.code == JB_EFORMAT && strstr(err.msg, "not a VQ-VAE"),
             "a prior is refused: %s", err.msg);
    bad = jb_codec_load_vqvae("tests/golden/nope.safetensors", 0, &err);
    JB_CHECK(!bad && err.code == JB_ENOENT, "missing model: %s", err.msg);
    jb_st_t *io = jb_st_open(CASE "io.safetensors", &err);
    JB_CHECK(io != NULL, "open io (%s)", err.msg);
    if (vq && io) {
        test_encode(vq, io);
        test_decode(vq, io);
    }
    jb_st_close(&io);
    jb_vqvae_destroy(&vq);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd)) { /* a leftover temp dir is harmless */ }
    return jb_test_summary("test_jb_codec");
}
