// golden_labels.c: golden checker for kind "labels" (tests/golden/labels/cases.json,
// README section D): text cleaning and tokens (v2, v3), lyric windows, window starts,
// artist/genre ids and full labels, every entry compared exactly.
//
// The id tables are loaded with jb_labels_vocab_load_ids and then sent through the
// model-file form (jb_labels_vocab_to_json -> jb_labels_vocab_from_json), so the
// lookups run on what a converted model file would carry.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "golden.h"
#include "jb_labels.h"
#include "jb_log.h"
#include "jb_text.h"

// JSON int array -> new int32 array (n elements); NULL on a non-integer.
static int32_t *json_i32s(json_t *a, int64_t *n) {
    *n = json_is_array(a) ? (int64_t)json_array_size(a) : -1;
    if (*n < 0)
        return NULL;
    int32_t *v = malloc((size_t)(*n ? *n : 1) * sizeof *v);
    if (!v)
        return NULL;
    for (int64_t i = 0; i < *n; i++) {
        json_t *x = json_array_get(a, (size_t)i);
        if (!json_is_integer(x)) {
            free(v);
            return NULL;
        }
        v[i] = (int32_t)json_integer_value(x);
    }
    return v;
}

// Compare two byte strings as arrays (exact), failing on a length mismatch.
static void check_str(golden_result_t *r, const char *what, const char *ours, const char *ref) {
    size_t lo = strlen(ours), lr = strlen(ref);
    if (lo != lr) {
        golden_fail(r, "%s: length %zu, expected %zu ('%s' vs '%s')", what, lo, lr, ours, ref);
        return;
    }
    int32_t *a = malloc((lo + 1) * sizeof *a), *b = malloc((lo + 1) * sizeof *b);
    if (!a || !b) {
        golden_fail(r, "%s: out of memory", what);
    } else {
        for (size_t i = 0; i < lo; i++) {
            a[i] = (unsigned char)ours[i];
            b[i] = (unsigned char)ref[i];
        }
        golden_check_equal_i32(r, what, a, b, (int64_t)lo);
    }
    free(a);
    free(b);
}

static void check_i32(golden_result_t *r, const char *what, const int32_t *ours, int64_t n_ours,
                      json_t *ref_json) {
    int64_t n;
    int32_t *ref = json_i32s(ref_json, &n);
    if (!ref)
        golden_fail(r, "%s: reference is not an integer array", what);
    else if (n != n_ours)
        golden_fail(r, "%s: %lld values, expected %lld", what, (long long)n_ours, (long long)n);
    else
        golden_check_equal_i32(r, what, ours, ref, n);
    free(ref);
}

static void check_one(golden_result_t *r, const char *what, int32_t ours, int64_t ref) {
    int32_t ref32 = (int32_t)ref;
    if (ref32 != ref)
        golden_fail(r, "%s: reference %lld outside int32", what, (long long)ref);
    else
        golden_check_equal_i32(r, what, &ours, &ref32, 1);
}

static const char *jstr(json_t *o, const char *key) {
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

static int64_t jint(json_t *o, const char *key) {
    return (int64_t)json_integer_value(json_object_get(o, key));
}

static void run_text(const golden_case_t *c, golden_result_t *r) {
    static const char *vname[2] = {"v2", "v3"};
    static const jb_text_vocab_t ver[2] = {JB_TEXT_V2, JB_TEXT_V3};
    for (int v = 0; v < 2; v++) {
        char what[96];
        snprintf(what, sizeof what, "text vocab %s", vname[v]);
        check_str(r, what, jb_text_vocab(ver[v]),
                  jstr(json_object_get(c->json, "vocab"), vname[v]));
        int32_t nv = jb_text_n_vocab(ver[v]);
        snprintf(what, sizeof what, "text n_vocab %s", vname[v]);
        check_one(r, what, nv, jint(json_object_get(c->json, "n_vocab"), vname[v]));
    }
    json_t *cases = json_object_get(c->json, "text");
    size_t i;
    json_t *t;
    json_array_foreach(cases, i, t) {
        const char *in = jstr(t, "input");
        for (int v = 0; v < 2; v++) {
            json_t *ref = json_object_get(t, vname[v]);
            char what[96];
            jb_err_t err;
            size_t len;
            char *clean = jb_text_clean(ver[v], in, strlen(in), &len, NULL, &err);
            snprintf(what, sizeof what, "text[%zu] %s clean", i, vname[v]);
            if (!clean) {
                golden_fail(r, "%s: %s", what, err.msg);
                continue;
            }
            check_str(r, what, clean, jstr(ref, "clean"));
            free(clean);
            int n;
            int32_t *tok = jb_text_tokens(ver[v], in, strlen(in), &n, NULL, &err);
            snprintf(what, sizeof what, "text[%zu] %s tokens", i, vname[v]);
            if (!tok) {
                golden_fail(r, "%s: %s", what, err.msg);
                continue;
            }
            check_i32(r, what, tok, n, json_object_get(ref, "tokens"));
            free(tok);
        }
    }
}

static void run_windows(const golden_case_t *c, golden_result_t *r) {
    size_t i;
    json_t *w;
    json_array_foreach(json_object_get(c->json, "lyric_windows"), i, w) {
        int64_t nf;
        int32_t *full = json_i32s(json_object_get(w, "full_tokens"), &nf);
        int n_tokens = (int)jint(w, "n_tokens");
        int32_t *tok = malloc((size_t)(n_tokens + 1) * sizeof *tok);
        int32_t *idx = malloc((size_t)(n_tokens + 1) * sizeof *idx);
        char what[96];
        snprintf(what, sizeof what, "lyric_windows[%zu]", i);
        jb_err_t err;
        if (!full || !tok || !idx) {
            golden_fail(r, "%s: bad fixture or out of memory", what);
        } else if (jb_labels_lyric_window(full, (int)nf, n_tokens, jint(w, "total_length"),
                                          jint(w, "offset"), jint(w, "duration"), tok, idx,
                                          &err) < 0) {
            golden_fail(r, "%s: %s", what, err.msg);
        } else {
            snprintf(what, sizeof what, "lyric_windows[%zu] tokens", i);
            check_i32(r, what, tok, n_tokens, json_object_get(w, "tokens"));
            snprintf(what, sizeof what, "lyric_windows[%zu] indices", i);
            check_i32(r, what, idx, n_tokens, json_object_get(w, "indices"));
        }
        free(full);
        free(tok);
        free(idx);
    }
}

static void run_starts(const golden_case_t *c, golden_result_t *r) {
    size_t i;
    json_t *s;
    json_array_foreach(json_object_get(c->json, "get_starts"), i, s) {
        int64_t tl = jint(s, "total_length"), n_ctx = jint(s, "n_ctx"), hop = jint(s, "hop_length");
        int64_t cap = jb_labels_n_starts(tl, n_ctx, hop), n;
        int64_t *st = malloc((size_t)(cap + 1) * sizeof *st);
        int32_t *st32 = malloc((size_t)(cap + 1) * sizeof *st32);
        char what[96];
        snprintf(what, sizeof what, "get_starts[%zu]", i);
        jb_err_t err;
        if (!st || !st32) {
            golden_fail(r, "%s: out of memory", what);
        } else if (jb_labels_starts(tl, n_ctx, hop, st, cap, &n, &err) < 0) {
            golden_fail(r, "%s: %s", what, err.msg);
        } else {
            for (int64_t k = 0; k < n; k++)
                st32[k] = (int32_t)st[k];
            check_i32(r, what, st32, n, json_object_get(s, "starts"));
        }
        free(st);
        free(st32);
    }
}

// Loads "<dir>/<file>" and round-trips it through the model-file JSON form.
static jb_labels_vocab_t *load_table(const golden_case_t *c, const char *file, jb_err_t *err) {
    jb_labels_vocab_t *t = jb_labels_vocab_load_ids(golden_path(c, file), err);
    if (!t)
        return NULL;
    char *js = jb_labels_vocab_to_json(t, err);
    jb_labels_vocab_destroy(&t);
    if (!js)
        return NULL;
    t = jb_labels_vocab_from_json(js, file, err);
    free(js);
    return t;
}

static void run_ids(const golden_case_t *c, golden_result_t *r, jb_labels_vocab_t *tab[2][2]) {
    size_t i;
    json_t *a;
    json_array_foreach(json_object_get(c->json, "artist_genre"), i, a) {
        const char *in = jstr(a, "input");
        int is_artist = !strcmp(jstr(a, "kind"), "artist");
        char what[96];
        jb_err_t err;
        char *norm = jb_labels_norm(in, &err);
        snprintf(what, sizeof what, "artist_genre[%zu] v2_norm", i);
        if (!norm) {
            golden_fail(r, "%s: %s", what, err.msg);
        } else {
            check_str(r, what, norm, jstr(a, "v2_norm"));
            free(norm);
        }
        char *key = jb_text_lower(in, strlen(in), NULL, NULL, &err);
        snprintf(what, sizeof what, "artist_genre[%zu] v3_key", i);
        if (!key) {
            golden_fail(r, "%s: %s", what, err.msg);
        } else {
            check_str(r, what, key, jstr(a, "v3_key"));
            free(key);
        }
        for (int v = 0; v < 2; v++) {
            jb_text_vocab_t ver = v ? JB_TEXT_V3 : JB_TEXT_V2;
            if (is_artist) {
                int32_t id;
                snprintf(what, sizeof what, "artist_genre[%zu] %s artist id", i, v ? "v3" : "v2");
                if (jb_labels_artist_id(tab[v][0], ver, in, "golden", &id, &err) < 0)
                    golden_fail(r, "%s: %s", what, err.msg);
                else
                    check_one(r, what, id, jint(a, v ? "v3_id" : "v2_id"));
            } else {
                int32_t ids[16];
                int n;
                snprintf(what, sizeof what, "artist_genre[%zu] %s genre ids", i, v ? "v3" : "v2");
                if (jb_labels_genre_ids(tab[v][1], ver, in, "golden", ids, 16, &n, &err) < 0)
                    golden_fail(r, "%s: %s", what, err.msg);
                else
                    check_i32(r, what, ids, n, json_object_get(a, v ? "v3_ids" : "v2_ids"));
            }
        }
    }
}

static void run_get_label(const golden_case_t *c, golden_result_t *r,
                          jb_labels_vocab_t *tab[2][2]) {
    size_t i;
    json_t *g;
    json_array_foreach(json_object_get(c->json, "get_label"), i, g) {
        int v3 = json_is_true(json_object_get(g, "v3"));
        jb_labeller_t lb = {
            .version = v3 ? JB_TEXT_V3 : JB_TEXT_V2,
            .max_genre_words = (int)jint(g, "max_genre_words"),
            .n_tokens = (int)jint(g, "n_tokens"),
            .sample_length = jint(g, "sample_length"),
            .artists = tab[v3][0],
            .genres = tab[v3][1],
        };
        int len = jb_labeller_label_len(&lb);
        int64_t *y = malloc((size_t)len * sizeof *y);
        int32_t *y32 = malloc((size_t)len * sizeof *y32), *full = NULL;
        int n_full = 0;
        char what[96];
        snprintf(what, sizeof what, "get_label[%zu] y", i);
        jb_err_t err;
        if (!y || !y32) {
            golden_fail(r, "%s: out of memory", what);
        } else if (jb_labeller_get_label(&lb, jstr(g, "artist"), jstr(g, "genre"),
                                         jstr(g, "lyrics"), jint(g, "total_length"),
                                         jint(g, "offset"), "golden", y, &full, &n_full,
                                         &err) < 0) {
            golden_fail(r, "%s: %s", what, err.msg);
        } else {
            int fits = 1;
            for (int k = 0; k < len; k++) {
                fits &= y[k] >= INT32_MIN && y[k] <= INT32_MAX;
                y32[k] = (int32_t)y[k];
            }
            if (!fits)
                golden_fail(r, "%s: value outside int32", what);
            else
                check_i32(r, what, y32, len, json_object_get(g, "y"));
            snprintf(what, sizeof what, "get_label[%zu] full_tokens", i);
            check_i32(r, what, full, n_full, json_object_get(g, "full_tokens"));
        }
        free(y);
        free(y32);
        free(full);
    }
}

int golden_run_labels(const golden_case_t *c, golden_result_t *r) {
    // Unknown names are expected in the fixture; keep their warnings out of the report
    // unless asked for.
    jb_log_level_t old = jb_log_get_level();
    if (!c->verbose)
        jb_log_set_level(JB_ERROR);
    run_text(c, r);
    run_windows(c, r);
    run_starts(c, r);

    jb_labels_vocab_t *tab[2][2] = {{NULL, NULL}, {NULL, NULL}};   // [v3][artist, genre]
    static const char *files[2][2] = {{"v2_artist_ids.txt", "v2_genre_ids.txt"},
                                      {"v3_artist_ids.txt", "v3_genre_ids.txt"}};
    int ok = 1;
    for (int v = 0; v < 2; v++)
        for (int k = 0; k < 2; k++) {
            jb_err_t err;
            tab[v][k] = load_table(c, files[v][k], &err);
            if (!tab[v][k]) {
                golden_fail(r, "id table %s: %s", files[v][k], err.msg);
                ok = 0;
            }
        }
    if (ok) {
        run_ids(c, r, tab);
        run_get_label(c, r, tab);
    }
    for (int v = 0; v < 2; v++)
        for (int k = 0; k < 2; k++)
            jb_labels_vocab_destroy(&tab[v][k]);
    jb_log_set_level(old);
    return 0;
}
