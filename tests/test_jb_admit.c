// test_jb_admit.c: admission before decompression (common/wire/jb_admit.h, docs/wire.md 3.1):
// a known job's bounds from its job message (samples, each level's length under the
// receiver's model), the cap for jobs not known, forgetting at the job's end, and that a
// refused bomb costs no allocation (decoded in a child whose address space is capped at
// 8 MB above what it uses: the 16 MiB the claim would take cannot be allocated).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "jb_admit.h"
#include "jb_test.h"
#include "jb_wire.h"

static jb_msg_t codes_hdr(const char *job, int level, int64_t offset, int64_t sample0,
                          int64_t batch, int64_t count) {
    jb_msg_t m;
    jb_msg_init(&m);
    m.type = JB_MSG_CODES;
    snprintf(m.job_id, sizeof m.job_id, "%s", job);
    m.level = level;
    m.offset = offset;
    m.sample0 = sample0;
    m.batch = batch;
    m.count = count;
    return m;
}

int main(void) {
    jb_err_t err = {0};
    jb_admit_model_t md = {.sr = 44100, .levels = 3, .hop = {8, 32, 128}};
    jb_admit_t *a = jb_admit_new(&md, &err);
    JB_CHECK(a != NULL, "table made");
    jb_msg_t job;
    jb_msg_init(&job);
    job.type = JB_MSG_JOB;
    snprintf(job.job_id, sizeof job.job_id, "k");
    jb_msg_set_spec(&job, "{\"n_samples\":2,\"sample_seconds\":0.3,\"total_seconds\":0.2}", &err);
    JB_CHECK_OK(jb_admit_check(a, &job, 0, &err), &err, "job message learnt");
    // 0.3 s = 13230 samples, padded to 104 top tokens = 13312: 1664 / 416 / 104 tokens
    JB_CHECK(jb_admit_level_tokens(a, "k", 0) == 1664 && jb_admit_level_tokens(a, "k", 1) == 416 &&
                 jb_admit_level_tokens(a, "k", 2) == 104,
             "level lengths 1664/416/104 (%lld/%lld/%lld)",
             (long long)jb_admit_level_tokens(a, "k", 0), (long long)jb_admit_level_tokens(a, "k", 1),
             (long long)jb_admit_level_tokens(a, "k", 2));
    jb_msg_t m = codes_hdr("k", 0, 0, -1, 2, 1664);
    JB_CHECK_OK(jb_admit_check(a, &m, 2 * 1664 * 4, &err), &err, "the whole level in one message");
    m = codes_hdr("k", 0, 1000, -1, 1, 665);
    JB_CHECK(jb_admit_check(a, &m, 665 * 4, &err) == -1 && strstr(err.msg, "holds 1664 tokens"),
             "one token past the level refused (%s)", err.msg);
    m = codes_hdr("k", 2, 0, 1, 2, 4);
    JB_CHECK(jb_admit_check(a, &m, 32, &err) == -1 && strstr(err.msg, "the job has 2"),
             "rows past the job's samples refused (%s)", err.msg);
    m = codes_hdr("u", 0, 0, -1, 1, 1 << 22);
    JB_CHECK_OK(jb_admit_check(a, &m, (uint64_t)1 << 24, &err), &err,
                "a job not known: 16 MiB admitted");
    JB_CHECK(jb_admit_check(a, &m, ((uint64_t)1 << 24) + 4, &err) == -1 &&
                 strstr(err.msg, "without a job message"),
             "a job not known: over 16 MiB refused (%s)", err.msg);
    jb_msg_t end;
    jb_msg_init(&end);
    end.type = JB_MSG_END;
    snprintf(end.job_id, sizeof end.job_id, "k");
    JB_CHECK_OK(jb_admit_check(a, &end, 0, &err), &err, "the job's end");
    JB_CHECK(jb_admit_level_tokens(a, "k", 0) == -1, "forgotten after its end");
    JB_CHECK_OK(jb_admit_check(a, &job, 0, &err), &err, "the job again");

    // A bomb: 4 Mi codes (16 MiB) of the 0.3 s job, an LZ4 block of zeros of ~66 KB.
    int32_t *zeros = calloc((size_t)1 << 22, 4);
    jb_msg_t b = codes_hdr("k", 0, 0, -1, 1, 1 << 22);
    b.codes = zeros;
    jb_bytes_t h = {0}, p = {0};
    JB_CHECK_OK(jb_wire_encode(&b, &h, &p, &err), &err, "bomb encoded");
    b.codes = NULL;
    free(zeros);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        long pages = 0;
        FILE *f = fopen("/proc/self/statm", "r");
        if (!f || fscanf(f, "%ld", &pages) != 1) _exit(2);
        fclose(f);
        rlim_t cap = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) + ((rlim_t)8 << 20);
        struct rlimit rl = {cap, cap};
        if (setrlimit(RLIMIT_AS, &rl)) _exit(2);
        jb_msg_t out;
        jb_msg_init(&out);
        jb_err_t e = {0};
        int r1 = jb_wire_decode_admit(h.data, h.len, p.data, p.len, 64, jb_admit_check, a, &out, &e);
        int refused = r1 == -1 && strstr(e.msg, "holds 1664 tokens") != NULL;
        // Without admission the same message needs the 16 MiB: out of memory here.
        int r2 = jb_wire_decode(h.data, h.len, p.data, p.len, 64, &out, &e);
        _exit(refused && r2 == -1 && e.code == JB_ENOMEM ? 0 : 1);
    }
    int status = -1;
    waitpid(pid, &status, 0);
#if defined(__SANITIZE_ADDRESS__)
    (void)status;   // ASan reserves terabytes of address space: no cap possible
#else
    JB_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
             "the bomb is refused within 8 MB of address space (without admission it is not)");
#endif
    jb_bytes_free(&h);
    jb_bytes_free(&p);
    jb_msg_clear(&job);
    jb_admit_destroy(&a);
    JB_CHECK(a == NULL, "destroyed");
    return jb_test_summary("test_jb_admit");
}
