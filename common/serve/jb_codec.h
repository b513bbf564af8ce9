// jb_codec.h: the encoder and decoder stages' work, between audio files and code streams.
//
//   jukebox-encoder: audio file -> jb_audio_read (mono, model rate) -> pad -> jb_vqvae_encode
//                    per level -> CODES + END messages on an endpoint
//   jukebox-decoder: endpoint -> messages gathered per job and level -> jb_vqvae_decode of
//                    one level -> trim to the true length -> jb_audio_write per sample
//
// The stream one audio file becomes (all messages carry the job id):
//   for each chosen level, top (coarsest) first:
//     CODES  level L, offset 0, batch 1, count T_L, codebook, rate, audio_len (several
//            from offset 0 in order when T_L is over 4 Mi codes: JB_WIRE_MAX_RAW)
//     END    level L, offset T_L (the level's length), rate, audio_len
//   END    (no level): the job is complete
// Padding: the VQ-VAE needs a length that is a multiple of every level's hop, so the
// signal is padded with zeros at the end to a multiple of the top level's hop length
// (128 samples in the released model; T_L = padded / hop[L]). audio_len is the true
// length before padding, in samples at `rate`; the decoder cuts its output back to it.
//
// The decoder accepts any stream of these messages: several jobs interleaved, codes of a
// level split over several CODES messages (in order: each offset must equal the tokens
// received so far for that level, or restate tokens already received with the same
// values, as a window resent after a retry does), batches of several samples, JOB
// messages (ignored), ERROR messages (the job fails, with the class of its sysexits code).
// A job is decoded when its END (no level) arrives, or at the end of the stream if the
// chosen level was complete (its END level received). A job that cannot be decoded is
// reported (jb_log) and skipped; the stream goes on. Output files are written complete or
// not at all (jb_audio_write).
//
// Thread rules: one thread per jb_vqvae_t and endpoint, as those modules say.
// Ownership: nothing returned here needs freeing except the jb_vqvae_t of
// jb_codec_load_vqvae (jb_vqvae_destroy).
#ifndef JB_CODEC_H
#define JB_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "jb_audio.h"
#include "jb_err.h"
#include "jb_transport.h"
#include "jb_vqvae.h"

// Opens a VQ-VAE model file and builds the model (max_window as jb_vqvae_new; 0 default).
// A file whose __metadata__ "kind" is not "vqvae" (a prior) is refused (JB_EFORMAT).
// Missing file: JB_ENOENT. NULL + err.
jb_vqvae_t *jb_codec_load_vqvae(const char *path, int64_t max_window, jb_err_t *err);

// --device of the encoder and decoder: with a CUDA device (dev opened by jb_device_open, a
// CUDA build), uploads vq to it (jb_vqvae_cuda.h: needs vs free memory checked first) and
// makes every later jb_vqvae_encode/_decode of vq run there; *handle is then the device
// model, released by jb_codec_detach_device before vq is destroyed. A CPU device: nothing,
// *handle NULL. In a CPU-only build a CUDA device is JB_EUNAVAIL. 0, or -1 + err.
int jb_codec_attach_device(jb_vqvae_t *vq, int is_cuda, void **handle, jb_err_t *err);
void jb_codec_detach_device(jb_vqvae_t *vq, void **handle);

// Smallest max_window that lets every level be encoded and decoded in chunks: twice the
// widest context margin plus one top hop (jb_vqvae_margin).
int64_t jb_codec_min_window(const jb_vqvae_t *vq);

// Sets the OpenMP and OpenBLAS thread counts (n >= 1). For main() only.
void jb_codec_set_threads(int n);

// Length after padding n samples to a multiple of hop (n >= 1, hop >= 1).
int64_t jb_codec_padded_len(int64_t n, int hop);

// Parses a level list such as "0,2" into a bit mask (bit L = level L) for a model of
// `levels` levels. JB_EINVAL for an empty list, a repeat, junk or a level out of range.
int jb_codec_parse_levels(const char *s, int levels, unsigned *mask, jb_err_t *err);

// 1 when s is a valid job id: jb_wire_job_id_ok (1..JB_WIRE_JOB_ID_MAX of [A-Za-z0-9._:-],
// not starting with '.').
int jb_codec_job_id_ok(const char *s);

// A job id from a file name: the base name without its extension, each character
// outside [A-Za-z0-9._:-] (and a leading '.') replaced by '_', cut to JB_WIRE_JOB_ID_MAX; "audio" when that
// leaves nothing; "stdin" for "-". out: at least JB_WIRE_JOB_ID_MAX + 1 bytes.
void jb_codec_job_id_from_path(const char *path, char *out, size_t size);

// x: (n) mono audio at the model's rate, n >= 1. Pads (see above), encodes each level in
// mask (0 = every level) and sends the messages of one job to out. 0 / -1 + err.
int jb_codec_encode_send(jb_vqvae_t *vq, const float *x, int64_t n, const char *job_id,
                         unsigned mask, jb_endpoint_t *out, jb_err_t *err);

// Reads an audio file ("-" = stdin) at the model's rate and does jb_codec_encode_send.
// job_id NULL: from the file name. 0 / -1 + err (jb_audio's codes for bad audio).
int jb_codec_encode_file(jb_vqvae_t *vq, const char *path, const char *job_id, unsigned mask,
                         jb_endpoint_t *out, jb_err_t *err);

// Jobs the decoder holds at once (codes received, END not yet): a stream that opens more
// has the messages of the extra jobs refused (each reported as a failed job).
#define JB_CODEC_MAX_OPEN_JOBS 256

typedef struct {
    int level;               // level to decode; -1 = the lowest (finest) level present
    const char *out;         // output path template, see jb_codec_output_path
    jb_audio_format_t format;   // JB_AUDIO_AUTO: by extension
    // Set non-zero (from a signal handler) to stop: the loop checks it at least every
    // 500 ms and whenever a signal interrupts the wait; unfinished jobs are dropped
    // (nothing written for them). NULL: run until the stream ends.
    volatile const int *stop;
} jb_codec_decode_opts_t;

typedef struct {
    int jobs_done;           // jobs decoded and written
    int jobs_failed;         // jobs reported and skipped
    int files_written;
    int stopped;             // ended by *stop, not by the end of the stream
    int jobs_dropped;        // unfinished jobs dropped when stopped
    int msgs_skipped;        // refused messages that named no job (skipped, not a job)
    int first_fail_code;     // jb_errcode_t of the first failed job (JB_OK if none)
    char first_fail[512];    // its message
} jb_codec_decode_stats_t;

// Output name for one job, sample and level: tmpl with "{job}", "{sample}" and "{level}"
// replaced. When batch > 1 and tmpl has no "{sample}", "_<sample>" goes before the
// extension ("out.wav" -> "out_0.wav", "out_1.wav"). "-" stays "-" (only for batch 1).
// 0 / -1 + err (JB_EINVAL: result too long, or "-" with batch > 1).
int jb_codec_output_path(const char *tmpl, const char *job, int sample, int batch, int level,
                         char *out, size_t size, jb_err_t *err);

// Reads messages from in until the stream ends (or *o->stop) and decodes every job.
// Returns 0 when the stream ended cleanly (stats says how many jobs failed); -1 + err when
// the stream itself is unusable (corrupt framing, read error) or out of memory; jobs
// complete before that point have been written.
int jb_codec_decode_stream(jb_vqvae_t *vq, jb_endpoint_t *in, const jb_codec_decode_opts_t *o,
                           jb_codec_decode_stats_t *stats, jb_err_t *err);

#endif
