/* runtime.h — run-time settings: SIMD level and threads (internal, plain C).
 * The getters and setters are declared in optimc.h; this adds the limits and
 * the reading of the environment variables that set their initial values. */
#ifndef OPTIMC_RUNTIME_H
#define OPTIMC_RUNTIME_H
#include "optimc.h"

#define OPTIMC_MAX_THREADS 256   /* optimc_set_num_threads caps at this */

/* The environment variables are read at the first get. The parse and env
 * functions return 1 for a valid value (written to *out), 0 when the text is
 * NULL or empty (unset: the default applies), -1 for an invalid value (the
 * default applies too, and the Python layer warns).
 *  OPTIMC_NUM_THREADS: decimal digits, optionally padded with whitespace,
 *                      1..OPTIMC_MAX_THREADS; default: the CPUs available.
 *  OPTIMC_SIMD: exactly "baseline", "avx2" or "avx512", at most the CPU's
 *               level; default: the CPU's level. */
int optimc_parse_num_threads(const char *text, int *out);
int optimc_parse_simd(const char *text, int *out);
int optimc_env_num_threads(int *out);
int optimc_env_simd(int *out);

/* F16C (vcvtph2ps/vcvtps2ph): the float16 conversions of halfparam_impl.h use
 * it at the avx2 and avx512 levels when the CPU has it (its own CPUID bit:
 * an AVX2 CPU without it gets the software conversion, which gives the same
 * bits). optimc_set_f16c(0) turns it off (tests compare both ways);
 * optimc_set_f16c(1) turns it back on where the CPU has it. Both return
 * whether it is now in use. */
int optimc_cpu_f16c(void);
int optimc_use_f16c(void);
int optimc_set_f16c(int on);

/* AVX-512 VBMI (with BW): the 8-bit state codecs of quantize.h read the map
 * from registers (byte and word permutes) at the avx512 level when the CPU
 * has both (their own CPUID bits: the level needs only F, VL and DQ); the
 * plain AVX-512F codecs give the same bits. optimc_set_vbmi(0) turns them off
 * (tests compare both ways); optimc_set_vbmi(1) turns them back on where the
 * CPU has them. Both return whether they are now in use. */
int optimc_cpu_vbmi(void);
int optimc_use_vbmi(void);
int optimc_set_vbmi(int on);

#endif
