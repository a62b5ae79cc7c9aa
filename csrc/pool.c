/* pool.c — persistent worker threads, and the fork guard.
 *
 * A new task is announced by bumping an atomic generation counter; workers spin
 * briefly on it before sleeping on a condition variable, and the caller spins
 * briefly before sleeping until the workers are done, so back-to-back steps do
 * not pay a sleep/wake each. On Linux the workers are kept off the caller's
 * current CPU: otherwise the scheduler often wakes a worker on the caller's CPU
 * and the two halves run one after the other.
 *
 * Invariants (the pool's variables are written only by the thread holding
 * run_lock, except n_pending, which workers count down):
 *  - a worker starts from the generation current when it was created, so a new
 *    worker (after fork, or when the pool grows) never runs an older task;
 *  - workers are created before a task is published, so n_pending counts
 *    exactly the workers that will see that task;
 *  - every worker acknowledges every task and the caller returns only after
 *    all did, so no worker lags a generation and cur_* are never rewritten
 *    while a worker may still read them.
 *
 * Fork: the prepare handler waits until no thread is inside the fork guard and
 * takes run_lock, so the child never inherits a running task. The parent's
 * workers do not exist in the child: it forgets them and re-initialises every
 * lock and condition variable (glibc condition variables record their waiters,
 * which would be the parent's threads); the pool restarts on its next task. */
#define _GNU_SOURCE
#include "pool.h"
#include <pthread.h>
#ifdef __linux__
#include <sched.h>
#endif
#include <stdatomic.h>
#include <stdlib.h>

#define MAX_WORKERS 256
#define SPIN 4000          /* polls before sleeping: a few tens of µs */

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#elif defined(__aarch64__)
#define CPU_RELAX() __asm__ __volatile__("yield")
#else
#define CPU_RELAX() ((void)0)
#endif

/* ---- pool state ---- */
static pthread_mutex_t run_lock = PTHREAD_MUTEX_INITIALIZER;  /* one task at a time */
static pthread_mutex_t mutex = PTHREAD_MUTEX_INITIALIZER;     /* for wake and done */
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER, done = PTHREAD_COND_INITIALIZER;
static atomic_ulong generation;         /* bumped for each task */
static atomic_int n_pending;            /* workers yet to acknowledge the current task */
static optimc_task cur_task;
static void *cur_arg;
static int cur_workers;                 /* workers that run a share this time */
static int cur_n;                       /* the task's n_workers */
static int n_started;                   /* worker threads alive (excluding the caller) */
static pthread_t threads[MAX_WORKERS];  /* threads[k] is worker k + 1 */
static unsigned long born_at[MAX_WORKERS];  /* generation when worker k was created */
#ifdef __linux__
static int pinned_away_from = -1;       /* the caller CPU the workers avoid */
#endif

/* ---- fork guard state ---- */
static pthread_mutex_t guard_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t guard_cond = PTHREAD_COND_INITIALIZER;
static atomic_int guard_inside;         /* threads between enter and leave */
static atomic_int guard_forking;        /* a fork waits for guard_inside to drain */
static _Thread_local int guard_depth;   /* this thread's nesting of enter */
static atomic_ulong fork_generation;    /* incremented in each child */
static pthread_once_t handlers_once = PTHREAD_ONCE_INIT;

static void guard_drop(void)
{
    /* seq_cst on both sides (here and in before_fork): either the fork sees
     * this thread inside, or this thread sees the fork and wakes it */
    if (atomic_fetch_sub(&guard_inside, 1) == 1 && atomic_load(&guard_forking)) {
        pthread_mutex_lock(&guard_mutex);
        pthread_cond_broadcast(&guard_cond);
        pthread_mutex_unlock(&guard_mutex);
    }
}

static void before_fork(void)
{
    pthread_mutex_lock(&guard_mutex);    /* held until the fork returns */
    atomic_store(&guard_forking, 1);
    int own = guard_depth > 0;           /* the forking thread may be inside itself */
    while (atomic_load(&guard_inside) > own) pthread_cond_wait(&guard_cond, &guard_mutex);
    pthread_mutex_lock(&run_lock);       /* a task outside the guard finishes first too */
    pthread_mutex_lock(&mutex);
}

static void after_fork_in_parent(void)
{
    pthread_mutex_unlock(&mutex);
    pthread_mutex_unlock(&run_lock);
    atomic_store(&guard_forking, 0);
    pthread_cond_broadcast(&guard_cond);
    pthread_mutex_unlock(&guard_mutex);
}

static void after_fork_in_child(void)
{
    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t c = PTHREAD_COND_INITIALIZER;
    run_lock = m;
    mutex = m;
    guard_mutex = m;
    wake = c;
    done = c;
    guard_cond = c;
    n_started = 0;
    atomic_store(&n_pending, 0);
    cur_task = NULL;
    cur_arg = NULL;
    cur_workers = 0;
#ifdef __linux__
    pinned_away_from = -1;
#endif
    atomic_store(&guard_inside, guard_depth > 0);
    atomic_store(&guard_forking, 0);
    atomic_fetch_add(&fork_generation, 1);
}

static void install_fork_handlers(void)
{
    pthread_atfork(before_fork, after_fork_in_parent, after_fork_in_child);
}

void optimc_fork_guard_enter(void)
{
    pthread_once(&handlers_once, install_fork_handlers);
    if (guard_depth++ > 0) return;
    for (;;) {
        atomic_fetch_add(&guard_inside, 1);
        if (!atomic_load(&guard_forking)) return;
        guard_drop();                    /* a fork is waiting: step back until it is done */
        pthread_mutex_lock(&guard_mutex);
        while (atomic_load(&guard_forking)) pthread_cond_wait(&guard_cond, &guard_mutex);
        pthread_mutex_unlock(&guard_mutex);
    }
}

void optimc_fork_guard_leave(void)
{
    if (--guard_depth > 0) return;
    guard_drop();
}

unsigned long optimc_fork_generation(void)
{
    pthread_once(&handlers_once, install_fork_handlers);
    return atomic_load(&fork_generation);
}

/* ---- the pool ---- */

#ifdef __linux__
static void keep_workers_off_caller_cpu(void)
{
    int cpu = sched_getcpu();
    cpu_set_t allowed;
    if (cpu < 0 || cpu == pinned_away_from || sched_getaffinity(0, sizeof allowed, &allowed) != 0) return;
    CPU_CLR(cpu, &allowed);
    if (CPU_COUNT(&allowed) == 0) return;
    for (int k = 0; k < n_started; k++) pthread_setaffinity_np(threads[k], sizeof allowed, &allowed);
    pinned_away_from = cpu;
}
#endif

static void *worker_main(void *p)
{
    int me = (int)(size_t)p;
    unsigned long seen = born_at[me];   /* pthread_create orders this read after the write */
    for (;;) {
        for (int k = 0; k < SPIN && atomic_load_explicit(&generation, memory_order_acquire) == seen; k++)
            CPU_RELAX();
        if (atomic_load_explicit(&generation, memory_order_acquire) == seen) {
            pthread_mutex_lock(&mutex);
            while (atomic_load(&generation) == seen) pthread_cond_wait(&wake, &mutex);
            pthread_mutex_unlock(&mutex);
        }
        /* exactly seen + 1: the next task waits for this worker's acknowledgement */
        seen = atomic_load_explicit(&generation, memory_order_acquire);
        if (me < cur_workers) cur_task(cur_arg, me, cur_n);
        if (atomic_fetch_sub_explicit(&n_pending, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&mutex);
            pthread_cond_signal(&done);
            pthread_mutex_unlock(&mutex);
        }
    }
    return NULL;
}

/* Start threads until workers 1..n-1 exist; returns how many workers exist
 * (the caller included). Called with run_lock held and no task published. */
static int ensure_workers(int n)
{
    unsigned long now = atomic_load(&generation);
    while (n_started < n - 1 && n_started < MAX_WORKERS - 1) {
        int me = n_started + 1;
        born_at[me] = now;
        pthread_t th;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int rc = pthread_create(&th, &attr, worker_main, (void *)(size_t)me);
        pthread_attr_destroy(&attr);
        if (rc != 0) break;
        threads[n_started++] = th;
#ifdef __linux__
        pinned_away_from = -1;   /* the new thread is not placed yet */
#endif
    }
    return n_started + 1;
}

void optimc_pool_run(optimc_task task, void *arg, int n_workers)
{
    pthread_once(&handlers_once, install_fork_handlers);
    if (n_workers <= 1 || pthread_mutex_trylock(&run_lock) != 0) {
        for (int k = 0; k < n_workers; k++) task(arg, k, n_workers);
        return;
    }
    int have = ensure_workers(n_workers);
    if (have == 1) {             /* no thread could be started */
        pthread_mutex_unlock(&run_lock);
        for (int k = 0; k < n_workers; k++) task(arg, k, n_workers);
        return;
    }
#ifdef __linux__
    keep_workers_off_caller_cpu();
#endif
    int helpers = (have < n_workers ? have : n_workers) - 1;
    /* publish the task, then the generation that announces it */
    cur_task = task;
    cur_arg = arg;
    cur_workers = helpers + 1;
    cur_n = n_workers;
    atomic_store_explicit(&n_pending, n_started, memory_order_relaxed);
    pthread_mutex_lock(&mutex);
    atomic_fetch_add_explicit(&generation, 1, memory_order_release);
    pthread_cond_broadcast(&wake);
    pthread_mutex_unlock(&mutex);

    task(arg, 0, n_workers);
    /* shares no helper thread exists for (thread creation failed) */
    for (int k = helpers + 1; k < n_workers; k++) task(arg, k, n_workers);

    for (int k = 0; k < SPIN && atomic_load_explicit(&n_pending, memory_order_acquire) > 0; k++)
        CPU_RELAX();
    if (atomic_load_explicit(&n_pending, memory_order_acquire) > 0) {
        pthread_mutex_lock(&mutex);
        while (atomic_load(&n_pending) > 0) pthread_cond_wait(&done, &mutex);
        pthread_mutex_unlock(&mutex);
    }
    pthread_mutex_unlock(&run_lock);
}
