// jb_outdir.h: what a finished job leaves for a person: OUTDIR/
//
//   job.json              the job spec
//   labels.json           per level, the labels the stage used (ids, cleaned lyrics)
//   codes.jbc             codes of every level (jukebox continue / upsample read it)
//   level_2/sample_<i>.wav  quick preview decoded from the top codes
//   level_1/sample_<i>.wav  decoded from the middle codes
//   level_0/sample_<i>.wav  the result, decoded from the bottom codes
//   index.html, align_<i>.png   the page (jb_html.h)
// or, for a job that failed, OUTDIR/error.json {"job", "level", "code", "error"}.
//
// The directory is built as ROOT/.<id>.partial and renamed to ROOT/<id> when
// complete, so a reader never sees half a run; an existing ROOT/<id> is not
// overwritten (the new one goes to ROOT/<id>.1, .2, ...).
//
// Thread rules: one call at a time per jb_vqvae_t. Ownership: inputs borrowed.
#ifndef JB_OUTDIR_H
#define JB_OUTDIR_H

#include <stdint.h>

#include "jb_codes.h"
#include "jb_err.h"
#include "jb_vqvae.h"

typedef struct {
    const jb_codes_t *codes;       // the job's codes (levels complete or partial)
    const char *labels[JB_CODES_MAX_LEVELS];   // END(level) texts (JSON) or NULL
    // Alignment from the top prior (ALIGN message) or NULL: (n_samples, rows, cols)
    // weights in [0, 1], one row per JB_STAGE_ALIGN_TOKENS top-level tokens, and the
    // lyrics as the model saw them (cols characters).
    const float *alignment;
    int64_t align_tokens;
    int align_cols;
    const char *align_lyrics;
    // Audio already decoded (the collector decodes the bottom level while its codes
    // stream in): audio[l]: (n_samples, audio_len[l]) or NULL to decode here.
    const float *audio[JB_CODES_MAX_LEVELS];
    int64_t audio_len[JB_CODES_MAX_LEVELS];
} jb_outdir_job_t;

// Decodes every level present and writes the run directory. *final_dir (may be
// NULL) receives the directory written (malloc'd; caller frees). 0 / -1 + err.
int jb_outdir_write(const char *root, jb_vqvae_t *vq, const jb_outdir_job_t *job,
                    char **final_dir, jb_err_t *err);

// A failed job: ROOT/<id>/error.json (same atomic rename). 0 / -1 + err.
int jb_outdir_write_error(const char *root, const char *job_id, int level, int code,
                          const char *message, jb_err_t *err);

#endif
