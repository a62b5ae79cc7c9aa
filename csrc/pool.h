/* pool.h — a small fork-safe thread pool and a fork guard (internal, plain C + pthreads). */
#ifndef OPTIMC_POOL_H
#define OPTIMC_POOL_H

/* A task runs once on each of n_workers workers: task(arg, k, n_workers). */
typedef void (*optimc_task)(void *arg, int worker, int n_workers);

/* optimc_pool_run: run `task` on n_workers workers, the caller being worker 0,
 * and return when all are done. If the pool is busy (another thread is
 * running a task) or cannot start threads, the caller runs every worker's
 * share itself, so the result is the same either way. A task must not fork. */
void optimc_pool_run(optimc_task task, void *arg, int n_workers);

/* Fork guard. fork() copies memory but only the forking thread, so a child
 * forked while another thread is halfway through a kernel would see half-updated
 * params and state, and inherit whatever locks that thread held.
 *
 * Contract:
 *  - optimc_fork_guard_enter() / optimc_fork_guard_leave() bracket a kernel run
 *    (a whole optimc_step, say). Any number of threads may be inside at once;
 *    enter/leave are a few atomic operations unless a fork is in progress, in
 *    which case enter waits until the fork is done. They nest within a thread.
 *  - fork() (from any thread, through the pthread_atfork handlers this file
 *    installs) waits until no other thread is inside, and keeps new ones out
 *    until the fork returns: a child never inherits a half-run kernel.
 *  - Code between enter and leave must not wait for anything a forking thread
 *    may hold: in the CPython binding, call both with the GIL released (inside
 *    Py_BEGIN/END_ALLOW_THREADS), or a fork from a thread holding the GIL waits
 *    forever.
 *  - optimc_fork_generation() is incremented in every child. A caller that
 *    records it when it takes a lock can tell, on seeing a different value,
 *    that it runs in a child that inherited the lock's state, and reset it.
 *  - The handlers are installed by the first call of any function in this
 *    header, so call optimc_fork_generation() once before a fork can matter
 *    (e.g. when creating an object with a lock). */
void optimc_fork_guard_enter(void);
void optimc_fork_guard_leave(void);
unsigned long optimc_fork_generation(void);

#endif
