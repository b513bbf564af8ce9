// jb_html.h: the page a run leaves in its output directory.
//
// OUTDIR/index.html holds, per sample, a player, the artist and genre, the
// lyrics as one <span> per character, and the alignment picture; a small
// script lights the lyrics up as the audio plays, from the alignment of the
// top prior's attention (layer/head `alignment_layer`/`alignment_head`, as the
// reference's align.py and save_html.py use it). Files are written under a
// temporary name and renamed, so a page never appears half-written.
//
// Thread rules: reentrant. Ownership: all inputs are borrowed.
#ifndef JB_HTML_H
#define JB_HTML_H

#include <stdint.h>

#include "jb_err.h"

typedef struct {
    const char *audio_href;     // the sample's audio, relative to OUTDIR (e.g. "level_0/sample_0.wav")
    const char *preview_href;   // quick preview (top level), or NULL
    // Alignment: weights in [0, 1], (n_frames, n_chars) row-major, one row per
    // top-level token of the song and one column per lyric character; NULL when
    // the model has no lyrics.
    const float *alignment;
    int n_frames;
    int n_chars;
    int rows_per_frame;         // alignment rows per animation frame (0: 16, one row per token)
} jb_html_sample_t;

typedef struct {
    const char *title;          // e.g. the job id
    const char *artist;
    const char *genre;
    const char *lyrics;         // the lyrics as the model saw them (one character per token)
    const char *details;        // one line of settings (mode, seconds, temperature...), or NULL
    int n_samples;
    const jb_html_sample_t *samples;
} jb_html_page_t;

// Write OUTDIR/index.html and OUTDIR/align_<i>.png for samples with an alignment.
int jb_html_write(const char *outdir, const jb_html_page_t *page, jb_err_t *err);

// An 8-bit grayscale PNG (zlib), written atomically. pix: (h, w) row-major.
int jb_png_write_gray(const char *path, const uint8_t *pix, int w, int h, jb_err_t *err);

#endif
