/* pool.c — persistent worker threads woken by a condition variable.
 * Fork safety: after fork() the child has none of the parent's threads, so a
 * child handler forgets them and resets the locks; the pool restarts lazily. */
#include "pool.h"
#include <pthread.h>
#include <stdlib.h>

#define MAX_WORKERS 256

static pthread_mutex_t run_lock = PTHREAD_MUTEX_INITIALIZER;  /* one task at a time */
static pthread_mutex_t mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER, done = PTHREAD_COND_INITIALIZER;
static int n_started;                 /* worker threads alive (excluding the caller) */
static unsigned long generation;      /* bumped for each task */
static int n_pending;                 /* workers still running the current task */
static optimc_task cur_task;
static void *cur_arg;
static int cur_workers;                /* workers that run threads this time */
static int cur_n;                      /* the task's n_workers */
static int atfork_set;

static void *worker_main(void *p)
{
    int me = (int)(size_t)p;
    unsigned long seen = 0;
    pthread_mutex_lock(&mutex);
    for (;;) {
        while (generation == seen) pthread_cond_wait(&wake, &mutex);
        seen = generation;
        if (me < cur_workers) {
            optimc_task task = cur_task;
            void *arg = cur_arg;
            int n = cur_n;
            pthread_mutex_unlock(&mutex);
            task(arg, me, n);
            pthread_mutex_lock(&mutex);
            if (--n_pending == 0) pthread_cond_signal(&done);
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
    n_pending = 0;
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
        n_started++;
    }
    return n_started + 1;
}

void optimc_pool_run(optimc_task task, void *arg, int n_workers)
{
    if (n_workers <= 1 || pthread_mutex_trylock(&run_lock) != 0) {
        for (int k = 0; k < n_workers; k++) task(arg, k, n_workers);
        return;
    }
    pthread_mutex_lock(&mutex);
    int have = ensure_workers(n_workers);
    int helpers = (have < n_workers ? have : n_workers) - 1;
    cur_task = task;
    cur_arg = arg;
    cur_workers = helpers + 1;
    cur_n = n_workers;
    n_pending = helpers;
    generation++;
    pthread_cond_broadcast(&wake);
    pthread_mutex_unlock(&mutex);

    task(arg, 0, n_workers);
    /* shares no helper thread exists for (thread creation failed) */
    for (int k = helpers + 1; k < n_workers; k++) task(arg, k, n_workers);

    pthread_mutex_lock(&mutex);
    while (n_pending > 0) pthread_cond_wait(&done, &mutex);
    pthread_mutex_unlock(&mutex);
    pthread_mutex_unlock(&run_lock);
}
