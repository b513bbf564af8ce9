// jb_compose.h: procedural songs for the synthetic dataset (tools/mkdataset.c).
//
// A song is a pure function of (genre, artist, seconds, song seed, vocals): a list of
// General MIDI note events on 16 channels (channel 9 = drums), the channel setup
// (programs, volume, pan, reverb/chorus sends) and, with vocals, the words to sing with
// the MIDI note and time of each. No audio here: the tool renders the notes with
// FluidSynth and the words with espeak-ng.
//
// Genres are fixed styles (instrumentation, tempo range, metre, swing, mode, chord
// progressions, comping / bass / drum patterns, melody density). Each genre has
// JB_COMPOSE_N_ARTISTS artists: fixed variations of the style (key, tempo, instrument
// substitutions, drum kit, mode, preferred progressions, register, singing voice) that
// depend only on (genre, artist), never on the seed, so artists are learnable.
//
// Randomness: a local xoshiro256** seeded through splitmix64 from the song seed; no
// global state. Thread rules: everything is reentrant; a jb_song_t belongs to its caller.
#ifndef JB_COMPOSE_H
#define JB_COMPOSE_H

#include <stdbool.h>
#include <stdint.h>

#include "jb_err.h"

#define JB_COMPOSE_N_ARTISTS 4
#define JB_COMPOSE_DRUM_CHANNEL 9   // GM channel 10

typedef struct {
    double t;        // onset, seconds from the start of the song
    double dur;      // seconds (note-off at t + dur)
    uint8_t chan;    // 0..15
    uint8_t key;     // MIDI note 0..127
    uint8_t vel;     // 1..127
} jb_note_t;

typedef struct {
    char word[24];   // lower-case ASCII word
    double t;        // onset of its note, seconds
    double dur;      // length of its note, seconds
    uint8_t key;     // MIDI note to sing it on
} jb_sung_word_t;

typedef struct {
    int program;     // GM program 0..127 (drum kit number on channel 9); -1: channel unused
    int volume;      // CC7
    int pan;         // CC10
    int reverb;      // CC91
    int chorus;      // CC93
} jb_channel_t;

typedef struct {
    int genre, artist;           // indices (jb_compose_genre_name / _artist_name)
    double seconds;              // song length
    double tempo;                // beats per minute
    int beats_per_bar;           // 3 or 4
    int tonic;                   // pitch class 0..11 (0 = C)
    const char *mode;            // "major", "minor", "dorian", ... (static string)
    jb_channel_t chan[16];
    jb_note_t *notes;            // (n_notes) sorted by onset; owned by the song
    int n_notes;
    jb_sung_word_t *words;       // (n_words) in order; owned; NULL when no vocals
    int n_words;
    char *lyrics;                // words joined by spaces, one line per phrase ("\n"); owned
    // Singing voice for the renderer (artist-fixed).
    const char *voice;           // espeak-ng voice, e.g. "en+m3" (static string)
    float vocal_gain;            // vocal level relative to the band's RMS
    // Production (genre-fixed): gains of the band below ~200 Hz and above ~3 kHz.
    float eq_low, eq_high;
} jb_song_t;

int jb_compose_n_genres(void);
// Name of genre g ("rock", ...), NULL if out of range. Static string.
const char *jb_compose_genre_name(int g);
// Index of a genre by name, -1 if unknown.
int jb_compose_genre_find(const char *name);
// Artist a of genre g (static string), NULL if out of range.
const char *jb_compose_artist_name(int g, int a);

// Compose a song. seconds in (0, 3600]. Returns NULL and fills err on bad arguments or
// out of memory. The caller frees with jb_song_destroy.
jb_song_t *jb_compose_song(int genre, int artist, double seconds, uint64_t seed, bool vocals,
                           jb_err_t *err);

// Options of jb_compose_song_opts. tunes: "clear tunes" (the default model's data set,
// docs/dataset.md): the same artist traits, tempo, progression and comping choice as
// without it, arranged so that the melody stands out: lead and vocal line louder,
// accompaniment (chords, bass, drums) softer, no pad, chords shorter; the lead's motifs
// sparser (longer notes, 0.6x the onset density) and legato. (The sparser motifs take fewer
// random draws, so the notes and lyrics after the first instrumental phrase differ from
// the song without it.) The melody is a single line at any time, so a pitch tracker
// follows it.
typedef struct {
    bool vocals;
    bool tunes;
} jb_compose_opts_t;
jb_song_t *jb_compose_song_opts(int genre, int artist, double seconds, uint64_t seed,
                                const jb_compose_opts_t *opts, jb_err_t *err);
// Frees the song and sets *song_p to NULL; accepts NULL.
void jb_song_destroy(jb_song_t **song_p);

// splitmix64 step (exposed so the tool derives per-song seeds the same way).
uint64_t jb_compose_mix(uint64_t x);

// Name of a pitch class ("C", "C#", ...).
const char *jb_compose_pitch_name(int pc);

#endif
