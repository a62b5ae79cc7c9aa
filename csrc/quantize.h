/* quantize.h — optimizer state in fewer bits (plain C11, no Python).
 *
 * 8-bit blockwise dynamic quantization (Dettmers et al. 2022, "8-bit
 * Optimizers via Block-wise Quantization"), equal code for code to
 * bitsandbytes' CPU quantize_blockwise/dequantize_blockwise (0.50):
 *   - a map of 256 float values in [-1, 1] (signed: first moments) or [0, 1]
 *     (unsigned: second moments), bitsandbytes' create_dynamic_map: per
 *     decade 10^-6 .. 10^0 the midpoints of a float32 linspace(0.1, 1),
 *     plus 0 and 1, sorted;
 *   - blocks of OPTIMC_QBLOCK elements, each with its absmax = the largest
 *     |x| (NaN ignored) as a float32 scale;
 *   - a value's code: v = x·(1/absmax) clamped to [-1, 1], then the cell
 *     k = trunc(fl((v + 1)·½·65535 + ½)) (one rounding, as a fused
 *     multiply-add) of a 65536-cell grid over [-1, 1], and code = lut[k],
 *     where lut[k] is the code whose value is nearest to the cell's
 *     centre −1 + 2k/65535 (ties to the lower code; midpoints in float).
 *     A NaN value takes code 0; a block of zeros takes codes 0 and absmax 0.
 *   - decoding: map[code]·absmax.
 * The grid is what makes encoding one table read per element instead of a
 * search; it also means (as in bitsandbytes) that a value within half a grid
 * cell (1.5e-5·absmax) of zero decodes to the map entry nearest that cell's
 * centre, not to 0.
 *
 * bfloat16: the top 16 bits of a float32, rounded to nearest even; NaN stays
 * a (quiet) NaN.
 *
 * The block routines are static inline so that each SIMD level's kernels
 * (kernels_impl.h) compile their own copy; every level computes the same
 * bits (exact IEEE operations, no contraction: the fused rounding is done
 * exactly in double).
 */
#ifndef OPTIMC_QUANTIZE_H
#define OPTIMC_QUANTIZE_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <math.h>
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

#define OPTIMC_QBLOCK 256          /* elements per 8-bit block (one absmax each) */
#define OPTIMC_QGRID 65536         /* cells of the encoding grid over [-1, 1] */

typedef struct {
    float code[256];               /* the map, ascending */
    uint8_t lut[OPTIMC_QGRID];     /* grid cell -> nearest code */
} optimc_qmap;

/* The two maps, built on first use (thread-safe); never NULL. */
const optimc_qmap *optimc_qmap_get(int is_signed);

/* Whole arrays, block by block (for checkpoints and tests): absmax has
 * ceil(n / OPTIMC_QBLOCK) entries. */
void optimc_quantize_blockwise(int is_signed, const float *x, size_t n, uint8_t *codes, float *absmax);
void optimc_dequantize_blockwise(int is_signed, const uint8_t *codes, const float *absmax, size_t n, float *x);
void optimc_bf16_encode_array(const float *x, size_t n, uint16_t *out);
void optimc_bf16_decode_array(const uint16_t *h, size_t n, float *out);

/* ---- one block, inline ---- */

/* The block's scale: max |x| over finite and infinite values (NaN ignored),
 * 0 for an empty or all-zero block. Eight lanes so that it vectorizes; max
 * is exact, so the lane order does not matter. */
static inline float optimc_q8_absmax(const float *restrict x, size_t n)
{
    float lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    size_t i = 0;
#if defined(__AVX2__) && defined(__FMA__)
    /* maxps(a, m) is `a > m ? a : m`, the scalar rule below */
    __m256 m8 = _mm256_setzero_ps(), abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    for (; i + 8 <= n; i += 8) m8 = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + i), abs_mask), m8);
    _mm256_storeu_ps(lane, m8);
#endif
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) {
            float a = fabsf(x[i + j]);
            lane[j] = a > lane[j] ? a : lane[j];
        }
    for (; i < n; i++) {
        float a = fabsf(x[i]);
        lane[0] = a > lane[0] ? a : lane[0];
    }
    float m = lane[0];
    for (int j = 1; j < 8; j++) m = lane[j] > m ? lane[j] : m;
    return m;
}

/* The grid cell of a normalised value (see the top of this file). */
static inline uint32_t optimc_q8_cell(float v)
{
    v = v > -1.0f ? v : -1.0f;   /* clamp; a NaN becomes -1, whose cell (0) is a NaN's */
    v = v < 1.0f ? v : 1.0f;
    float t = (v + 1.0f) * 0.5f;
    /* t·65535 + ½ is exact in double (t has at most 25 significant bits),
     * so rounding it once to float is exactly a fused multiply-add */
    float r = (float)((double)t * 65535.0 + 0.5);
    return (uint32_t)(int32_t)r;
}

/* Encode n <= OPTIMC_QBLOCK values; returns the block's absmax. */
static inline float optimc_q8_encode(const optimc_qmap *m, const float *restrict x, size_t n,
                                     uint8_t *restrict codes)
{
    if (n > OPTIMC_QBLOCK) n = OPTIMC_QBLOCK;   /* one block at most (callers never pass more) */
    float absmax = optimc_q8_absmax(x, n);
    if (absmax == 0.0f) {
        memset(codes, 0, n);
        return absmax;
    }
    float inv = 1.0f / absmax;
    _Alignas(32) int32_t cell[OPTIMC_QBLOCK];
    size_t i = 0;
#if defined(__AVX2__) && defined(__FMA__)
    /* the same operations as optimc_q8_cell, eight at a time */
    const __m256 vinv = _mm256_set1_ps(inv), one = _mm256_set1_ps(1.0f), minus_one = _mm256_set1_ps(-1.0f),
                 half = _mm256_set1_ps(0.5f);
    const __m256 cells = _mm256_set1_ps(65535.0f);
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + i), vinv);
        v = _mm256_min_ps(_mm256_max_ps(v, minus_one), one);
        __m256 t = _mm256_mul_ps(_mm256_add_ps(v, one), half);
        /* one rounding of t·65535 + ½: the fused multiply-add itself (the
         * scalar path gets the same bits through double) */
        __m256 r = _mm256_fmadd_ps(t, cells, half);
        _mm256_store_si256((__m256i *)(cell + i), _mm256_cvttps_epi32(r));
    }
#endif
    for (; i < n; i++) cell[i] = (int32_t)optimc_q8_cell(x[i] * inv);
    for (i = 0; i < n; i++) codes[i] = m->lut[cell[i]];
    return absmax;
}

static inline void optimc_q8_decode(const optimc_qmap *m, const uint8_t *restrict codes, float absmax,
                                    size_t n, float *restrict x)
{
    size_t i = 0;
#if defined(__AVX2__) && defined(__FMA__)
    /* eight plain loads: cheaper than a gather instruction on many CPUs */
    const __m256 scale = _mm256_set1_ps(absmax);
    const float *code = m->code;
    for (; i + 8 <= n; i += 8) {
        const uint8_t *c = codes + i;
        __m256 v = _mm256_setr_ps(code[c[0]], code[c[1]], code[c[2]], code[c[3]],
                                  code[c[4]], code[c[5]], code[c[6]], code[c[7]]);
        _mm256_storeu_ps(x + i, _mm256_mul_ps(v, scale));
    }
#endif
    for (; i < n; i++) x[i] = m->code[codes[i]] * absmax;
}

/* bfloat16 blocks: the scalar rules below, eight at a time where AVX2 is on */
static inline void optimc_bf16_decode_block(const uint16_t *restrict h, size_t n, float *restrict x);
static inline void optimc_bf16_encode_block(const float *restrict x, size_t n, uint16_t *restrict h);

static inline uint16_t optimc_bf16_encode(float f)
{
    uint32_t b;
    memcpy(&b, &f, sizeof b);
    uint32_t rounded = (b + 0x7FFFu + ((b >> 16) & 1u)) >> 16;
    uint32_t quiet_nan = (b >> 16) | 0x40u;
    return (uint16_t)((b & 0x7FFFFFFFu) > 0x7F800000u ? quiet_nan : rounded);
}

static inline float optimc_bf16_decode(uint16_t h)
{
    uint32_t b = (uint32_t)h << 16;
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}
static inline void optimc_bf16_decode_block(const uint16_t *restrict h, size_t n, float *restrict x)
{
    size_t i = 0;
#if defined(__AVX2__) && defined(__FMA__)
    for (; i + 8 <= n; i += 8) {
        __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(h + i)));
        _mm256_storeu_ps(x + i, _mm256_castsi256_ps(_mm256_slli_epi32(w, 16)));
    }
#endif
    for (; i < n; i++) x[i] = optimc_bf16_decode(h[i]);
}

static inline void optimc_bf16_encode_block(const float *restrict x, size_t n, uint16_t *restrict h)
{
    size_t i = 0;
#if defined(__AVX2__) && defined(__FMA__)
    const __m256i one = _mm256_set1_epi32(1), bias = _mm256_set1_epi32(0x7FFF),
                  abs_mask = _mm256_set1_epi32(0x7FFFFFFF), inf = _mm256_set1_epi32(0x7F800000),
                  quiet = _mm256_set1_epi32(0x40);
    for (; i + 8 <= n; i += 8) {
        __m256i b = _mm256_castps_si256(_mm256_loadu_ps(x + i));
        __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(b, 16), one);
        __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(b, bias), lsb), 16);
        __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(b, abs_mask), inf);
        __m256i quiet_nan = _mm256_or_si256(_mm256_srli_epi32(b, 16), quiet);
        __m256i r = _mm256_blendv_epi8(rounded, quiet_nan, nan);
        /* 16 of 32 bits per lane: pack within 128-bit halves, then put the halves in order */
        __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08);
        _mm_storeu_si128((__m128i *)(h + i), _mm256_castsi256_si128(packed));
    }
#endif
    for (; i < n; i++) h[i] = optimc_bf16_encode(x[i]);
}
#endif
