// test_jb_labels.c: vocabulary loading (id tables and model-file JSON), errors, the
// unknown-name warning, genre word limit, lyric window and starts edge cases.
// Expected values are derived by hand from the reference's code (quoted in comments);
// the fixture cases are in the golden runner.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "jb_labels.h"
#include "jb_log.h"
#include "jb_test.h"

static char last_warn[1024];
static int n_warn;
static void sink(jb_log_level_t level, const char *line, void *user) {
    if (level == JB_WARN) {
        n_warn++;
        snprintf(last_warn, sizeof last_warn, "%s", line);
    }
}

static const char *write_tmp(const char *text) {
    static char path[64];
    snprintf(path, sizeof path, "/tmp/test_jb_labels_%d.txt", (int)getpid());
    FILE *f = fopen(path, "wb");
    fputs(text, f);
    fclose(f);
    return path;
}

int main(void) {
    jb_err_t err;
    jb_log_set_sink(sink, NULL);

    // Id table: names lower-cased (Python str.lower, so É -> é), line stripped, later
    // duplicate wins, blank lines skipped.
    const char *p = write_tmp("Unknown;0\n  The Beatles;2 \nbeatles;2\n\nÉDITH PIAF;7\nx;1\nx;3\n");
    jb_labels_vocab_t *v = jb_labels_vocab_load_ids(p, &err);
    JB_CHECK(v != NULL, "load id table (%s)", v ? "" : err.msg);
    if (v) {
        int32_t id = -9;
        JB_CHECK(jb_labels_vocab_count(v) == 5, "5 distinct names (x twice)");
        JB_CHECK(jb_labels_vocab_find(v, "the beatles", &id) && id == 2, "stripped, lowered");
        JB_CHECK(jb_labels_vocab_find(v, "\xc3\xa9" "dith piaf", &id) && id == 7,
                 "non-ASCII lower-cased");
        JB_CHECK(jb_labels_vocab_find(v, "x", &id) && id == 3, "later duplicate wins (dict)");
        JB_CHECK(!jb_labels_vocab_find(v, "The Beatles", &id), "lookup is exact");
        JB_CHECK(jb_labels_vocab_max_id(v) == 7, "max id");
        char *nm = jb_labels_vocab_name(v, 2, &err);
        JB_CHECK(nm && strcmp(nm, "beatles_the beatles") == 0, "reverse lookup joins sorted names");
        free(nm);
        nm = jb_labels_vocab_name(v, 5, &err);
        JB_CHECK(nm && strcmp(nm, "") == 0, "reverse lookup of an absent id: ''");
        free(nm);

        // Model-file form round trip.
        char *js = jb_labels_vocab_to_json(v, &err);
        JB_CHECK(js && strcmp(js, "{\"beatles\":2,\"the beatles\":2,\"unknown\":0,\"x\":3,"
                                  "\"\xc3\xa9" "dith piaf\":7}") == 0,
                 "to_json: sorted compact object (%s)", js ? js : err.msg);
        jb_labels_vocab_t *w = js ? jb_labels_vocab_from_json(js, "t", &err) : NULL;
        JB_CHECK(w && jb_labels_vocab_count(w) == 5 && jb_labels_vocab_find(w, "x", &id) &&
                 id == 3, "from_json round trip");

        // Unknown names: WARN naming up to 3 nearest, then id 0.
        n_warn = 0;
        id = -9;
        JB_CHECK(jb_labels_artist_id(w, JB_TEXT_V3, "The Beatle", "job 42", &id, &err) == 0 &&
                 id == 0, "unknown artist -> 0");
        JB_CHECK(n_warn == 1 && strstr(last_warn, "job 42") &&
                 strstr(last_warn, "Nearest known: 'the beatles', 'beatles'"),
                 "warning names nearest ('the beatles' at distance 1, 'beatles' at 5): %s",
                 last_warn);
        const char *near[3];
        JB_CHECK(jb_labels_vocab_nearest(w, "y", near, 3) == 3 && strcmp(near[0], "x") == 0,
                 "nearest: 'x' is one substitution from 'y'");
        n_warn = 0;
        JB_CHECK(jb_labels_artist_id(w, JB_TEXT_V3, "BEATLES", NULL, &id, &err) == 0 && id == 2 &&
                 n_warn == 0, "known artist: no warning");
        jb_labels_vocab_destroy(&w);
        free(js);
    }
    jb_labels_vocab_destroy(&v);
    jb_labels_vocab_destroy(&v);   // NULL-safe twice
    JB_CHECK(v == NULL, "destroy nulls the pointer");

    // Bad tables and bad JSON are errors naming the source.
    p = write_tmp("a;1\nno separator\n");
    JB_CHECK(!jb_labels_vocab_load_ids(p, &err) && err.code == JB_EFORMAT && strstr(err.msg, ":2:"),
             "line without ';' -> error with line number (%s)", err.msg);
    p = write_tmp("a;1;2\n");
    JB_CHECK(!jb_labels_vocab_load_ids(p, &err) && err.code == JB_EFORMAT, "two ';' -> error");
    p = write_tmp("a;x1\n");
    JB_CHECK(!jb_labels_vocab_load_ids(p, &err) && err.code == JB_EFORMAT, "bad id -> error");
    p = write_tmp("a;-1\n");
    JB_CHECK(!jb_labels_vocab_load_ids(p, &err) && err.code == JB_EFORMAT, "negative id -> error");
    unlink(p);
    JB_CHECK(!jb_labels_vocab_load_ids("/nonexistent/ids.txt", &err) && err.code == JB_ENOENT,
             "missing file -> JB_ENOENT");
    JB_CHECK(!jb_labels_vocab_from_json("{\"a\": 1", "m:artists", &err) &&
             strstr(err.msg, "m:artists"), "truncated JSON -> error naming the source");
    JB_CHECK(!jb_labels_vocab_from_json("[1]", "m", &err), "array -> error");
    JB_CHECK(!jb_labels_vocab_from_json("{\"a\": \"1\"}", "m", &err), "string id -> error");
    JB_CHECK(!jb_labels_vocab_from_json("{\"a\": -2}", "m", &err), "negative id -> error");
    JB_CHECK(!jb_labels_vocab_from_json("{\"a\": 1, \"a\": 2}", "m", &err), "duplicate -> error");
    JB_CHECK(!jb_labels_vocab_from_json(NULL, "m", &err), "missing metadata -> error");

    // From a model file's metadata (the form the converter writes).
    {
        char path[64];
        snprintf(path, sizeof path, "/tmp/test_jb_labels_%d.safetensors", (int)getpid());
        jb_st_writer_t *wr = jb_st_writer_new(&err);
        float one = 1.0f;
        int64_t shape[1] = {1};
        int ok = wr && jb_st_writer_meta(wr, "artists", "{\"alan_jackson\":1,\"unknown\":0}",
                                         &err) == 0 &&
                 jb_st_writer_add(wr, "x", JB_F32, 1, shape, &one, &err) == 0 &&
                 jb_st_writer_write(wr, path, NULL, NULL, &err) == 0;
        jb_st_writer_destroy(&wr);
        jb_st_t *st = ok ? jb_st_open(path, &err) : NULL;
        JB_CHECK(st != NULL, "write/open a model file with vocabularies (%s)", st ? "" : err.msg);
        if (st) {
            jb_labels_vocab_t *a = jb_labels_vocab_from_model(st, "artists", &err);
            int32_t id = -1;
            JB_CHECK(a && jb_labels_vocab_find(a, "alan_jackson", &id) && id == 1,
                     "vocabulary from __metadata__ 'artists'");
            jb_labels_vocab_destroy(&a);
            JB_CHECK(!jb_labels_vocab_from_model(st, "genres", &err) && err.code == JB_EFORMAT &&
                     strstr(err.msg, path) && strstr(err.msg, "'genres'"),
                     "missing 'genres' -> error naming file and key (%s)", err.msg);
            jb_st_close(&st);
        }
        unlink(path);
    }

    // Fuzz: truncations and byte flips of a valid vocabulary never crash; a result is
    // either an error or a usable table.
    {
        const char *good = "{\"a\":1,\"b b\":2,\"c\xc3\xa9\":3}";
        size_t gl = strlen(good);
        char buf[64];
        uint32_t r = 7;
        int ok = 1, accepted = 0;
        for (int it = 0; it < 3000; it++) {
            size_t n = (size_t)it % (gl + 1);
            memcpy(buf, good, gl + 1);
            if (it >= (int)gl + 1) {
                r = r * 1664525u + 1013904223u;
                buf[(r >> 8) % gl] = (char)(r >> 24);
                n = strlen(buf);
            }
            buf[n] = '\0';
            jb_labels_vocab_t *fz = jb_labels_vocab_from_json(buf, "fuzz", &err);
            if (fz) {
                accepted++;
                int32_t id;
                ok &= jb_labels_vocab_count(fz) <= 3;
                jb_labels_vocab_find(fz, "a", &id);
                char *j = jb_labels_vocab_to_json(fz, &err);
                free(j);
                jb_labels_vocab_destroy(&fz);
            } else {
                ok &= err.msg[0] != '\0';
            }
        }
        JB_CHECK(ok && accepted > 0, "fuzzed vocabularies: clean errors or usable tables (%d accepted)",
                 accepted);
    }

    // v2 norm: lower, non [a-z0-9] -> '_', collapse, strip.
    char *nrm = jb_labels_norm("__Hello,  World!!__ 2", &err);
    JB_CHECK(nrm && strcmp(nrm, "hello_world_2") == 0, "norm");
    free(nrm);
    nrm = jb_labels_norm("\xe2\x84\xaa" "elvin", &err);   // Kelvin sign lowers to ASCII k
    JB_CHECK(nrm && strcmp(nrm, "kelvin") == 0, "norm: lower() first, then the filter");
    free(nrm);

    // Genres: more words than max_bow_genre_size is an error (the reference asserts).
    v = jb_labels_vocab_from_json("{\"rock\": 2, \"pop\": 1}", "g", &err);
    int32_t ids[4];
    int n = 0;
    n_warn = 0;
    JB_CHECK(v && jb_labels_genre_ids(v, JB_TEXT_V2, "Pop-Rock / Jazz", NULL, ids, 3, &n, &err) == 0
             && n == 3 && ids[0] == 1 && ids[1] == 2 && ids[2] == 0 && n_warn == 1,
             "v2 bag of words: pop rock jazz -> 1 2 0 (+1 warning)");
    JB_CHECK(jb_labels_genre_ids(v, JB_TEXT_V2, "a b c d", NULL, ids, 3, &n, &err) == -1 &&
             err.code == JB_EINVAL, "4 words, max 3 -> error");
    JB_CHECK(jb_labels_genre_ids(v, JB_TEXT_V3, "Pop", NULL, ids, 1, &n, &err) == 0 && n == 1 &&
             ids[0] == 1, "v3: whole lower-cased name");
    jb_labels_vocab_destroy(&v);

    // Lyric window, by hand: 40 tokens, n_tokens 16, total 100000, offset 50000,
    // duration 8192: midpoint = int(40 * 54096 / 100000) = int(21.6384) = 21 -> [13, 29).
    int32_t full[40], tok[16], idx[16];
    for (int i = 0; i < 40; i++)
        full[i] = 100 + i;
    JB_CHECK(jb_labels_lyric_window(full, 40, 16, 100000, 50000, 8192, tok, idx, &err) == 0 &&
             idx[0] == 13 && idx[15] == 28 && tok[0] == 113, "window midpoint 21");
    // Clamp high: offset 99999 -> int(40 * 1.04095) = 41 > 40 - 8 -> 32: [24, 40).
    JB_CHECK(jb_labels_lyric_window(full, 40, 16, 100000, 99999, 8192, tok, idx, &err) == 0 &&
             idx[0] == 24 && idx[15] == 39, "window clamped to the end");
    JB_CHECK(jb_labels_lyric_window(full, 40, 16, 100000, 100000, 8192, tok, idx, &err) == -1,
             "offset == total_length is refused (reference asserts)");
    JB_CHECK(jb_labels_lyric_window(full, 40, 15, 100000, 0, 8192, tok, idx, &err) == -1,
             "odd n_tokens is refused (reference asserts on the length)");
    JB_CHECK(jb_labels_lyric_window(full, 3, 5, 10, 99, 1, tok, idx, &err) == 0 && tok[0] == 0 &&
             tok[1] == 0 && tok[2] == 100 && idx[1] == -1 && idx[2] == 0,
             "short lyrics: left padded, offset not checked (as the reference)");

    // Float32 midpoint of the sampling path. 1920 tokens, total 5107128, duration 1048576,
    // offset 2452210: in double 1920 * 2976498 / 5107128 = 1118.99998590 -> 1118; in
    // float32 (numpy, op by op: 524288, 2976498, 5714876416, 1119.0) -> 1119.
    {
        int32_t *big = malloc(1920 * sizeof *big), w16[16], i16[16];
        for (int i = 0; i < 1920; i++)
            big[i] = i % 80;
        JB_CHECK(jb_labels_lyric_window(big, 1920, 16, 5107128, 2452210, 1048576, w16, i16,
                                        &err) == 0 && i16[0] == 1118 - 8,
                 "double midpoint 1118 (get_label)");
        JB_CHECK(jb_labels_lyric_window_f32(big, 1920, 16, 5107128, 2452210, 1048576, w16, i16,
                                            &err) == 0 && i16[0] == 1119 - 8 && w16[0] == 1111 % 80,
                 "float32 midpoint 1119 (set_y_lyric_tokens)");
        // get_y: offset = y_base offset + start * raw_to_tokens; sample_length restored.
        jb_labeller_t lb = {.version = JB_TEXT_V2, .max_genre_words = 1, .n_tokens = 16,
                            .sample_length = 1048576};
        int64_t yb[4 + 1 + 16] = {5107128, 10, 7, 3, 2}, y[4 + 1 + 16];
        int32_t ix[16];
        JB_CHECK(jb_labeller_window_y(&lb, yb, big, 1920, 1226100, 2, y, ix, &err) == 0 &&
                 y[0] == 5107128 && y[1] == 2452210 && y[2] == 1048576 && y[3] == 3 &&
                 y[4] == 2 && ix[0] == 1111 && y[5] == 1111 % 80 && y[20] == 1126 % 80,
                 "window_y: offset 10 + 1226100 * 2, float32 window [1111, 1127)");
        free(big);
    }

    // Starts: range(0, 10 - 4 + 3, 3) = 0, 3, 6 -> 6 + 4 >= 10 -> 6.
    int64_t st[8], ns = 0;
    JB_CHECK(jb_labels_starts(10, 4, 3, st, 8, &ns, &err) == 0 && ns == 3 && st[0] == 0 &&
             st[1] == 3 && st[2] == 6, "starts 10/4/3");
    JB_CHECK(jb_labels_starts(10, 4, 3, st, 2, &ns, &err) == -1, "starts: no room -> error");
    JB_CHECK(jb_labels_starts(10, 4, 0, st, 8, &ns, &err) == -1, "starts: hop 0 -> error");

    // A stage's labels for a job: no vocabulary (names give 0), explicit ids win, every
    // sample's row the same, lyrics cleaned (what the vocabulary lacks is dropped and named).
    {
        jb_labeller_t lb = {.version = JB_TEXT_V2, .max_genre_words = 2, .n_tokens = 8,
                            .sample_length = 1024};
        int gids[1] = {5};
        jb_labels_job_t q = {.id = "j1", .level = 2, .artist = "nobody", .genre = "pop",
                             .lyrics = "la la\u00e9 #", .artist_id = 7, .genre_ids = gids,
                             .n_genre_ids = 1, .total_length = 44100, .n_samples = 3};
        jb_labels_built_t b;
        int L = 4 + 2 + 8;
        int rc = jb_labeller_build(&lb, L, &q, &b, &err);
        JB_CHECK(rc == 0 && b.y && b.y[3] == 7 && b.y[4] == 5 && b.y[5] == -1 && b.y[0] == 44100,
                 "build: y = [44100, 0, ., 7, 5, -1, ...] (%s)", rc ? err.msg : "ok");
        int same = rc == 0;
        for (int k = 1; same && k < 3; k++) same = !memcmp(b.y, b.y + k * L, sizeof *b.y * L);
        JB_CHECK(same, "build: every sample's row is the same");
        JB_CHECK(rc == 0 && b.full_tokens && b.n_full > 0 && b.n_dropped == 1 &&
                 !strcmp(b.dropped, "#"), "build: lyric tokens, '#' dropped (%zu: \"%s\")",
                 b.n_dropped, b.dropped);
        JB_CHECK(rc == 0 && strstr(b.used_json, "\"artist_id\":7") &&
                 strstr(b.used_json, "\"genre_ids\":[5]") &&
                 strstr(b.used_json, "\"lyrics_dropped\":\"#\"") &&
                 strstr(b.used_json, "\"level\":2"), "build: what was used: %s",
                 rc ? "" : b.used_json);
        jb_labels_built_free(&b);
        JB_CHECK(b.y == NULL && b.used_json == NULL, "build: free zeroes");
        q.artist_id = -1;
        rc = jb_labeller_build(&lb, 0, &q, &b, &err);
        JB_CHECK(rc == 0 && !b.y && !strcmp(b.used_json, "{\"level\":2}"),
                 "build: no labels: only the level (%s)", rc ? err.msg : b.used_json);
        jb_labels_built_free(&b);
    }

    jb_log_set_sink(NULL, NULL);
    return jb_test_summary("test_jb_labels");
}
