// jb_labels.c: artist/genre ids, lyric window, window starts, label vector (see jb_labels.h).
#include "jb_labels.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jb_log.h"

typedef struct {
    char *name;     // owned, NUL-terminated UTF-8
    int32_t id;
    int order;      // input order: the last of equal names wins (Python dict)
} entry_t;

struct jb_labels_vocab {
    entry_t *e;     // (n) sorted by strcmp(name), names unique
    int n;
    int32_t max_id;
};

static int entry_cmp(const void *a, const void *b) {
    const entry_t *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : (x->order > y->order) - (x->order < y->order);
}

// Sorts, keeps the last of equal names, finds max id. Takes e (freed on failure too).
static jb_labels_vocab_t *vocab_build(entry_t *e, int n, const char *what, jb_err_t *err) {
    jb_labels_vocab_t *v = calloc(1, sizeof *v);
    if (!v) {
        for (int i = 0; i < n; i++)
            free(e[i].name);
        free(e);
        jb_err_set(err, JB_ENOMEM, "%s: out of memory", what);
        return NULL;
    }
    if (n > 0)
        qsort(e, (size_t)n, sizeof *e, entry_cmp);
    int k = 0;
    for (int i = 0; i < n; i++) {
        if (k > 0 && strcmp(e[k - 1].name, e[i].name) == 0) {
            free(e[k - 1].name);     // sorted by order within a name: i is later
            e[k - 1] = e[i];
        } else {
            e[k++] = e[i];
        }
    }
    v->e = e;
    v->n = k;
    for (int i = 0; i < k; i++)
        if (e[i].id > v->max_id)
            v->max_id = e[i].id;
    return v;
}

void jb_labels_vocab_destroy(jb_labels_vocab_t **vocab_p) {
    if (!vocab_p || !*vocab_p)
        return;
    jb_labels_vocab_t *v = *vocab_p;
    for (int i = 0; i < v->n; i++)
        free(v->e[i].name);
    free(v->e);
    free(v);
    *vocab_p = NULL;
}

jb_labels_vocab_t *jb_labels_vocab_from_json(const char *json_text, const char *what,
                                             jb_err_t *err) {
    if (!what)
        what = "vocabulary";
    if (!json_text) {
        jb_err_set(err, JB_EFORMAT, "%s: missing", what);
        return NULL;
    }
    json_error_t je;
    json_t *root = json_loads(json_text, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        jb_err_set(err, JB_EFORMAT, "%s: bad JSON at line %d column %d: %s", what, je.line,
                   je.column, je.text);
        return NULL;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        jb_err_set(err, JB_EFORMAT, "%s: expected a JSON object {\"name\": id}", what);
        return NULL;
    }
    size_t n = json_object_size(root);
    entry_t *e = calloc(n ? n : 1, sizeof *e);
    if (!e) {
        json_decref(root);
        jb_err_set(err, JB_ENOMEM, "%s: out of memory for %zu names", what, n);
        return NULL;
    }
    int k = 0;
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        json_int_t id = json_is_integer(val) ? json_integer_value(val) : -1;
        if (id < 0 || id > INT32_MAX) {
            jb_err_set(err, JB_EFORMAT, "%s: name '%s': id must be an integer in [0, 2^31)",
                       what, key);
            goto fail;
        }
        e[k].name = strdup(key);
        if (!e[k].name) {
            jb_err_set(err, JB_ENOMEM, "%s: out of memory", what);
            goto fail;
        }
        e[k].id = (int32_t)id;
        e[k].order = k;
        k++;
    }
    json_decref(root);
    return vocab_build(e, k, what, err);
fail:
    for (int i = 0; i < k; i++)
        free(e[i].name);
    free(e);
    json_decref(root);
    return NULL;
}

jb_labels_vocab_t *jb_labels_vocab_from_model(const jb_st_t *st, const char *key, jb_err_t *err) {
    char what[512];
    snprintf(what, sizeof what, "%s: __metadata__ '%s'", jb_st_path(st), key);
    const char *text = jb_st_meta(st, key);
    if (!text) {
        jb_err_set(err, JB_EFORMAT, "%s: missing (a prior with labels needs its vocabularies; "
                   "see docs/labels.md)", what);
        return NULL;
    }
    return jb_labels_vocab_from_json(text, what, err);
}

static int is_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

jb_labels_vocab_t *jb_labels_vocab_load_ids(const char *path, jb_err_t *err) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        jb_err_set(err, errno == ENOENT ? JB_ENOENT : JB_EIO, "%s: cannot open: %s", path,
                   strerror(errno));
        return NULL;
    }
    entry_t *e = NULL;
    int n = 0, cap = 0, lineno = 0;
    char *line = NULL;
    size_t lcap = 0;
    ssize_t got;
    while ((got = getline(&line, &lcap, f)) >= 0) {
        lineno++;
        // Python's line.strip() (ASCII whitespace), then split(';') into exactly two.
        size_t b = 0, end = (size_t)got;
        while (b < end && is_space(line[b]))
            b++;
        while (end > b && is_space(line[end - 1]))
            end--;
        if (b == end)
            continue;
        line[end] = '\0';
        char *s = line + b;
        if (strlen(s) != end - b) {
            jb_err_set(err, JB_EFORMAT, "%s:%d: NUL byte in line", path, lineno);
            goto fail;
        }
        char *semi = strchr(s, ';');
        if (!semi || strchr(semi + 1, ';')) {
            jb_err_set(err, JB_EFORMAT, "%s:%d: expected 'name;id'", path, lineno);
            goto fail;
        }
        *semi = '\0';
        char *idtxt = semi + 1, *endp;
        errno = 0;
        long id = strtol(idtxt, &endp, 10);   // int(): surrounding whitespace allowed
        while (*endp && is_space(*endp))
            endp++;
        if (endp == idtxt || *endp || errno || id < 0 || id > INT32_MAX) {
            jb_err_set(err, JB_EFORMAT, "%s:%d: bad id '%s'", path, lineno, idtxt);
            goto fail;
        }
        if (n == cap) {
            int nc = cap ? cap * 2 : 64;
            entry_t *ne = realloc(e, (size_t)nc * sizeof *e);
            if (!ne) {
                jb_err_set(err, JB_ENOMEM, "%s:%d: out of memory", path, lineno);
                goto fail;
            }
            e = ne;
            cap = nc;
        }
        jb_err_t lerr;
        e[n].name = jb_text_lower(s, strlen(s), NULL, NULL, &lerr);
        if (!e[n].name) {
            jb_err_set(err, lerr.code, "%s:%d: %s", path, lineno, lerr.msg);
            goto fail;
        }
        e[n].id = (int32_t)id;
        e[n].order = n;
        n++;
    }
    if (ferror(f)) {
        jb_err_set(err, JB_EIO, "%s: read error", path);
        goto fail;
    }
    free(line);
    fclose(f);
    if (!e && !(e = calloc(1, sizeof *e))) {
        jb_err_set(err, JB_ENOMEM, "%s: out of memory", path);
        return NULL;
    }
    return vocab_build(e, n, path, err);
fail:
    for (int i = 0; i < n; i++)
        free(e[i].name);
    free(e);
    free(line);
    fclose(f);
    return NULL;
}

int jb_labels_vocab_count(const jb_labels_vocab_t *vocab) { return vocab->n; }
int jb_labels_vocab_max_id(const jb_labels_vocab_t *vocab) { return vocab->max_id; }

int jb_labels_vocab_find(const jb_labels_vocab_t *vocab, const char *name, int32_t *id) {
    int lo = 0, hi = vocab->n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(vocab->e[mid].name, name);
        if (c == 0) {
            *id = vocab->e[mid].id;
            return 1;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return 0;
}

void jb_labels_vocab_at(const jb_labels_vocab_t *vocab, int i, const char **name, int32_t *id) {
    *name = vocab->e[i].name;
    *id = vocab->e[i].id;
}

char *jb_labels_vocab_name(const jb_labels_vocab_t *vocab, int32_t id, jb_err_t *err) {
    size_t len = 1;
    for (int i = 0; i < vocab->n; i++)
        if (vocab->e[i].id == id)
            len += strlen(vocab->e[i].name) + 1;
    char *s = malloc(len);
    if (!s) {
        jb_err_set(err, JB_ENOMEM, "vocabulary: out of memory");
        return NULL;
    }
    // Entries are in byte order of their UTF-8 names, which is Python's code point order.
    size_t k = 0;
    for (int i = 0; i < vocab->n; i++) {
        if (vocab->e[i].id != id)
            continue;
        if (k)
            s[k++] = '_';
        size_t n = strlen(vocab->e[i].name);
        memcpy(s + k, vocab->e[i].name, n);
        k += n;
    }
    s[k] = '\0';
    return s;
}

char *jb_labels_vocab_to_json(const jb_labels_vocab_t *vocab, jb_err_t *err) {
    json_t *o = json_object();
    if (!o)
        goto oom;
    for (int i = 0; i < vocab->n; i++) {
        json_t *v = json_integer(vocab->e[i].id);
        if (!v || json_object_set_new(o, vocab->e[i].name, v) != 0) {
            json_decref(o);
            jb_err_set(err, JB_EFORMAT, "vocabulary: name '%s' is not valid UTF-8 (or no memory)",
                       vocab->e[i].name);
            return NULL;
        }
    }
    char *s = json_dumps(o, JSON_SORT_KEYS | JSON_COMPACT);
    json_decref(o);
    if (s)
        return s;
oom:
    jb_err_set(err, JB_ENOMEM, "vocabulary: out of memory writing JSON");
    return NULL;
}

// Levenshtein distance over bytes, two rows; rows: (2 * (lb + 1)).
static int levenshtein(const char *a, const char *b, int *rows) {
    size_t la = strlen(a), lb = strlen(b);
    int *prev = rows, *cur = rows + lb + 1;
    for (size_t j = 0; j <= lb; j++)
        prev[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        cur[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int sub = prev[j - 1] + (a[i - 1] != b[j - 1]);
            int del = prev[j] + 1, ins = cur[j - 1] + 1;
            cur[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
        }
        int *t = prev;
        prev = cur;
        cur = t;
    }
    return prev[lb];
}

int jb_labels_vocab_nearest(const jb_labels_vocab_t *vocab, const char *key, const char **names,
                            int max) {
    if (max <= 0 || vocab->n == 0)
        return 0;
    if (max > 16)
        max = 16;
    int *rows = malloc(2 * (strlen(key) + 1) * sizeof *rows);
    if (!rows)
        return 0;
    int best_d[16], n = 0;
    for (int i = 0; i < vocab->n; i++) {
        int d = levenshtein(vocab->e[i].name, key, rows);
        if (n == max && d >= best_d[n - 1])
            continue;
        int k = n < max ? n++ : n - 1;     // insertion point: drop the worst when full
        while (k > 0 && best_d[k - 1] > d) {
            best_d[k] = best_d[k - 1];
            names[k] = names[k - 1];
            k--;
        }
        best_d[k] = d;
        names[k] = vocab->e[i].name;
    }
    free(rows);
    return n;
}

char *jb_labels_norm(const char *name, jb_err_t *err) {
    size_t n;
    // Python lowers the whole (Unicode) string first; a non-ASCII char (or one that
    // lowers to two code points) then becomes '_' per code point, and runs collapse.
    char *low = jb_text_lower(name, strlen(name), &n, NULL, err);
    if (!low)
        return NULL;
    size_t k = 0;
    int last_us = 0;
    const unsigned char *s = (const unsigned char *)low;
    for (size_t i = 0; i < n;) {
        int32_t cp = jb_text_utf8_next(s, n, &i);
        int ok = (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') || (cp >= '0' && cp <= '9');
        if (ok) {
            low[k++] = (char)cp;
            last_us = 0;
        } else if (!last_us) {
            low[k++] = '_';
            last_us = 1;
        }
    }
    // strip('_'): the write position never passes the read position, so in place is safe
    size_t b = 0;
    while (b < k && low[b] == '_')
        b++;
    while (k > b && low[k - 1] == '_')
        k--;
    memmove(low, low + b, k - b);
    low[k - b] = '\0';
    return low;
}

static void warn_unknown(const jb_labels_vocab_t *vocab, const char *kind, const char *input,
                         const char *key, jb_text_vocab_t version, const char *what) {
    if (!input[0]) {   // no name given at all: "unknown" is what was asked for
        jb_log(JB_DEBUG, "%s%sno %s given: id 0 (unknown)", what ? what : "", what ? ": " : "",
               kind);
        return;
    }
    const char *near[3];
    int nn = jb_labels_vocab_nearest(vocab, key, near, 3);
    char list[384] = "";
    size_t len = 0;
    for (int i = 0; i < nn && len < sizeof list; i++)
        len += (size_t)snprintf(list + len, sizeof list - len, "%s'%s'", i ? ", " : "", near[i]);
    jb_log(JB_WARN, "%s%s%s '%s' maps to '%s', which is not in the v%d %s table; using id 0 "
           "(unknown). Nearest known: %s", what ? what : "", what ? ": " : "", kind, input, key,
           (int)version, kind, nn ? list : "(none)");
}

// The lookup key of a name: v2 norm, v3 lower-case.
static char *lookup_key(jb_text_vocab_t version, const char *name, jb_err_t *err) {
    if (version == JB_TEXT_V2)
        return jb_labels_norm(name, err);
    if (version == JB_TEXT_V3)
        return jb_text_lower(name, strlen(name), NULL, NULL, err);
    jb_err_set(err, JB_EINVAL, "labels: unknown label version %d", (int)version);
    return NULL;
}

int jb_labels_artist_id(const jb_labels_vocab_t *artists, jb_text_vocab_t version,
                        const char *artist, const char *what, int32_t *id, jb_err_t *err) {
    char *key = lookup_key(version, artist, err);
    if (!key)
        return -1;
    if (!jb_labels_vocab_find(artists, key, id)) {
        warn_unknown(artists, "artist", artist, key, version, what);
        *id = 0;
    }
    free(key);
    return 0;
}

int jb_labels_genre_ids(const jb_labels_vocab_t *genres, jb_text_vocab_t version,
                        const char *genre, const char *what, int32_t *ids, int max, int *n,
                        jb_err_t *err) {
    char *key = lookup_key(version, genre, err);
    if (!key)
        return -1;
    // v3: the whole lower-cased name is one word; v2: split at every '_' (Python's
    // split keeps empty words, but norm() leaves none except for an empty name).
    int count = 0;
    char *word = key;
    for (;;) {
        char *us = version == JB_TEXT_V2 ? strchr(word, '_') : NULL;
        if (us)
            *us = '\0';
        if (count == max) {
            jb_err_set(err, JB_EINVAL, "%s%sgenre '%s' has more than %d words (max_bow_genre_size)",
                       what ? what : "", what ? ": " : "", genre, max);
            free(key);
            return -1;
        }
        if (!jb_labels_vocab_find(genres, word, &ids[count])) {
            warn_unknown(genres, "genre", genre, word, version, what);
            ids[count] = 0;
        }
        count++;
        if (!us)
            break;
        word = us + 1;
    }
    free(key);
    *n = count;
    return 0;
}

// Shared body; mid_f32 selects the float32 midpoint of the sampling path.
static int lyric_window(const int32_t *full, int n_full, int n_tokens, int64_t total_length,
                        int64_t offset, int64_t duration, int32_t *tokens, int32_t *indices,
                        int mid_f32, jb_err_t *err);

int jb_labels_lyric_window(const int32_t *full, int n_full, int n_tokens, int64_t total_length,
                           int64_t offset, int64_t duration, int32_t *tokens, int32_t *indices,
                           jb_err_t *err) {
    return lyric_window(full, n_full, n_tokens, total_length, offset, duration, tokens, indices,
                        0, err);
}

int jb_labels_lyric_window_f32(const int32_t *full, int n_full, int n_tokens,
                               int64_t total_length, int64_t offset, int64_t duration,
                               int32_t *tokens, int32_t *indices, jb_err_t *err) {
    return lyric_window(full, n_full, n_tokens, total_length, offset, duration, tokens, indices,
                        1, err);
}

static int lyric_window(const int32_t *full, int n_full, int n_tokens, int64_t total_length,
                        int64_t offset, int64_t duration, int32_t *tokens, int32_t *indices,
                        int mid_f32, jb_err_t *err) {
    if (n_tokens < 0 || n_full < 0)
        return jb_err_set(err, JB_EINVAL, "lyric window: negative length (n_tokens %d, lyrics %d)",
                          n_tokens, n_full);
    if (n_full < n_tokens) {
        int pad = n_tokens - n_full;
        for (int i = 0; i < n_tokens; i++) {
            tokens[i] = i < pad ? 0 : full[i - pad];
            if (indices)
                indices[i] = i < pad ? -1 : i - pad;
        }
        return 0;
    }
    if (offset < 0 || offset >= total_length)
        return jb_err_set(err, JB_EINVAL, "lyric window: offset %lld outside [0, %lld)",
                          (long long)offset, (long long)total_length);
    if (n_tokens % 2)
        return jb_err_set(err, JB_EINVAL, "lyric window: n_tokens %d is odd", n_tokens);
    // The reference's order of operations, int() truncation: Python floats (double) in
    // get_label, float32 tensor arithmetic in set_y_lyric_tokens.
    int64_t mid;
    if (mid_f32) {
        float h = (float)duration / 2.0f;
        float o = (float)offset + h;
        float m = (float)n_full * o;
        mid = (int64_t)(m / (float)total_length);
    } else {
        mid = (int64_t)((double)n_full * ((double)offset + (double)duration / 2.0) /
                        (double)total_length);
    }
    int half = n_tokens / 2;
    if (mid < half)
        mid = half;
    if (mid > n_full - half)
        mid = n_full - half;
    for (int i = 0; i < n_tokens; i++) {
        int64_t k = mid - half + i;
        tokens[i] = full[k];
        if (indices)
            indices[i] = (int32_t)k;
    }
    return 0;
}

int64_t jb_labels_n_starts(int64_t total_length, int64_t n_ctx, int64_t hop_length) {
    if (hop_length <= 0 || n_ctx <= 0)
        return 0;
    int64_t stop = total_length - n_ctx + hop_length;   // range(0, stop, hop)
    return stop <= 0 ? 0 : (stop + hop_length - 1) / hop_length;
}

int jb_labels_starts(int64_t total_length, int64_t n_ctx, int64_t hop_length, int64_t *starts,
                     int64_t max, int64_t *n, jb_err_t *err) {
    if (hop_length <= 0 || n_ctx <= 0)
        return jb_err_set(err, JB_EINVAL, "get_starts: n_ctx %lld and hop_length %lld must be > 0",
                          (long long)n_ctx, (long long)hop_length);
    int64_t count = jb_labels_n_starts(total_length, n_ctx, hop_length);
    if (count > max)
        return jb_err_set(err, JB_EINVAL, "get_starts: %lld windows, room for %lld",
                          (long long)count, (long long)max);
    for (int64_t i = 0; i < count; i++) {
        int64_t s = i * hop_length;
        // the last window is moved back to end at total_length: full context
        starts[i] = s + n_ctx >= total_length ? total_length - n_ctx : s;
    }
    *n = count;
    return 0;
}

int jb_labeller_label_len(const jb_labeller_t *lb) {
    return 4 + lb->max_genre_words + lb->n_tokens;
}

int jb_labeller_get_label(const jb_labeller_t *lb, const char *artist, const char *genre,
                          const char *lyrics, int64_t total_length, int64_t offset,
                          const char *what, int64_t *y, int32_t **full_tokens_p, int *n_full,
                          jb_err_t *err) {
    int32_t artist_id, *genre_ids = NULL, *full = NULL, *win = NULL;
    int n_genre = 0, nf = 0;
    if (lb->max_genre_words < 0 || lb->n_tokens < 0)
        return jb_err_set(err, JB_EINVAL, "labeller: negative max_genre_words or n_tokens");
    if (jb_labels_artist_id(lb->artists, lb->version, artist, what, &artist_id, err) < 0)
        return -1;
    genre_ids = malloc((size_t)(lb->max_genre_words + 1) * sizeof *genre_ids);
    win = malloc((size_t)(lb->n_tokens + 1) * sizeof *win);
    if (!genre_ids || !win) {
        jb_err_set(err, JB_ENOMEM, "labeller: out of memory");
        goto fail;
    }
    if (jb_labels_genre_ids(lb->genres, lb->version, genre, what, genre_ids, lb->max_genre_words,
                            &n_genre, err) < 0)
        goto fail;
    size_t n_inv = 0;
    full = jb_text_tokens(lb->version, lyrics, strlen(lyrics), &nf, &n_inv, err);
    if (!full)
        goto fail;
    if (n_inv)
        jb_log(JB_WARN, "%s%slyrics: %zu bytes of invalid UTF-8 skipped", what ? what : "",
               what ? ": " : "", n_inv);
    if (jb_labels_lyric_window(full, nf, lb->n_tokens, total_length, offset, lb->sample_length,
                               win, NULL, err) < 0)
        goto fail;
    int k = 0;
    y[k++] = total_length;
    y[k++] = offset;
    y[k++] = lb->sample_length;
    y[k++] = artist_id;
    for (int i = 0; i < lb->max_genre_words; i++)
        y[k++] = i < n_genre ? genre_ids[i] : -1;
    for (int i = 0; i < lb->n_tokens; i++)
        y[k++] = win[i];
    free(genre_ids);
    free(win);
    if (full_tokens_p)
        *full_tokens_p = full;
    else
        free(full);
    if (n_full)
        *n_full = nf;
    return 0;
fail:
    free(genre_ids);
    free(win);
    free(full);
    return -1;
}

int jb_labeller_window_y(const jb_labeller_t *lb, const int64_t *y_base, const int32_t *full,
                         int n_full, int64_t start, int64_t raw_to_tokens, int64_t *y,
                         int32_t *indices, jb_err_t *err) {
    int len = jb_labeller_label_len(lb);
    for (int i = 0; i < len; i++)
        y[i] = y_base[i];
    y[2] = lb->sample_length;
    y[1] = y_base[1] + start * raw_to_tokens;
    if (lb->n_tokens == 0)
        return 0;
    int32_t *win = malloc((size_t)lb->n_tokens * sizeof *win);
    if (!win)
        return jb_err_set(err, JB_ENOMEM, "labeller: out of memory");
    int rc = jb_labels_lyric_window_f32(full, n_full, lb->n_tokens, y[0], y[1], y[2], win,
                                        indices, err);
    if (rc == 0)
        for (int i = 0; i < lb->n_tokens; i++)
            y[len - lb->n_tokens + i] = win[i];
    free(win);
    return rc;
}

// ---- a stage's labels for one job ---------------------------------------------------

void jb_labels_built_free(jb_labels_built_t *b) {
    if (!b) return;
    free(b->y);
    free(b->full_tokens);
    free(b->used_json);
    memset(b, 0, sizeof *b);
}

// y64: (label_len) from get_label, with the job's explicit ids written over the names'.
static int fill_rows(const jb_labeller_t *lb, int label_len, const jb_labels_job_t *job,
                     int64_t *y64, jb_labels_built_t *out, jb_err_t *err) {
    if (job->artist_id >= 0) y64[3] = job->artist_id;
    if (job->n_genre_ids > 0)
        for (int g = 0; g < lb->max_genre_words; g++)
            y64[4 + g] = g < job->n_genre_ids ? job->genre_ids[g] : -1;
    for (int i = 0; i < label_len; i++) {
        if (y64[i] < INT32_MIN || y64[i] > INT32_MAX)
            return jb_err_set(err, JB_EINVAL, "job %s level %d: label %d = %lld out of range",
                              job->id, job->level, i, (long long)y64[i]);
        for (int k = 0; k < job->n_samples; k++)
            out->y[(int64_t)k * label_len + i] = (int32_t)y64[i];
    }
    return 0;
}

// The lyrics as the model reads them, and what cleaning dropped (the reference drops it
// silently): characters outside the vocabulary after transliteration to ASCII.
static int lyrics_used(const jb_labeller_t *lb, const jb_labels_job_t *job, json_t *used,
                       jb_labels_built_t *out, jb_err_t *err) {
    char *clean = jb_text_textise(lb->version, out->full_tokens, out->n_full, err);
    if (!clean) return -1;
    const char *raw = job->lyrics ? job->lyrics : "";
    char *ascii = jb_text_unidecode(raw, strlen(raw), NULL, NULL, err);
    if (!ascii) {
        free(clean);
        return -1;
    }
    size_t nd = 0;
    for (const unsigned char *c = (const unsigned char *)ascii; *c; c++) {
        if (*c == '\\' || jb_text_token(lb->version, *c) != 0) continue;
        out->n_dropped++;
        if (!memchr(out->dropped, *c, nd) && nd + 1 < sizeof out->dropped)
            out->dropped[nd++] = (char)*c;
    }
    out->dropped[nd] = '\0';
    free(ascii);
    if (out->n_dropped) json_object_set_new(used, "lyrics_dropped", json_string(out->dropped));
    json_object_set_new(used, "lyrics", json_string(clean));
    json_object_set_new(used, "lyric_tokens", json_integer(out->n_full));
    free(clean);
    return 0;
}

// The label vector (rows of y) and, with lyrics, the song's tokens; what was used into used.
static int build_y(const jb_labeller_t *lb_in, int label_len, const jb_labels_job_t *job,
                   json_t *used, jb_labels_built_t *out, jb_err_t *err) {
    jb_labeller_t lb = *lb_in;
    int64_t *y64 = malloc(sizeof(int64_t) * (size_t)label_len);
    out->y = malloc(sizeof(int32_t) * (size_t)job->n_samples * label_len);
    if (!y64 || !out->y) {
        free(y64);
        return jb_err_set(err, JB_ENOMEM, "job %s: out of memory", job->id);
    }
    char what[96];
    snprintf(what, sizeof what, "job %s level %d", job->id, job->level);
    // Without a vocabulary in the model file names cannot be looked up: the job must
    // give ids (or gets 0, "unknown", as the reference does).
    jb_labels_vocab_t *empty = NULL;
    if (!lb.artists || !lb.genres) {
        empty = jb_labels_vocab_from_json("{}", "empty vocabulary", err);
        if (!empty) {
            free(y64);
            return -1;
        }
        if (!lb.artists) lb.artists = empty;
        if (!lb.genres) lb.genres = empty;
    }
    int rc = jb_labeller_get_label(&lb, job->artist, job->genre, job->lyrics ? job->lyrics : "",
                                   job->total_length, 0, what, y64, &out->full_tokens,
                                   &out->n_full, err);
    jb_labels_vocab_destroy(&empty);
    if (rc) {
        free(y64);
        if (strncmp(err->msg, what, strlen(what)))   // said once: most messages name it
            jb_err_prefix(err, "%s", what);
        return -1;
    }
    if (fill_rows(&lb, label_len, job, y64, out, err)) {
        free(y64);
        return -1;
    }
    json_object_set_new(used, "artist_id", json_integer(y64[3]));
    json_t *g = json_array();
    for (int k = 0; k < lb.max_genre_words; k++)
        if (y64[4 + k] >= 0) json_array_append_new(g, json_integer(y64[4 + k]));
    json_object_set_new(used, "genre_ids", g);
    free(y64);
    return lb.n_tokens > 0 ? lyrics_used(&lb, job, used, out, err) : 0;
}

int jb_labeller_build(const jb_labeller_t *lb, int label_len, const jb_labels_job_t *job,
                      jb_labels_built_t *out, jb_err_t *err) {
    memset(out, 0, sizeof *out);
    json_t *used = json_object();
    if (!used) return jb_err_set(err, JB_ENOMEM, "out of memory");
    if (label_len > 0 && build_y(lb, label_len, job, used, out, err)) {
        json_decref(used);
        jb_labels_built_free(out);
        return -1;
    }
    json_object_set_new(used, "level", json_integer(job->level));
    out->used_json = json_dumps(used, JSON_COMPACT);
    json_decref(used);
    if (!out->used_json) {
        jb_labels_built_free(out);
        return jb_err_set(err, JB_ENOMEM, "out of memory");
    }
    return 0;
}
