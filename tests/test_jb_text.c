// test_jb_text.c: transliteration, cleaning, tokens, lower-case, invalid UTF-8.
// Expected strings are unidecode's own documented examples or values derived by hand
// from the Unicode/unidecode rules stated in the comments (the golden runner covers the
// fixture's cases).
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "jb_test.h"
#include "jb_text.h"

static int ud_is(const char *in, size_t n, const char *want, size_t want_invalid) {
    jb_err_t err;
    size_t len, bad;
    char *s = jb_text_unidecode(in, n, &len, &bad, &err);
    int ok = s && strcmp(s, want) == 0 && len == strlen(want) && bad == want_invalid;
    if (!ok)
        printf("    unidecode got '%s' (invalid %zu), want '%s' (invalid %zu)\n", s ? s : "(null)",
               s ? bad : 0, want, want_invalid);
    free(s);
    return ok;
}

static int lower_is(const char *in, const char *want) {
    jb_err_t err;
    char *s = jb_text_lower(in, strlen(in), NULL, NULL, &err);
    int ok = s && strcmp(s, want) == 0;
    if (!ok)
        printf("    lower got '%s', want '%s'\n", s ? s : "(null)", want);
    free(s);
    return ok;
}

int main(void) {
    // Vocabularies (text_processor.py): 79 characters + <unk> for v2, v3 lacks '+'.
    JB_CHECK(jb_text_n_vocab(JB_TEXT_V2) == 80 && jb_text_n_vocab(JB_TEXT_V3) == 79, "n_vocab");
    JB_CHECK(jb_text_token(JB_TEXT_V2, 'A') == 1 && jb_text_token(JB_TEXT_V2, '\n') == 79,
             "v2 tokens: 'A' first, '\\n' last");
    JB_CHECK(jb_text_token(JB_TEXT_V2, '+') == 70 && jb_text_token(JB_TEXT_V3, '+') == 0,
             "'+' only in v2 (after the 69 chars A-Z a-z 0-9 .,:;!?-)");
    JB_CHECK(jb_text_token(JB_TEXT_V3, '\'') == 70 && jb_text_token(JB_TEXT_V2, '\'') == 71,
             "' is 70 in v3, 71 in v2");
    JB_CHECK(jb_text_token(JB_TEXT_V2, 0) == 0 && jb_text_token(JB_TEXT_V2, '<') == 0, "<unk>");
    JB_CHECK(jb_text_vocab((jb_text_vocab_t)4) == NULL && jb_text_n_vocab((jb_text_vocab_t)4) == -1,
             "unknown vocabulary version");

    // unidecode's docstring examples.
    JB_CHECK(ud_is("\xe5\x8c\x97\xe4\xba\xb0", 6, "Bei Jing ", 0), "unidecode: 北京 (CJK)");
    JB_CHECK(ud_is("\xce\x9a\xce\xbd\xcf\x89\xcf\x83\xcf\x8c\xcf\x82", 12, "Knosos", 0),
             "unidecode: Κνωσός (Greek)");
    // Hangul by composition: 한 U+D55C = (18*21+0)*28+4 -> h a n; 국 U+AD6D = (0*21+13)*28+1
    // -> g u g; 어 U+C5B4 = (11*21+4)*28+0 -> '' eo ''.
    JB_CHECK(ud_is("\xed\x95\x9c\xea\xb5\xad\xec\x96\xb4", 9, "hangugeo", 0), "unidecode: Hangul");
    JB_CHECK(ud_is("\xc2\xbd", 2, " 1/2", 0), "unidecode: ½ (Latin-1)");
    JB_CHECK(ud_is("\xef\xbc\xbc", 3, "\\", 0), "unidecode: fullwidth backslash");
    // Above U+EFFFF unidecode has no data: "" (errors='ignore').
    JB_CHECK(ud_is("\xf3\xb0\x80\x80x", 5, "x", 0), "unidecode: U+F0000 -> ''");
    JB_CHECK(ud_is("", 0, "", 0), "unidecode: empty");

    // Invalid UTF-8: each byte that does not start a well-formed sequence is skipped.
    JB_CHECK(ud_is("a\xff" "b", 3, "ab", 1), "invalid: 0xFF");
    JB_CHECK(ud_is("\xc0\xaf", 2, "", 2), "invalid: overlong '/' (C0 AF) -> 2 bytes skipped");
    JB_CHECK(ud_is("\xed\xa0\x80z", 4, "z", 3), "invalid: UTF-8 encoded surrogate D800");
    JB_CHECK(ud_is("x\xe2\x82", 3, "x", 2), "invalid: truncated 3-byte sequence at the end");
    JB_CHECK(ud_is("\xf4\x90\x80\x80", 4, "", 4), "invalid: above U+10FFFF");
    JB_CHECK(ud_is("\x80\xc3\xa9", 3, "e", 1), "invalid: lone continuation, then é");

    // Fuzz: random bytes never crash; output is ASCII; clean output is in the vocabulary.
    uint32_t st = 12345;
    int fuzz_ok = 1;
    for (int it = 0; it < 2000 && fuzz_ok; it++) {
        unsigned char buf[64];
        size_t n = (size_t)(it % 64);
        for (size_t i = 0; i < n; i++) {
            st = st * 1664525u + 1013904223u;
            buf[i] = (unsigned char)(st >> 24);
        }
        jb_err_t err;
        size_t len;
        char *s = jb_text_clean(JB_TEXT_V3, (const char *)buf, n, &len, NULL, &err);
        if (!s) {
            fuzz_ok = 0;
            break;
        }
        for (size_t i = 0; i < len; i++)
            fuzz_ok &= jb_text_token(JB_TEXT_V3, (unsigned char)s[i]) > 0;
        free(s);
        char *l = jb_text_lower((const char *)buf, n, NULL, NULL, &err);
        fuzz_ok &= l != NULL;
        free(l);
    }
    JB_CHECK(fuzz_ok, "fuzz: 2000 random byte strings, clean output only vocabulary chars");

    // clean: backslash -> newline before the filter; '+' kept only by v2; '\r' dropped.
    jb_err_t err;
    size_t len;
    char *c2 = jb_text_clean(JB_TEXT_V2, "a\\b+c\r\n<d>", 10, &len, NULL, &err);
    char *c3 = jb_text_clean(JB_TEXT_V3, "a\\b+c\r\n<d>", 10, NULL, NULL, &err);
    JB_CHECK(c2 && strcmp(c2, "a\nb+c\nd") == 0 && len == 7, "clean v2");
    JB_CHECK(c3 && strcmp(c3, "a\nbc\nd") == 0, "clean v3");
    free(c2);
    free(c3);
    JB_CHECK(jb_text_clean((jb_text_vocab_t)9, "x", 1, NULL, NULL, &err) == NULL &&
             err.code == JB_EINVAL, "clean: unknown version is an error");

    // tokens and textise round trip.
    int n;
    int32_t *tok = jb_text_tokens(JB_TEXT_V2, "Hi!", 3, &n, NULL, &err);
    // H = 8th letter -> 8; i = 26 + 9 -> 35; '!' = 62 + 5 (after ".,:;") -> 67.
    JB_CHECK(tok && n == 3 && tok[0] == 8 && tok[1] == 35 && tok[2] == 67, "tokens of 'Hi!'");
    char *back = tok ? jb_text_textise(JB_TEXT_V2, tok, n, &err) : NULL;
    JB_CHECK(back && strcmp(back, "Hi!") == 0, "textise round trip");
    free(back);
    free(tok);
    int32_t odd[3] = {0, 1, 999};
    back = jb_text_textise(JB_TEXT_V3, odd, 3, &err);
    JB_CHECK(back && strcmp(back, "A") == 0, "textise: 0 and out-of-range ids give ''");
    free(back);
    tok = jb_text_tokens(JB_TEXT_V3, "", 0, &n, NULL, &err);
    JB_CHECK(tok && n == 0, "tokens of empty text: non-NULL, 0 tokens");
    free(tok);

    // Python str.lower().
    JB_CHECK(lower_is("\xc3\x80\xc3\x89\xc3\x8eX", "\xc3\xa0\xc3\xa9\xc3\xaex"), "lower: ÀÉÎX");
    JB_CHECK(lower_is("\xc4\xb0", "i\xcc\x87"), "lower: İ -> i + U+0307 (two code points)");
    JB_CHECK(lower_is("\xe2\x84\xaa", "k"), "lower: Kelvin sign -> k");
    JB_CHECK(lower_is("\xc7\x85", "\xc7\x86"), "lower: titlecase ǅ -> ǆ");
    // Final sigma: ΟΔΟΣ -> οδος (ς at the end of a word), Σ alone and ΣΑ -> σ.
    JB_CHECK(lower_is("\xce\x9f\xce\x94\xce\x9f\xce\xa3", "\xce\xbf\xce\xb4\xce\xbf\xcf\x82"),
             "lower: final sigma");
    JB_CHECK(lower_is("\xce\xa3", "\xcf\x83"), "lower: lone sigma");
    JB_CHECK(lower_is("\xce\xa3\xce\x91", "\xcf\x83\xce\xb1"), "lower: initial sigma");
    JB_CHECK(lower_is("\xce\x91\xce\xa3 x", "\xce\xb1\xcf\x82 x"), "lower: final before space");
    JB_CHECK(jb_text_lower_cp('Q') == 'q' && jb_text_lower_cp(0x416) == 0x436 &&
             jb_text_lower_cp('7') == '7', "lower_cp: Q, Ж, 7");
    return jb_test_summary("test_jb_text");
}
