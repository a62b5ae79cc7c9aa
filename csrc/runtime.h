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

/* CPU features past a SIMD level's own (their own CPUID bits), each used
 * where the CPU has it and each giving the same bits as the code without it:
 *   OPTIMC_F16C        vcvtph2ps/vcvtps2ph: float16 params (halfparam_impl.h),
 *                      avx2 and avx512 levels;
 *   OPTIMC_AVX512BF16  vcvtne2ps2bf16: bfloat16 state rounding at avx512
 *                      (quantize.h; it reads subnormals as zero, so 32 values
 *                      holding one are rounded the integer way);
 *   OPTIMC_VBMI        AVX-512 VBMI/VBMI2 with BW: the 8-bit state codecs read
 *                      the map from registers (byte and word permutes) at
 *                      avx512 (quantize.h; the level needs only F, VL, DQ).
 * optimc_set_feature(f, 0) turns one off (tests compare both ways), (f, 1)
 * back on where the CPU has it; both return whether it is now in use. */
typedef enum { OPTIMC_F16C, OPTIMC_AVX512BF16, OPTIMC_VBMI, OPTIMC_N_FEATURES } optimc_feature;
int optimc_cpu_has(optimc_feature f);
int optimc_use(optimc_feature f);
int optimc_set_feature(optimc_feature f, int on);

#endif
