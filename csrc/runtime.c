/* runtime.c — run-time settings of the engine: the SIMD level in use and the
 * threads a large step is split over (plain C, no Python). */
#define _GNU_SOURCE
#include "runtime.h"
#include "kernels.h"
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef __linux__
#include <sched.h>
#endif

/* The settings are read by steps running in any thread while another thread
 * may set them, so they are atomics (relaxed: each is one independent value). */

/* ---- SIMD level ---- */

static const char *level_names[OPTIMC_N_LEVELS] = {"baseline", "avx2", "avx512"};
static atomic_int current_level = -1;   /* -1: not yet read */

const char *optimc_level_name(int level)
{
    return level >= 0 && level < OPTIMC_N_LEVELS ? level_names[level] : "unknown";
}

int optimc_cpu_level(void)
{
#ifdef OPTIMC_HAVE_X86_LEVELS
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")
        && __builtin_cpu_supports("avx512dq"))
        return OPTIMC_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return OPTIMC_AVX2;
#endif
    return OPTIMC_BASELINE;
}

int optimc_parse_simd(const char *text, int *out)
{
    if (!text || !*text) return 0;
    for (int l = 0; l < OPTIMC_N_LEVELS; l++) {
        if (strcmp(text, level_names[l]) == 0) {
            if (l > optimc_cpu_level()) return -1;
            *out = l;
            return 1;
        }
    }
    return -1;
}

int optimc_env_simd(int *out) { return optimc_parse_simd(getenv("OPTIMC_SIMD"), out); }

int optimc_set_level(int level)
{
    int cpu = optimc_cpu_level();
    if (level < 0) level = 0;
    if (level > cpu) level = cpu;
    atomic_store_explicit(&current_level, level, memory_order_relaxed);
    return level;
}

int optimc_get_level(void)
{
    int level = atomic_load_explicit(&current_level, memory_order_relaxed);
    if (level < 0) {
        int unread = -1;
        if (optimc_env_simd(&level) != 1) level = optimc_cpu_level();
        /* a concurrent set wins over the first read */
        if (!atomic_compare_exchange_strong(&current_level, &unread, level)) level = unread;
    }
    return level;
}

/* ---- CPU features (runtime.h) ---- */

static atomic_int feature_on[OPTIMC_N_FEATURES] = {1, 1, 1};   /* not switched off (tests switch them) */

int optimc_cpu_has(optimc_feature f)
{
#ifdef OPTIMC_HAVE_X86_LEVELS
    __builtin_cpu_init();
    switch (f) {
    case OPTIMC_F16C: return __builtin_cpu_supports("f16c") != 0;
    case OPTIMC_AVX512BF16: return __builtin_cpu_supports("avx512bf16") != 0;
    case OPTIMC_VBMI:
        return __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vbmi")
               && __builtin_cpu_supports("avx512vbmi2");
    default: return 0;
    }
#else
    (void)f;
    return 0;
#endif
}

int optimc_use(optimc_feature f)
{
    return f >= 0 && f < OPTIMC_N_FEATURES && atomic_load_explicit(&feature_on[f], memory_order_relaxed)
           && optimc_cpu_has(f);
}

int optimc_set_feature(optimc_feature f, int on)
{
    if (f < 0 || f >= OPTIMC_N_FEATURES) return 0;
    atomic_store_explicit(&feature_on[f], on != 0, memory_order_relaxed);
    return optimc_use(f);
}

/* ---- threads ---- */

static atomic_int num_threads = 0;      /* 0: not yet read */
/* Bytes a step moves (reads + writes) from which it is split over threads.
 * Measured on our 2-core machine (docs/performance.md): two threads overtake
 * one at about 8 MB moved when the step follows other work (its data cold);
 * 12 MiB leaves a margin. */
static atomic_size_t thread_threshold = 12u << 20;

static int cpu_count(void)
{
    long n = 0;
#ifdef __linux__
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) n = CPU_COUNT(&set);
#endif
    if (n < 1) n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > OPTIMC_MAX_THREADS ? OPTIMC_MAX_THREADS : (int)n;
}

static int is_space(char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

int optimc_parse_num_threads(const char *text, int *out)
{
    if (!text || !*text) return 0;
    while (is_space(*text)) text++;
    long n = 0;
    const char *digits = text;
    for (; *text >= '0' && *text <= '9'; text++)
        if ((n = n * 10 + (*text - '0')) > OPTIMC_MAX_THREADS) return -1;   /* before it can overflow */
    while (is_space(*text)) text++;
    if (text == digits || *text || n < 1) return -1;
    *out = (int)n;
    return 1;
}

int optimc_env_num_threads(int *out) { return optimc_parse_num_threads(getenv("OPTIMC_NUM_THREADS"), out); }

int optimc_get_num_threads(void)
{
    int n = atomic_load_explicit(&num_threads, memory_order_relaxed);
    if (n == 0) {
        int unread = 0;
        if (optimc_env_num_threads(&n) != 1) n = cpu_count();
        if (!atomic_compare_exchange_strong(&num_threads, &unread, n)) n = unread;
    }
    return n;
}

void optimc_set_num_threads(int n)
{
    n = n < 1 ? 1 : n > OPTIMC_MAX_THREADS ? OPTIMC_MAX_THREADS : n;
    atomic_store_explicit(&num_threads, n, memory_order_relaxed);
}

size_t optimc_get_thread_threshold(void) { return atomic_load_explicit(&thread_threshold, memory_order_relaxed); }
void optimc_set_thread_threshold(size_t n) { atomic_store_explicit(&thread_threshold, n, memory_order_relaxed); }
