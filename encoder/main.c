// jukebox-encoder: audio file -> VQ-VAE codes of every level (or --levels), as a frame
// stream on stdout, in a codes file or on a ZeroMQ endpoint. The work is jb_codec_encode_file.
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <unistd.h>

#include "jb_codec.h"
#include "jb_device.h"
#include "jb_log.h"

static void usage(FILE *f) {
    fprintf(f,
"Usage: jukebox-encoder --model VQVAE.safetensors [options] [AUDIO]\n"
"\n"
"Encodes an audio file into the discrete codes of the Jukebox VQ-VAE and writes them as a\n"
"frame stream (the pipeline's wire format): to stdout, to a codes file, or to a ZeroMQ peer.\n"
"\n"
"  AUDIO, -i, --in FILE      audio to encode: WAV, FLAC, OGG/Vorbis, MP3, AIFF, ... (any\n"
"                            format libsndfile reads); \"-\" reads stdin. Channels are mixed\n"
"                            down to mono (mean) and resampled to the model's rate (44100 Hz\n"
"                            for the released model) with libsoxr.\n"
"  -o, --out ENDPOINT        where the codes go (default \"-\", stdout): \"-\", a codes file\n"
"                            (written under a temporary name and renamed when complete), or\n"
"                            tcp://HOST:PORT / ipc://PATH (ZeroMQ; '@' before it to bind).\n"
"                            Codes are not written to a terminal.\n"
"  -m, --model FILE          VQ-VAE model file (safetensors with kind \"vqvae\"). Required.\n"
"  -l, --levels LIST         levels to encode, comma-separated, e.g. 0,2 (default: every\n"
"                            level; 0 = bottom, hop 8; 1 = middle, hop 32; 2 = top, hop 128).\n"
"  -j, --job ID              job id carried by every message (default: the file name\n"
"                            without extension; characters outside [A-Za-z0-9._:-] become _).\n"
"  -d, --device DEV          cpu, cuda or cuda:N (default cpu): where the VQ-VAE runs.\n"
"  -t, --threads N           compute threads (OpenMP and OpenBLAS; default: their own).\n"
"  -w, --window SAMPLES      largest pass of the VQ-VAE in samples (default 524288, ~12 s;\n"
"                            at least 2 x the widest context + 128: 92288 for the released\n"
"                            model, less is refused):\n"
"                            longer audio is encoded in overlapping chunks, so memory stays\n"
"                            bounded; the codes equal a one-pass encode.\n"
"  -q, --quiet               only errors on stderr.   -v, --verbose   debug lines too.\n"
"  -h, --help                this text.\n"
"\n"
"Padding: the audio is padded with zeros at the end to a multiple of the top level's hop\n"
"length (128 samples), so level L has ceil(n / 128) * 128 / hop_L codes. The true length n\n"
"is recorded in the messages (audio_len); jukebox-decoder cuts its output back to it.\n"
"\n"
"Stream: per level, top first, a CODES message (level, offset 0, all codes) and an END of\n"
"the level; then an END of the job.\n"
"\n"
"Exit codes: 0 done; 64 bad usage; 65 bad input data (corrupt, truncated, empty or\n"
"unsupported audio; a model file that is not a VQ-VAE); 66 audio or model file missing;\n"
"69 ZeroMQ peer unavailable or reader of the pipe gone, or the device unusable (no CUDA\n"
"build, driver or GPU; not enough device memory is 70); 70 internal error or out of memory;\n"
"74 writing the codes failed.\n"
"\n"
"Example: jukebox-encoder -m vqvae.safetensors song.wav > song.jbc\n");
}

int main(int argc, char **argv) {
    const char *in = NULL, *out = "-", *model = NULL, *levels = NULL, *job = NULL;
    const char *device = "cpu";
    int threads = 0;
    long long window = 0;
    jb_log_set_stage("encoder");
    static const struct option opts[] = {
        {"in", required_argument, 0, 'i'},      {"out", required_argument, 0, 'o'},
        {"model", required_argument, 0, 'm'},   {"levels", required_argument, 0, 'l'},
        {"job", required_argument, 0, 'j'},     {"threads", required_argument, 0, 't'},
        {"window", required_argument, 0, 'w'},  {"quiet", no_argument, 0, 'q'},
        {"verbose", no_argument, 0, 'v'},       {"help", no_argument, 0, 'h'},
        {"device", required_argument, 0, 'd'},  {0, 0, 0, 0},
    };
    int c;
    char *end;
    while ((c = getopt_long(argc, argv, "i:o:m:l:j:t:w:d:qvh", opts, NULL)) != -1) {
        switch (c) {
        case 'i': in = optarg; break;
        case 'o': out = optarg; break;
        case 'm': model = optarg; break;
        case 'l': levels = optarg; break;
        case 'j': job = optarg; break;
        case 'd': device = optarg; break;
        case 't':
            threads = (int)strtol(optarg, &end, 10);
            if (*end || threads < 1 || threads > 1024) {
                fprintf(stderr, "jukebox-encoder: --threads: expected 1..1024, got '%s'\n", optarg);
                return EX_USAGE;
            }
            break;
        case 'w':
            window = strtoll(optarg, &end, 10);
            if (*end || window < 1) {
                fprintf(stderr, "jukebox-encoder: --window: expected a sample count, got '%s'\n",
                        optarg);
                return EX_USAGE;
            }
            break;
        case 'q': jb_log_set_level(JB_ERROR); break;
        case 'v': jb_log_set_level(JB_DEBUG); break;
        case 'h': usage(stdout); return 0;
        default:
            fprintf(stderr, "Try 'jukebox-encoder --help'.\n");
            return EX_USAGE;
        }
    }
    if (optind < argc) {
        if (in || optind + 1 < argc) {
            fprintf(stderr, "jukebox-encoder: one audio file at a time\n");
            return EX_USAGE;
        }
        in = argv[optind];
    }
    if (!in || !model) {
        fprintf(stderr, "jukebox-encoder: %s\nTry 'jukebox-encoder --help'.\n",
                !model ? "--model is required" : "no audio file given");
        return EX_USAGE;
    }
    if (!strcmp(out, "-") && isatty(1)) {
        fprintf(stderr, "jukebox-encoder: not writing binary codes to a terminal; "
                        "redirect stdout or use -o FILE\n");
        return EX_USAGE;
    }
    jb_err_t err = {0};
    if (job && !jb_codec_job_id_ok(job)) {
        fprintf(stderr, "jukebox-encoder: --job '%s': use 1..%d of [A-Za-z0-9._:-]\n", job,
                JB_WIRE_JOB_ID_MAX);
        return EX_USAGE;
    }
    jb_device_t dev;
    if (jb_device_parse(device, &dev, &err) || jb_device_open(&dev, &err)) {
        jb_log(JB_ERROR, "%s", err.msg);
        return jb_err_exit_code(err.code);
    }
    if (threads) jb_codec_set_threads(threads);
    jb_vqvae_t *vq = jb_codec_load_vqvae(model, window, &err);
    if (!vq) {
        jb_log(JB_ERROR, "%s", err.msg);
        return jb_err_exit_code(err.code);
    }
    if (window && window < jb_codec_min_window(vq)) {
        fprintf(stderr, "jukebox-encoder: --window %lld: this model needs at least %lld\n",
                window, (long long)jb_codec_min_window(vq));
        jb_vqvae_destroy(&vq);
        return EX_USAGE;
    }
    unsigned mask = 0;
    if (levels && jb_codec_parse_levels(levels, jb_vqvae_hparams(vq)->levels, &mask, &err)) {
        fprintf(stderr, "jukebox-encoder: %s\n", err.msg);
        jb_vqvae_destroy(&vq);
        return EX_USAGE;
    }
    void *on_dev = NULL;
    if (jb_codec_attach_device(vq, dev.is_cuda, &on_dev, &err)) {
        jb_log(JB_ERROR, "%s", err.msg);
        jb_vqvae_destroy(&vq);
        return jb_err_exit_code(err.code);
    }
    jb_endpoint_t *ep = jb_endpoint_open_out(out, NULL, &err);
    int rc = 0;
    if (!ep || jb_codec_encode_file(vq, in, job, mask, ep, &err) ||
        jb_endpoint_close(&ep, &err)) {
        jb_log(JB_ERROR, "%s", err.msg);
        rc = jb_err_exit_code(err.code);
        jb_endpoint_destroy(&ep);   // removes a half-written codes file
    }
    jb_codec_detach_device(vq, &on_dev);
    jb_vqvae_destroy(&vq);
    return rc;
}
