/* pool.h — a small fork-safe thread pool (internal, plain C + pthreads). */
#ifndef OPTIMC_POOL_H
#define OPTIMC_POOL_H

/* A task runs once on each of n_workers workers: task(arg, k, n_workers). */
typedef void (*optimc_task)(void *arg, int worker, int n_workers);

/* optimc_pool_run: run `task` on n_workers workers, the caller being worker 0,
 * and return when all are done. If the pool is busy (another thread is
 * running a task) or cannot start threads, the caller runs every worker's
 * share itself, so the result is the same either way. */
void optimc_pool_run(optimc_task task, void *arg, int n_workers);

/* The fork guard: optimc_fork_guard_enter/leave bracket a kernel run (many
 * threads may be inside at once); fork() waits until none is, so a child never
 * inherits a half-run step. The generation changes in every forked child, so
 * a lock taken before the fork can be recognised as inherited. */
void optimc_fork_guard_enter(void);
void optimc_fork_guard_leave(void);
unsigned long optimc_fork_generation(void);

#endif
