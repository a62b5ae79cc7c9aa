/* pool.c — persistent worker threads. A new task is announced by bumping an
 * atomic generation counter; workers spin briefly on it before sleeping on a
 * condition variable, and the caller spins briefly before sleeping until the
 * workers are done, so back-to-back steps do not pay a sleep/wake each.
 * On Linux the workers are kept off the caller's current CPU: otherwise the
 * scheduler often wakes a worker on the caller's CPU and the two halves run
 * one after the other.
 * Fork safety: after fork() the child has none of the parent's threads, so a
 * child handler forgets them and resets the locks; the pool restarts lazily. */
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

static pthread_mutex_t run_lock = PTHREAD_MUTEX_INITIALIZER;  /* one task at a time */
static pthread_mutex_t mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER, done = PTHREAD_COND_INITIALIZER;
static int n_started;                   /* worker threads alive (excluding the caller) */
static atomic_ulong generation;         /* bumped for each task */
static atomic_int n_pending;            /* workers yet to acknowledge the current task */
static optimc_task cur_task;
static void *cur_arg;
static int cur_workers;                 /* workers that run threads this time */
static int cur_n;                       /* the task's n_workers */
static int atfork_set;
static pthread_t threads[MAX_WORKERS];
#ifdef __linux__
static int pinned_away_from = -1;       /* the caller CPU the workers avoid */

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
    unsigned long seen = 0;
    for (;;) {
        for (int k = 0; k < SPIN && atomic_load_explicit(&generation, memory_order_acquire) == seen; k++)
            CPU_RELAX();
        if (atomic_load_explicit(&generation, memory_order_acquire) == seen) {
            pthread_mutex_lock(&mutex);
            while (atomic_load(&generation) == seen) pthread_cond_wait(&wake, &mutex);
            pthread_mutex_unlock(&mutex);
        }
        seen = atomic_load_explicit(&generation, memory_order_acquire);
        /* every worker acknowledges every task, so none can lag a generation */
        if (me < cur_workers) cur_task(cur_arg, me, cur_n);
        if (atomic_fetch_sub_explicit(&n_pending, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&mutex);
            pthread_cond_signal(&done);
            pthread_mutex_unlock(&mutex);
        }
    }
    return NULL;
}

static void after_fork_in_child(void)
{
    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t c = PTHREAD_COND_INITIALIZER;
    run_lock = m;
    mutex = m;
    wake = c;
    done = c;
    n_started = 0;
    atomic_store(&n_pending, 0);
#ifdef __linux__
    pinned_away_from = -1;
#endif
}

/* Start threads until workers 1..n-1 exist; returns how many exist. */
static int ensure_workers(int n)
{
    if (!atfork_set) {
        pthread_atfork(NULL, NULL, after_fork_in_child);
        atfork_set = 1;
    }
    while (n_started < n - 1 && n_started < MAX_WORKERS - 1) {
        pthread_t th;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int rc = pthread_create(&th, &attr, worker_main, (void *)(size_t)(n_started + 1));
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
    if (n_workers <= 1 || pthread_mutex_trylock(&run_lock) != 0) {
        for (int k = 0; k < n_workers; k++) task(arg, k, n_workers);
        return;
    }
    int have = ensure_workers(n_workers);
#ifdef __linux__
    keep_workers_off_caller_cpu();
#endif
    int helpers = (have < n_workers ? have : n_workers) - 1;
    /* publish the task, then the generation that announces it */
    cur_task = task;
    cur_arg = arg;
    cur_workers = helpers + 1;
    cur_n = n_workers;
    atomic_store(&n_pending, n_started);
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

/* fork guard (placeholder until the pool rework lands) */
static pthread_rwlock_t fork_rw = PTHREAD_RWLOCK_INITIALIZER;
static unsigned long fork_gen;
static void fg_prepare(void) { pthread_rwlock_wrlock(&fork_rw); }
static void fg_parent(void) { pthread_rwlock_unlock(&fork_rw); }
static void fg_child(void) { pthread_rwlock_t r = PTHREAD_RWLOCK_INITIALIZER; fork_rw = r; fork_gen++; }
static pthread_once_t fg_once = PTHREAD_ONCE_INIT;
static void fg_init(void) { pthread_atfork(fg_prepare, fg_parent, fg_child); }
void optimc_fork_guard_enter(void) { pthread_once(&fg_once, fg_init); pthread_rwlock_rdlock(&fork_rw); }
void optimc_fork_guard_leave(void) { pthread_rwlock_unlock(&fork_rw); }
unsigned long optimc_fork_generation(void) { pthread_once(&fg_once, fg_init); return fork_gen; }
