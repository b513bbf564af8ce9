// jb_threads.c: see jb_threads.h.
#include "jb_threads.h"

#include <omp.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <unistd.h>
#include <string.h>
#include <strings.h>

#include <cblas.h>

static int g_passive;   // what the environment said when the libraries were loaded

// getenv() does not work yet in a preinit function (libc sets environ afterwards): the
// loader passes the environment as envp.
static const char *env_get(char **envp, const char *name) {
    size_t n = strlen(name);
    for (; envp && *envp; envp++)
        if (!strncmp(*envp, name, n) && (*envp)[n] == '=') return *envp + n + 1;
    return NULL;
}

// Runs first in the process, before the shared libraries' constructors (the dynamic loader
// calls an executable's DT_PREINIT_ARRAY first) and before libc has set environ, so a
// setenv() here would not reach libgomp. Without OMP_WAIT_POLICY or GOMP_SPINCOUNT the
// process executes itself again (/proc/self/exe, same pid, same arguments) with
// OMP_WAIT_POLICY=PASSIVE added: a few milliseconds once, at start. Not under valgrind
// (its preload library in LD_PRELOAD), which would lose the process on the exec.
static void jb_threads_preinit(int argc, char **argv, char **envp) {
    (void)argc;
    const char *wp = env_get(envp, "OMP_WAIT_POLICY"), *sc = env_get(envp, "GOMP_SPINCOUNT");
    const char *pre = env_get(envp, "LD_PRELOAD");
    if (!wp && !sc && !(pre && strstr(pre, "vgpreload"))) {
        size_t n = 0;
        while (envp && envp[n]) n++;
        char **ne = malloc((n + 2) * sizeof *ne);
        if (ne) {
            for (size_t i = 0; i < n; i++) ne[i] = envp[i];
            ne[n] = "OMP_WAIT_POLICY=PASSIVE";
            ne[n + 1] = NULL;
            execve("/proc/self/exe", argv, ne);   // returns only on failure: go on as is
            free(ne);
        }
    }
    g_passive = wp ? strcasecmp(wp, "passive") == 0 : (sc && strcmp(sc, "0") == 0);
    // JUKEBOX_PARENT_PID: stop with the front command that started this stage, even
    // when it is killed with SIGKILL (no trap runs then): SIGTERM, the stage's own clean
    // stop, when the parent exits. Only for a direct child of that process.
    const char *pp = env_get(envp, "JUKEBOX_PARENT_PID");
    char *end = NULL;
    long want = pp ? strtol(pp, &end, 10) : 0;
    if (pp && end != pp && !*end && want > 1 && getppid() == (pid_t)want) {
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != (pid_t)want) raise(SIGTERM);   // it exited before the prctl
    }
}

__attribute__((section(".preinit_array"), used))
static void (*const jb_threads_preinit_p)(int, char **, char **) = jb_threads_preinit;

void jb_threads_set(int n) {
    if (n <= 0) return;
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
}

int jb_threads_passive(void) { return g_passive; }
