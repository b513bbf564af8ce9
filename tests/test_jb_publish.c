// test_jb_publish.c: publishing a file atomically (common/core/jb_publish.h): the content
// arrives whole, the old file stays until the commit, nothing is left behind on success,
// abort or failure, errors name the path and carry the documented class.
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "jb_publish.h"
#include "jb_test.h"

static char dir[256];

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *b = calloc(1, 4096);
    size_t n = b ? fread(b, 1, 4095, f) : 0;
    (void)n;
    fclose(f);
    return b;
}

static int same(const char *path, const char *want) {
    char *got = slurp(path);
    int ok = got && strcmp(got, want) == 0;
    free(got);
    return ok;
}

// Files in dir whose name holds ".tmp.".
static int leftovers(void) {
    int n = 0;
    DIR *d = opendir(dir);
    for (struct dirent *e; d && (e = readdir(d));)
        if (strstr(e->d_name, ".tmp.")) n++;
    if (d) closedir(d);
    return n;
}

int main(void) {
    jb_err_t err = {0};
    snprintf(dir, sizeof dir, "/tmp/test_jb_publish.%ld", (long)getpid());
    if (mkdir(dir, 0755) != 0) {
        JB_CHECK(0, "cannot create %s", dir);
        return jb_test_summary("test_jb_publish");
    }
    char path[400], sub[400];
    snprintf(path, sizeof path, "%s/out.txt", dir);
    umask(022);

    // bytes: whole content, mode 0666 less the umask, no temporary left
    JB_CHECK_OK(jb_publish_bytes(path, "hello\n", 6, &err), &err, "publish bytes");
    JB_CHECK(same(path, "hello\n"), "content arrives whole");
    struct stat st;
    JB_CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0644, "mode 0644 under umask 022 (%o)",
             (unsigned)(st.st_mode & 0777));
    JB_CHECK(leftovers() == 0, "no temporary left after publishing");

    // a stream: the old file stays until the commit
    jb_publish_t p;
    JB_CHECK_OK(jb_publish_open(&p, path, &err), &err, "open");
    FILE *f = jb_publish_stream(&p, &err);
    JB_CHECK(f != NULL && jb_publish_stream(&p, &err) == f, "one stream per publish");
    fprintf(f, "new %d\n", 42);
    fflush(f);
    JB_CHECK(same(path, "hello\n"), "before the commit a reader sees the old file");
    JB_CHECK(leftovers() == 1, "the temporary sits beside the target");
    JB_CHECK_OK(jb_publish_commit(&p, &err), &err, "commit");
    JB_CHECK(same(path, "new 42\n"), "after the commit the new content");
    JB_CHECK(leftovers() == 0 && p.fd == -1 && p.tmp == NULL, "committed: nothing left open");
    jb_publish_abort(&p);   // after commit: no-op
    JB_CHECK(same(path, "new 42\n"), "abort after commit changes nothing");

    // abort: the path as it was, the temporary gone
    JB_CHECK_OK(jb_publish_open(&p, path, &err), &err, "open for abort");
    JB_CHECK(write(p.fd, "half", 4) == 4, "write half");
    jb_publish_abort(&p);
    JB_CHECK(same(path, "new 42\n") && leftovers() == 0, "abort: old content, no temporary");

    // two at once: different temporaries, the last commit wins
    jb_publish_t a, b;
    JB_CHECK(jb_publish_open(&a, path, &err) == 0 && jb_publish_open(&b, path, &err) == 0 &&
                 strcmp(a.tmp, b.tmp) != 0,
             "two publishes of one path: distinct temporaries");
    JB_CHECK(write(a.fd, "a", 1) == 1 && write(b.fd, "b", 1) == 1, "both written");
    JB_CHECK(jb_publish_commit(&a, &err) == 0 && jb_publish_commit(&b, &err) == 0 &&
                 same(path, "b") && leftovers() == 0,
             "the last commit wins, nothing left");

    // a directory that does not exist: JB_EIO (an output that cannot be written) naming the path
    snprintf(sub, sizeof sub, "%s/nodir/x.txt", dir);
    err = (jb_err_t){0};
    JB_CHECK(jb_publish_bytes(sub, "x", 1, &err) != 0 && err.code == JB_EIO &&
                 strstr(err.msg, "nodir/x.txt"),
             "missing directory: JB_EIO naming the path (%s)", err.msg);
    // the rename fails (the target is a non-empty directory): JB_EIO, temporary removed
    snprintf(sub, sizeof sub, "%s/adir", dir);
    char inner[450];
    snprintf(inner, sizeof inner, "%s/keep", sub);
    mkdir(sub, 0755);
    jb_publish_bytes(inner, "k", 1, &err);
    err = (jb_err_t){0};
    JB_CHECK(jb_publish_bytes(sub, "x", 1, &err) != 0 && err.code == JB_EIO &&
                 strstr(err.msg, "adir") && strstr(err.msg, "write failed"),
             "rename over a directory: JB_EIO naming the path (%s)", err.msg);
    JB_CHECK(leftovers() == 0 && same(inner, "k"), "  temporary removed, the directory intact");
    // commit without open
    jb_publish_t none = {.fd = -1};
    JB_CHECK(jb_publish_commit(&none, &err) != 0 && err.code == JB_EINVAL, "commit of nothing: EINVAL");

    // a relative path in the current directory: the directory synced is "."
    char cwd[512];
    if (getcwd(cwd, sizeof cwd) && chdir(dir) == 0) {
        JB_CHECK_OK(jb_publish_bytes("rel.txt", "r", 1, &err), &err, "relative path");
        JB_CHECK_OK(jb_publish_sync_dir("rel.txt", &err), &err, "sync_dir of a bare name");
        JB_CHECK(chdir(cwd) == 0, "back");
    }
    JB_CHECK_OK(jb_publish_sync_dir("/top", &err), &err, "sync_dir of a file in /");

    unlink(inner), rmdir(sub);
    snprintf(sub, sizeof sub, "%s/rel.txt", dir);
    unlink(sub), unlink(path), rmdir(dir);
    return jb_test_summary("test_jb_publish");
}
