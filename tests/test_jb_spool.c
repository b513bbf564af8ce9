// test_jb_spool.c: the spool (jb_spool.h): appends survive a reopen, torn and
// corrupt tails are cut off with a warning, listing, removal, the lock, and a
// failed write (file size limit = what a full disk looks like) acks nothing.
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "jb_codes.h"
#include "jb_spool.h"
#include "jb_test.h"

static char g_root[256];

static void make_codes(jb_msg_t *m, const char *job, int level, int64_t offset, int n) {
    jb_msg_init(m);
    m->type = JB_MSG_CODES;
    snprintf(m->job_id, sizeof m->job_id, "%s", job);
    m->level = level;
    m->offset = offset;
    m->codebook = 2048;
    int32_t *c = malloc(sizeof(int32_t) * (size_t)n);
    for (int i = 0; i < n; i++) c[i] = (int32_t)((offset + i) * 7919 % 2048);
    jb_err_t err;
    jb_msg_set_codes(m, c, 1, n, &err);
    free(c);
}

typedef struct {
    int n;
    int64_t offsets[64];
    int types[64];
} seen_t;

static int collect(jb_msg_t *m, uint64_t at, void *user) {
    (void)at;
    seen_t *s = user;
    if (s->n < 64) {
        s->offsets[s->n] = m->offset;
        s->types[s->n] = m->type;
    }
    s->n++;
    return 0;
}

static off_t file_size(const char *path) {
    struct stat st;
    return stat(path, &st) ? -1 : st.st_size;
}

static int exists(const char *path) { return access(path, F_OK) == 0; }

static void test_append_reopen(void) {
    char dir[300];
    snprintf(dir, sizeof dir, "%s/a/b", g_root);   // parents are created too
    jb_err_t err = {0};
    jb_spool_t *sp = jb_spool_open(dir, &err);
    JB_CHECK(sp != NULL, "open a new spool (%s)", err.msg);
    if (!sp) return;
    JB_CHECK(jb_spool_n_jobs(sp) == 0, "a new spool has no jobs");
    jb_msg_t job;
    jb_msg_init(&job);
    job.type = JB_MSG_JOB;
    jb_msg_set_job_id(&job, "j1", &err);
    jb_msg_set_spec(&job, "{\"id\":\"j1\"}", &err);
    JB_CHECK_OK(jb_spool_append(sp, "j1", JB_SPOOL_IN, &job, &err), &err, "append JOB to in");
    jb_msg_clear(&job);
    for (int i = 0; i < 5; i++) {
        jb_msg_t m;
        make_codes(&m, "j1", 2, i * 10, 10);
        JB_CHECK_OK(jb_spool_append(sp, "j1", i < 3 ? JB_SPOOL_IN : JB_SPOOL_OUT, &m, &err), &err,
                    "append codes");
        jb_msg_clear(&m);
    }
    jb_msg_t m2;
    make_codes(&m2, "j2", 1, 0, 4);
    JB_CHECK_OK(jb_spool_append(sp, "j2", JB_SPOOL_OUT, &m2, &err), &err, "append to a 2nd job");
    jb_msg_clear(&m2);
    JB_CHECK(jb_spool_count(sp, "j1", JB_SPOOL_IN) == 4 &&
                 jb_spool_count(sp, "j1", JB_SPOOL_OUT) == 2,
             "counts 4 in, 2 out");
    JB_CHECK(jb_spool_n_jobs(sp) == 2 && jb_spool_has(sp, "j2"), "two jobs listed");
    jb_msg_t bad;
    make_codes(&bad, "../x", 0, 0, 1);
    JB_CHECK(jb_spool_append(sp, "../x", JB_SPOOL_IN, &bad, &err) == -1 && err.code == JB_EINVAL,
             "a job id that is not a plain name is refused: %s", err.msg);
    JB_CHECK(jb_spool_append(sp, ".hidden", JB_SPOOL_IN, &bad, &err) == -1,
             "a job id starting with '.' is refused");
    jb_msg_clear(&bad);
    jb_spool_destroy(&sp);
    jb_spool_destroy(&sp);   // twice is fine
    JB_CHECK(sp == NULL, "destroy nulls the pointer");

    // A codes-file reader reads a spool file as a frame stream.
    char path[400];
    snprintf(path, sizeof path, "%s/j1/in.jbc", dir);
    FILE *f = fopen(path, "rb");
    unsigned char magic[4] = {0};
    JB_CHECK(f && fread(magic, 1, 4, f) == 4 && !memcmp(magic, JB_FRAME_MAGIC, 4),
             "in.jbc is a frame stream");
    if (f) fclose(f);

    sp = jb_spool_open(dir, &err);
    JB_CHECK(sp && jb_spool_n_jobs(sp) == 2, "reopen lists both jobs (%s)", err.msg);
    if (!sp) return;
    JB_CHECK(!strcmp(jb_spool_job_id(sp, 0), "j1") && !strcmp(jb_spool_job_id(sp, 1), "j2") &&
             jb_spool_job_id(sp, 2) == NULL, "listed by id");
    JB_CHECK(jb_spool_n_warnings(sp) == 0, "no warnings for clean files");
    seen_t s = {0};
    JB_CHECK_OK(jb_spool_read(sp, "j1", JB_SPOOL_IN, collect, &s, &err), &err, "read in.jbc");
    JB_CHECK(s.n == 4 && s.types[0] == JB_MSG_JOB && s.offsets[1] == 0 && s.offsets[3] == 20,
             "in.jbc: JOB then codes at 0, 10, 20 in order (%d messages)", s.n);
    seen_t o = {0};
    JB_CHECK_OK(jb_spool_read(sp, "j1", JB_SPOOL_OUT, collect, &o, &err), &err, "read out.jbc");
    JB_CHECK(o.n == 2 && o.offsets[0] == 30 && o.offsets[1] == 40, "out.jbc: codes at 30, 40");
    // Appends after a reopen go after the old ones.
    jb_msg_t m;
    make_codes(&m, "j1", 2, 50, 10);
    JB_CHECK_OK(jb_spool_append(sp, "j1", JB_SPOOL_OUT, &m, &err), &err, "append after reopen");
    jb_msg_clear(&m);
    JB_CHECK(jb_spool_count(sp, "j1", JB_SPOOL_OUT) == 3, "out count 3 after reopen + append");
    seen_t none = {0};
    JB_CHECK_OK(jb_spool_read(sp, "nope", JB_SPOOL_IN, collect, &none, &err), &err,
                "reading a job that is not there: nothing, no error");
    JB_CHECK(none.n == 0 && jb_spool_count(sp, "nope", JB_SPOOL_IN) == 0, "no messages");

    // Removal: gone from the listing and the disk, no trash left.
    JB_CHECK_OK(jb_spool_remove(sp, "j1", &err), &err, "remove j1");
    JB_CHECK(!jb_spool_has(sp, "j1") && jb_spool_n_jobs(sp) == 1, "j1 left the listing");
    snprintf(path, sizeof path, "%s/j1", dir);
    JB_CHECK(!exists(path), "j1's directory is gone");
    JB_CHECK_OK(jb_spool_remove(sp, "j1", &err), &err, "removing it again is not an error");
    jb_spool_destroy(&sp);
    // A removal a crash interrupted (the trash name exists) is finished on open.
    snprintf(path, sizeof path, "%s/.trash.j9.1.0", dir);
    mkdir(path, 0777);
    char f2[500];
    snprintf(f2, sizeof f2, "%s/in.jbc", path);
    fclose(fopen(f2, "w"));
    sp = jb_spool_open(dir, &err);
    JB_CHECK(sp && !exists(path) && jb_spool_n_jobs(sp) == 1,
             "a leftover trash directory is deleted on open, not listed");
    jb_spool_destroy(&sp);
}

static void test_torn_tail(void) {
    char dir[300], path[400];
    snprintf(dir, sizeof dir, "%s/torn", g_root);
    jb_err_t err = {0};
    jb_spool_t *sp = jb_spool_open(dir, &err);
    if (!sp) {
        JB_CHECK(0, "open: %s", err.msg);
        return;
    }
    for (int i = 0; i < 3; i++) {
        jb_msg_t m;
        make_codes(&m, "t1", 0, i * 100, 100);
        jb_spool_append(sp, "t1", JB_SPOOL_OUT, &m, &err);
        jb_msg_clear(&m);
        make_codes(&m, "t2", 0, i * 100, 100);
        jb_spool_append(sp, "t2", JB_SPOOL_OUT, &m, &err);
        jb_msg_clear(&m);
        make_codes(&m, "t3", 0, i * 100, 100);
        jb_spool_append(sp, "t3", JB_SPOOL_IN, &m, &err);
        jb_msg_clear(&m);
    }
    jb_spool_destroy(&sp);
    // t1: the last frame cut in the middle (a crash during the write).
    snprintf(path, sizeof path, "%s/t1/out.jbc", dir);
    off_t whole = file_size(path);
    JB_CHECK(truncate(path, whole - 7) == 0, "cut t1's last frame");
    // t2: one byte of the last frame's payload flipped (the checksum catches it).
    snprintf(path, sizeof path, "%s/t2/out.jbc", dir);
    int fd = open(path, O_RDWR);
    unsigned char b;
    pread(fd, &b, 1, whole - 3);
    b ^= 0x40;
    pwrite(fd, &b, 1, whole - 3);
    close(fd);
    // t3: garbage appended after whole frames.
    snprintf(path, sizeof path, "%s/t3/in.jbc", dir);
    FILE *f = fopen(path, "ab");
    fwrite("JBX1garbage", 1, 11, f);
    fclose(f);
    sp = jb_spool_open(dir, &err);
    JB_CHECK(sp != NULL, "a spool with torn tails opens (%s)", err.msg);
    if (!sp) return;
    JB_CHECK(jb_spool_n_warnings(sp) == 3, "three warnings (%d)", jb_spool_n_warnings(sp));
    for (int i = 0; i < jb_spool_n_warnings(sp); i++)
        JB_CHECK(strstr(jb_spool_warning(sp, i), "cut off at byte") != NULL, "warning: %s",
                 jb_spool_warning(sp, i));
    JB_CHECK(jb_spool_count(sp, "t1", JB_SPOOL_OUT) == 2, "t1: 2 whole messages kept");
    JB_CHECK(jb_spool_count(sp, "t2", JB_SPOOL_OUT) == 2, "t2: 2 whole messages kept");
    JB_CHECK(jb_spool_count(sp, "t3", JB_SPOOL_IN) == 3, "t3: 3 whole messages kept");
    snprintf(path, sizeof path, "%s/t3/in.jbc", dir);
    JB_CHECK(file_size(path) == whole, "t3: the file is cut back to its whole frames");
    // Appending after the repair continues a clean stream.
    jb_msg_t m;
    make_codes(&m, "t1", 0, 200, 100);
    JB_CHECK_OK(jb_spool_append(sp, "t1", JB_SPOOL_OUT, &m, &err), &err, "append after repair");
    jb_msg_clear(&m);
    seen_t s = {0};
    JB_CHECK_OK(jb_spool_read(sp, "t1", JB_SPOOL_OUT, collect, &s, &err), &err, "read t1");
    JB_CHECK(s.n == 3 && s.offsets[2] == 200, "t1: the window written again follows the kept ones");
    jb_spool_destroy(&sp);
    sp = jb_spool_open(dir, &err);
    JB_CHECK(sp && jb_spool_n_warnings(sp) == 0, "reopened once more: clean");
    jb_spool_destroy(&sp);
    // jb_codes_load reads a spool file (the codes-file format).
    snprintf(path, sizeof path, "%s/t1/out.jbc", dir);
    jb_codes_t c;
    int r = jb_codes_load(&c, path, &err);
    JB_CHECK(r == -1 && strstr(err.msg, "end message"),
             "jb_codes_load parses every frame and wants the END: %s",
             err.msg);
}

static void test_lock(void) {
    char dir[300];
    snprintf(dir, sizeof dir, "%s/lock", g_root);
    jb_err_t err = {0};
    jb_spool_t *a = jb_spool_open(dir, &err);
    JB_CHECK(a != NULL, "first instance opens");
    jb_spool_t *b = jb_spool_open(dir, &err);
    char want[64];
    snprintf(want, sizeof want, "pid %ld", (long)getpid());
    JB_CHECK(b == NULL && err.code == JB_EUNAVAIL && strstr(err.msg, want),
             "a second instance is refused, naming the holder: %s", err.msg);
    // Another process too.
    pid_t p = fork();
    if (p == 0) {
        jb_err_t e2;
        jb_spool_t *c = jb_spool_open(dir, &e2);
        _exit(c == NULL && strstr(e2.msg, want) ? 0 : 1);
    }
    int st = 0;
    waitpid(p, &st, 0);
    JB_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "another process is refused too");
    jb_spool_destroy(&a);
    b = jb_spool_open(dir, &err);
    JB_CHECK(b != NULL, "after the holder closed, the spool opens");
    jb_spool_destroy(&b);
    // A plain file where the directory should be.
    char file[300];
    snprintf(file, sizeof file, "%s/plainfile", g_root);
    fclose(fopen(file, "w"));
    b = jb_spool_open(file, &err);
    JB_CHECK(b == NULL && err.code == JB_EIO, "a file as spool dir: clear error: %s", err.msg);
}

// A write that fails (here: the file size limit, EFBIG, as ENOSPC would) reports
// JB_EIO naming the file and keeps nothing of the message.
static void test_write_failure(void) {
    char dir[300], path[400];
    snprintf(dir, sizeof dir, "%s/full", g_root);
    jb_err_t err = {0};
    jb_spool_t *sp = jb_spool_open(dir, &err);
    if (!sp) {
        JB_CHECK(0, "open: %s", err.msg);
        return;
    }
    jb_msg_t m;
    make_codes(&m, "f1", 0, 0, 100);
    JB_CHECK_OK(jb_spool_append(sp, "f1", JB_SPOOL_OUT, &m, &err), &err, "first append");
    jb_msg_clear(&m);
    snprintf(path, sizeof path, "%s/f1/out.jbc", dir);
    off_t before = file_size(path);
    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = (rlim_t)before + 64;   // the next frame does not fit
    signal(SIGXFSZ, SIG_IGN);
    setrlimit(RLIMIT_FSIZE, &lim);
    make_codes(&m, "f1", 0, 100, 5000);   // incompressible enough to exceed 64 bytes
    int r = jb_spool_append(sp, "f1", JB_SPOOL_OUT, &m, &err);
    setrlimit(RLIMIT_FSIZE, &old);
    JB_CHECK(r == -1 && err.code == JB_EIO && strstr(err.msg, "out.jbc") && strstr(err.msg, "f1"),
             "a failed write is a clear error: %s", err.msg);
    JB_CHECK(file_size(path) == before, "nothing of the failed message is kept (%lld vs %lld)",
             (long long)file_size(path), (long long)before);
    JB_CHECK(jb_spool_count(sp, "f1", JB_SPOOL_OUT) == 1, "the count did not move");
    JB_CHECK_OK(jb_spool_append(sp, "f1", JB_SPOOL_OUT, &m, &err), &err,
                "with room again, the same append works");
    jb_msg_clear(&m);
    jb_spool_destroy(&sp);
    sp = jb_spool_open(dir, &err);
    JB_CHECK(sp && jb_spool_n_warnings(sp) == 0 && jb_spool_count(sp, "f1", JB_SPOOL_OUT) == 2,
             "reopened: 2 whole messages, no torn tail");
    jb_spool_destroy(&sp);
    // A spool directory that cannot be written (read-only): clear error, no ack.
    if (geteuid() != 0) {   // root writes anyway
        snprintf(dir, sizeof dir, "%s/ro", g_root);
        sp = jb_spool_open(dir, &err);
        chmod(dir, 0555);
        make_codes(&m, "r1", 0, 0, 10);
        r = jb_spool_append(sp, "r1", JB_SPOOL_IN, &m, &err);
        JB_CHECK(r == -1 && err.code == JB_EIO, "read-only spool: %s", err.msg);
        jb_msg_clear(&m);
        chmod(dir, 0755);
        jb_spool_destroy(&sp);
    }
}

// Notes: the producer a job's stream came from (per job) and the model identity (per
// spool), written whole or not at all, kept across a reopen, removed with the job.
static void test_notes(void) {
    char dir[300], buf[128];
    snprintf(dir, sizeof dir, "%s/notes", g_root);
    jb_err_t err = {0};
    jb_spool_t *sp = jb_spool_open(dir, &err);
    if (!sp) {
        JB_CHECK(0, "open: %s", err.msg);
        return;
    }
    JB_CHECK(jb_spool_get_note(sp, "n1", "from", buf, sizeof buf) == -1, "no note yet");
    JB_CHECK_OK(jb_spool_put_note(sp, "n1", "from", "up-1\nE1\n", &err), &err,
                "a job's note (the job directory is created)");
    JB_CHECK_OK(jb_spool_put_note(sp, NULL, "model", "size=1 crc32=0\n", &err), &err,
                "the spool's note");
    JB_CHECK(jb_spool_has(sp, "n1") && jb_spool_count(sp, "n1", JB_SPOOL_IN) == 0,
             "the noted job is listed, with no message");
    JB_CHECK(jb_spool_put_note(sp, "n1", "../x", "x", &err) == -1 && err.code == JB_EINVAL &&
                 jb_spool_put_note(sp, "n1", "lock", "x", &err) == -1,
             "bad note names refused");
    jb_msg_t m;
    make_codes(&m, "n1", 0, 0, 10);
    JB_CHECK_OK(jb_spool_append(sp, "n1", JB_SPOOL_IN, &m, &err), &err, "append beside the note");
    jb_msg_clear(&m);
    // A note that does not fit (file size limit, as a full disk): clear error, the old
    // note stays whole.
    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = 4;
    signal(SIGXFSZ, SIG_IGN);
    setrlimit(RLIMIT_FSIZE, &lim);
    int r = jb_spool_put_note(sp, "n1", "from", "up-2\nE2\n", &err);
    setrlimit(RLIMIT_FSIZE, &old);
    JB_CHECK(r == -1 && err.code == JB_EIO && strstr(err.msg, "n1/from"),
             "a note that cannot be written: %s", err.msg);
    jb_spool_destroy(&sp);
    sp = jb_spool_open(dir, &err);
    JB_CHECK(sp && jb_spool_n_jobs(sp) == 1 && jb_spool_count(sp, "n1", JB_SPOOL_IN) == 1,
             "reopened: one job, its message (the notes are not jobs)");
    if (!sp) return;
    JB_CHECK(jb_spool_get_note(sp, "n1", "from", buf, sizeof buf) == 8 &&
                 !strcmp(buf, "up-1\nE1\n"),
             "the job's note survives whole (%s)", buf);
    JB_CHECK(jb_spool_get_note(sp, NULL, "model", buf, sizeof buf) > 0 &&
                 !strcmp(buf, "size=1 crc32=0\n"), "the spool's note survives");
    JB_CHECK_OK(jb_spool_remove(sp, "n1", &err), &err, "remove");
    JB_CHECK(jb_spool_get_note(sp, "n1", "from", buf, sizeof buf) == -1,
             "the job's note went with it");
    jb_spool_destroy(&sp);
}

int main(void) {
    snprintf(g_root, sizeof g_root, "/tmp/test_jb_spool.%ld", (long)getpid());
    test_append_reopen();
    test_torn_tail();
    test_lock();
    test_write_failure();
    test_notes();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_root);
    if (system(cmd)) fprintf(stderr, "cleanup of %s failed\n", g_root);
    return jb_test_summary("test_jb_spool");
}
