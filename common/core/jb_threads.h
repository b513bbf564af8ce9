// jb_threads.h: how a stage's compute threads wait for work, and how many there are.
//
// The stages of one job run side by side on one host (the front command starts five of
// them) and often beside other work. libgomp's default lets an idle thread spin for
// ~300000 iterations at every barrier before it sleeps, and each process believes the
// cores are its own: five processes on two cores then spend most of their time spinning
// while the thread that has work waits for a core (a 10 s demo job took 124-139 s with
// two busy loops beside it, 12 s with OMP_WAIT_POLICY=PASSIVE).
//
// libgomp reads OMP_WAIT_POLICY and GOMP_SPINCOUNT once, when it is loaded, before main()
// runs, and a setenv() that early does not reach it. An executable that links this module
// therefore executes itself again with OMP_WAIT_POLICY=PASSIVE added, from its
// .preinit_array (run by the dynamic loader before any library's constructor), unless the
// environment already sets OMP_WAIT_POLICY or GOMP_SPINCOUNT: that is the override
// (OMP_WAIT_POLICY=ACTIVE for a machine the stage has to itself). Not under valgrind.
//
// The same start-up hook ties a stage to the front command (pipelines/jukebox): with
// JUKEBOX_PARENT_PID=<pid> in the environment and that process as its parent, the stage
// gets SIGTERM (PR_SET_PDEATHSIG) when the parent exits, also by SIGKILL, and stops as on
// any SIGTERM instead of running on unattended.
//
// Thread rules: call from main() before any parallel region. Nothing here allocates.
#ifndef JB_THREADS_H
#define JB_THREADS_H

// Applies --threads N (N > 0) to OpenMP and OpenBLAS; N <= 0 keeps their defaults
// (OMP_NUM_THREADS / OPENBLAS_NUM_THREADS, else every core). Also keeps this module
// (and its wait-policy default) linked into the executable that calls it.
void jb_threads_set(int n);

// 1 when this process's OpenMP threads sleep when idle (passive), 0 when they spin.
// As set at load: by the environment, else by the default above.
int jb_threads_passive(void);

#endif
