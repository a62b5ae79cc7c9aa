/* halfparam.h — bfloat16 and float16 params (plain C11, no Python): the
 * conversions between float32 and the two 16-bit formats, exact and written
 * in integer operations (and float32 additions whose results are exact or
 * rounded to nearest by definition), so that every SIMD level, compiler and
 * thread split gives the same bits; and the counter-based generator of
 * stochastic rounding. The block wrapper that steps such params, and its
 * vector versions of these functions, are halfparam_impl.h.
 *
 *   bfloat16: the top 16 bits of a float32 (quantize.h's round to nearest
 *             even); float16: IEEE binary16 (1, 5, 10 bits; subnormals
 *             below 2^-14, largest finite 65504).
 *   Round to nearest even: as NumPy's astype and ml_dtypes do it.
 *   Stochastic rounding: a finite value is rounded away from zero with the
 *             probability (|x| − lower)/(upper − lower), where lower and
 *             upper are the neighbouring representable magnitudes, and
 *             toward zero otherwise, so the rounded value's expectation is
 *             x. The dropped part, as a fraction of the step in 16-bit fixed
 *             point, is compared with 16 random bits: exact for bfloat16 (16
 *             dropped bits) and float16 normals (13); float16 subnormals are
 *             truncated to 2^-16 of their step (2^-40), so values below 2^-40
 *             always round toward zero. NaN and ±Inf are rounded to nearest.
 *   The random bits of element i of a tensor at a step: bits 16·(i mod 4)
 *             to 16·(i mod 4) + 15 of SplitMix64's output number i/4 + 1 of
 *             the stream whose key is a hash of (the optimizer's seed, the
 *             param's index, the step) — a function of those alone, never of
 *             a thread or a chunk (chunks start at multiples of 4).
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

/* ---- float16 ----
 * Written branch-light (both sides computed, one selected) so that the
 * compiler can vectorize block loops of them; halfparam_impl.h uses F16C's
 * vcvtph2ps/vcvtps2ph instead where the CPU has it, which give the same bits
 * (tests/test_half_params.py checks every float16 code and the float32 edges
 * at every SIMD level, with F16C and without). */

/* float16 -> float32, exact. A NaN stays a NaN with its payload, quieted (the
 * float32 quiet bit set), as vcvtph2ps does. */
static inline float optimc_f16_decode(uint16_t h)
{
    uint32_t a = h & 0x7FFFu, sign = (uint32_t)(h & 0x8000u) << 16;
    /* normal: the exponent rebased from 15 to 127 */
    uint32_t normal = (a << 13) + (112u << 23);
    /* Inf and NaN: the exponent all ones; NaN quieted */
    uint32_t special = (a << 13) | 0x7F800000u | (0x400000u & (0u - (uint32_t)(a > 0x7C00u)));
    /* subnormal m·2^-24: 2^-14·(1 + m/1024) − 2^-14, both exact in float32 */
    uint32_t sub = optimc_f32_bits(optimc_f32_from_bits((a << 13) + (113u << 23)) - 0x1p-14f);
    /* selected with masks (every side computed: a loop of this vectorizes) */
    uint32_t is_sub = 0u - (uint32_t)(a < 0x0400u), is_special = 0u - (uint32_t)(a >= 0x7C00u);
    uint32_t mag = (sub & is_sub) | (special & is_special) | (normal & ~(is_sub | is_special));
    return optimc_f32_from_bits(sign | mag);
}

/* float32 -> float16, round to nearest even, as NumPy's astype: Inf from the
 * largest finite half-way point (65520) up; a NaN stays a quiet NaN with the
 * top 10 bits of its payload, as vcvtps2ph does. */
static inline uint16_t optimc_f16_encode(float f)
{
    uint32_t b = optimc_f32_bits(f), sign = (b >> 16) & 0x8000u, a = b & 0x7FFFFFFFu;
    /* a float16 normal: rebase the exponent and round the 13 dropped bits
     * (ties to even); a carry moves into the exponent as it must */
    uint32_t normal = (a - (112u << 23) + 0xFFFu + ((a >> 13) & 1u)) >> 13;
    /* below 2^-14: in 0.5 + |x| the float32 ulp is the float16 step 2^-24, so the
     * add itself rounds to nearest even (the result is a normal float32:
     * flush-to-zero modes cannot change it) */
    uint32_t sub = optimc_f32_bits(optimc_f32_from_bits(a) + 0.5f) - 0x3F000000u;
    uint32_t nan = 0x7E00u | ((a >> 13) & 0x3FFu);
    /* selected with masks (every side computed: a loop of this vectorizes):
     * below 2^-14, up to the largest half-way point 65520, to Inf, NaN */
    uint32_t is_sub = 0u - (uint32_t)(a < 0x38800000u), is_big = 0u - (uint32_t)(a >= 0x477FF000u),
             is_nan = 0u - (uint32_t)(a > 0x7F800000u);
    uint32_t q = (sub & is_sub) | (normal & ~(is_sub | is_big)) | (0x7C00u & is_big & ~is_nan) | (nan & is_nan);
    return (uint16_t)(sign | q);
}

/* The float16 magnitude of |x| = a (float32 bits without the sign) rounded
 * toward zero, and the dropped part as a fraction of one float16 step in
 * 32-bit fixed point (exact for float16 normals, and for subnormals down to
 * 2^-32 of a step: truncated below). a is finite and below 65536. A float16
 * subnormal is M·2^-s steps of 2^-24 with M the 24-bit significand and
 * s = 126 − exponent (from 14; beyond 56 both are 0). The vector versions
 * compute both sides and select; here the branch is on the rare side. */
/* x >> s and x << s, 0 when s >= 32 (as the vector shifts do) */
static inline uint32_t optimc_shr32(uint32_t x, uint32_t s) { return (x >> (s & 31u)) & (0u - (uint32_t)(s < 32u)); }
static inline uint32_t optimc_shl32(uint32_t x, uint32_t s) { return (x << (s & 31u)) & (0u - (uint32_t)(s < 32u)); }

static inline uint32_t optimc_f16_truncate(uint32_t a, uint32_t *frac32)
{
    if (a >= 0x38800000u) {   /* >= 2^-14: a float16 normal, 13 bits dropped */
        *frac32 = a << 19;
        return (a >> 13) - (112u << 10);
    }
    uint32_t M = (a & 0x7FFFFFu) | 0x800000u, s = 126u - (a >> 23);   /* 14 <= s <= 126 */
    /* s <= 32: the low s bits of M moved to the top; s >= 32: M moved down */
    *frac32 = optimc_shl32(M, 32u - s) | optimc_shr32(M, s - 32u);
    return optimc_shr32(M, s);
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

/* 16 random bits for element i: a quarter of SplitMix64's output number
 * i/4 + 1 (bits 16·(i mod 4) up: a 64-bit output, stored little-endian, is
 * four 16-bit words in element order). */
static inline uint32_t optimc_sr_bits(uint64_t step_key, uint64_t i)
{
    return (uint32_t)(optimc_mix64(step_key + (i / 4 + 1) * OPTIMC_GOLDEN_GAMMA) >> (16 * (i & 3))) & 0xFFFFu;
}

/* With r, 16 random bits: up when the dropped part exceeds r/2^16 of a step. */
static inline uint16_t optimc_bf16_encode_stochastic(float f, uint32_t r)
{
    uint32_t b = optimc_f32_bits(f);
    /* the 16 dropped bits against the 16 random ones: up with probability
     * frac/2^16; adding 1 to the magnitude carries into the exponent where it
     * must (±Inf drops nothing and stays); a NaN is rounded to nearest (quieted) */
    uint32_t up = (b >> 16) + ((b & 0xFFFFu) > r);
    return (uint16_t)((b & 0x7FFFFFFFu) > 0x7F800000u ? (b >> 16) | 0x40u : up);
}

static inline uint16_t optimc_f16_encode_stochastic(float f, uint32_t r)
{
    uint32_t b = optimc_f32_bits(f), sign = (b >> 16) & 0x8000u, a = b & 0x7FFFFFFFu;
    uint32_t frac, q = optimc_f16_truncate(a, &frac);
    q += (frac >> 16) > r;   /* may carry to 0x7C00 (Inf) from the largest finite */
    /* >= 65536 (and Inf): beyond every float16 step; NaN: as to nearest */
    uint32_t nan = 0x7E00u | ((a >> 13) & 0x3FFu);
    return (uint16_t)(sign | (a > 0x7F800000u ? nan : a >= 0x47800000u ? 0x7C00u : q));
}
#endif
