/* runtime.c — run-time settings of the engine: the SIMD level in use and the
 * threads a large step is split over (plain C, no Python). */
#define _GNU_SOURCE
#include "runtime.h"
#include "kernels.h"
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef __linux__
#include <sched.h>
#endif

/* ---- SIMD dispatch ---- */

static const char *level_names[OPTIMC_N_LEVELS] = {"baseline", "avx2", "avx512"};
static int current_level = -1;

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

int optimc_set_level(int level)
{
    int cpu = optimc_cpu_level();
    if (level < 0) level = 0;
    current_level = level < cpu ? level : cpu;
    return current_level;
}

int optimc_get_level(void)
{
    if (current_level < 0) {
        int level = optimc_cpu_level();
        const char *env = getenv("OPTIMC_SIMD");  /* forces a lower level */
        if (env) {
            for (int l = 0; l < OPTIMC_N_LEVELS; l++)
                if (strcmp(env, level_names[l]) == 0 && l < level) level = l;
        }
        current_level = level;
    }
    return current_level;
}

/* ---- threads ---- */

static int num_threads = 0;                 /* 0: not yet read */
/* Bytes a step moves (reads + writes) from which it is split over threads.
 * Measured on our 2-core machine (docs/performance.md): two threads overtake
 * one at about 8 MB moved when the step follows other work (its data cold);
 * 12 MiB leaves a margin. */
static size_t thread_threshold = 12u << 20;

static int cpu_count(void)
{
#ifdef __linux__
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) return CPU_COUNT(&set);
#endif
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

int optimc_get_num_threads(void)
{
    if (num_threads == 0) {
        const char *env = getenv("OPTIMC_NUM_THREADS");
        int n = env ? atoi(env) : 0;
        num_threads = n >= 1 ? n : cpu_count();
    }
    return num_threads;
}

void optimc_set_num_threads(int n) { num_threads = n >= 1 ? n : 1; }
size_t optimc_get_thread_threshold(void) { return thread_threshold; }
void optimc_set_thread_threshold(size_t n) { thread_threshold = n; }
