// jb_text.c: lyric text processor (see jb_text.h).
#include "jb_text.h"

#include <stdlib.h>
#include <string.h>

// ---- generated tables (common/jb_unidecode_table.c) --------------------------
extern const int jb_text_ud_n_sections;
extern const int jb_text_ud_n_strings;
extern const char jb_text_ud_pool[];
extern const uint16_t jb_text_ud_pool_off[];
extern const int32_t jb_text_ud_sec_start[];
extern const uint16_t jb_text_ud_sec_len[];
extern const uint16_t jb_text_ud_entries[];
extern const uint16_t jb_text_ud_hangul_lead[];
extern const uint16_t jb_text_ud_hangul_vowel[];
extern const uint16_t jb_text_ud_hangul_tail[];
extern const int jb_text_lower_n;
extern const uint32_t jb_text_lower_map[][3];
extern const int jb_text_cased_n;
extern const uint32_t jb_text_cased_ranges[][2];
extern const int jb_text_ignorable_n;
extern const uint32_t jb_text_ignorable_ranges[][2];

// The reference's vocabularies, in its order (token = index + 1).
static const char VOCAB_V2[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.,:;!?-+'\"()[] \t\n";
static const char VOCAB_V3[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.,:;!?-'\"()[] \t\n";

const char *jb_text_vocab(jb_text_vocab_t v) {
    return v == JB_TEXT_V2 ? VOCAB_V2 : v == JB_TEXT_V3 ? VOCAB_V3 : NULL;
}

int jb_text_n_vocab(jb_text_vocab_t v) {
    const char *voc = jb_text_vocab(v);
    return voc ? (int)strlen(voc) + 1 : -1;
}

int32_t jb_text_token(jb_text_vocab_t v, unsigned char c) {
    const char *voc = jb_text_vocab(v);
    if (!voc || c == 0)
        return 0;
    const char *p = strchr(voc, c);
    return p ? (int32_t)(p - voc) + 1 : 0;
}

// ---- UTF-8 --------------------------------------------------------------------

int32_t jb_text_utf8_next(const unsigned char *s, size_t n, size_t *i) {
    size_t k = *i;
    unsigned c = s[k];
    if (c < 0x80) {
        *i = k + 1;
        return (int32_t)c;
    }
    // Well-formed sequences, Unicode Table 3-7: the second byte's range depends on
    // the first so that overlongs, surrogates and > U+10FFFF are all refused.
    int len;
    unsigned lo = 0x80, hi = 0xBF;
    int32_t cp;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2; cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3; cp = c & 0x0F;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4; cp = c & 0x07;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else {
        *i = k + 1;
        return -1;
    }
    if (n - k < (size_t)len) {
        *i = k + 1;
        return -1;
    }
    for (int j = 1; j < len; j++) {
        unsigned b = s[k + j];
        if (b < lo || b > hi) {
            *i = k + 1;
            return -1;
        }
        lo = 0x80, hi = 0xBF;
        cp = (cp << 6) | (int32_t)(b & 0x3F);
    }
    *i = k + (size_t)len;
    return cp;
}

static int utf8_put(char *out, int32_t cp) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

// ---- growable output ----------------------------------------------------------

typedef struct {
    char *p;
    size_t len, cap;
    int oom;
} buf_t;

static void buf_put(buf_t *b, const char *s, size_t n) {
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static char *buf_finish(buf_t *b, size_t *out_len, const char *what, jb_err_t *err) {
    if (!b->oom && !b->p)
        buf_put(b, "", 0);
    if (b->oom) {
        free(b->p);
        jb_err_set(err, JB_ENOMEM, "%s: out of memory", what);
        return NULL;
    }
    if (out_len)
        *out_len = b->len;
    return b->p;
}

// ---- unidecode ------------------------------------------------------------------

static const char *ud_str(uint16_t id) {
    return jb_text_ud_pool + jb_text_ud_pool_off[id];
}

// Replacement of one non-ASCII code point (unidecode's _get_repl_str, None -> "").
// Hangul syllables may need two pieces: *b gets the second (vowel) and *c the tail.
static const char *ud_lookup(int32_t cp, const char **b, const char **c) {
    *b = *c = "";
    if (cp > 0xEFFFF)   // unidecode: no data for the private use planes and above
        return "";
    if (cp >= 0xAC00 && cp <= 0xD7A3) {
        int s = cp - 0xAC00;
        *b = ud_str(jb_text_ud_hangul_vowel[(s % 588) / 28]);
        *c = ud_str(jb_text_ud_hangul_tail[s % 28]);
        return ud_str(jb_text_ud_hangul_lead[s / 588]);
    }
    int sec = cp >> 8, pos = cp & 0xFF;
    if (sec >= jb_text_ud_n_sections || jb_text_ud_sec_start[sec] < 0 ||
        pos >= jb_text_ud_sec_len[sec])
        return "";
    return ud_str(jb_text_ud_entries[jb_text_ud_sec_start[sec] + pos]);
}

char *jb_text_unidecode(const char *text, size_t n, size_t *out_len, size_t *n_invalid,
                        jb_err_t *err) {
    const unsigned char *s = (const unsigned char *)text;
    buf_t b = {0};
    size_t bad = 0;
    for (size_t i = 0; i < n;) {
        int32_t cp = jb_text_utf8_next(s, n, &i);
        if (cp < 0) {
            bad++;
        } else if (cp < 0x80) {
            char ch = (char)cp;
            buf_put(&b, &ch, 1);
        } else {
            const char *p2, *p3;
            const char *p1 = ud_lookup(cp, &p2, &p3);
            buf_put(&b, p1, strlen(p1));
            buf_put(&b, p2, strlen(p2));
            buf_put(&b, p3, strlen(p3));
        }
    }
    if (n_invalid)
        *n_invalid = bad;
    return buf_finish(&b, out_len, "unidecode", err);
}

char *jb_text_clean(jb_text_vocab_t v, const char *text, size_t n, size_t *out_len,
                    size_t *n_invalid, jb_err_t *err) {
    if (!jb_text_vocab(v)) {
        jb_err_set(err, JB_EINVAL, "text: unknown vocabulary version %d", (int)v);
        return NULL;
    }
    size_t len;
    char *t = jb_text_unidecode(text, n, &len, n_invalid, err);
    if (!t)
        return NULL;
    // In place: the output never grows. Backslashes become newlines before the
    // filter, so they survive it as '\n' (the reference's order).
    size_t k = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)t[i];
        if (c == '\\')
            c = '\n';
        if (jb_text_token(v, c) > 0)
            t[k++] = (char)c;
    }
    t[k] = '\0';
    if (out_len)
        *out_len = k;
    return t;
}

void jb_text_tokenise(jb_text_vocab_t v, const char *clean, size_t n, int32_t *out) {
    for (size_t i = 0; i < n; i++)
        out[i] = jb_text_token(v, (unsigned char)clean[i]);
}

int32_t *jb_text_tokens(jb_text_vocab_t v, const char *text, size_t n, int *n_tokens,
                        size_t *n_invalid, jb_err_t *err) {
    size_t len;
    char *c = jb_text_clean(v, text, n, &len, n_invalid, err);
    if (!c)
        return NULL;
    if (len > (size_t)INT32_MAX) {
        free(c);
        jb_err_set(err, JB_EINVAL, "text: %zu characters after cleaning, too many", len);
        return NULL;
    }
    int32_t *tok = malloc((len ? len : 1) * sizeof *tok);
    if (!tok) {
        free(c);
        jb_err_set(err, JB_ENOMEM, "text: out of memory for %zu tokens", len);
        return NULL;
    }
    jb_text_tokenise(v, c, len, tok);
    free(c);
    *n_tokens = (int)len;
    return tok;
}

char *jb_text_textise(jb_text_vocab_t v, const int32_t *tokens, int n, jb_err_t *err) {
    const char *voc = jb_text_vocab(v);
    if (!voc) {
        jb_err_set(err, JB_EINVAL, "text: unknown vocabulary version %d", (int)v);
        return NULL;
    }
    int nv = (int)strlen(voc);
    buf_t b = {0};
    for (int i = 0; i < n; i++)
        if (tokens[i] >= 1 && tokens[i] <= nv)
            buf_put(&b, &voc[tokens[i] - 1], 1);
    return buf_finish(&b, NULL, "textise", err);
}

// ---- lower case -------------------------------------------------------------------

static const uint32_t *lower_entry(int32_t cp) {
    int lo = 0, hi = jb_text_lower_n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        uint32_t c = jb_text_lower_map[mid][0];
        if (c == (uint32_t)cp)
            return jb_text_lower_map[mid];
        if (c < (uint32_t)cp)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return NULL;
}

int32_t jb_text_lower_cp(int32_t cp) {
    const uint32_t *e = lower_entry(cp);
    return e ? (int32_t)e[1] : cp;
}

static int in_ranges(const uint32_t (*r)[2], int n, int32_t cp) {
    int lo = 0, hi = n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if ((uint32_t)cp < r[mid][0])
            hi = mid - 1;
        else if ((uint32_t)cp > r[mid][1])
            lo = mid + 1;
        else
            return 1;
    }
    return 0;
}

static int is_cased(int32_t cp) {
    return in_ranges(jb_text_cased_ranges, jb_text_cased_n, cp);
}
static int is_ignorable(int32_t cp) {
    return in_ranges(jb_text_ignorable_ranges, jb_text_ignorable_n, cp);
}

// CPython's handle_capital_sigma: final form when a cased letter precedes and none
// follows (case-ignorable characters skipped on both sides).
static int final_sigma(const int32_t *cps, size_t n, size_t i) {
    size_t j = i;
    while (j > 0 && is_ignorable(cps[j - 1]))
        j--;
    if (j == 0 || !is_cased(cps[j - 1]))
        return 0;
    j = i + 1;
    while (j < n && is_ignorable(cps[j]))
        j++;
    return j == n || !is_cased(cps[j]);
}

char *jb_text_lower(const char *text, size_t n, size_t *out_len, size_t *n_invalid,
                    jb_err_t *err) {
    const unsigned char *s = (const unsigned char *)text;
    int32_t *cps = malloc((n ? n : 1) * sizeof *cps);
    if (!cps) {
        jb_err_set(err, JB_ENOMEM, "lower: out of memory for %zu bytes", n);
        return NULL;
    }
    size_t m = 0, bad = 0;
    for (size_t i = 0; i < n;) {
        int32_t cp = jb_text_utf8_next(s, n, &i);
        if (cp < 0)
            bad++;
        else
            cps[m++] = cp;
    }
    buf_t b = {0};
    for (size_t i = 0; i < m; i++) {
        char u[8];
        int k;
        if (cps[i] == 0x3A3) {
            k = utf8_put(u, final_sigma(cps, m, i) ? 0x3C2 : 0x3C3);
        } else {
            const uint32_t *e = lower_entry(cps[i]);
            if (e) {
                k = utf8_put(u, (int32_t)e[1]);
                if (e[2])
                    k += utf8_put(u + k, (int32_t)e[2]);
            } else {
                k = utf8_put(u, cps[i]);
            }
        }
        buf_put(&b, u, (size_t)k);
    }
    free(cps);
    if (n_invalid)
        *n_invalid = bad;
    return buf_finish(&b, out_len, "lower", err);
}
