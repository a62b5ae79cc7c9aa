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

#endif
