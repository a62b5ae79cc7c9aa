/* test_pool.c — the thread pool, the fork guard and the run-time settings,
 * from C (tests/test_c_pool.py builds and runs it, also under ThreadSanitizer):
 *   cc -std=c11 -O2 -I../../csrc test_pool.c ../../csrc/{pool,runtime}.c -lpthread
 * Prints "N passed, M failed" and exits non-zero on a failure. The argument
 * "quick" runs fewer repetitions (for the slow sanitizer build). */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "pool.h"
#include "runtime.h"

static int passed, failed;
static int n_forks = 100, max_growth = 48;   /* repetitions; fewer when "quick" */
#define CHECK(cond, ...) do { if (cond) passed++; else { failed++; printf("FAIL: " __VA_ARGS__); printf("\n"); } } while (0)

static void pause_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

/* A task that records which shares ran and how often; helpers finish late, so
 * a caller that returns before every share is done is caught. */
typedef struct {
    int n;
    atomic_int runs[300];
    atomic_int finished;
} count_job;

static void count_task(void *arg, int k, int n_workers)
{
    count_job *job = arg;
    if (k > 0) pause_us(200);
    if (n_workers == job->n && k >= 0 && k < job->n) atomic_fetch_add(&job->runs[k], 1);
    atomic_fetch_add(&job->finished, 1);
}

/* 0 if every share of n ran exactly once and all were done at return */
static int run_and_count(int n)
{
    count_job *job = calloc(1, sizeof *job);
    job->n = n;
    optimc_pool_run(count_task, job, n);
    int bad = atomic_load(&job->finished) != n;
    for (int k = 0; k < n; k++) bad |= atomic_load(&job->runs[k]) != 1;
    pause_us(1000);   /* a stray late run of this task would show now */
    bad |= atomic_load(&job->finished) != n;
    free(job);
    return bad;
}

static void test_every_share_once(void)
{
    int bad = 0;
    for (int rep = 0; rep < 50; rep++) bad += run_and_count(2 + rep % 3);
    CHECK(bad == 0, "%d of 50 runs had a share missing, repeated or unfinished at return", bad);
}

/* Growing the pool: new workers start while older ones are idle after a task. */
static void test_growth(void)
{
    int bad = 0;
    for (int n = 2; n <= max_growth; n++)
        for (int rep = 0; rep < 3; rep++) bad += run_and_count(n);
    /* and shrinking again: the extra workers must only acknowledge */
    for (int rep = 0; rep < 20; rep++) bad += run_and_count(2);
    CHECK(bad == 0, "growing the pool: %d bad runs", bad);
}

/* Children forked after the pool ran start pools of their own that only run
 * their own tasks. */
static void test_fork_children(void)
{
    run_and_count(3);
    int bad = 0;
    for (int i = 0; i < n_forks; i++) {
        run_and_count(2 + i % 3);     /* the parent's pool is warm at every fork */
        pid_t pid = fork();
        if (pid == 0) {
            alarm(20);                   /* a hung child dies instead of hanging the test */
            int child_bad = 0;
            for (int rep = 0; rep < 3; rep++) child_bad += run_and_count(2 + (i + rep) % 4);
            _exit(child_bad ? 3 : 0);
        }
        int status = 0;
        waitpid(pid, &status, 0);
        bad += !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    CHECK(bad == 0, "%d of %d forked children failed", bad, n_forks);
}

/* ---- fork guard ---- */

static atomic_int phase;   /* 1: the kernel is half done, 2: done */

static void *guarded_kernel(void *unused)
{
    (void)unused;
    optimc_fork_guard_enter();
    atomic_store(&phase, 1);
    pause_us(100000);
    atomic_store(&phase, 2);
    optimc_fork_guard_leave();
    return NULL;
}

static void test_fork_waits_for_guarded_kernel(void)
{
    unsigned long gen = optimc_fork_generation();
    atomic_store(&phase, 0);
    pthread_t th;
    pthread_create(&th, NULL, guarded_kernel, NULL);
    while (atomic_load(&phase) == 0) pause_us(100);
    pid_t pid = fork();
    if (pid == 0) {
        alarm(20);
        int ok = atomic_load(&phase) == 2 && optimc_fork_generation() == gen + 1;
        optimc_fork_guard_enter();      /* the child's guard is not held by the parent's thread */
        optimc_fork_guard_leave();
        ok = ok && run_and_count(3) == 0;
        _exit(ok ? 0 : 3);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    pthread_join(th, NULL);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "fork during a guarded kernel: child saw it half done, or a wrong generation, or hung (status %d)", status);
    CHECK(optimc_fork_generation() == gen, "the parent's fork generation changed");
}

/* A thread forking from inside the guard (nested) does not wait for itself. */
static void test_fork_from_inside_guard(void)
{
    unsigned long gen = optimc_fork_generation();
    optimc_fork_guard_enter();
    optimc_fork_guard_enter();
    pid_t pid = fork();
    if (pid == 0) {
        alarm(20);
        optimc_fork_guard_leave();
        optimc_fork_guard_leave();
        _exit(optimc_fork_generation() == gen + 1 ? 0 : 3);
    }
    optimc_fork_guard_leave();
    optimc_fork_guard_leave();
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "fork from inside the guard (status %d)", status);
}

/* A pool task running in another thread (outside the guard) finishes before
 * the fork: the child never sees it partly done. */
static atomic_int slow_started;
static void slow_task(void *arg, int k, int n_workers)
{
    (void)n_workers;
    atomic_int *done_shares = arg;
    atomic_store(&slow_started, 1);
    pause_us(k == 0 ? 50000 : 100000);
    atomic_fetch_add(done_shares, 1);
}

static atomic_int shares_done;
static void *run_slow(void *unused)
{
    (void)unused;
    optimc_pool_run(slow_task, &shares_done, 3);
    return NULL;
}

static void test_fork_waits_for_pool_task(void)
{
    atomic_store(&shares_done, 0);
    atomic_store(&slow_started, 0);
    pthread_t th;
    pthread_create(&th, NULL, run_slow, NULL);
    while (!atomic_load(&slow_started)) pause_us(100);
    pid_t pid = fork();
    if (pid == 0) {
        alarm(20);
        _exit(atomic_load(&shares_done) == 3 && run_and_count(3) == 0 ? 0 : 3);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    pthread_join(th, NULL);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "fork during a pool task: the child saw it unfinished or failed (status %d)", status);
}

/* Many threads enter and leave while others fork: no deadlock, and each child
 * sees the guard empty. */
static atomic_int stop_churn;
static atomic_long churn_count;
static void *churn(void *unused)
{
    (void)unused;
    while (!atomic_load(&stop_churn)) {
        optimc_fork_guard_enter();
        atomic_fetch_add(&churn_count, 1);
        optimc_fork_guard_leave();
    }
    return NULL;
}

static void test_guard_under_contention(void)
{
    pthread_t th[4];
    atomic_store(&stop_churn, 0);
    for (int k = 0; k < 4; k++) pthread_create(&th[k], NULL, churn, NULL);
    int bad = 0;
    for (int i = 0; i < 30; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            alarm(20);
            optimc_fork_guard_enter();
            optimc_fork_guard_leave();
            _exit(0);
        }
        int status = 0;
        waitpid(pid, &status, 0);
        bad += !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    atomic_store(&stop_churn, 1);
    for (int k = 0; k < 4; k++) pthread_join(th[k], NULL);
    CHECK(bad == 0 && atomic_load(&churn_count) > 0, "guard under contention: %d bad children", bad);
}

/* ---- environment variables ---- */

static void test_env_parsing(void)
{
    static const struct { const char *text; int want_rc, want; } threads[] = {
        {NULL, 0, 0}, {"", 0, 0}, {"1", 1, 1}, {"8", 1, 8}, {" 16 ", 1, 16}, {"256", 1, 256},
        {"0", -1, 0}, {"257", -1, 0}, {"100000", -1, 0}, {"99999999999999999999999", -1, 0},
        {"abc", -1, 0}, {"4x", -1, 0}, {"-2", -1, 0}, {"+2", -1, 0}, {"2.5", -1, 0}, {" ", -1, 0},
    };
    for (size_t i = 0; i < sizeof threads / sizeof threads[0]; i++) {
        int out = -7;
        int rc = optimc_parse_num_threads(threads[i].text, &out);
        CHECK(rc == threads[i].want_rc && (rc != 1 || out == threads[i].want),
              "parse_num_threads(%s): rc %d out %d", threads[i].text ? threads[i].text : "NULL", rc, out);
    }
    int cpu = optimc_cpu_level();
    static const char *names[] = {"baseline", "avx2", "avx512"};
    for (int l = 0; l < OPTIMC_N_LEVELS; l++) {
        int out = -7, rc = optimc_parse_simd(names[l], &out);
        CHECK(l <= cpu ? rc == 1 && out == l : rc == -1, "parse_simd(%s): rc %d out %d", names[l], rc, out);
    }
    int out = -7;
    CHECK(optimc_parse_simd(NULL, &out) == 0 && optimc_parse_simd("", &out) == 0, "parse_simd unset");
    CHECK(optimc_parse_simd("avx9", &out) == -1 && optimc_parse_simd("AVX2", &out) == -1
          && optimc_parse_simd(" avx2", &out) == -1, "parse_simd refuses unknown names");

    setenv("OPTIMC_NUM_THREADS", "12", 1);
    CHECK(optimc_env_num_threads(&out) == 1 && out == 12, "env num threads 12");
    setenv("OPTIMC_NUM_THREADS", "0", 1);
    CHECK(optimc_env_num_threads(&out) == -1, "env num threads 0");
    unsetenv("OPTIMC_NUM_THREADS");
    CHECK(optimc_env_num_threads(&out) == 0, "env num threads unset");
    setenv("OPTIMC_SIMD", "baseline", 1);
    CHECK(optimc_env_simd(&out) == 1 && out == OPTIMC_BASELINE, "env simd baseline");
    unsetenv("OPTIMC_SIMD");
}

static void test_settings(void)
{
    optimc_set_num_threads(0);
    CHECK(optimc_get_num_threads() == 1, "num_threads 0 -> 1");
    optimc_set_num_threads(100000);
    CHECK(optimc_get_num_threads() == OPTIMC_MAX_THREADS, "num_threads capped at %d", OPTIMC_MAX_THREADS);
    optimc_set_num_threads(3);
    CHECK(optimc_get_num_threads() == 3, "num_threads 3");
    CHECK(optimc_set_level(OPTIMC_N_LEVELS + 5) == optimc_cpu_level(), "level capped at the CPU's");
    CHECK(optimc_set_level(-3) == OPTIMC_BASELINE && optimc_get_level() == OPTIMC_BASELINE, "level floor");
    optimc_set_thread_threshold(12345);
    CHECK(optimc_get_thread_threshold() == 12345, "threshold");
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "quick") == 0) {
        n_forks = 20;
        max_growth = 24;
    }
    test_every_share_once();
    test_growth();
    test_fork_children();
    test_fork_waits_for_guarded_kernel();
    test_fork_from_inside_guard();
    test_fork_waits_for_pool_task();
    test_guard_under_contention();
    test_env_parsing();
    test_settings();
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
