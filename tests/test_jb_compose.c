// test_jb_compose.c: the song composer behind jukebox-mkdataset: names, argument checks,
// determinism, artist traits that do not depend on the seed, events inside the song, the
// melody in its named mode (checked against textbook scales written out here), and the
// vocal line that becomes the lead's when there are no vocals.
#include <stdint.h>
#include <string.h>

#include "jb_compose.h"
#include "jb_test.h"

static int same_song(const jb_song_t *a, const jb_song_t *b) {
    if (a->n_notes != b->n_notes || a->n_words != b->n_words || a->tempo != b->tempo) return 0;
    for (int i = 0; i < a->n_notes; i++) {   // field by field: structs have padding
        const jb_note_t *x = &a->notes[i], *y = &b->notes[i];
        if (x->t != y->t || x->dur != y->dur || x->chan != y->chan || x->key != y->key ||
            x->vel != y->vel)
            return 0;
    }
    for (int i = 0; i < a->n_words; i++) {
        const jb_sung_word_t *x = &a->words[i], *y = &b->words[i];
        if (x->t != y->t || x->dur != y->dur || x->key != y->key || strcmp(x->word, y->word))
            return 0;
    }
    return strcmp(a->lyrics, b->lyrics) == 0;
}

// Pitch classes above the tonic of the textbook modes (blues: minor pentatonic + b5).
static int in_mode(const char *mode, int interval) {
    static const struct { const char *name; const char *pcs; } M[] = {
        {"major", "024579B"}, {"minor", "023578A"}, {"dorian", "023579A"},
        {"mixolydian", "024579A"}, {"harmonic minor", "023578B"}, {"blues", "03567A"}};
    const char hex[] = "0123456789AB";
    for (size_t i = 0; i < sizeof M / sizeof M[0]; i++)
        if (!strcmp(M[i].name, mode)) return strchr(M[i].pcs, hex[interval]) != NULL;
    return -1;
}

int main(void) {
    jb_err_t err;
    int ng = jb_compose_n_genres();
    JB_CHECK(ng >= 6, "at least 6 genres (%d)", ng);
    int names_ok = 1, artists_ok = 1;
    for (int g = 0; g < ng; g++) {
        names_ok &= jb_compose_genre_find(jb_compose_genre_name(g)) == g;
        for (int a = 0; a < JB_COMPOSE_N_ARTISTS; a++) {
            const char *n = jb_compose_artist_name(g, a);
            artists_ok &= n != NULL && n[0] != 0;
            for (int h = 0; h < ng && n; h++)   // artist names are unique over the dataset
                for (int b = 0; b < JB_COMPOSE_N_ARTISTS; b++)
                    if ((h != g || b != a) && !strcmp(n, jb_compose_artist_name(h, b)))
                        artists_ok = 0;
        }
    }
    JB_CHECK(names_ok, "genre names round-trip through jb_compose_genre_find");
    JB_CHECK(artists_ok, "every genre has %d distinct named artists", JB_COMPOSE_N_ARTISTS);
    JB_CHECK(jb_compose_genre_find("nosuch") == -1 && jb_compose_genre_name(ng) == NULL &&
                 jb_compose_artist_name(0, JB_COMPOSE_N_ARTISTS) == NULL,
             "unknown names and indices");

    JB_CHECK(!jb_compose_song(-1, 0, 5, 1, true, &err) && err.code == JB_EINVAL, "genre -1");
    JB_CHECK(!jb_compose_song(ng, 0, 5, 1, true, &err) && err.code == JB_EINVAL, "genre n");
    JB_CHECK(!jb_compose_song(0, JB_COMPOSE_N_ARTISTS, 5, 1, true, &err) && err.code == JB_EINVAL,
             "artist out of range");
    JB_CHECK(!jb_compose_song(0, 0, 0.0, 1, true, &err) && err.code == JB_EINVAL, "0 seconds");
    JB_CHECK(!jb_compose_song(0, 0, 4000.0, 1, true, &err) && err.code == JB_EINVAL, "4000 s");

    const double secs = 12.0;
    int det_ok = 1, seed_ok = 1, bounds_ok = 1, mode_ok = 1, words_ok = 1, traits_ok = 1;
    int lead_ok = 1, tonic_ok = 1, drums_ok = 1;
    for (int g = 0; g < ng; g++) {
        int tonics[JB_COMPOSE_N_ARTISTS];
        for (int a = 0; a < JB_COMPOSE_N_ARTISTS; a++) {
            jb_song_t *s1 = jb_compose_song(g, a, secs, 100 + g, true, &err);
            jb_song_t *s2 = jb_compose_song(g, a, secs, 100 + g, true, &err);
            jb_song_t *s3 = jb_compose_song(g, a, secs, 999 + g, true, &err);
            jb_song_t *nv = jb_compose_song(g, a, secs, 100 + g, false, &err);
            if (!s1 || !s2 || !s3 || !nv) {
                JB_CHECK(0, "compose genre %d artist %d: %s", g, a, err.msg);
                continue;
            }
            det_ok &= same_song(s1, s2);
            seed_ok &= !same_song(s1, s3);
            tonics[a] = s1->tonic;
            // Artist traits: the same for every seed.
            traits_ok &= s1->tonic == s3->tonic && !strcmp(s1->mode, s3->mode) &&
                         !strcmp(s1->voice, s3->voice) && s1->beats_per_bar == s3->beats_per_bar;
            for (int c = 0; c < 16; c++) traits_ok &= s1->chan[c].program == s3->chan[c].program;
            traits_ok &= s1->tempo / s3->tempo > 0.92 && s1->tempo / s3->tempo < 1.09;
            for (int i = 0; i < s1->n_notes; i++) {
                const jb_note_t *n = &s1->notes[i];
                bounds_ok &= n->t >= 0 && n->dur > 0 && n->t + n->dur <= secs + 1e-9 &&
                             n->chan < 16 && n->key < 128 && n->vel >= 1 && n->vel <= 127 &&
                             s1->chan[n->chan].program >= 0;
                if (i) bounds_ok &= n->t >= s1->notes[i - 1].t;
                if (n->chan == 0) {   // melody: in the named mode
                    int iv = ((n->key - s1->tonic) % 12 + 12) % 12;
                    mode_ok &= in_mode(s1->mode, iv) == 1;
                }
            }
            {   // classical has no drum kit; the beat-driven genres always have one
                const char *gn = jb_compose_genre_name(g);
                int kit = s1->chan[JB_COMPOSE_DRUM_CHANNEL].program >= 0;
                if (!strcmp(gn, "classical")) drums_ok &= !kit;
                if (strstr("rock electronic reggae jazz blues", gn)) drums_ok &= kit;
            }
            // Words: in order, inside the song, the lyrics are exactly these words.
            words_ok &= s1->n_words > 0;
            char joined[4096] = "", lyr[4096];
            for (int w = 0; w < s1->n_words; w++) {
                const jb_sung_word_t *x = &s1->words[w];
                words_ok &= x->t >= 0 && x->dur > 0 && x->t + x->dur <= secs + 1e-9 &&
                            (w == 0 || x->t > s1->words[w - 1].t) && x->word[0];
                if (w) strncat(joined, " ", sizeof joined - strlen(joined) - 1);
                strncat(joined, x->word, sizeof joined - strlen(joined) - 1);
            }
            snprintf(lyr, sizeof lyr, "%s", s1->lyrics);
            for (char *p = lyr; *p; p++)
                if (*p == '\n') *p = ' ';
            words_ok &= !strcmp(joined, lyr);
            // Without vocals: no words, the band is the same and the lead plays one note per
            // word on top of its own phrases.
            int lead_v = 0, lead_nv = 0, band_v = 0, band_nv = 0;
            for (int i = 0; i < s1->n_notes; i++) s1->notes[i].chan == 0 ? lead_v++ : band_v++;
            for (int i = 0; i < nv->n_notes; i++) nv->notes[i].chan == 0 ? lead_nv++ : band_nv++;
            lead_ok &= nv->n_words == 0 && nv->lyrics[0] == 0 && band_v == band_nv &&
                       lead_nv == lead_v + s1->n_words;
            jb_song_destroy(&s1);
            jb_song_destroy(&s2);
            jb_song_destroy(&s3);
            jb_song_destroy(&nv);
            JB_CHECK(s1 == NULL, "destroy sets the pointer to NULL");
        }
        for (int a = 0; a < JB_COMPOSE_N_ARTISTS; a++)
            for (int b = a + 1; b < JB_COMPOSE_N_ARTISTS; b++) tonic_ok &= tonics[a] != tonics[b];
    }
    JB_CHECK(det_ok, "same seed, same song");
    JB_CHECK(seed_ok, "another seed, another song");
    JB_CHECK(traits_ok, "artist traits (key, mode, programs, voice, tempo) do not depend on "
                        "the seed");
    JB_CHECK(tonic_ok, "artists of a genre are in different keys");
    JB_CHECK(bounds_ok, "notes sorted, inside the song, on configured channels, valid MIDI");
    JB_CHECK(mode_ok, "melody notes belong to the song's mode");
    JB_CHECK(drums_ok, "no drums in classical; drums in rock, electronic, reggae, jazz, blues");
    JB_CHECK(words_ok, "sung words in order inside the song; lyrics are exactly these words");
    JB_CHECK(lead_ok, "without vocals the lead plays the vocal line; the band is unchanged");

    // Clear tunes: the same artist traits and song choices (tempo, key, mode, programs but
    // the pad's) as without, the lead in front (louder channel, no pad, softer chords,
    // louder vocals), legato and sparser motifs (fewer, longer lead notes).
    int tw_ok = 1, tb_ok = 1, tmix_ok = 1, tlead_ok = 1;
    for (int g = 0; g < ng; g++)
        for (int a = 0; a < JB_COMPOSE_N_ARTISTS; a++) {
            jb_compose_opts_t on = {.vocals = true, .tunes = true}, off = {.vocals = true};
            jb_song_t *t = jb_compose_song_opts(g, a, 30.0, 7 + g, &on, &err);
            jb_song_t *u = jb_compose_song_opts(g, a, 30.0, 7 + g, &off, &err);
            if (!t || !u) {
                JB_CHECK(0, "compose tunes genre %d artist %d: %s", g, a, err.msg);
                jb_song_destroy(&t), jb_song_destroy(&u);
                continue;
            }
            tw_ok &= t->tempo == u->tempo && t->tonic == u->tonic && !strcmp(t->mode, u->mode) &&
                     t->n_words > 0;
            for (int c = 0; c < 16; c++) tw_ok &= c == 3 || t->chan[c].program == u->chan[c].program;
            int nb_t = 0, nb_u = 0, lead_t = 0, lead_u = 0;
            double len_t = 0, len_u = 0;
            for (int i = 0; i < t->n_notes; i++) {
                const jb_note_t *n = &t->notes[i];
                if (n->chan == 2 || n->chan == JB_COMPOSE_DRUM_CHANNEL) nb_t++;
                if (n->chan == 0) lead_t++, len_t += n->dur;
                tmix_ok &= n->chan != 3;   // no pad notes
            }
            for (int i = 0; i < u->n_notes; i++) {
                const jb_note_t *n = &u->notes[i];
                if (n->chan == 2 || n->chan == JB_COMPOSE_DRUM_CHANNEL) nb_u++;
                if (n->chan == 0) lead_u++, len_u += n->dur;
            }
            tb_ok &= nb_t > 0 && nb_u > 0;
            tmix_ok &= t->chan[0].volume > u->chan[0].volume && t->chan[1].volume < u->chan[1].volume &&
                       t->chan[3].program == -1 && t->vocal_gain > u->vocal_gain;
            tlead_ok &= lead_t <= lead_u && len_t / lead_t > len_u / lead_u;
            jb_song_destroy(&t), jb_song_destroy(&u);
        }
    JB_CHECK(tw_ok, "tunes: the same tempo, key, mode and programs (but the pad), with words");
    JB_CHECK(tb_ok, "tunes: bass and drums still play");
    JB_CHECK(tmix_ok, "tunes: the lead louder, chords softer, no pad, vocals louder");
    JB_CHECK(tlead_ok, "tunes: fewer and longer lead notes");
    jb_song_destroy(NULL);
    return jb_test_summary("test_jb_compose");
}
