// jb_compose.c: procedural General MIDI songs for the synthetic dataset (see jb_compose.h).
#include "jb_compose.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ---------------------------------------------------------------------------------------
// Random numbers: xoshiro256** (Blackman & Vigna) seeded through splitmix64.

typedef struct {
    uint64_t s[4];
} rng_t;

uint64_t jb_compose_mix(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static void rng_seed(rng_t *r, uint64_t seed) {
    for (int i = 0; i < 4; i++)
        r->s[i] = jb_compose_mix(seed + (uint64_t)i * 0x632BE59BD9B4E019ull);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t rng_next(rng_t *r) {
    uint64_t *s = r->s;
    uint64_t out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

static double rng_unif(rng_t *r) {   // [0, 1) on a 2^-53 grid
    return (double)(rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
}
static int rng_int(rng_t *r, int n) { return (int)(rng_unif(r) * n); }
static int rng_bern(rng_t *r, double p) { return rng_unif(r) < p; }

// ---------------------------------------------------------------------------------------
// Scales and chords.

typedef struct {
    const char *name;
    int n;
    int iv[7];   // semitones above the tonic
} mode_t_;

static const mode_t_ MODES[] = {
    {"major", 7, {0, 2, 4, 5, 7, 9, 11}},   {"minor", 7, {0, 2, 3, 5, 7, 8, 10}},
    {"dorian", 7, {0, 2, 3, 5, 7, 9, 10}},  {"mixolydian", 7, {0, 2, 4, 5, 7, 9, 10}},
    {"blues", 6, {0, 3, 5, 6, 7, 10}},      {"harmonic minor", 7, {0, 2, 3, 5, 7, 8, 11}},
};

static const mode_t_ *mode_find(const char *name) {
    for (size_t i = 0; i < sizeof MODES / sizeof MODES[0]; i++)
        if (!strcmp(MODES[i].name, name)) return &MODES[i];
    return NULL;
}

typedef struct {
    int root;    // semitones above the tonic, 0..11
    int n;       // tones
    int iv[4];   // semitones above the root
} chord_t;

// One roman-numeral chord: [b|#] numeral (upper = major, lower = minor) [7|maj7|o|5|6].
static int chord_parse(const char *tok, size_t len, chord_t *c) {
    static const char *const NUM[] = {"I", "II", "III", "IV", "V", "VI", "VII"};
    static const int DEG[] = {0, 2, 4, 5, 7, 9, 11};
    size_t i = 0;
    int acc = 0;
    if (i < len && (tok[i] == 'b' || tok[i] == '#')) acc = tok[i++] == 'b' ? -1 : 1;
    char num[8];
    size_t k = 0;
    int upper = i < len && tok[i] >= 'A' && tok[i] <= 'Z';
    while (i < len && k < 7 && strchr("IViv", tok[i])) {
        char ch = tok[i++];
        num[k++] = (char)(ch >= 'a' ? ch - 32 : ch);
    }
    num[k] = 0;
    int deg = -1;
    for (int d = 0; d < 7; d++)
        if (!strcmp(num, NUM[d])) deg = d;
    if (deg < 0) return -1;
    c->root = (DEG[deg] + acc + 12) % 12;
    const char *suf = tok + i;
    size_t sl = len - i;
    int third = upper ? 4 : 3;
    if (sl == 0) {
        *c = (chord_t){c->root, 3, {0, third, 7, 0}};
    } else if (sl == 1 && suf[0] == '7') {
        *c = (chord_t){c->root, 4, {0, third, 7, 10}};
    } else if (sl == 4 && !strncmp(suf, "maj7", 4)) {
        *c = (chord_t){c->root, 4, {0, third, 7, 11}};
    } else if (sl == 1 && suf[0] == 'o') {
        *c = (chord_t){c->root, 3, {0, 3, 6, 0}};
    } else if (sl == 1 && suf[0] == '5') {
        *c = (chord_t){c->root, 2, {0, 7, 0, 0}};
    } else if (sl == 1 && suf[0] == '6') {
        *c = (chord_t){c->root, 4, {0, third, 7, 9}};
    } else {
        return -1;
    }
    return 0;
}

// A space-separated progression, one chord per bar. Returns the count or -1.
static int prog_parse(const char *s, chord_t *out, int cap) {
    int n = 0;
    while (*s) {
        while (*s == ' ') s++;
        if (!*s) break;
        size_t len = strcspn(s, " ");
        if (n == cap || chord_parse(s, len, &out[n]) < 0) return -1;
        n++;
        s += len;
    }
    return n;
}

// Nearest MIDI note of pitch class pc to centre (ties go down).
static int nearest(int pc, int centre) {
    int base = centre - ((centre % 12) - pc + 12) % 12;   // at or below centre
    return centre - base <= base + 12 - centre ? base : base + 12;
}

const char *jb_compose_pitch_name(int pc) {
    static const char *const N[] = {"C",  "C#", "D",  "Eb", "E",  "F",
                                    "F#", "G",  "Ab", "A",  "Bb", "B"};
    return N[((pc % 12) + 12) % 12];
}

// ---------------------------------------------------------------------------------------
// Genres. Pattern strings have one character per step of a bar (beats_per_bar * sub):
// 'x' accent, 'o' soft, 'g' ghost, '?' a coin flip, '.' rest.

enum { COMP_BLOCK, COMP_POWER, COMP_ARP, COMP_ALBERTI, COMP_STAB };
enum { BASS_ROOT, BASS_ROOT5, BASS_WALK, BASS_OCT, BASS_BOOGIE };

typedef struct {
    const char *name;
    int bpb, sub;                 // beats per bar, steps per beat
    double tmin, tmax;            // tempo range (bpm) across the genre's artists
    double swing;                 // off-steps late by this fraction of a step
    const char *modes[2];         // artist a uses modes[a % 2]
    const char *progs[4];         // artist a prefers progs[a], else progs[(a + 1) % 4]
    int mel[4], chord[4], bass[4], pad[4], kit[4];   // per artist; -1: none
    const char *drums[5];         // "key:pattern"; key 49 (crash) plays every 4th bar only
    const char *comp[2];          // chord rhythms
    int comp_style;
    const char *bass_pat;
    int bass_style;
    double density;               // melody onsets per step (before accents)
    int mel_c, chord_c, bass_c;   // register centres (MIDI)
    int reverb, chorus;           // CC91 / CC93
    float eq_low, eq_high;        // production: bass and treble gains
    const char *theme[10];        // lyric words
    const char *artists[4];
} genre_t;

static const genre_t GENRES[] = {
    {"rock", 4, 4, 108, 146, 0.0, {"major", "mixolydian"},
     {"I V vi IV", "I IV V IV", "vi IV I V", "I bVII IV I"},
     {29, 30, 27, 81}, {30, 29, 30, 29}, {33, 34, 33, 34}, {-1, -1, -1, -1}, {16, 0, 8, 16},
     {"36:x.....x.x.......", "38:....x.......x...", "42:x.x.x.x.x.x.x.x.", "49:x..............."},
     {"x.x.x.x.x.x.x.x.", "x..x..x...x.x..."}, COMP_POWER, "x.x.x.x.x.x.x.x.", BASS_ROOT,
     0.30, 67, 52, 40, 40, 0, 1.0f, 1.4f,
     {"fire", "road", "wild", "loud", "steel", "run", "burn", "rock", "storm", "ride"},
     {"The Iron Kites", "Velvet Static", "Nina Blaze", "Road Dogs"}},
    {"jazz", 4, 2, 118, 176, 0.33, {"major", "major"},
     {"ii7 V7 Imaj7 vi7", "Imaj7 vi7 ii7 V7", "iii7 vi7 ii7 V7", "Imaj7 IV7 iii7 VI7"},
     {65, 56, 66, 11}, {0, 4, 26, 0}, {32, 32, 35, 32}, {-1, -1, -1, -1}, {32, 40, 32, 40},
     {"51:x.xxx.xx", "44:..x...x.", "36:g...g...", "38:......?."},
     {"x..x....", "..x...x."}, COMP_BLOCK, "x.x.x.x.", BASS_WALK,
     0.45, 70, 60, 40, 50, 10, 1.2f, 0.6f,
     {"blue", "moon", "smoke", "swing", "night", "wine", "sweet", "kiss", "june", "tune"},
     {"Miles Harmon Trio", "Lena Blue", "The Smoke Quartet", "Oscar Vale"}},
    {"electronic", 4, 4, 120, 132, 0.0, {"minor", "dorian"},
     {"i bVI bIII bVII", "i iv bVI v", "i bVII bVI bVII", "i bIII bVII iv"},
     {81, 80, 87, 84}, {90, 81, 80, 62}, {38, 39, 38, 87}, {89, 91, 95, 88}, {24, 25, 25, 24},
     {"36:x...x...x...x...", "39:....x.......x...", "46:..x...x...x...x.", "42:oooooooooooooooo",
      "49:x..............."},
     {"xxxxxxxxxxxxxxxx", "x.x.x.x.x.x.x.x."}, COMP_ARP, "..x...x...x...x.", BASS_OCT,
     0.30, 72, 64, 36, 60, 30, 1.8f, 1.5f,
     {"light", "pulse", "neon", "wave", "speed", "beat", "glow", "move", "star", "code"},
     {"Neon Drift", "Pulse Theory", "KLR-9", "Glass Circuit"}},
    {"classical", 4, 2, 64, 96, 0.0, {"major", "major"},
     {"I IV V I", "I vi IV V", "I ii V I", "I V vi iii"},
     {73, 40, 68, 71}, {0, 46, 6, 0}, {42, 43, 42, 70}, {48, 49, -1, 48}, {-1, -1, -1, -1},
     {NULL},
     {"xxxxxxxx", "xxxxxxxx"}, COMP_ALBERTI, "x...x...", BASS_ROOT,
     0.50, 74, 60, 43, 80, 20, 0.7f, 0.5f,
     {"grace", "spring", "rose", "heaven", "river", "morning", "silver", "snow", "dawn", "song"},
     {"Aurora Ensemble", "Clara Voss", "The Linden Strings", "Felix Moravec"}},
    {"reggae", 4, 4, 66, 88, 0.15, {"major", "mixolydian"},
     {"I IV I V", "I vi IV V", "I bVII IV I", "ii V I I"},
     {56, 61, 22, 65}, {16, 27, 17, 28}, {33, 35, 33, 34}, {-1, -1, -1, -1}, {0, 8, 0, 8},
     {"36:........x.......", "37:........x.......", "42:x.x.x.x.x.x.x.x.", "38:..............g."},
     {"....x.......x...", "..x...x...x...x."}, COMP_STAB, "x.....x.x...x...", BASS_ROOT5,
     0.30, 67, 60, 38, 50, 10, 1.9f, 0.8f,
     {"sun", "one", "love", "island", "roots", "sea", "high", "free", "shine", "rain"},
     {"Roots Harbour", "Desmond Ray", "Island Unity", "Marcia Sun"}},
    {"bossa", 4, 4, 118, 142, 0.0, {"major", "major"},
     {"Imaj7 vi7 ii7 V7", "ii7 V7 Imaj7 IVmaj7", "Imaj7 bIII7 ii7 V7", "iii7 VI7 ii7 V7"},
     {73, 65, 11, 71}, {24, 24, 4, 24}, {32, 32, 33, 32}, {-1, 49, -1, -1}, {0, 0, 8, 0},
     {"37:x..x..x...x..x..", "36:x..x....x..x....", "70:xoxoxoxoxoxoxoxo"},
     {"x..x..x...x..x..", "x..x..x..x..x..."}, COMP_BLOCK, "x..x....x..x....", BASS_ROOT5,
     0.30, 72, 58, 38, 45, 20, 0.9f, 0.7f,
     {"sea", "sand", "girl", "samba", "summer", "dance", "breeze", "warm", "bay", "wave"},
     {"Tomas Areia", "Luna Brisa", "Quinteto Mar", "Ana Verao"}},
    {"folk", 3, 2, 92, 132, 0.0, {"major", "major"},
     {"I IV I V", "I V IV I", "I vi IV V", "I I IV V"},
     {40, 22, 105, 74}, {25, 25, 24, 21}, {32, 32, 33, 32}, {-1, -1, -1, -1}, {0, -1, 8, 0},
     {"36:x.....", "54:..x.x."},
     {"..x.x.", "..xxx."}, COMP_BLOCK, "x.....", BASS_ROOT5,
     0.40, 72, 57, 40, 35, 0, 0.8f, 1.2f,
     {"home", "hill", "green", "river", "old", "mother", "road", "field", "bell", "fall"},
     {"The Hollow Pines", "Mary Fenwick", "Old Mill Band", "Jesse Crane"}},
    {"blues", 4, 2, 76, 116, 0.33, {"blues", "blues"},
     {"I7 I7 I7 I7 IV7 IV7 I7 I7 V7 IV7 I7 V7", "I7 IV7 I7 I7 IV7 IV7 I7 I7 V7 IV7 I7 V7",
      "I7 I7 I7 I7 IV7 IV7 I7 I7 V7 V7 I7 I7", "I7 IV7 I7 I7 IV7 IV7 I7 I7 V7 IV7 I7 I7"},
     {29, 22, 26, 65}, {0, 16, 0, 17}, {33, 32, 33, 34}, {-1, -1, -1, -1}, {0, 8, 0, 32},
     {"36:x...x...", "38:..x...x.", "42:xxxxxxxx"},
     {"x.x.x.x.", "..x...x."}, COMP_BLOCK, "xxxxxxxx", BASS_BOOGIE,
     0.35, 67, 58, 40, 40, 0, 1.3f, 0.9f,
     {"blues", "train", "cry", "down", "lonely", "whiskey", "baby", "mean", "town", "gone"},
     {"Muddy Lou", "Big Earl Porter", "Delta Rose", "The Crossroads Three"}},
};
#define N_GENRES ((int)(sizeof GENRES / sizeof GENRES[0]))

// espeak-ng voices; artist (g, a) sings with VOICES[(4 g + a) % 9].
static const char *const VOICES[] = {"en+m3", "en+f2", "en+m1", "en+f4", "en+m7",
                                     "en+f1", "en+m2", "en+f3", "en+m4"};

static const char *const COMMON_WORDS[] = {
    "I",       "you",       "we",       "the night", "my heart",  "the road", "so far",
    "tonight", "come home", "hold on",  "let go",    "the light", "your eyes", "the rain",
    "we run",  "stay",      "fly",      "the sky",   "all day",   "so long",  "the sun",
    "feel",    "gold",      "dream",    "slow",      "rise",      "high",     "the stars",
    "my soul", "sing",      "time",     "away",      "come back", "too late", "with me"};
#define N_COMMON ((int)(sizeof COMMON_WORDS / sizeof COMMON_WORDS[0]))

int jb_compose_n_genres(void) { return N_GENRES; }

const char *jb_compose_genre_name(int g) { return g >= 0 && g < N_GENRES ? GENRES[g].name : NULL; }

int jb_compose_genre_find(const char *name) {
    for (int g = 0; g < N_GENRES; g++)
        if (!strcmp(GENRES[g].name, name)) return g;
    return -1;
}

const char *jb_compose_artist_name(int g, int a) {
    if (g < 0 || g >= N_GENRES || a < 0 || a >= JB_COMPOSE_N_ARTISTS) return NULL;
    return GENRES[g].artists[a];
}

// ---------------------------------------------------------------------------------------
// Building a song.

typedef struct {
    jb_song_t *song;
    int cap_notes, cap_words;
    size_t lyr_len, lyr_cap;
    int failed;                    // an allocation failed
    double bar_len, step_len, swing;
    int steps;                     // per bar
} builder_t;

static void add_note(builder_t *b, double t, double dur, int chan, int key, int vel) {
    jb_song_t *s = b->song;
    if (t >= s->seconds - 0.01 || key < 0 || key > 127) return;
    if (t + dur > s->seconds) dur = s->seconds - t;
    if (s->n_notes == b->cap_notes) {
        int cap = b->cap_notes ? 2 * b->cap_notes : 256;
        jb_note_t *p = realloc(s->notes, (size_t)cap * sizeof *p);
        if (!p) {
            b->failed = 1;
            return;
        }
        s->notes = p;
        b->cap_notes = cap;
    }
    vel = vel < 1 ? 1 : vel > 127 ? 127 : vel;
    s->notes[s->n_notes++] = (jb_note_t){t, dur, (uint8_t)chan, (uint8_t)key, (uint8_t)vel};
}

// Returns 1 if the word was added, 0 if it falls after the end (or allocation failed).
static int add_word(builder_t *b, const char *w, double t, double dur, int key) {
    jb_song_t *s = b->song;
    if (t >= s->seconds - 0.15) return 0;   // too late to be heard
    if (t + dur > s->seconds) dur = s->seconds - t;
    if (s->n_words == b->cap_words) {
        int cap = b->cap_words ? 2 * b->cap_words : 64;
        jb_sung_word_t *p = realloc(s->words, (size_t)cap * sizeof *p);
        if (!p) {
            b->failed = 1;
            return 0;
        }
        s->words = p;
        b->cap_words = cap;
    }
    jb_sung_word_t *x = &s->words[s->n_words++];
    snprintf(x->word, sizeof x->word, "%s", w);
    x->t = t;
    x->dur = dur;
    x->key = (uint8_t)key;
    return 1;
}

static void add_text(builder_t *b, const char *txt) {
    size_t n = strlen(txt);
    if (b->lyr_len + n + 1 > b->lyr_cap) {
        size_t cap = (b->lyr_cap + n + 1) * 2;
        char *p = realloc(b->song->lyrics, cap);
        if (!p) {
            b->failed = 1;
            return;
        }
        b->song->lyrics = p;
        b->lyr_cap = cap;
    }
    memcpy(b->song->lyrics + b->lyr_len, txt, n + 1);
    b->lyr_len += n;
}

// Onset of step s of bar `bar`, swung.
static double step_time(const builder_t *b, int bar, int s) {
    return bar * b->bar_len + s * b->step_len + ((s & 1) ? b->swing * b->step_len : 0.0);
}

static int pat_vel(rng_t *r, char c) {
    int j = rng_int(r, 13) - 6;   // drawn for every step so the stream does not depend on c
    switch (c) {
    case 'x': return 100 + j;
    case 'o': return 64 + j;
    case 'g': return 36 + j;
    case '?': return rng_bern(r, 0.5) ? 72 + j : 0;
    default: return 0;
    }
}

// Chord tones voiced close around centre, ascending. out: (c->n)
static int voice_chord(const chord_t *c, int tonic, int centre, int *out) {
    for (int i = 0; i < c->n; i++) out[i] = nearest((tonic + c->root + c->iv[i]) % 12, centre);
    for (int i = 1; i < c->n; i++)   // insertion sort, n <= 4
        for (int j = i; j > 0 && out[j] < out[j - 1]; j--) {
            int t = out[j];
            out[j] = out[j - 1];
            out[j - 1] = t;
        }
    return c->n;
}

static int in_chord(int key, const chord_t *c, int tonic) {
    for (int i = 0; i < c->n; i++)
        if ((key - tonic - c->root - c->iv[i]) % 12 == 0) return 1;
    return 0;
}

// Scale walker: pos indexes the scale extended over octaves.
static int scale_note(const mode_t_ *m, int tonic, int pos) {
    int oct = pos >= 0 ? pos / m->n : -((-pos + m->n - 1) / m->n);
    return tonic + 12 * oct + m->iv[pos - oct * m->n];
}

static int scale_pos_near(const mode_t_ *m, int tonic, int centre) {
    int best = 0, bd = 1000;
    for (int p = -4 * m->n; p < 16 * m->n; p++) {
        int d = abs(scale_note(m, tonic, p) - centre);
        if (d < bd) bd = d, best = p;
    }
    return best;
}

// Move to the nearest scale position whose note is a chord tone (within 3 steps).
static int snap_chord(const mode_t_ *m, int tonic, int pos, const chord_t *c) {
    for (int d = 0; d <= 3; d++) {
        if (in_chord(scale_note(m, tonic, pos - d), c, tonic)) return pos - d;
        if (in_chord(scale_note(m, tonic, pos + d), c, tonic)) return pos + d;
    }
    return pos;
}

static int keep_in_range(const mode_t_ *m, int tonic, int pos, int lo, int hi) {
    while (scale_note(m, tonic, pos) > hi) pos -= m->n;
    while (scale_note(m, tonic, pos) < lo) pos += m->n;
    return pos;
}

typedef struct {
    int n;
    int step[64], len[64], move[64];   // within a 2-bar phrase
} motif_t;

static void motif_make(rng_t *r, motif_t *mo, int steps2, int sub, double density) {
    static const int MOVES[] = {-2, -1, -1, 0, 1, 1, 2, -3, 3, 1};
    mo->n = 0;
    for (int s = 0; s < steps2 && mo->n < 64; s++) {
        double p = s % sub == 0 ? density * 1.6 : density * 0.6;
        int on = rng_bern(r, p);
        int mv = MOVES[rng_int(r, 10)];
        if (s == 0 || on) {
            mo->step[mo->n] = s;
            mo->move[mo->n] = mv;
            mo->n++;
        }
    }
    for (int i = 0; i < mo->n; i++) {
        int next = i + 1 < mo->n ? mo->step[i + 1] : steps2;
        int len = next - mo->step[i];
        mo->len[i] = len > 4 * sub ? 4 * sub : len;
    }
}

// A lyric line of exactly n words into words (each < 24 chars). Returns n.
static void lyric_line(rng_t *r, const genre_t *g, int n, char words[][24]) {
    int k = 0;
    while (k < n) {
        const char *chunk = rng_bern(r, 0.45) ? g->theme[rng_int(r, 10)]
                                              : COMMON_WORDS[rng_int(r, N_COMMON)];
        while (*chunk && k < n) {
            size_t len = strcspn(chunk, " ");
            snprintf(words[k++], 24, "%.*s", (int)len, chunk);
            chunk += len;
            while (*chunk == ' ') chunk++;
        }
    }
}

static int note_cmp(const void *pa, const void *pb) {
    const jb_note_t *a = pa, *b = pb;
    if (a->t != b->t) return a->t < b->t ? -1 : 1;
    if (a->chan != b->chan) return a->chan - b->chan;
    if (a->key != b->key) return a->key - b->key;
    if (a->dur != b->dur) return a->dur < b->dur ? -1 : 1;
    return a->vel - b->vel;
}

enum { CH_MEL = 0, CH_CHORD = 1, CH_BASS = 2, CH_PAD = 3 };

jb_song_t *jb_compose_song(int genre, int artist, double seconds, uint64_t seed, bool vocals,
                           jb_err_t *err) {
    jb_compose_opts_t o = {.vocals = vocals, .tunes = false};
    return jb_compose_song_opts(genre, artist, seconds, seed, &o, err);
}

// What composing one song needs from bar to bar. The random draws come from r in the
// order the bars ask for them (a song is a function of its seed).
typedef struct {
    const genre_t *g;
    jb_song_t *s;
    builder_t *b;
    rng_t *r;
    const mode_t_ *mode;
    const chord_t *prog;     // (n_prog) the progression, one chord per bar
    int n_prog;
    const char *comp;        // the chords' pattern
    const motif_t *motifs;   // (2) the lead's motifs
    bool vocals, tunes;
    int vocal_c;             // the vocal line's centre
    double beat;             // seconds
    int mel_pos, voc_pos, arp_k, bass_k, instr_phrase;
} song_ctx_t;

// The artist's traits: functions of (genre, artist) only. Returns the vocal centre.
static int artist_traits(jb_song_t *s, const genre_t *g, int genre, int a, bool tunes,
                         builder_t *b) {
    s->tonic = (genre * 7 + a * 5 + 2) % 12;
    s->mode = g->modes[a % 2];
    b->swing = g->swing > 0 ? g->swing + 0.04 * (a % 3 - 1) : 0.0;
    s->voice = VOICES[(genre * 4 + a) % 9];
    int female = strstr(s->voice, "+f") != NULL;
    int vocal_c = (female ? 57 : 47) + 2 * (a % 2);   // within espeak-ng's pitch range
    s->vocal_gain = 0.9f + 0.1f * (float)(a % 3);
    s->eq_low = g->eq_low;
    s->eq_high = g->eq_high;
    int rev = g->reverb + 12 * (a % 3) - 12;
    rev = rev < 0 ? 0 : rev;
    for (int c = 0; c < 16; c++) s->chan[c] = (jb_channel_t){-1, 100, 64, 0, 0};
    s->chan[CH_MEL] = (jb_channel_t){g->mel[a], 100, 64 + 18 * (a % 3 - 1), rev, g->chorus};
    s->chan[CH_CHORD] = (jb_channel_t){g->chord[a], 82, 44, rev, g->chorus};
    s->chan[CH_BASS] = (jb_channel_t){g->bass[a], 104, 64, rev / 3, 0};
    if (g->pad[a] >= 0) s->chan[CH_PAD] = (jb_channel_t){g->pad[a], 64, 84, rev, g->chorus};
    if (g->kit[a] >= 0)
        s->chan[JB_COMPOSE_DRUM_CHANNEL] = (jb_channel_t){g->kit[a], 100, 64, rev / 2, 0};
    if (tunes) {   // the melody in front: lead up, accompaniment down, no pad
        s->chan[CH_MEL].volume = 127;
        s->chan[CH_MEL].reverb = rev / 2;
        s->chan[CH_CHORD].volume = 50;
        s->chan[CH_BASS].volume = 72;
        s->chan[CH_PAD].program = -1;
        s->chan[JB_COMPOSE_DRUM_CHANNEL].volume = 56;
        s->vocal_gain *= 1.6f;
    }
    return vocal_c;
}

// Every pattern has one character per step of a bar (a table typo would read past it).
static int check_patterns(const genre_t *g, jb_err_t *err) {
    size_t steps = (size_t)(g->bpb * g->sub);
    int bad_pat = strlen(g->comp[0]) != steps || strlen(g->comp[1]) != steps ||
                  strlen(g->bass_pat) != steps;
    for (int d = 0; d < 5 && g->drums[d]; d++) {
        const char *colon = strchr(g->drums[d], ':');
        bad_pat |= !colon || strlen(colon + 1) != steps;
    }
    if (bad_pat)
        return jb_err_set(err, JB_EINTERNAL, "compose: genre %s: a pattern is not %zu steps long",
                          g->name, steps);
    return 0;
}

// The chords of one bar in the genre's comping style, and the pad under the whole bar.
static void bar_chords(song_ctx_t *c, int bar, const chord_t *ch, const int *tones, int nt) {
    const genre_t *g = c->g;
    builder_t *b = c->b;
    const int tonic = c->s->tonic;
    for (int st = 0; st < b->steps; st++) {
        int vel = pat_vel(c->r, c->comp[st]);
        if (!vel) continue;
        int nx = st + 1;
        while (nx < b->steps && c->comp[nx] == '.') nx++;
        double t = step_time(b, bar, st), len = step_time(b, bar, nx) - t;
        vel = vel * 85 / 100;
        if (c->tunes) len *= 0.6;
        switch (g->comp_style) {
        case COMP_BLOCK:
            for (int i = 0; i < nt; i++) add_note(b, t, len * 0.92, CH_CHORD, tones[i], vel);
            break;
        case COMP_POWER: {
            int root = nearest((tonic + ch->root) % 12, g->chord_c - 5);
            add_note(b, t, len * 0.85, CH_CHORD, root, vel);
            add_note(b, t, len * 0.85, CH_CHORD, root + 7, vel);
            add_note(b, t, len * 0.85, CH_CHORD, root + 12, vel);
            break;
        }
        case COMP_ARP: {   // up through the chord and the root an octave higher
            int k = c->arp_k++ % (nt + 1);
            int key = k < nt ? tones[k] : tones[0] + 12;
            add_note(b, t, len * 1.5, CH_CHORD, key, vel);
            break;
        }
        case COMP_ALBERTI: {   // low, high, middle, high
            static const int ORD[4] = {0, 2, 1, 2};
            int k = ORD[c->arp_k++ % 4];
            add_note(b, t, len * 1.8, CH_CHORD, tones[k < nt ? k : nt - 1], vel);
            break;
        }
        case COMP_STAB:
            for (int i = 0; i < nt; i++)
                add_note(b, t, b->step_len * 0.8, CH_CHORD, tones[i] + 12, vel);
            break;
        }
    }
    // Pad: the whole bar.
    if (c->s->chan[CH_PAD].program >= 0)
        for (int i = 0; i < nt; i++)
            add_note(b, bar * b->bar_len, b->bar_len * 0.98, CH_PAD, tones[i], 58);
}

// The bass line of one bar (ch: its chord; next: the next bar's, a walk approaches it).
static void bar_bass(song_ctx_t *c, int bar, const chord_t *ch, const chord_t *next) {
    const genre_t *g = c->g;
    builder_t *b = c->b;
    const int tonic = c->s->tonic;
    int root = nearest((tonic + ch->root) % 12, g->bass_c);
    int n_hits = 0;
    for (int st = 0; st < b->steps; st++) n_hits += g->bass_pat[st] != '.';
    for (int st = 0, hit = 0; st < b->steps; st++) {
        int vel = pat_vel(c->r, g->bass_pat[st]);
        int choice = rng_int(c->r, 4), approach = rng_bern(c->r, 0.5) ? 1 : -1;
        if (!vel) continue;
        int nx = st + 1;
        while (nx < b->steps && g->bass_pat[nx] == '.') nx++;
        double t = step_time(b, bar, st), len = step_time(b, bar, nx) - t;
        int key = root;
        switch (g->bass_style) {
        case BASS_ROOT: break;
        case BASS_ROOT5:
            if (c->bass_k++ % 2) key = root + 7 <= g->bass_c + 7 ? root + 7 : root - 5;
            break;
        case BASS_OCT:
            if (c->bass_k++ % 2) key = root + 12;
            break;
        case BASS_WALK:
            if (hit == n_hits - 1) {
                key = nearest((tonic + next->root) % 12, root) + approach;
            } else if (hit > 0) {
                static const int DEG[4] = {1, 2, 1, 3};   // third, fifth, third, seventh
                int d = DEG[choice] < ch->n ? DEG[choice] : 1;
                key = root + ch->iv[d];
            }
            break;
        case BASS_BOOGIE: {
            static const int UP[8] = {0, 4, 7, 9, 10, 9, 7, 4};
            int off = UP[hit % 8];
            if (off == 4) off = ch->iv[1];
            key = root + off;
            break;
        }
        }
        add_note(b, t, len * 0.9, CH_BASS, key, vel);
        hit++;
    }
}

// The drums of one bar, and a snare fill on the last beat of a 4-bar phrase now and then.
static void bar_drums(song_ctx_t *c, int bar) {
    const genre_t *g = c->g;
    builder_t *b = c->b;
    if (c->s->chan[JB_COMPOSE_DRUM_CHANNEL].program < 0) return;
    for (int d = 0; d < 5 && g->drums[d]; d++) {
        int key = atoi(g->drums[d]);
        const char *pat = strchr(g->drums[d], ':') + 1;
        for (int st = 0; st < b->steps; st++) {
            int vel = pat_vel(c->r, pat[st]);
            // Shorter than a step: a note-off must not cut the next hit.
            double len = fmin(0.12, 0.9 * b->step_len);
            if (vel && (key != 49 || bar % 4 == 0))
                add_note(b, step_time(b, bar, st), len, JB_COMPOSE_DRUM_CHANNEL, key, vel);
        }
    }
    int fill = bar % 4 == 3 && g->sub >= 2 && rng_bern(c->r, 0.5);
    for (int st = b->steps - g->sub; st < b->steps; st++) {
        int vel = 70 + rng_int(c->r, 30);
        if (fill)
            add_note(b, step_time(b, bar, st), fmin(0.1, 0.9 * b->step_len),
                     JB_COMPOSE_DRUM_CHANNEL, 38, vel);
    }
}

// A sung 2-bar phrase from bar: one word per beat, a breath on the last beat; half notes
// when fast. Without vocals (or a word that does not fit) the lead plays the note.
static void sung_phrase(song_ctx_t *c, int bar, const chord_t *ch, const chord_t *ch2) {
    const genre_t *g = c->g;
    builder_t *b = c->b;
    rng_t *r = c->r;
    const int tonic = c->s->tonic;
    int every = c->s->tempo > 150 ? 2 : 1;
    int nb = 2 * g->bpb, on[16], n_on = 0;
    for (int k = 0; k < nb - 1; k++) {
        int sing = rng_bern(r, 0.85);
        if (k % every == 0 && (k == 0 || sing)) on[n_on++] = k;
    }
    char words[16][24];
    int sung = 0;
    lyric_line(r, g, n_on, words);
    int oct = 12 * (int)lround((g->mel_c - c->vocal_c) / 12.0);
    for (int i = 0; i < n_on; i++) {
        static const int VMOVES[6] = {-1, 0, 1, 1, -2, 2};
        int k = on[i], kn = i + 1 < n_on ? on[i + 1] : nb - 1;
        const chord_t *cc = k < g->bpb ? ch : ch2;
        c->voc_pos += VMOVES[rng_int(r, 6)];
        if (k % 2 == 0) c->voc_pos = snap_chord(c->mode, tonic, c->voc_pos, cc);
        c->voc_pos = keep_in_range(c->mode, tonic, c->voc_pos, c->vocal_c - 6, c->vocal_c + 7);
        int key = scale_note(c->mode, tonic, c->voc_pos);
        int kb = bar + k / g->bpb, ks = (k % g->bpb) * g->sub;
        double t = step_time(b, kb, ks);
        double len = (kn - k) * c->beat;
        if (c->vocals && add_word(b, words[i], t, len, key)) sung++;
        else
            add_note(b, t, len * (c->tunes ? 0.98 : 0.9), CH_MEL, key + oct, 92);
    }
    if (sung > 0) {   // the words that fit before the end
        if (b->lyr_len) add_text(b, "\n");
        for (int i = 0; i < sung; i++) {
            if (i) add_text(b, " ");
            add_text(b, words[i]);
        }
    }
}

// A played 2-bar phrase from bar: the lead's motif, moved along the scale.
static void played_phrase(song_ctx_t *c, int bar, const chord_t *ch, const chord_t *ch2) {
    const genre_t *g = c->g;
    builder_t *b = c->b;
    const int tonic = c->s->tonic;
    const motif_t *mo = &c->motifs[c->instr_phrase++ % 4 == 2];
    for (int i = 0; i < mo->n; i++) {
        int st = mo->step[i], kb = bar + st / b->steps;
        const chord_t *cc = kb == bar ? ch : ch2;
        c->mel_pos += mo->move[i];
        if (st % b->steps == 0 || (st % g->sub == 0 && mo->len[i] >= 2 * g->sub))
            c->mel_pos = snap_chord(c->mode, tonic, c->mel_pos, cc);
        c->mel_pos = keep_in_range(c->mode, tonic, c->mel_pos, g->mel_c - 8, g->mel_c + 9);
        double t = step_time(b, kb, st % b->steps);
        double len = mo->len[i] * b->step_len;
        int vel = 88 + (st % g->sub == 0 ? 10 : 0) + rng_int(c->r, 9) - 4;
        add_note(b, t, len * (c->tunes ? 0.98 : 0.9), CH_MEL,
                 scale_note(c->mode, tonic, c->mel_pos), vel);
    }
}

// One bar: chords, bass, drums; on even bars a 2-bar melody phrase, even phrases sung,
// odd ones played by the lead.
static void compose_bar(song_ctx_t *c, int bar) {
    const chord_t *ch = &c->prog[bar % c->n_prog];
    const chord_t *next = &c->prog[(bar + 1) % c->n_prog];
    int tones[4], nt = voice_chord(ch, c->s->tonic, c->g->chord_c, tones);
    bar_chords(c, bar, ch, tones, nt);
    bar_bass(c, bar, ch, next);
    bar_drums(c, bar);
    if (bar % 2) return;
    const chord_t *ch2 = &c->prog[(bar + 1) % c->n_prog];
    if (bar / 2 % 2 == 0) sung_phrase(c, bar, ch, ch2);
    else played_phrase(c, bar, ch, ch2);
}

jb_song_t *jb_compose_song_opts(int genre, int artist, double seconds, uint64_t seed,
                                const jb_compose_opts_t *opts, jb_err_t *err) {
    const bool vocals = opts->vocals, tunes = opts->tunes;
    if (genre < 0 || genre >= N_GENRES) {
        jb_err_set(err, JB_EINVAL, "compose: genre %d out of range 0..%d", genre, N_GENRES - 1);
        return NULL;
    }
    if (artist < 0 || artist >= JB_COMPOSE_N_ARTISTS) {
        jb_err_set(err, JB_EINVAL, "compose: artist %d out of range 0..%d", artist,
                   JB_COMPOSE_N_ARTISTS - 1);
        return NULL;
    }
    if (!(seconds > 0.0 && seconds <= 3600.0)) {
        jb_err_set(err, JB_EINVAL, "compose: %g seconds is outside (0, 3600]", seconds);
        return NULL;
    }
    const genre_t *g = &GENRES[genre];
    const int a = artist;
    jb_song_t *s = calloc(1, sizeof *s);
    if (!s) {
        jb_err_set(err, JB_ENOMEM, "compose: out of memory");
        return NULL;
    }
    builder_t b = {.song = s};
    s->genre = genre;
    s->artist = artist;
    s->seconds = seconds;
    s->beats_per_bar = g->bpb;
    int vocal_c = artist_traits(s, g, genre, a, tunes, &b);
    static const int TEMPO_RANK[4] = {1, 3, 0, 2};
    double tempo_c = g->tmin + (g->tmax - g->tmin) * (TEMPO_RANK[a] + 0.5) / 4.0;
    double density = g->density * (0.8 + 0.12 * ((a * 3) % 4)) * (tunes ? 0.6 : 1.0);

    // Song choices: from the seed.
    rng_t rr, *r = &rr;
    rng_seed(r, seed);
    s->tempo = tempo_c * (1.0 + 0.04 * (2.0 * rng_unif(r) - 1.0));
    const char *prog_src = g->progs[rng_bern(r, 0.75) ? a : (a + 1) % 4];
    chord_t prog[16];
    int n_prog = prog_parse(prog_src, prog, 16);
    if (n_prog <= 0) {
        jb_err_set(err, JB_EINTERNAL, "compose: genre %s: bad progression '%s'", g->name, prog_src);
        goto fail;
    }
    if (check_patterns(g, err)) goto fail;
    song_ctx_t c = {.g = g, .s = s, .b = &b, .r = r, .mode = mode_find(s->mode), .prog = prog,
                    .n_prog = n_prog, .vocals = vocals, .tunes = tunes, .vocal_c = vocal_c};
    c.comp = g->comp[rng_bern(r, 0.8) ? a / 2 % 2 : 1 - a / 2 % 2];
    c.beat = 60.0 / s->tempo;
    b.steps = g->bpb * g->sub;
    b.step_len = c.beat / g->sub;
    b.bar_len = c.beat * g->bpb;
    int n_bars = (int)ceil(seconds / b.bar_len);
    motif_t motifs[2];
    motif_make(r, &motifs[0], 2 * b.steps, g->sub, density);
    motif_make(r, &motifs[1], 2 * b.steps, g->sub, density);
    c.motifs = motifs;
    c.mel_pos = scale_pos_near(c.mode, s->tonic, g->mel_c);
    c.voc_pos = scale_pos_near(c.mode, s->tonic, vocal_c);
    for (int bar = 0; bar < n_bars; bar++) compose_bar(&c, bar);
    if (!s->lyrics) add_text(&b, "");
    if (b.failed) {
        jb_err_set(err, JB_ENOMEM, "compose: out of memory");
        goto fail;
    }
    qsort(s->notes, (size_t)s->n_notes, sizeof *s->notes, note_cmp);
    return s;
fail:
    jb_song_destroy(&s);
    return NULL;
}

void jb_song_destroy(jb_song_t **song_p) {
    if (!song_p || !*song_p) return;
    jb_song_t *s = *song_p;
    free(s->notes);
    free(s->words);
    free(s->lyrics);
    free(s);
    *song_p = NULL;
}
