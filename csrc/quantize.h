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
 *     multiply-add) of a 65536-cell grid over [-1, 1], and code = lut(k),
 *     the code whose value is nearest to the cell's centre −1 + 2k/65535
 *     (ties to the lower code; midpoints in float).
 *     A NaN value takes code 0; a block of zeros takes codes 0 and absmax 0.
 *   - decoding: map[code]·absmax.
 * The grid is what makes encoding a table read per element instead of a
 * search; it also means (as in bitsandbytes) that a value within half a grid
 * cell (1.5e-5·absmax) of zero decodes to the map entry nearest that cell's
 * centre, not to 0.
 *
 * lut(k) is a step function of k with 255 steps. bitsandbytes reads it from a
 * 65536-entry table (64 KiB per map, more than a core's L1 cache); here it is
 * the same function in 8 or 16 KiB: the cell's offset from the grid's centre,
 * u = 2k − 65535 (odd, |u| ≤ 65535), is converted to float, and its sign,
 * exponent and top `bucket_bits` mantissa bits pick a bucket — a run of cells
 * whose length grows with |u|, like the map's own (logarithmic) spacing.
 * Each bucket holds at most two codes (quantize.c picks the smallest
 * bucket_bits for which that is so: 6 signed, 7 unsigned), so one 32-bit entry says
 * them: code = k < edge ? low : high. tests/test_lowprec_quantize.py checks
 * every one of the 65536 cells against the reference's table.
 *
 * Where the CPU has AVX-512 VBMI (and BW, VBMI2), the avx512 kernels use
 * two more forms of the same functions, held in registers (see "AVX-512
 * VBMI" below; quantize.c builds them from the bucket table and checks every
 * cell): lut as a 255-threshold search tree descended 32 cells at a time,
 * and the map as four byte planes read 64 codes at a time.
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
#if defined(__GNUC__)
/* the bfloat16 block codecs run per 64-value tile inside the rules' loops
 * (rules/common.h): a call per tile measured ~10% of the step */
#define OPTIMC_ALWAYS_INLINE static inline __attribute__((always_inline))
#else
#define OPTIMC_ALWAYS_INLINE static inline
#endif
#define OPTIMC_QGRID 65536         /* cells of the encoding grid over [-1, 1] */
#define OPTIMC_QBUCKET_BITS_MAX 7  /* mantissa bits of a bucket index, at most */
#define OPTIMC_QBUCKETS (32 << OPTIMC_QBUCKET_BITS_MAX)   /* sign x 16 exponents x mantissa */

typedef struct {
    float code[256];               /* the map, ascending */
    /* cell -> code (see the top of this file): bucket[b] = edge | low << 16 | high << 24 */
    int bucket_bits;               /* mantissa bits of the bucket index */
    uint32_t bucket[OPTIMC_QBUCKETS];
    /* the same two functions in the forms the AVX-512 VBMI codecs read from
     * registers (see "AVX-512 VBMI" below): */
    _Alignas(64) uint16_t tree[256];      /* cell -> code: a search tree's thresholds (tree[0] unused) */
    _Alignas(64) uint8_t plane[4][256];   /* code -> value: byte b of each code's float bits */
    int tree_ok;                   /* the tree gives lut(k) for every cell (checked when built) */
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
#if defined(__AVX512F__)
    /* 16 lanes folded into the 8 below (max is exact and order-free); four
     * accumulators over 64 values a step, so that the maxes do not wait on
     * each other */
    __m512 m16 = _mm512_setzero_ps(), a1 = m16, a2 = m16, a3 = m16;
    for (; i + 64 <= n; i += 64) {
        m16 = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(x + i)), m16);
        a1 = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(x + i + 16)), a1);
        a2 = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(x + i + 32)), a2);
        a3 = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(x + i + 48)), a3);
    }
    m16 = _mm512_max_ps(_mm512_max_ps(a1, m16), _mm512_max_ps(a3, a2));
    for (; i + 16 <= n; i += 16) m16 = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(x + i)), m16);
    if (i < n)   /* the tail, the rest of the lanes read as 0 */
        m16 = _mm512_max_ps(_mm512_abs_ps(_mm512_maskz_loadu_ps((__mmask16)((1u << (n - i)) - 1), x + i)), m16);
    /* no lane holds a NaN (maxps(NaN, m) is m), so the lanes fold in any
     * order to the same max: a tree of shuffles, not a chain of scalars */
    return _mm512_reduce_max_ps(m16);
#endif
#if defined(__AVX2__) && defined(__FMA__)
    /* maxps(a, m) is `a > m ? a : m`, the scalar rule below */
    __m256 m8 = _mm256_loadu_ps(lane), abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    __m256 b1 = _mm256_setzero_ps(), b2 = b1, b3 = b1;   /* as above: four accumulators */
    for (; i + 32 <= n; i += 32) {
        m8 = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + i), abs_mask), m8);
        b1 = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + i + 8), abs_mask), b1);
        b2 = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + i + 16), abs_mask), b2);
        b3 = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + i + 24), abs_mask), b3);
    }
    m8 = _mm256_max_ps(_mm256_max_ps(b1, m8), _mm256_max_ps(b3, b2));
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

/* The bucket of a grid cell: sign, exponent and top bucket_bits mantissa bits
 * of u = 2·cell − 65535 as a float (exact: |u| < 2^24), counted from 0 for
 * u > 0 and from 16 << bucket_bits for u < 0. */
static inline uint32_t optimc_q8_bucket(const optimc_qmap *m, uint32_t cell)
{
    float u = (float)((int32_t)(2 * cell) - 65535);
    uint32_t bits, mb = (uint32_t)m->bucket_bits;
    memcpy(&bits, &u, sizeof bits);
    uint32_t negative = bits >> 31;
    return (bits >> (23 - mb)) - (127u << mb) - negative * (240u << mb);
}

/* The code of a grid cell: its bucket's low code before the bucket's edge,
 * its high code from there on. */
static inline uint32_t optimc_q8_code(const optimc_qmap *m, uint32_t cell)
{
    uint32_t e = m->bucket[optimc_q8_bucket(m, cell)];
    return cell < (e & 0xFFFFu) ? (e >> 16) & 0xFFu : e >> 24;
}

#if defined(__AVX2__) && defined(__FMA__)
/* Eight codes (one per 32-bit lane) of x[0..8)·inv: the operations of
 * optimc_q8_cell and optimc_q8_code, lane by lane. */
static inline __m256i optimc_q8_code8(const optimc_qmap *m, const float *x, __m256 inv)
{
    const __m256 one = _mm256_set1_ps(1.0f), minus_one = _mm256_set1_ps(-1.0f), half = _mm256_set1_ps(0.5f);
    const uint32_t mb = (uint32_t)m->bucket_bits;
    __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x), inv);
    v = _mm256_min_ps(_mm256_max_ps(v, minus_one), one);   /* maxps(NaN, -1) is -1, as in the scalar rule */
    __m256 t = _mm256_mul_ps(_mm256_add_ps(v, one), half);
    /* one rounding of t·65535 + ½: the fused multiply-add itself (the scalar
     * path gets the same bits through double) */
    __m256i cell = _mm256_cvttps_epi32(_mm256_fmadd_ps(t, _mm256_set1_ps(65535.0f), half));
    __m256i u = _mm256_castps_si256(_mm256_cvtepi32_ps(
        _mm256_sub_epi32(_mm256_add_epi32(cell, cell), _mm256_set1_epi32(65535))));
    __m256i b = _mm256_sub_epi32(_mm256_srl_epi32(u, _mm_cvtsi32_si128((int)(23 - mb))),
                                 _mm256_set1_epi32((int)(127u << mb)));
    b = _mm256_sub_epi32(b, _mm256_and_si256(_mm256_srai_epi32(u, 31), _mm256_set1_epi32((int)(240u << mb))));
    /* one gather from the 8 or 16 KiB of buckets: the indices are in a
     * register, and extracting them for eight loads and inserts measured
     * slower here (AMD Zen 3; docs/performance.md) */
    __m256i e = _mm256_i32gather_epi32((const int *)m->bucket, b, 4);
    const __m256i byte = _mm256_set1_epi32(0xFF);
    __m256i below = _mm256_cmpgt_epi32(_mm256_and_si256(e, _mm256_set1_epi32(0xFFFF)), cell);
    __m256i low = _mm256_and_si256(_mm256_srli_epi32(e, 16), byte), high = _mm256_srli_epi32(e, 24);
    return _mm256_blendv_epi8(high, low, below);
}
#endif

#if defined(__AVX512F__)
/* Sixteen codes (one per 32-bit lane): optimc_q8_code8's operations on
 * 512-bit vectors (max_ps(NaN, -1) is -1 here too). */
static inline __m512i optimc_q8_code16(const optimc_qmap *m, const float *x, __m512 inv)
{
    const __m512 one = _mm512_set1_ps(1.0f), minus_one = _mm512_set1_ps(-1.0f), half = _mm512_set1_ps(0.5f);
    const uint32_t mb = (uint32_t)m->bucket_bits;
    __m512 v = _mm512_mul_ps(_mm512_loadu_ps(x), inv);
    v = _mm512_min_ps(_mm512_max_ps(v, minus_one), one);
    __m512 t = _mm512_mul_ps(_mm512_add_ps(v, one), half);
    __m512i cell = _mm512_cvttps_epi32(_mm512_fmadd_ps(t, _mm512_set1_ps(65535.0f), half));
    __m512i u = _mm512_castps_si512(_mm512_cvtepi32_ps(
        _mm512_sub_epi32(_mm512_add_epi32(cell, cell), _mm512_set1_epi32(65535))));
    __m512i b = _mm512_sub_epi32(_mm512_srl_epi32(u, _mm_cvtsi32_si128((int)(23 - mb))),
                                 _mm512_set1_epi32((int)(127u << mb)));
    b = _mm512_sub_epi32(b, _mm512_and_si512(_mm512_srai_epi32(u, 31), _mm512_set1_epi32((int)(240u << mb))));
    __m512i e = _mm512_i32gather_epi32(b, (const void *)m->bucket, 4);
    __mmask16 below = _mm512_cmpgt_epi32_mask(_mm512_and_si512(e, _mm512_set1_epi32(0xFFFF)), cell);
    __m512i low = _mm512_and_si512(_mm512_srli_epi32(e, 16), _mm512_set1_epi32(0xFF));
    return _mm512_mask_blend_epi32(below, _mm512_srli_epi32(e, 24), low);
}
#endif

/* Encode n <= OPTIMC_QBLOCK values; returns the block's absmax. The
 * plain form: a gather from the bucket table (AVX2, AVX-512F) or a table
 * read per value. */
static inline float optimc_q8_encode_plain(const optimc_qmap *m, const float *restrict x, size_t n,
                                           uint8_t *restrict codes)
{
    if (n > OPTIMC_QBLOCK) n = OPTIMC_QBLOCK;   /* one block at most (callers never pass more) */
    float absmax = optimc_q8_absmax(x, n);
    if (absmax == 0.0f) {
        memset(codes, 0, n);
        return absmax;
    }
    float inv = 1.0f / absmax;
    size_t i = 0;
#if defined(__AVX512F__)
    const __m512 vinv16 = _mm512_set1_ps(inv);
    for (; i + 16 <= n; i += 16)   /* codes < 256: the truncating narrow is exact */
        _mm_storeu_si128((__m128i *)(codes + i), _mm512_cvtepi32_epi8(optimc_q8_code16(m, x + i, vinv16)));
#endif
#if defined(__AVX2__) && defined(__FMA__)
    const __m256 vinv = _mm256_set1_ps(inv);
    /* 32 codes per store: the two packs leave 4-byte groups in the order
     * c0 c1 c2 c3 (first halves), c0 c1 c2 c3 (second halves); the permute
     * puts the groups in element order */
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (; i + 32 <= n; i += 32) {
        __m256i c0 = optimc_q8_code8(m, x + i, vinv), c1 = optimc_q8_code8(m, x + i + 8, vinv);
        __m256i c2 = optimc_q8_code8(m, x + i + 16, vinv), c3 = optimc_q8_code8(m, x + i + 24, vinv);
        __m256i bytes = _mm256_packus_epi16(_mm256_packus_epi32(c0, c1), _mm256_packus_epi32(c2, c3));
        _mm256_storeu_si256((__m256i *)(codes + i), _mm256_permutevar8x32_epi32(bytes, order));
    }
#endif
    for (; i < n; i++) codes[i] = (uint8_t)optimc_q8_code(m, optimc_q8_cell(x[i] * inv));
    return absmax;
}

static inline void optimc_q8_decode_plain(const optimc_qmap *m, const uint8_t *restrict codes, float absmax,
                                          size_t n, float *restrict x)
{
    size_t i = 0;
#if defined(__AVX512F__)
    /* the map in 16 registers: each two-table permute reads 32 entries (code
     * bits 0-4), and bits 5-7 pick among the eight results; measured faster
     * here (AMD Zen 4) than a 16-lane gather */
    const __m512 scale16 = _mm512_set1_ps(absmax);
    __m512 map[16];
    for (int j = 0; j < 16; j++) map[j] = _mm512_loadu_ps(m->code + 16 * j);
    const __m512i bit5 = _mm512_set1_epi32(32), bit6 = _mm512_set1_epi32(64), bit7 = _mm512_set1_epi32(128);
    for (; i + 16 <= n; i += 16) {
        __m512i c = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(codes + i)));
        __mmask16 k5 = _mm512_test_epi32_mask(c, bit5), k6 = _mm512_test_epi32_mask(c, bit6),
                  k7 = _mm512_test_epi32_mask(c, bit7);
        __m512 r[8];
        for (int j = 0; j < 8; j++) r[j] = _mm512_permutex2var_ps(map[2 * j], c, map[2 * j + 1]);
        __m512 s0 = _mm512_mask_blend_ps(k5, r[0], r[1]), s1 = _mm512_mask_blend_ps(k5, r[2], r[3]);
        __m512 s2 = _mm512_mask_blend_ps(k5, r[4], r[5]), s3 = _mm512_mask_blend_ps(k5, r[6], r[7]);
        __m512 t0 = _mm512_mask_blend_ps(k6, s0, s1), t1 = _mm512_mask_blend_ps(k6, s2, s3);
        _mm512_storeu_ps(x + i, _mm512_mul_ps(_mm512_mask_blend_ps(k7, t0, t1), scale16));
    }
#endif
#if defined(__AVX2__) && defined(__FMA__)
    /* eight plain loads (the codes are bytes in memory, so no extraction):
     * measured faster here than a gather */
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

#if defined(__AVX512F__) && defined(__GNUC__)
/* ---- AVX-512 VBMI (with BW and VBMI2): the codecs from registers ----
 * Compiled for their own target (the avx512 level needs only F, VL and DQ)
 * and called only where the CPU has BW, VBMI and VBMI2 and the switch is on
 * (runtime.h: optimc_use(OPTIMC_VBMI)); they compute the same bits as the plain
 * forms, value for value (the tests compare both, at every cell).
 *
 * Encoding, 32 values per vector of 16-bit cells: the grid cell (as in
 * optimc_q8_cell, in fewer steps: optimc_q8_cells16), then lut(k) without a
 * table read. lut is a step function that ascends with k, so
 * lut(k) = #{j : T_j <= k}, T_j the first cell whose code exceeds j (255
 * thresholds < 65536; quantize.c derives them from the bucket table itself
 * and checks every cell). That count is an eight-step descent of a complete
 * binary search tree (node 1 the root, children 2n and 2n+1, the leaves
 * 256 + code) whose 255 thresholds fit eight registers of 16-bit words: one
 * permute reads the node's threshold for 32 cells at once (nodes 2-31 from
 * one register, 32-63 from another, 64-127 from a pair, 128-255 from two
 * more pairs and a blend on the root's outcome, bit 6 of those nodes).
 *
 * Decoding, 64 codes at a time: the map as four planes of 256 bytes (byte b
 * of each value's bits), each plane four registers: two 128-entry byte
 * permutes and a blend on code bit 7 give that byte of all 64 values; two
 * rounds of unpacks put the four bytes together into 32-bit values. The
 * unpacks work within 128-bit lanes, so the codes are first permuted such
 * that the values come out in order. */
#define OPTIMC_VBMI_TARGET __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx512vbmi,avx512vbmi2,avx2,fma")))

/* The grid cells of 16 values x·inv (masked-off lanes read as 0), as 32-bit
 * integers that the caller saturates to [0, 65535] (vpackusdw), for a finite
 * inv = 1/absmax: the bits of optimc_q8_cell in fewer steps.
 *  - |x| <= absmax, so v = x·inv is within a rounding of [-1, 1], or NaN
 *    (x NaN, or x infinite and inv 0): never infinite.
 *  - For v in [-1, 1], s = fl(v + 1) is 0 or at least 2^-24, so t = s·½ is
 *    exact and t·65535 = s·32767.5 exactly: one rounding of s·32767.5 + ½ is
 *    the scalar rule's one rounding of t·65535 + ½.
 *  - Just past the ends, where the scalar rule clamps: past −1, s·32767.5 + ½
 *    is less than ½ and truncates to 0 or less; past 1, s is at most
 *    2 + 2^-22 and the cell 65535 or 65536; NaN converts to INT_MIN. The
 *    saturating pack makes these 0, 65535 and 0, the clamped rule's cells. */
OPTIMC_VBMI_TARGET static inline __m512i optimc_q8_cells16(const float *x, __mmask16 k, __m512 inv)
{
    __m512 s = _mm512_add_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(k, x), inv), _mm512_set1_ps(1.0f));
    return _mm512_cvttps_epi32(_mm512_fmadd_ps(s, _mm512_set1_ps(32767.5f), _mm512_set1_ps(0.5f)));
}

/* The codes of 4 x 32 cells (16-bit lanes) as 256 + code: the tree's
 * descent, level by level. A permute reads each node's threshold T, stored
 * as 65535 − T; the rounding average (cell + 65535 − T + 1) >> 1 (17 bits
 * inside, no overflow) has its top bit set exactly where cell >= T, and the
 * concatenating shift moves that bit in as the node's new low bit
 * (node' = 2·node + [cell >= T]). Each descent is a chain of dependent
 * steps: four side by side keep the core busy (measured: 10% faster than
 * two here, AMD Zen 4). */
#define OPTIMC_Q8_CHAINS 4
OPTIMC_VBMI_TARGET static inline void optimc_q8_descend(const optimc_qmap *m, const __m512i *cell,
                                                        const __m512i *t, __m512i *node)
{
    __mmask32 right[OPTIMC_Q8_CHAINS];   /* the root's outcomes: bit 6 of the nodes at level 7 */
    for (int h = 0; h < OPTIMC_Q8_CHAINS; h++) {
        __m512i r = _mm512_avg_epu16(cell[h], _mm512_set1_epi16((short)m->tree[1]));
        right[h] = _mm512_movepi16_mask(r);
        node[h] = _mm512_shldi_epi16(_mm512_set1_epi16(1), r, 1);
    }
#pragma GCC unroll 4
    for (int level = 1; level < 5; level++)   /* nodes 2-31: one register */
        for (int h = 0; h < OPTIMC_Q8_CHAINS; h++)
            node[h] = _mm512_shldi_epi16(node[h], _mm512_avg_epu16(cell[h], _mm512_permutexvar_epi16(node[h], t[0])), 1);
    /* nodes 32-63 (their low 5 bits), 64-127 (low 6 bits) */
    for (int h = 0; h < OPTIMC_Q8_CHAINS; h++)
        node[h] = _mm512_shldi_epi16(node[h], _mm512_avg_epu16(cell[h], _mm512_permutexvar_epi16(node[h], t[1])), 1);
    for (int h = 0; h < OPTIMC_Q8_CHAINS; h++)
        node[h] = _mm512_shldi_epi16(node[h], _mm512_avg_epu16(cell[h], _mm512_permutex2var_epi16(t[2], node[h], t[3])), 1);
    /* nodes 128-255: the half by the root's outcome */
    for (int h = 0; h < OPTIMC_Q8_CHAINS; h++) {
        __m512i th = _mm512_mask_blend_epi16(right[h], _mm512_permutex2var_epi16(t[4], node[h], t[5]),
                                             _mm512_permutex2var_epi16(t[6], node[h], t[7]));
        node[h] = _mm512_shldi_epi16(node[h], _mm512_avg_epu16(cell[h], th), 1);
    }
}

OPTIMC_VBMI_TARGET static float optimc_q8_encode_vbmi(const optimc_qmap *m, const float *restrict x, size_t n,
                                                      uint8_t *restrict codes)
{
    if (n > OPTIMC_QBLOCK) n = OPTIMC_QBLOCK;
    float absmax = optimc_q8_absmax(x, n);
    if (absmax == 0.0f) {
        memset(codes, 0, n);
        return absmax;
    }
    float inv1 = 1.0f / absmax;
    /* absmax below 1/FLT_MAX (subnormal): inv overflows, x·inv can be
     * infinite, and the cells need the clamp (optimc_q8_cells16) */
    if (!(inv1 <= 3.40282347e38f)) return optimc_q8_encode_plain(m, x, n, codes);
    /* the saturating pack of two 16-lane vectors interleaves their 128-bit
     * lanes (4 values of the first, 4 of the second, ...): byte j of this
     * index is the low byte of value j's word, over the two halves of a
     * 64-value step */
    static const uint8_t order_bytes[64] = {
        0, 2, 4, 6, 16, 18, 20, 22, 32, 34, 36, 38, 48, 50, 52, 54,
        8, 10, 12, 14, 24, 26, 28, 30, 40, 42, 44, 46, 56, 58, 60, 62,
        64, 66, 68, 70, 80, 82, 84, 86, 96, 98, 100, 102, 112, 114, 116, 118,
        72, 74, 76, 78, 88, 90, 92, 94, 104, 106, 108, 110, 120, 122, 124, 126};
    const __m512i order = _mm512_loadu_si512((const void *)order_bytes);
    const __m512 inv = _mm512_set1_ps(inv1);
    __m512i t[8];
    for (int j = 0; j < 8; j++) t[j] = _mm512_load_si512((const void *)(m->tree + 32 * j));
    for (size_t i = 0; i < n; i += 32 * OPTIMC_Q8_CHAINS) {
        __mmask64 k[OPTIMC_Q8_CHAINS / 2];   /* the values of each 64 that are there */
        __m512i cell[OPTIMC_Q8_CHAINS], node[OPTIMC_Q8_CHAINS];
        for (int h = 0; h < OPTIMC_Q8_CHAINS; h++) {
            size_t at = i + 32 * h;
            if (h % 2 == 0) {
                size_t left = n > at ? n - at : 0;
                k[h / 2] = left >= 64 ? ~(__mmask64)0 : ((__mmask64)1 << left) - 1;
            }
            __mmask64 kh = k[h / 2] >> (32 * (h % 2));
            cell[h] = _mm512_packus_epi32(optimc_q8_cells16(x + at, (__mmask16)kh, inv),
                                          optimc_q8_cells16(x + at + 16, (__mmask16)(kh >> 16), inv));
        }
        optimc_q8_descend(m, cell, t, node);
        /* node = 256 + code: its low byte */
        for (int h = 0; h < OPTIMC_Q8_CHAINS / 2; h++)
            if (k[h])
                _mm512_mask_storeu_epi8(codes + i + 64 * h, k[h],
                                        _mm512_permutex2var_epi8(node[2 * h], order, node[2 * h + 1]));
    }
    return absmax;
}

OPTIMC_VBMI_TARGET static void optimc_q8_decode_vbmi(const optimc_qmap *m, const uint8_t *restrict codes,
                                                     float absmax, size_t n, float *restrict x)
{
    /* byte j of the permuted codes is code 16q + 4L + r for j = 16L + 4q + r
     * (L the 128-bit lane, r the byte of a 4-value group): then the unpacks'
     * output q holds values 16q .. 16q+15 in order */
    static const uint8_t order_bytes[64] = {
        0, 1, 2, 3, 16, 17, 18, 19, 32, 33, 34, 35, 48, 49, 50, 51,
        4, 5, 6, 7, 20, 21, 22, 23, 36, 37, 38, 39, 52, 53, 54, 55,
        8, 9, 10, 11, 24, 25, 26, 27, 40, 41, 42, 43, 56, 57, 58, 59,
        12, 13, 14, 15, 28, 29, 30, 31, 44, 45, 46, 47, 60, 61, 62, 63};
    const __m512i order = _mm512_loadu_si512((const void *)order_bytes);
    const __m512 scale = _mm512_set1_ps(absmax);
    __m512i p[4][4];
    for (int b = 0; b < 4; b++)
        for (int q = 0; q < 4; q++) p[b][q] = _mm512_load_si512((const void *)(m->plane[b] + 64 * q));
    for (size_t i = 0; i < n; i += 64) {
        __mmask64 k = n - i >= 64 ? ~(__mmask64)0 : ((__mmask64)1 << (n - i)) - 1;
        __m512i c = _mm512_permutexvar_epi8(order, _mm512_maskz_loadu_epi8(k, codes + i));
        __mmask64 high = _mm512_movepi8_mask(c);   /* code bit 7: entries 128-255 */
        __m512i byte[4];
        for (int b = 0; b < 4; b++)
            byte[b] = _mm512_mask_blend_epi8(high, _mm512_permutex2var_epi8(p[b][0], c, p[b][1]),
                                             _mm512_permutex2var_epi8(p[b][2], c, p[b][3]));
        __m512i lo01 = _mm512_unpacklo_epi8(byte[0], byte[1]), hi01 = _mm512_unpackhi_epi8(byte[0], byte[1]);
        __m512i lo23 = _mm512_unpacklo_epi8(byte[2], byte[3]), hi23 = _mm512_unpackhi_epi8(byte[2], byte[3]);
        __m512i v[4] = {_mm512_unpacklo_epi16(lo01, lo23), _mm512_unpackhi_epi16(lo01, lo23),
                        _mm512_unpacklo_epi16(hi01, hi23), _mm512_unpackhi_epi16(hi01, hi23)};
        for (int q = 0; q < 4; q++)
            _mm512_mask_storeu_ps(x + i + 16 * q, (__mmask16)(k >> (16 * q)),
                                  _mm512_mul_ps(_mm512_castsi512_ps(v[q]), scale));
    }
}
#define OPTIMC_HAVE_VBMI_CODECS 1
#endif

/* The codecs the block wrapper calls: the VBMI forms where compiled and
 * `vbmi` says the CPU has them and they are switched on (the caller reads
 * optimc_use(OPTIMC_VBMI) once per step), the plain forms otherwise; the same bits
 * either way. */
static inline float optimc_q8_encode(const optimc_qmap *m, const float *restrict x, size_t n,
                                     uint8_t *restrict codes, int vbmi)
{
#ifdef OPTIMC_HAVE_VBMI_CODECS
    if (vbmi && m->tree_ok) return optimc_q8_encode_vbmi(m, x, n, codes);
#endif
    (void)vbmi;
    return optimc_q8_encode_plain(m, x, n, codes);
}

static inline void optimc_q8_decode(const optimc_qmap *m, const uint8_t *restrict codes, float absmax,
                                    size_t n, float *restrict x, int vbmi)
{
#ifdef OPTIMC_HAVE_VBMI_CODECS
    if (vbmi) {
        optimc_q8_decode_vbmi(m, codes, absmax, n, x);
        return;
    }
#endif
    (void)vbmi;
    optimc_q8_decode_plain(m, codes, absmax, n, x);
}

/* bfloat16 blocks: the scalar rules below, eight at a time where AVX2 is on */
OPTIMC_ALWAYS_INLINE void optimc_bf16_decode_block(const uint16_t *restrict h, size_t n, float *restrict x);
OPTIMC_ALWAYS_INLINE void optimc_bf16_encode_block(const float *restrict x, size_t n, uint16_t *restrict h);

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
OPTIMC_ALWAYS_INLINE void optimc_bf16_decode_block(const uint16_t *restrict h, size_t n, float *restrict x)
{
    size_t i = 0;
#if defined(__AVX512F__)
    /* whole 64-byte vectors, as the AVX-512 kernels read them back (a wide
     * load of two narrower recent stores would wait for them to commit) */
    for (; i + 16 <= n; i += 16) {
        __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(h + i)));
        _mm512_storeu_ps(x + i, _mm512_castsi512_ps(_mm512_slli_epi32(w, 16)));
    }
#endif
#if defined(__AVX2__) && defined(__FMA__)
    for (; i + 8 <= n; i += 8) {
        __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(h + i)));
        _mm256_storeu_ps(x + i, _mm256_castsi256_ps(_mm256_slli_epi32(w, 16)));
    }
#endif
    for (; i < n; i++) x[i] = optimc_bf16_decode(h[i]);
}

OPTIMC_ALWAYS_INLINE void optimc_bf16_encode_block(const float *restrict x, size_t n, uint16_t *restrict h)
{
    size_t i = 0;
#if defined(__AVX512F__)
    for (; i + 16 <= n; i += 16) {
        __m512i b = _mm512_castps_si512(_mm512_loadu_ps(x + i));
        __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(1));
        __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(b, _mm512_set1_epi32(0x7FFF)), lsb), 16);
        __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(b, _mm512_set1_epi32(0x7FFFFFFF)),
                                                _mm512_set1_epi32(0x7F800000));
        __m512i quiet_nan = _mm512_or_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(0x40));
        /* every lane < 2^16: the truncating narrow is exact */
        _mm256_storeu_si256((__m256i *)(h + i),
                            _mm512_cvtepi32_epi16(_mm512_mask_blend_epi32(nan, rounded, quiet_nan)));
    }
#endif
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

#if defined(__AVX512F__)
/* The same rounding with AVX512_BF16 (runtime.h, optimc_use(OPTIMC_AVX512BF16)):
 * vcvtne2ps2bf16 rounds 32 values to nearest even and quiets NaNs exactly as
 * optimc_bf16_encode does (checked over all 2^32 floats), except that it
 * reads a subnormal as zero; 32 values holding one go the integer way. */
__attribute__((target("avx512bf16,avx512f,avx512vl,avx512dq,avx2,fma")))
static void optimc_bf16_encode_block_avx512bf16(const float *restrict x, size_t n, uint16_t *restrict h)
{
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512 lo = _mm512_loadu_ps(x + i), hi = _mm512_loadu_ps(x + i + 16);
        if (_mm512_fpclass_ps_mask(lo, 0x20) | _mm512_fpclass_ps_mask(hi, 0x20))   /* 0x20: subnormal */
            optimc_bf16_encode_block(x + i, 32, h + i);
        else
            _mm512_storeu_si512((void *)(h + i), (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
    }
    optimc_bf16_encode_block(x + i, n - i, h + i);
}
#endif
#endif
