// test_jb_codes.c: the per-job codes store and codes files (common/jb_codes.h):
// puts in order, out of order, restated equal / different, sample subsets,
// growth to a 10-minute song's bottom level, pick, apply of every message type,
// save -> load round trips (checked against codes computed from a formula, and
// the saved frame sequence read back with jb_frame_decode_all), truncated and
// corrupt files, a file with two jobs, and no file left behind on failure.
#include <dirent.h>
#include <inttypes.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "jb_codes.h"
#include "jb_test.h"
#include "jb_transport.h"
#include "jb_wire.h"

#define CB 2048

// The code of sample s, token t: a formula independent of the store.
static int32_t code_at(int level, int s, int64_t t) {
    uint64_t x = (uint64_t)t * 0x9E3779B97F4A7C15ull ^ ((uint64_t)s << 40) ^ ((uint64_t)level << 56);
    x ^= x >> 31;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 29;
    return (int32_t)(x % CB);
}

// (batch, count) codes of samples [s0, s0+batch), tokens [off, off+count).
static int32_t *make_codes(int level, int s0, int batch, int64_t off, int64_t count) {
    int32_t *c = malloc((size_t)batch * (size_t)count * sizeof *c);
    for (int r = 0; r < batch; r++)
        for (int64_t t = 0; t < count; t++) c[(size_t)r * count + t] = code_at(level, s0 + r, off + t);
    return c;
}

// Whether sample s of a level holds exactly the formula's codes [0, n).
static int row_ok(const jb_codes_t *c, int level, int s, int64_t n) {
    if (jb_codes_sample_len(c, level, s) != n) return 0;
    const int32_t *row = jb_codes_row(c, level, s);
    if (n && !row) return 0;
    for (int64_t t = 0; t < n; t++)
        if (row[t] != code_at(level, s, t)) return 0;
    return 1;
}

static int put(jb_codes_t *c, int level, int64_t off, int s0, int batch, int64_t count,
               jb_err_t *err) {
    int32_t *codes = make_codes(level, s0, batch, off, count);
    int rc = jb_codes_put(c, level, off, s0, batch, count, codes, err);
    free(codes);
    return rc;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static char tmpdir[256];

// Entries in tmpdir (files left behind).
static int dir_entries(void) {
    DIR *d = opendir(tmpdir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    if (d) closedir(d);
    return n;
}

static void test_init(void) {
    jb_codes_t c;
    jb_err_t err = {0};
    JB_CHECK(jb_codes_init(&c, "bad id!", 3, 1, CB, &err) == -1 && err.code == JB_EINVAL,
             "init refuses a bad job id (%s)", err.msg);
    JB_CHECK(jb_codes_init(&c, "j", 0, 1, CB, &err) == -1, "init refuses 0 levels");
    JB_CHECK(jb_codes_init(&c, "j", JB_CODES_MAX_LEVELS + 1, 1, CB, &err) == -1,
             "init refuses too many levels");
    JB_CHECK(jb_codes_init(&c, "j", 3, 0, CB, &err) == -1, "init refuses 0 samples");
    JB_CHECK(jb_codes_init(&c, "j", 3, 1, 0, &err) == -1, "init refuses codebook 0");
    JB_CHECK_OK(jb_codes_init(&c, "j", 3, 2, -1, &err), &err, "init with unknown codebook");
    JB_CHECK(jb_codes_len(&c, 0) == 0 && jb_codes_len(&c, 2) == 0 && jb_codes_len(&c, 3) == 0
                 && jb_codes_len(&c, -1) == 0 && jb_codes_row(&c, 0, 0) == NULL,
             "an empty store has no tokens and no rows");
    jb_codes_free(&c);
    jb_codes_free(&c);   // a zeroed struct is accepted
    JB_CHECK(c.levels == 0 && c.codes[0] == NULL, "free zeroes the struct");
}

static void test_put_order(void) {
    jb_codes_t c;
    jb_err_t err = {0};
    jb_codes_init(&c, "order", 3, 2, CB, &err);
    JB_CHECK_OK(put(&c, 2, 0, 0, 2, 100, &err), &err, "first window");
    JB_CHECK_OK(put(&c, 2, 100, 0, 2, 50, &err), &err, "second window in order");
    JB_CHECK(jb_codes_len(&c, 2) == 150 && row_ok(&c, 2, 0, 150) && row_ok(&c, 2, 1, 150),
             "two windows give 150 tokens of the right codes");
    JB_CHECK(jb_codes_stride(&c, 2) >= 150, "stride >= len");

    // Out of order: a gap.
    JB_CHECK(put(&c, 2, 151, 0, 2, 10, &err) == -1 && err.code == JB_EFORMAT
                 && strstr(err.msg, "job order") && strstr(err.msg, "level 2")
                 && strstr(err.msg, "offset 151"),
             "a gap is refused naming job, level and offset (%s)", err.msg);
    JB_CHECK(jb_codes_len(&c, 2) == 150 && row_ok(&c, 2, 0, 150), "store unchanged after it");

    // Restated, equal: a resent window, and one that overlaps and extends.
    JB_CHECK_OK(put(&c, 2, 100, 0, 2, 50, &err), &err, "restated window with equal codes");
    JB_CHECK(jb_codes_len(&c, 2) == 150, "restating adds nothing");
    JB_CHECK_OK(put(&c, 2, 120, 0, 2, 80, &err), &err, "overlapping window extends");
    JB_CHECK(jb_codes_len(&c, 2) == 200 && row_ok(&c, 2, 0, 200) && row_ok(&c, 2, 1, 200),
             "overlap + extension gives 200 right tokens");

    // Restated, different: refused, nothing written (not even the new tail).
    int32_t *codes = make_codes(2, 0, 2, 190, 20);
    codes[20 + 5] ^= 1;   // row 1, token 195
    JB_CHECK(jb_codes_put(&c, 2, 190, 0, 2, 20, codes, &err) == -1 && err.code == JB_EFORMAT
                 && strstr(err.msg, "sample 1") && strstr(err.msg, "offset 195"),
             "a restated token that differs is refused naming sample and offset (%s)", err.msg);
    JB_CHECK(jb_codes_len(&c, 2) == 200 && row_ok(&c, 2, 0, 200) && row_ok(&c, 2, 1, 200),
             "store unchanged after it");
    free(codes);

    // Codes outside the codebook, bad levels and rows.
    codes = make_codes(1, 0, 1, 0, 4);
    codes[3] = CB;
    JB_CHECK(jb_codes_put(&c, 1, 0, 0, 1, 4, codes, &err) == -1 && strstr(err.msg, "codebook"),
             "a code >= codebook is refused (%s)", err.msg);
    codes[3] = -1;
    JB_CHECK(jb_codes_put(&c, 1, 0, 0, 1, 4, codes, &err) == -1, "a negative code is refused");
    JB_CHECK(jb_codes_len(&c, 1) == 0 && jb_codes_row(&c, 1, 0) == NULL,
             "nothing stored at level 1");
    free(codes);
    JB_CHECK(put(&c, 3, 0, 0, 1, 4, &err) == -1 && err.code == JB_EINVAL, "level 3 refused");
    JB_CHECK(put(&c, -1, 0, 0, 1, 4, &err) == -1, "level -1 refused");
    JB_CHECK(put(&c, 1, 0, 1, 2, 4, &err) == -1 && err.code == JB_EINVAL,
             "rows past n_samples refused (%s)", err.msg);
    JB_CHECK(put(&c, 1, 0, -1, 1, 4, &err) == -1, "negative sample0 refused");
    JB_CHECK_OK(jb_codes_put(&c, 1, 0, 0, 1, 0, NULL, &err), &err, "an empty put is a no-op");
    jb_codes_free(&c);
}

static void test_subsets(void) {
    jb_codes_t c;
    jb_err_t err = {0};
    jb_codes_init(&c, "subset", 3, 3, CB, &err);
    JB_CHECK_OK(put(&c, 1, 0, 1, 2, 64, &err), &err, "samples 1..2 first");
    JB_CHECK(jb_codes_len(&c, 1) == 0 && jb_codes_sample_len(&c, 1, 0) == 0
                 && row_ok(&c, 1, 1, 64) && row_ok(&c, 1, 2, 64),
             "len is the minimum: 0 while sample 0 has nothing");
    JB_CHECK(put(&c, 1, 10, 0, 1, 10, &err) == -1 && strstr(err.msg, "sample 0"),
             "sample 0 cannot start at 10 (%s)", err.msg);
    JB_CHECK_OK(put(&c, 1, 0, 0, 1, 32, &err), &err, "sample 0 alone");
    JB_CHECK(jb_codes_len(&c, 1) == 32 && row_ok(&c, 1, 0, 32), "len 32");
    jb_codes_free(&c);
}

static void test_subsets2(void) {
    // All samples at once from offset 32: samples 1, 2 restate 32..63 (equal) and extend.
    jb_codes_t c;
    jb_err_t err = {0};
    jb_codes_init(&c, "subset2", 3, 3, CB, &err);
    put(&c, 1, 0, 1, 2, 64, &err);
    put(&c, 1, 0, 0, 1, 32, &err);
    JB_CHECK_OK(put(&c, 1, 32, 0, 3, 40, &err), &err, "all rows from 32: restate + extend");
    JB_CHECK(jb_codes_len(&c, 1) == 72 && row_ok(&c, 1, 0, 72) && row_ok(&c, 1, 1, 72)
                 && row_ok(&c, 1, 2, 72),
             "every sample has 72 right tokens");
    // Growth with rows of different lengths keeps each row (the in-place row move).
    JB_CHECK_OK(put(&c, 1, 72, 2, 1, 5000, &err), &err, "sample 2 alone grows the level");
    JB_CHECK(row_ok(&c, 1, 0, 72) && row_ok(&c, 1, 1, 72) && row_ok(&c, 1, 2, 5072)
                 && jb_codes_len(&c, 1) == 72,
             "rows intact after the stride grew");
    jb_codes_free(&c);
}

// The bottom level of a 10-minute song: 600 s at 44.1 kHz / hop 8 = 3.3 M
// tokens; the brief asks for 5.3 M x 3 samples, in windows of 1024 new tokens
// (the bottom upsampler's hop 0.125 of 8192). Returns the filled store.
// Under valgrind (JB_TEST_VALGRIND set by tests/sh/test_valgrind.sh) a tenth of it.
static int64_t big_tokens = INT64_C(5300000);
static void fill_big(jb_codes_t *c) {
    jb_err_t err = {0};
    jb_codes_init(c, "song", 3, 3, CB, &err);
    int64_t win = 1024;
    int32_t *buf = malloc((size_t)3 * win * sizeof *buf);
    int ok = 1;
    for (int64_t off = 0; off < big_tokens && ok; off += win) {
        int64_t n = big_tokens - off < win ? big_tokens - off : win;
        for (int r = 0; r < 3; r++)
            for (int64_t t = 0; t < n; t++) buf[r * n + t] = code_at(0, r, off + t);
        ok = jb_codes_put(c, 0, off, 0, 3, n, buf, &err) == 0;
    }
    free(buf);
    JB_CHECK(ok, "%" PRId64 " tokens x 3 samples in 1024-token windows (%s)", big_tokens,
             ok ? "" : err.msg);
    put(c, 1, 0, 0, 3, big_tokens / 4, &err);
    put(c, 2, 0, 0, 3, big_tokens / 16, &err);
}

static void test_growth_and_file(void) {
    jb_codes_t c, d;
    jb_err_t err = {0};
    double t0 = now_s();
    fill_big(&c);
    double t1 = now_s();
    JB_CHECK(jb_codes_len(&c, 0) == big_tokens && row_ok(&c, 0, 0, big_tokens)
                 && row_ok(&c, 0, 1, big_tokens) && row_ok(&c, 0, 2, big_tokens),
             "%" PRId64 " tokens of every sample are right", big_tokens);
    jb_msg_t m;
    jb_msg_init(&m);
    m.type = JB_MSG_JOB;
    jb_msg_set_job_id(&m, "song", &err);
    jb_msg_set_spec(&m, "{\"mode\":\"ancestral\",\"n_samples\":3}", &err);
    m.sample_rate = 44100;
    m.audio_len = big_tokens * 8 - 5;
    JB_CHECK_OK(jb_codes_apply(&c, &m, &err), &err, "job message applied");
    jb_msg_clear(&m);
    char path[300];
    snprintf(path, sizeof path, "%s/song.jbc", tmpdir);
    double t2 = now_s();
    JB_CHECK_OK(jb_codes_save(&c, path, &err), &err, "save the 10-minute song");
    double t3 = now_s();
    JB_CHECK_OK(jb_codes_load(&d, path, &err), &err, "load it");
    double t4 = now_s();
    struct stat st;
    stat(path, &st);
    printf("  %.2f M x 3 bottom codes: put %.2f s, save %.2f s, load %.2f s, file %.1f MB\n",
           big_tokens / 1e6, t1 - t0, t3 - t2, t4 - t3, st.st_size / 1e6);
    int same = d.levels == 3 && d.n_samples == 3 && d.codebook == CB;
    for (int l = 0; l < 3 && same; l++)
        for (int s = 0; s < 3 && same; s++)
            same = jb_codes_sample_len(&d, l, s) == jb_codes_sample_len(&c, l, s)
                   && memcmp(jb_codes_row(&d, l, s), jb_codes_row(&c, l, s),
                             (size_t)jb_codes_sample_len(&c, l, s) * 4) == 0;
    JB_CHECK(same, "round trip: every level, every sample bit-identical");
    JB_CHECK(d.spec && strcmp(d.spec, c.spec) == 0 && d.sample_rate == 44100
                 && d.audio_len == big_tokens * 8 - 5 && d.ended && d.complete[0]
                 && d.complete[1] && d.complete[2] && strcmp(d.job_id, "song") == 0,
             "round trip: spec, rate, audio length, job id, ends");
    jb_codes_free(&d);
    unlink(path);
    jb_codes_free(&c);
}

typedef struct {
    char seq[64];
    int n;
} seq_t;

static int on_msg(jb_msg_t *m, uint64_t off, void *user) {
    seq_t *s = user;
    char ch = m->type == JB_MSG_JOB ? 'J' : m->type == JB_MSG_CODES ? 'C' :
              m->type == JB_MSG_END ? (m->level < 0 ? 'E' : (char)('0' + m->level)) : '?';
    if (s->n < 63) s->seq[s->n++] = ch;
    return 0;
}

static void test_save_load(void) {
    jb_codes_t c, d;
    jb_err_t err = {0};
    jb_codes_init(&c, "rt", 3, 3, CB, &err);
    c.spec = strdup("{\"mode\":\"primed\"}");
    c.sample_rate = 44100;
    c.audio_len = 12345;
    put(&c, 2, 0, 0, 3, 40, &err);
    put(&c, 1, 0, 0, 3, 100, &err);
    put(&c, 1, 100, 1, 1, 7, &err);   // samples of different lengths at level 1
    // level 0 empty
    char path[300];
    snprintf(path, sizeof path, "%s/rt.jbc", tmpdir);
    JB_CHECK_OK(jb_codes_save(&c, path, &err), &err, "save");
    JB_CHECK(dir_entries() == 1, "only the file itself in the directory (no temporary)");

    // What is in the file, read with the wire decoder alone.
    FILE *f = fopen(path, "rb");
    static uint8_t buf[1 << 16];
    size_t len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    seq_t seq = {{0}, 0};
    JB_CHECK_OK(jb_frame_decode_all(buf, len, CB, on_msg, &seq, &err), &err, "file decodes");
    JB_CHECK(strcmp(seq.seq, "JC2CCC10E") == 0,
             "frames: job, top codes, end(2), level 1 row by row, end(1), end(0), end (%s)",
             seq.seq);

    JB_CHECK_OK(jb_codes_load(&d, path, &err), &err, "load");
    JB_CHECK(d.levels == 3 && d.n_samples == 3 && row_ok(&d, 2, 0, 40) && row_ok(&d, 2, 2, 40)
                 && row_ok(&d, 1, 0, 100) && row_ok(&d, 1, 1, 107) && row_ok(&d, 1, 2, 100)
                 && jb_codes_len(&d, 0) == 0 && d.spec && !strcmp(d.spec, c.spec)
                 && d.sample_rate == 44100 && d.audio_len == 12345 && d.codebook == CB,
             "round trip with uneven samples and an empty level");
    jb_codes_free(&d);

    // pick, then save/load: the picked samples in the given order.
    int pick[2] = {2, 1};
    JB_CHECK_OK(jb_codes_pick(&c, pick, 2, &err), &err, "pick 2,1");
    JB_CHECK(c.n_samples == 2 && jb_codes_sample_len(&c, 1, 1) == 107
                 && memcmp(jb_codes_row(&c, 1, 0), (int32_t[]){code_at(1, 2, 0), code_at(1, 2, 1)},
                           8) == 0,
             "picked rows reordered");
    int bad[2] = {0, 2};
    JB_CHECK(jb_codes_pick(&c, bad, 2, &err) == -1 && strstr(err.msg, "pick[1] = 2"),
             "pick out of range names it (%s)", err.msg);
    JB_CHECK(c.n_samples == 2, "store unchanged after a bad pick");
    JB_CHECK(jb_codes_pick(&c, pick, 0, &err) == -1, "empty pick refused");
    JB_CHECK_OK(jb_codes_save(&c, path, &err), &err, "save over the old file");
    JB_CHECK_OK(jb_codes_load(&d, path, &err), &err, "load the picked file");
    JB_CHECK(d.n_samples == 2 && jb_codes_sample_len(&d, 1, 0) == 100
                 && jb_codes_sample_len(&d, 1, 1) == 107 && jb_codes_row(&d, 2, 0)[5] == code_at(2, 2, 5)
                 && jb_codes_row(&d, 2, 1)[5] == code_at(2, 1, 5),
             "picked file holds samples 2, 1");
    jb_codes_free(&d);
    jb_codes_free(&c);

    // A store with every level empty keeps its sample count (END batch).
    jb_codes_init(&c, "empty", 3, 4, -1, &err);
    JB_CHECK_OK(jb_codes_save(&c, path, &err), &err, "save an empty store");
    JB_CHECK_OK(jb_codes_load(&d, path, &err), &err, "load it");
    JB_CHECK(d.n_samples == 4 && d.levels == 3 && d.codebook == -1 && !d.spec
                 && jb_codes_len(&d, 2) == 0,
             "empty store round trip (%d samples, %d levels)", d.n_samples, d.levels);
    jb_codes_free(&d);
    jb_codes_free(&c);
    unlink(path);
}

static void test_apply(void) {
    jb_codes_t c;
    jb_err_t err = {0};
    jb_codes_init(&c, "ap", 3, 2, -1, &err);
    jb_msg_t m;
    jb_msg_init(&m);
    m.type = JB_MSG_JOB;
    jb_msg_set_job_id(&m, "ap", &err);
    jb_msg_set_spec(&m, "{\"a\":1}", &err);
    m.codebook = CB;
    m.sample_rate = 22050;
    JB_CHECK_OK(jb_codes_apply(&c, &m, &err), &err, "job");
    JB_CHECK(c.spec && !strcmp(c.spec, "{\"a\":1}") && c.codebook == CB && c.sample_rate == 22050,
             "job sets spec, codebook, rate");
    JB_CHECK_OK(jb_codes_apply(&c, &m, &err), &err, "the same job again");
    jb_msg_set_spec(&m, "{\"a\":2}", &err);
    JB_CHECK(jb_codes_apply(&c, &m, &err) == -1, "a job with another spec is refused");
    jb_msg_clear(&m);

    m.type = JB_MSG_CODES;
    jb_msg_set_job_id(&m, "ap", &err);
    m.level = 2;
    m.offset = 0;
    int32_t *codes = make_codes(2, 1, 1, 0, 10);
    jb_msg_set_codes(&m, codes, 1, 10, &err);
    free(codes);
    m.sample0 = 1;
    m.audio_len = 999;
    JB_CHECK_OK(jb_codes_apply(&c, &m, &err), &err, "codes for sample 1 (sample0)");
    JB_CHECK(row_ok(&c, 2, 1, 10) && jb_codes_sample_len(&c, 2, 0) == 0 && c.audio_len == 999,
             "sample0 puts the row at sample 1; audio_len taken");
    m.sample0 = 2;
    JB_CHECK(jb_codes_apply(&c, &m, &err) == -1, "sample0 past the samples refused");
    m.sample0 = -1;   // absent: sample 0
    JB_CHECK_OK(jb_codes_apply(&c, &m, &err), &err, "codes without sample0");
    JB_CHECK(jb_codes_sample_len(&c, 2, 0) == 10 && jb_codes_row(&c, 2, 0)[3] == code_at(2, 1, 3),
             "absent sample0 means sample 0");
    m.codebook = 1024;
    m.sample0 = 1;
    JB_CHECK(jb_codes_apply(&c, &m, &err) == -1 && strstr(err.msg, "another model"),
             "codes for another codebook refused (%s)", err.msg);
    m.codebook = -1;
    jb_msg_set_job_id(&m, "other", &err);
    m.offset = 500;   // would be a gap for job ap
    JB_CHECK_OK(jb_codes_apply(&c, &m, &err), &err, "another job's codes are ignored");
    jb_msg_clear(&m);

    m.type = JB_MSG_END;
    jb_msg_set_job_id(&m, "ap", &err);
    m.level = 2;
    m.offset = 11;
    JB_CHECK(jb_codes_apply(&c, &m, &err) == -1 && strstr(err.msg, "11"),
             "end with a wrong length refused (%s)", err.msg);
    m.offset = 10;
    m.batch = 3;
    JB_CHECK(jb_codes_apply(&c, &m, &err) == -1, "end with a wrong batch refused");
    m.batch = 2;
    JB_CHECK(!c.complete[2], "level 2 not complete yet");
    JB_CHECK_OK(jb_codes_apply(&c, &m, &err), &err, "end(2)");
    JB_CHECK(c.complete[2] && !c.complete[1], "level 2 complete");
    m.level = 5;
    m.offset = -1;
    m.batch = -1;
    JB_CHECK(jb_codes_apply(&c, &m, &err) == -1, "end of a level the job lacks refused");
    m.level = -1;
    m.sample_rate = 44100;
    JB_CHECK_OK(jb_codes_apply(&c, &m, &err), &err, "end(-1)");
    JB_CHECK(c.ended && c.sample_rate == 44100, "job ended; rate replaced");
    JB_CHECK_OK(put(&c, 2, 10, 0, 2, 5, &err), &err,
                "puts after END(level) are accepted (a stage extends the prefix)");
    jb_msg_clear(&m);

    // Types that carry no codes of the store: ignored.
    int types[] = {JB_MSG_ERROR, JB_MSG_ACK, JB_MSG_HEARTBEAT, JB_MSG_STATUS, JB_MSG_ALIGN};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        jb_msg_init(&m);
        m.type = types[i];
        jb_msg_set_job_id(&m, "ap", &err);
        m.level = 1;
        m.offset = 77;
        JB_CHECK(jb_codes_apply(&c, &m, &err) == 0 && jb_codes_len(&c, 1) == 0,
                 "a '%s' message is ignored", jb_msg_type_name(types[i]));
    }
    jb_codes_free(&c);

    // Unknown codebook adopted from codes only when the held codes fit it.
    jb_codes_init(&c, "ap", 3, 1, -1, &err);
    int32_t big[2] = {1500, 3};
    jb_codes_put(&c, 0, 0, 0, 1, 2, big, &err);
    jb_msg_init(&m);
    m.type = JB_MSG_END;
    jb_msg_set_job_id(&m, "ap", &err);
    m.level = -1;
    jb_codes_apply(&c, &m, &err);
    m.type = JB_MSG_JOB;
    jb_msg_set_spec(&m, "{}", &err);
    m.level = -1;
    m.codebook = 1024;
    JB_CHECK(jb_codes_apply(&c, &m, &err) == -1 && strstr(err.msg, "1500"),
             "a codebook smaller than a held code is refused (%s)", err.msg);
    jb_msg_clear(&m);
    jb_codes_free(&c);
}

static void write_bytes(const char *path, const uint8_t *b, size_t n) {
    FILE *f = fopen(path, "wb");
    fwrite(b, 1, n, f);
    fclose(f);
}

static void test_bad_files(void) {
    jb_codes_t c, d;
    jb_err_t err = {0};
    char path[300], bad[300];
    snprintf(path, sizeof path, "%s/good.jbc", tmpdir);
    snprintf(bad, sizeof bad, "%s/bad.jbc", tmpdir);
    jb_codes_init(&c, "g", 3, 2, CB, &err);
    c.spec = strdup("{}");
    put(&c, 2, 0, 0, 2, 300, &err);
    put(&c, 1, 0, 0, 2, 1200, &err);
    jb_codes_save(&c, path, &err);
    FILE *f = fopen(path, "rb");
    static uint8_t buf[1 << 16];
    size_t len = fread(buf, 1, sizeof buf, f);
    fclose(f);

    JB_CHECK(jb_codes_load(&d, "/nonexistent/x.jbc", &err) == -1 && err.code == JB_ENOENT
                 && strstr(err.msg, "/nonexistent/x.jbc"),
             "missing file (%s)", err.msg);

    // Every cut inside a frame: a truncated frame at its byte offset. Cuts at a
    // frame boundary: no END(-1).
    int all_named = 1, all_fail = 1;
    for (size_t cut = 1; cut < len; cut += (cut < 200 ? 1 : 37)) {
        write_bytes(bad, buf, cut);
        int rc = jb_codes_load(&d, bad, &err);
        all_fail &= rc == -1;
        all_named &= strstr(err.msg, bad) != NULL && strstr(err.msg, "byte") != NULL;
        if (rc == 0) jb_codes_free(&d);
    }
    JB_CHECK(all_fail && all_named, "every truncation refused naming file and byte (last: %s)",
             err.msg);
    write_bytes(bad, buf, 20);
    jb_codes_load(&d, bad, &err);
    JB_CHECK(strstr(err.msg, "byte 0") && strstr(err.msg, "truncated"),
             "a cut in the first frame: 'truncated' at byte 0 (%s)", err.msg);

    // Frame boundaries: decode and find the last frame (END(-1)).
    size_t pos = 0, last = 0;
    while (pos < len) {
        jb_frame_t fr;
        size_t need;
        jb_frame_parse(buf + pos, len - pos, pos, &fr, &need, &err);
        last = pos;
        pos += fr.size;
    }
    write_bytes(bad, buf, last);
    JB_CHECK(jb_codes_load(&d, bad, &err) == -1 && strstr(err.msg, "without the job's end"),
             "cut at a frame boundary: no END(-1) (%s)", err.msg);

    // A flipped byte in the middle: checksum mismatch at that frame's offset.
    static uint8_t copy[1 << 16];
    memcpy(copy, buf, len);
    copy[last - 30] ^= 0x40;
    write_bytes(bad, copy, len);
    JB_CHECK(jb_codes_load(&d, bad, &err) == -1 && strstr(err.msg, bad)
                 && strstr(err.msg, "checksum"),
             "a corrupt byte: checksum error (%s)", err.msg);

    write_bytes(bad, (const uint8_t *)"RIFF....WAVEfmt ", 16);
    JB_CHECK(jb_codes_load(&d, bad, &err) == -1 && strstr(err.msg, "byte 0")
                 && strstr(err.msg, "magic"),
             "not a codes file (%s)", err.msg);
    write_bytes(bad, buf, 0);
    JB_CHECK(jb_codes_load(&d, bad, &err) == -1 && strstr(err.msg, "no job"),
             "empty file (%s)", err.msg);

    // Two jobs: a copy of the file with another job id appended.
    jb_bytes_t two = {0}, h = {0}, p = {0};
    two.data = malloc(len);
    memcpy(two.data, buf, len);
    two.len = two.cap = len;
    jb_msg_t m;
    jb_msg_init(&m);
    m.type = JB_MSG_CODES;
    jb_msg_set_job_id(&m, "intruder", &err);
    m.level = 2;
    m.offset = 0;
    int32_t z[3] = {1, 2, 3};
    jb_msg_set_codes(&m, z, 1, 3, &err);
    jb_frame_append_msg(&two, &m, &h, &p, &err);
    jb_msg_clear(&m);
    write_bytes(bad, two.data, two.len);
    JB_CHECK(jb_codes_load(&d, bad, &err) == -1 && strstr(err.msg, "several jobs")
                 && strstr(err.msg, "'g'") && strstr(err.msg, "'intruder'")
                 && strstr(err.msg, "byte"),
             "a file with two jobs refused (%s)", err.msg);

    // A message of the job after its END(-1).
    two.len = len;
    m.type = JB_MSG_END;
    jb_msg_set_job_id(&m, "g", &err);
    m.level = 1;
    jb_frame_append_msg(&two, &m, &h, &p, &err);
    jb_msg_clear(&m);
    write_bytes(bad, two.data, two.len);
    JB_CHECK(jb_codes_load(&d, bad, &err) == -1 && strstr(err.msg, "after the job's end"),
             "a message after END(-1) refused (%s)", err.msg);

    // A second END of a level.
    two.len = last;
    m.type = JB_MSG_END;
    jb_msg_set_job_id(&m, "g", &err);
    m.level = 2;
    jb_frame_append_msg(&two, &m, &h, &p, &err);
    jb_msg_clear(&m);
    write_bytes(bad, two.data, two.len);
    JB_CHECK(jb_codes_load(&d, bad, &err) == -1 && strstr(err.msg, "second end of level 2"),
             "two ends of one level refused (%s)", err.msg);

    // An ERROR of the job: the codes are not usable.
    two.len = last;
    m.type = JB_MSG_ERROR;
    jb_msg_set_job_id(&m, "g", &err);
    jb_msg_set_text(&m, "prior-mid ran out of memory", &err);
    jb_frame_append_msg(&two, &m, &h, &p, &err);
    jb_msg_clear(&m);
    write_bytes(bad, two.data, two.len);
    JB_CHECK(jb_codes_load(&d, bad, &err) == -1 && strstr(err.msg, "ran out of memory"),
             "a file with the job's error refused, quoting it (%s)", err.msg);

    // Codes out of order in a file: the frame's byte offset is named.
    two.len = 0;
    m.type = JB_MSG_CODES;
    jb_msg_set_job_id(&m, "g", &err);
    m.level = 2;
    m.offset = 5;
    jb_msg_set_codes(&m, z, 1, 3, &err);
    jb_frame_append_msg(&two, &m, &h, &p, &err);
    jb_msg_clear(&m);
    m.type = JB_MSG_END;
    jb_msg_set_job_id(&m, "g", &err);
    jb_frame_append_msg(&two, &m, &h, &p, &err);
    write_bytes(bad, two.data, two.len);
    JB_CHECK(jb_codes_load(&d, bad, &err) == -1 && strstr(err.msg, "byte 0")
                 && strstr(err.msg, "offset 5"),
             "codes from offset 5 in a file refused (%s)", err.msg);
    jb_bytes_free(&two);
    jb_bytes_free(&h);
    jb_bytes_free(&p);

    // A stream written by a stage through a jb_transport file endpoint loads
    // (no JOB message; windows in order; sample0 subsets).
    jb_endpoint_t *ep = jb_endpoint_open_out(bad, NULL, &err);
    for (int w = 0; w < 4; w++)
        for (int s = 0; s < 2; s++) {
            jb_msg_init(&m);
            m.type = JB_MSG_CODES;
            jb_msg_set_job_id(&m, "st", &err);
            m.level = 2;
            m.offset = w * 16;
            m.sample0 = s;
            m.codebook = CB;
            int32_t *cc = make_codes(2, s, 1, w * 16, 16);
            jb_msg_set_codes(&m, cc, 1, 16, &err);
            free(cc);
            jb_endpoint_send(ep, &m, &err);
            jb_msg_clear(&m);
        }
    m.type = JB_MSG_END;
    jb_msg_set_job_id(&m, "st", &err);
    m.level = 2;
    m.offset = 64;
    jb_endpoint_send(ep, &m, &err);
    m.level = -1;
    m.offset = -1;
    jb_endpoint_send(ep, &m, &err);
    JB_CHECK_OK(jb_endpoint_close(&ep, &err), &err, "stage stream written");
    JB_CHECK_OK(jb_codes_load(&d, bad, &err), &err, "stage stream loads");
    JB_CHECK(d.levels == 3 && d.n_samples == 2 && row_ok(&d, 2, 0, 64) && row_ok(&d, 2, 1, 64)
                 && d.complete[2] && !d.spec,
             "stage stream: 2 samples x 64 top tokens");
    jb_codes_free(&d);
    unlink(bad);

    // Stdin ("-") and a pipe: read to their end.
    int fds[2];
    if (pipe(fds) == 0) {
        pid_t pid = fork();
        if (pid == 0) {   // writer: the good file, in small pieces
            close(fds[0]);
            for (size_t o = 0; o < len; o += 100) {
                size_t k = len - o < 100 ? len - o : 100;
                if (write(fds[1], buf + o, k) != (ssize_t)k) _exit(1);
            }
            _exit(0);
        }
        close(fds[1]);
        char dev[64];
        snprintf(dev, sizeof dev, "/dev/fd/%d", fds[0]);
        JB_CHECK_OK(jb_codes_load(&d, dev, &err), &err, "load from a pipe");
        JB_CHECK(d.n_samples == 2 && row_ok(&d, 1, 1, 1200), "pipe: codes read whole");
        jb_codes_free(&d);
        close(fds[0]);
        waitpid(pid, NULL, 0);
    }
    int saved_stdin = dup(0);
    if (freopen(path, "rb", stdin)) {
        JB_CHECK_OK(jb_codes_load(&d, "-", &err), &err, "load from stdin");
        JB_CHECK(d.n_samples == 2 && row_ok(&d, 2, 0, 300), "stdin: codes read whole");
        jb_codes_free(&d);
    }
    dup2(saved_stdin, 0);
    close(saved_stdin);
    write_bytes(bad, buf, 100);
    saved_stdin = dup(0);
    if (freopen(bad, "rb", stdin)) {
        JB_CHECK(jb_codes_load(&d, "-", &err) == -1 && strstr(err.msg, "stdin: byte 55")
                 && strstr(err.msg, "truncated"),
                 "truncated stdin named 'stdin' (%s)", err.msg);
    }
    dup2(saved_stdin, 0);
    close(saved_stdin);
    unlink(bad);
    JB_CHECK(jb_codes_load(&d, tmpdir, &err) == -1 && strstr(err.msg, "not a file"),
             "a directory refused (%s)", err.msg);

    // Save failures leave nothing behind: a final name that is a directory
    // (rename fails after the data was written), a missing directory.
    char sub[300];
    snprintf(sub, sizeof sub, "%s/adir", tmpdir);
    mkdir(sub, 0755);
    int before = dir_entries();
    JB_CHECK(jb_codes_save(&c, sub, &err) == -1 && err.code == JB_EIO && strstr(err.msg, sub),
             "save onto a directory fails (%s)", err.msg);
    JB_CHECK(dir_entries() == before, "no temporary left behind (%d entries)", dir_entries());
    rmdir(sub);
    snprintf(sub, sizeof sub, "%s/missing/x.jbc", tmpdir);
    JB_CHECK(jb_codes_save(&c, sub, &err) == -1 && strstr(err.msg, "missing"),
             "save into a missing directory fails (%s)", err.msg);
    unlink(path);
    JB_CHECK(dir_entries() == 0, "the test directory is empty at the end");
    jb_codes_free(&c);
}

// Rows added to a store made before the sample count was known (wire.md 8.4), and the
// order rules of apply: codes after a level's end, a second end.
static void test_grow_and_ends(void) {
    jb_err_t err = {0};
    jb_codes_t c;
    JB_CHECK_OK(jb_codes_init(&c, "g:1", 3, 1, 64, &err), &err, "init 1 sample");
    int32_t a[4] = {1, 2, 3, 4}, b[4] = {5, 6, 7, 8};
    JB_CHECK_OK(jb_codes_put(&c, 2, 0, 0, 1, 4, a, &err), &err, "sample 0");
    JB_CHECK(jb_codes_put(&c, 2, 0, 1, 1, 4, b, &err) == -1, "sample 1 refused before growing");
    JB_CHECK_OK(jb_codes_grow_samples(&c, 2, &err), &err, "grow to 2 samples");
    JB_CHECK(c.n_samples == 2 && jb_codes_len(&c, 2) == 0 && jb_codes_sample_len(&c, 2, 0) == 4,
             "sample 0 kept, the new one empty (len %lld)", (long long)jb_codes_len(&c, 2));
    JB_CHECK_OK(jb_codes_put(&c, 2, 0, 1, 1, 4, b, &err), &err, "sample 1 after growing");
    JB_CHECK(jb_codes_len(&c, 2) == 4 && jb_codes_row(&c, 2, 0)[3] == 4 &&
             jb_codes_row(&c, 2, 1)[0] == 5, "both rows hold their codes");
    JB_CHECK(jb_codes_grow_samples(&c, JB_CODES_MAX_SAMPLES + 1, &err) == -1 && c.n_samples == 2,
             "growth past the cap refused, store unchanged");
    jb_msg_t m;
    jb_msg_init(&m);
    m.type = JB_MSG_END;
    snprintf(m.job_id, sizeof m.job_id, "g:1");
    m.level = 2;
    m.offset = 4;
    JB_CHECK_OK(jb_codes_apply(&c, &m, &err), &err, "end of level 2");
    JB_CHECK(jb_codes_apply(&c, &m, &err) == -1 && strstr(err.msg, "second end"),
             "a second end of level 2 refused (%s)", err.msg);
    m.type = JB_MSG_CODES;
    m.offset = 4;
    m.batch = 1;
    m.count = 4;
    m.codes = a;
    JB_CHECK(jb_codes_apply(&c, &m, &err) == -1 && strstr(err.msg, "after the level's end"),
             "codes after the level's end refused (%s)", err.msg);
    m.codes = NULL;
    jb_codes_free(&c);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_jb_codes.XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_init();
    test_put_order();
    test_subsets();
    test_subsets2();
    test_apply();
    test_save_load();
    test_bad_files();
    if (getenv("JB_TEST_VALGRIND")) big_tokens /= 10;
    test_growth_and_file();
    test_grow_and_ends();
    rmdir(tmpdir);
    return jb_test_summary("test_jb_codes");
}
