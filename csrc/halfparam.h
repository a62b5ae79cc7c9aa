/* halfparam.h — bfloat16 and float16 params (plain C11, no Python): the
 * conversions between float32 and the two 16-bit formats, exact and written
 * in integer operations only, so that every SIMD level, compiler and thread
 * split gives the same bits; and the counter-based generator of stochastic
 * rounding. The block wrapper that steps such params is halfparam_impl.h.
 *
 *   bfloat16: the top 16 bits of a float32 (quantize.h's round to nearest
 *             even); float16: IEEE binary16 (1, 5, 10 bits; subnormals
 *             below 2^-14, largest finite 65504).
 *   Round to nearest even: as NumPy's astype and ml_dtypes do it.
 *   Stochastic rounding: a finite value is rounded away from zero with the
 *             probability (|x| − lower)/(upper − lower), where lower and
 *             upper are the neighbouring representable magnitudes, and
 *             toward zero otherwise, so the rounded value's expectation is
 *             x. The comparison is exact (16 or 13 dropped bits against as
 *             many random bits; float16 subnormals against 32 random bits,
 *             exact down to 2^-32 of the smallest float16 step). NaN and
 *             ±Inf are rounded to nearest.
 *   The random bits of element i of a tensor at a step: SplitMix64's
 *             output number i of the stream whose key is a hash of (the
 *             optimizer's seed, the param's index, the step) — a function
 *             of those alone, never of a thread or a chunk.
 */
#ifndef OPTIMC_HALFPARAM_H
#define OPTIMC_HALFPARAM_H
#include <stdint.h>
#include <string.h>
#include "quantize.h"   /* optimc_bf16_encode / optimc_bf16_decode */

static inline uint32_t optimc_f32_bits(float f)
{
    uint32_t b;
    memcpy(&b, &f, sizeof b);
    return b;
}

static inline float optimc_f32_from_bits(uint32_t b)
{
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

/* ---- float16 ---- */

static inline float optimc_f16_decode(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1Fu, m = h & 0x3FFu;
    if (e == 0x1F) return optimc_f32_from_bits(sign | 0x7F800000u | (m << 13));   /* Inf, NaN */
    if (e) return optimc_f32_from_bits(sign | ((e + 112) << 23) | (m << 13));
    /* a subnormal m·2^-24: m has at most 10 bits, so this is exact */
    float f = (float)m * 0x1p-24f;
    return sign ? -f : f;
}

/* The float16 magnitude of |x| = a (float32 bits without the sign) rounded
 * toward zero, and the dropped part as a fraction of one float16 step in
 * 32-bit fixed point (exact for float16 normals and for subnormals down to
 * 2^-32 of a step). a is finite and below 65536. */
static inline uint32_t optimc_f16_truncate(uint32_t a, uint32_t *frac32)
{
    if (a >= 0x38800000u) {   /* >= 2^-14: a float16 normal, 13 bits dropped */
        *frac32 = (a & 0x1FFFu) << 19;
        return (a >> 13) - (112u << 10);
    }
    uint32_t e = a >> 23;
    if (e < 70) {   /* below 2^-57: less than 2^-33 of a step */
        *frac32 = 0;
        return 0;
    }
    /* a subnormal: |x| = M·2^(e-150) = M·2^-shift steps of 2^-24 */
    uint32_t M = (a & 0x7FFFFFu) | 0x800000u, shift = 126 - e;   /* 14 <= shift <= 56 */
    if (shift >= 32) {
        *frac32 = (uint32_t)(((uint64_t)M << 32) >> shift);
        return 0;
    }
    *frac32 = (uint32_t)(((uint64_t)(M & ((1u << shift) - 1u)) << 32) >> shift);
    return M >> shift;
}

/* float32 -> float16, round to nearest even (Inf above the largest finite
 * half-way point, 65520; NaN stays a quiet NaN). */
static inline uint16_t optimc_f16_encode(float f)
{
    uint32_t b = optimc_f32_bits(f), sign = (b >> 16) & 0x8000u, a = b & 0x7FFFFFFFu;
    if (a > 0x7F800000u) return (uint16_t)(sign | 0x7E00u | ((a >> 13) & 0x3FFu));
    if (a >= 0x477FF000u) return (uint16_t)(sign | 0x7C00u);
    uint32_t frac, q = optimc_f16_truncate(a, &frac);
    /* up when the dropped part is above half a step, or half with q odd */
    q += frac > 0x80000000u || (frac == 0x80000000u && (q & 1u));
    return (uint16_t)(sign | q);
}

/* ---- stochastic rounding ---- */

static inline uint64_t optimc_mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

#define OPTIMC_GOLDEN_GAMMA UINT64_C(0x9E3779B97F4A7C15)

/* A param's key: from the optimizer's seed and the param's index. */
static inline uint64_t optimc_sr_param_key(uint64_t seed, uint64_t index)
{
    return optimc_mix64(optimc_mix64(seed) + (index + 1) * OPTIMC_GOLDEN_GAMMA);
}

/* The stream key of a param's step t. */
static inline uint64_t optimc_sr_step_key(uint64_t param_key, int64_t step)
{
    return optimc_mix64(param_key ^ optimc_mix64((uint64_t)step * UINT64_C(0xD1B54A32D192ED03)));
}

/* 32 random bits for element i (SplitMix64's i-th output of the stream). */
static inline uint32_t optimc_sr_bits(uint64_t step_key, uint64_t i)
{
    return (uint32_t)(optimc_mix64(step_key + (i + 1) * OPTIMC_GOLDEN_GAMMA) >> 32);
}

static inline uint16_t optimc_bf16_encode_stochastic(float f, uint32_t r)
{
    uint32_t b = optimc_f32_bits(f);
    if ((b & 0x7F800000u) == 0x7F800000u) return optimc_bf16_encode(f);
    /* the 16 dropped bits against 16 random ones: up with probability frac/2^16;
     * adding 1 to the magnitude carries into the exponent where it must */
    return (uint16_t)((b >> 16) + ((b & 0xFFFFu) > (r >> 16)));
}

static inline uint16_t optimc_f16_encode_stochastic(float f, uint32_t r)
{
    uint32_t b = optimc_f32_bits(f), sign = (b >> 16) & 0x8000u, a = b & 0x7FFFFFFFu;
    if (a >= 0x7F800000u) return optimc_f16_encode(f);
    if (a >= 0x47800000u) return (uint16_t)(sign | 0x7C00u);   /* >= 65536: beyond every float16 step */
    uint32_t frac, q = optimc_f16_truncate(a, &frac);
    q += frac > r;   /* may carry to 0x7C00 (Inf) from the largest finite */
    return (uint16_t)(sign | q);
}
#endif
