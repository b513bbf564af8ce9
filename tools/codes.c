// jukebox-codes: look into a codes file (OUTDIR/codes.jbc, jukebox-encoder output).
//
//   jukebox-codes info FILE                  job, spec, levels, lengths
//   jukebox-codes dump FILE [-l L] [-s S]    the codes as text, one line per level and sample
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include "jb_codes.h"
#include "jb_log.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: jukebox-codes info FILE\n"
            "       jukebox-codes dump FILE [--level L] [--sample S]\n"
            "\n"
            "info: the job id, its spec, the samples and the codes per level.\n"
            "dump: the codes as text: a line 'level L sample S:' followed by the codes,\n"
            "      separated by spaces (every level and sample unless chosen).\n"
            "FILE: a codes file ('-' for stdin): a run's codes.jbc or jukebox-encoder output.\n"
            "exit codes: 0 ok, 64 bad usage, 65 not a codes file, 66 missing file.\n");
}

int main(int argc, char **argv) {
    jb_log_set_stage("codes");
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? EX_USAGE : 0;
    }
    const char *cmd = argv[1];
    int level = -1, sample = -1;
    static const struct option longs[] = {{"level", 1, 0, 'l'}, {"sample", 1, 0, 's'},
                                          {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    optind = 2;
    int c;
    while ((c = getopt_long(argc, argv, "l:s:h", longs, NULL)) != -1) {
        char *end;
        switch (c) {
        case 'l': level = (int)strtol(optarg, &end, 10); if (*end || level < 0) return usage(stderr), EX_USAGE; break;
        case 's': sample = (int)strtol(optarg, &end, 10); if (*end || sample < 0) return usage(stderr), EX_USAGE; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return EX_USAGE;
        }
    }
    if (optind != argc - 1 || (strcmp(cmd, "info") && strcmp(cmd, "dump"))) {
        usage(stderr);
        return EX_USAGE;
    }
    jb_codes_t codes = {0};
    jb_err_t err = {0};
    if (jb_codes_load(&codes, argv[optind], &err)) {
        fprintf(stderr, "jukebox-codes: %s\n", err.msg);
        return jb_err_exit_code(err.code);
    }
    int rc = 0;
    if (!strcmp(cmd, "info")) {
        printf("job: %s\nsamples: %d\ncodebook: %lld\n", codes.job_id, codes.n_samples,
               (long long)codes.codebook);
        if (codes.sample_rate > 0) printf("sample rate: %lld\n", (long long)codes.sample_rate);
        if (codes.audio_len > 0) printf("audio length: %lld samples\n", (long long)codes.audio_len);
        for (int l = codes.levels - 1; l >= 0; l--)
            printf("level %d: %lld codes%s\n", l, (long long)jb_codes_len(&codes, l),
                   codes.complete[l] ? "" : " (incomplete)");
        if (codes.spec) printf("spec: %s\n", codes.spec);
    } else {
        if (level >= codes.levels || sample >= codes.n_samples) {
            fprintf(stderr, "jukebox-codes: the file has levels 0..%d and samples 0..%d\n",
                    codes.levels - 1, codes.n_samples - 1);
            rc = EX_USAGE;
        }
        for (int l = codes.levels - 1; l >= 0 && !rc; l--) {
            if (level >= 0 && l != level) continue;
            for (int s = 0; s < codes.n_samples; s++) {
                if (sample >= 0 && s != sample) continue;
                const int32_t *row = jb_codes_row(&codes, l, s);
                int64_t n = jb_codes_len(&codes, l);
                printf("level %d sample %d:", l, s);
                for (int64_t i = 0; i < n; i++) printf(" %d", row[i]);
                printf("\n");
            }
        }
    }
    jb_codes_free(&codes);
    return rc;
}
