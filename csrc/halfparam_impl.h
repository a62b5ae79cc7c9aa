/* halfparam_impl.h — the block wrapper that steps a bfloat16 or float16 param
 * (optimc.h, optimc_param_format) with any element-wise rule's float32
 * kernel; included by kernels_impl.h after the float instantiation (it calls
 * the float versions of lowprec_run, grad_norm_acc and all_finite).
 *
 * [lo, hi) is walked in OPTIMC_QBLOCK-element blocks (lo is a block edge:
 * the step splits such tensors on block edges). Per block: the param is the
 * float32 master (master weights) or the param decoded into a stack block;
 * the grad is read in place (float32) or decoded (16-bit); the rule's kernel
 * runs on the block — through lowprec_run when the state is compressed too —
 * and the float32 result is written to the param, rounded to nearest even or
 * stochastically (halfparam.h). One pass, nothing allocated.
 *
 * The conversions and the generator, per SIMD level: the scalar functions of
 * halfparam.h are their definition; the avx2 and avx512 levels compute the
 * same integer functions 8 or 16 elements at a time (SplitMix64's 64-bit
 * multiplies: vpmullq at avx512, built from three 32x32->64 vpmuludq at
 * avx2), and convert float16 with F16C where the CPU has it (runtime.h), which
 * rounds to nearest even exactly as optimc_f16_encode does. Tails of a block
 * use the scalar functions. tests/test_half_params.py compares every level,
 * with F16C and without, against NumPy references. */
#include "halfparam.h"
#include "runtime.h"
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

#if defined(__AVX512F__) && defined(__AVX512DQ__) && defined(__AVX512VL__)
#define HALF_AVX512 1
#elif defined(__AVX2__)
#define HALF_AVX2 1
#endif

/* ---- float16 <-> float32, to nearest even ---- */

/* The portable loops: branch-light scalar code the compiler may vectorize. */
static void f16_decode_soft(const uint16_t *restrict h, size_t n, float *restrict out)
{
    for (size_t i = 0; i < n; i++) out[i] = optimc_f16_decode(h[i]);
}

static void f16_encode_soft(const float *restrict v, size_t n, uint16_t *restrict out)
{
    for (size_t i = 0; i < n; i++) out[i] = optimc_f16_encode(v[i]);
}

#if defined(HALF_AVX512)
/* F16C's conversions, 16 at a time (their 512-bit forms are AVX-512F's) */
static void f16_decode_hw(const uint16_t *restrict h, size_t n, float *restrict out)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(out + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(h + i))));
    f16_decode_soft(h + i, n - i, out + i);
}

static void f16_encode_hw(const float *restrict v, size_t n, uint16_t *restrict out)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(out + i), _mm512_cvtps_ph(_mm512_loadu_ps(v + i), _MM_FROUND_TO_NEAREST_INT));
    f16_encode_soft(v + i, n - i, out + i);
}
#elif defined(HALF_AVX2)
/* F16C is not implied by AVX2: these are compiled for it and called only
 * when the CPU has it */
__attribute__((target("avx2,fma,f16c")))
static void f16_decode_hw(const uint16_t *restrict h, size_t n, float *restrict out)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + i))));
    f16_decode_soft(h + i, n - i, out + i);
}

__attribute__((target("avx2,fma,f16c")))
static void f16_encode_hw(const float *restrict v, size_t n, uint16_t *restrict out)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(out + i), _mm256_cvtps_ph(_mm256_loadu_ps(v + i), _MM_FROUND_TO_NEAREST_INT));
    f16_encode_soft(v + i, n - i, out + i);
}
#endif

/* ---- bfloat16 at avx512: quantize.h's rules 16 at a time ---- */
#if defined(HALF_AVX512)
static void bf16_decode_wide(const uint16_t *restrict h, size_t n, float *restrict out)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(h + i)));
        _mm512_storeu_si512(out + i, _mm512_slli_epi32(w, 16));
    }
    for (; i < n; i++) out[i] = optimc_bf16_decode(h[i]);
}

static void bf16_encode_wide(const float *restrict v, size_t n, uint16_t *restrict out)
{
    const __m512i one = _mm512_set1_epi32(1), bias = _mm512_set1_epi32(0x7FFF),
                  abs_mask = _mm512_set1_epi32(0x7FFFFFFF), inf = _mm512_set1_epi32(0x7F800000),
                  quiet = _mm512_set1_epi32(0x40);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512i b = _mm512_castps_si512(_mm512_loadu_ps(v + i)), top = _mm512_srli_epi32(b, 16);
        __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(b, bias),
                                                             _mm512_and_si512(top, one)), 16);
        __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(b, abs_mask), inf);
        __m512i r = _mm512_mask_mov_epi32(rounded, nan, _mm512_or_si512(top, quiet));
        _mm256_storeu_si256((__m256i *)(out + i), _mm512_cvtepi32_epi16(r));
    }
    for (; i < n; i++) out[i] = optimc_bf16_encode(v[i]);
}
#else
#define bf16_decode_wide optimc_bf16_decode_block   /* quantize.h: 8 at a time at avx2 */
#define bf16_encode_wide optimc_bf16_encode_block
#endif

/* ---- stochastic rounding: the generator ----
 * optimc_sr_bits for elements at, at+1, ... (at a multiple of 4): SplitMix64's
 * outputs number at/4 + 1 onwards of the stream `key`, four elements each
 * (a 64-bit output, stored little-endian, is four 16-bit words in element
 * order), generated in registers next to the rounding that uses them, 16
 * elements (four outputs in one 256-bit vector) at a time. */
#if defined(HALF_AVX512) || defined(HALF_AVX2)
typedef struct { __m256i z, step, c1, c2, c1hi, c2hi; } sr_gen;

static inline sr_gen sr_gen_init(uint64_t key, uint64_t at)
{
    const uint64_t G = OPTIMC_GOLDEN_GAMMA, base = key + (at / 4 + 1) * G;
    const uint64_t C1 = UINT64_C(0xBF58476D1CE4E5B9), C2 = UINT64_C(0x94D049BB133111EB);
    sr_gen g;
    g.z = _mm256_add_epi64(_mm256_set1_epi64x((long long)base),
                           _mm256_setr_epi64x(0, (long long)G, (long long)(2 * G), (long long)(3 * G)));
    g.step = _mm256_set1_epi64x((long long)(4 * G));
    g.c1 = _mm256_set1_epi64x((long long)C1);   /* avx2: only the low halves are used */
    g.c2 = _mm256_set1_epi64x((long long)C2);
    g.c1hi = _mm256_set1_epi64x((long long)(C1 >> 32));
    g.c2hi = _mm256_set1_epi64x((long long)(C2 >> 32));
    return g;
}

/* z·c mod 2^64: vpmullq at avx512; at avx2 from 32-bit halves,
 * lo·lo + ((hi·lo + lo·hi) << 32) */
static inline __m256i sr_mul64(__m256i z, __m256i c, __m256i c_hi)
{
#if defined(HALF_AVX512)
    (void)c_hi;
    return _mm256_mullo_epi64(z, c);
#else
    __m256i cross = _mm256_add_epi64(_mm256_mul_epu32(_mm256_srli_epi64(z, 32), c), _mm256_mul_epu32(z, c_hi));
    return _mm256_add_epi64(_mm256_mul_epu32(z, c), _mm256_slli_epi64(cross, 32));
#endif
}

/* the 16 random bits of the next 16 elements, as 16 16-bit words */
static inline __m256i sr_gen_next(sr_gen *g)
{
    __m256i z = g->z;
    g->z = _mm256_add_epi64(z, g->step);
    z = sr_mul64(_mm256_xor_si256(z, _mm256_srli_epi64(z, 30)), g->c1, g->c1hi);
    z = sr_mul64(_mm256_xor_si256(z, _mm256_srli_epi64(z, 27)), g->c2, g->c2hi);
    return _mm256_xor_si256(z, _mm256_srli_epi64(z, 31));
}
#endif

/* ---- stochastic rounding: float32 -> 16 bits, lane by lane ----
 * optimc_bf16_encode_stochastic and optimc_f16_encode_stochastic with r, one
 * 16-bit random number per 32-bit lane. The rare lanes (NaN; float16: below
 * 2^-14, from 65536 up, Inf, NaN) are fixed where a vector has any. Variable
 * shifts by 32 or more give 0, as optimc_shr32/shl32 do. */
#if defined(HALF_AVX512)
static inline __m256i bf16_sr16(__m512i b, __m512i r)
{
    const __m512i low16 = _mm512_set1_epi32(0xFFFF), one = _mm512_set1_epi32(1);
    __m512i top = _mm512_srli_epi32(b, 16);
    __m512i q = _mm512_mask_add_epi32(top, _mm512_cmpgt_epu32_mask(_mm512_and_si512(b, low16), r), top, one);
    __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(b, _mm512_set1_epi32(0x7FFFFFFF)),
                                            _mm512_set1_epi32(0x7F800000));
    if (nan) q = _mm512_mask_mov_epi32(q, nan, _mm512_or_si512(top, _mm512_set1_epi32(0x40)));
    return _mm512_cvtepi32_epi16(q);
}

static inline __m256i f16_sr16(__m512i b, __m512i r)
{
    const __m512i min_normal = _mm512_set1_epi32(0x38800000);
    __m512i a = _mm512_and_si512(b, _mm512_set1_epi32(0x7FFFFFFF));
    /* a float16 normal: 13 bits dropped; in 16-bit fixed point, (a & 0x1FFF) << 3 */
    __m512i q = _mm512_sub_epi32(_mm512_srli_epi32(a, 13), _mm512_set1_epi32(112 << 10));
    __m512i frac = _mm512_and_si512(_mm512_slli_epi32(a, 3), _mm512_set1_epi32(0xFFF8));
    /* one unsigned compare finds the lanes outside [2^-14, 65536) */
    __mmask16 rare = _mm512_cmpge_epu32_mask(_mm512_sub_epi32(a, min_normal),
                                             _mm512_set1_epi32(0x47800000 - 0x38800000));
    __mmask16 large = 0;
    if (rare) {
        __mmask16 sub = _mm512_cmplt_epu32_mask(a, min_normal);
        large = rare & (__mmask16)~sub;
        const __m512i k32 = _mm512_set1_epi32(32);
        __m512i M = _mm512_or_si512(_mm512_and_si512(a, _mm512_set1_epi32(0x7FFFFF)), _mm512_set1_epi32(0x800000));
        __m512i s = _mm512_sub_epi32(_mm512_set1_epi32(126), _mm512_srli_epi32(a, 23));
        q = _mm512_mask_srlv_epi32(q, sub, M, s);
        __m512i frac32 = _mm512_or_si512(_mm512_sllv_epi32(M, _mm512_sub_epi32(k32, s)),
                                         _mm512_srlv_epi32(M, _mm512_sub_epi32(s, k32)));
        frac = _mm512_mask_srli_epi32(frac, sub, frac32, 16);
    }
    q = _mm512_mask_add_epi32(q, _mm512_cmpgt_epu32_mask(frac, r), q, _mm512_set1_epi32(1));
    if (large) {
        q = _mm512_mask_mov_epi32(q, large, _mm512_set1_epi32(0x7C00));
        q = _mm512_mask_mov_epi32(q, _mm512_cmpgt_epu32_mask(a, _mm512_set1_epi32(0x7F800000)),
                                  _mm512_or_si512(_mm512_set1_epi32(0x7E00),
                                                  _mm512_and_si512(_mm512_srli_epi32(a, 13), _mm512_set1_epi32(0x3FF))));
    }
    /* q | (b >> 16 & 0x8000): the sign */
    q = _mm512_ternarylogic_epi32(q, _mm512_srli_epi32(b, 16), _mm512_set1_epi32(0x8000), 0xF8);
    return _mm512_cvtepi32_epi16(q);
}
#elif defined(HALF_AVX2)
/* 8 + 8 lanes of 32 bits (each below 2^16) -> 16 words in order */
static inline __m256i pack16(__m256i q0, __m256i q1)
{
    return _mm256_permute4x64_epi64(_mm256_packus_epi32(q0, q1), 0xD8);
}

static inline __m256i bf16_sr8(__m256i b, __m256i r)
{
    __m256i top = _mm256_srli_epi32(b, 16);
    /* both sides below 2^16: the signed compare is the unsigned one; true is -1 */
    __m256i q = _mm256_sub_epi32(top, _mm256_cmpgt_epi32(_mm256_and_si256(b, _mm256_set1_epi32(0xFFFF)), r));
    __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(b, _mm256_set1_epi32(0x7FFFFFFF)), _mm256_set1_epi32(0x7F800000));
    if (!_mm256_testz_si256(nan, nan)) q = _mm256_blendv_epi8(q, _mm256_or_si256(top, _mm256_set1_epi32(0x40)), nan);
    return q;
}

static inline __m256i f16_sr8(__m256i b, __m256i r)
{
    const __m256i min_normal = _mm256_set1_epi32(0x38800000);
    __m256i a = _mm256_and_si256(b, _mm256_set1_epi32(0x7FFFFFFF));
    __m256i q = _mm256_sub_epi32(_mm256_srli_epi32(a, 13), _mm256_set1_epi32(112 << 10));
    __m256i frac = _mm256_and_si256(_mm256_slli_epi32(a, 3), _mm256_set1_epi32(0xFFF8));
    /* a < 2^31: signed compares are the unsigned ones */
    __m256i sub = _mm256_cmpgt_epi32(min_normal, a), large = _mm256_cmpgt_epi32(a, _mm256_set1_epi32(0x47800000 - 1));
    __m256i rare = _mm256_or_si256(sub, large);
    int any_rare = !_mm256_testz_si256(rare, rare);
    if (any_rare) {
        const __m256i k32 = _mm256_set1_epi32(32);
        __m256i M = _mm256_or_si256(_mm256_and_si256(a, _mm256_set1_epi32(0x7FFFFF)), _mm256_set1_epi32(0x800000));
        __m256i s = _mm256_sub_epi32(_mm256_set1_epi32(126), _mm256_srli_epi32(a, 23));
        q = _mm256_blendv_epi8(q, _mm256_srlv_epi32(M, s), sub);
        __m256i frac32 = _mm256_or_si256(_mm256_sllv_epi32(M, _mm256_sub_epi32(k32, s)),
                                         _mm256_srlv_epi32(M, _mm256_sub_epi32(s, k32)));
        frac = _mm256_blendv_epi8(frac, _mm256_srli_epi32(frac32, 16), sub);
    }
    q = _mm256_sub_epi32(q, _mm256_cmpgt_epi32(frac, r));   /* both below 2^16 */
    if (any_rare) {
        q = _mm256_blendv_epi8(q, _mm256_set1_epi32(0x7C00), large);
        q = _mm256_blendv_epi8(q, _mm256_or_si256(_mm256_set1_epi32(0x7E00), _mm256_and_si256(
                                      _mm256_srli_epi32(a, 13), _mm256_set1_epi32(0x3FF))),
                               _mm256_cmpgt_epi32(a, _mm256_set1_epi32(0x7F800000)));
    }
    return _mm256_or_si256(q, _mm256_and_si256(_mm256_srli_epi32(b, 16), _mm256_set1_epi32(0x8000)));
}
#endif

/* Elements [at, at + n) of a param (at a multiple of 4) from their float32
 * values v, rounded stochastically with the stream `key`; bf16 is a constant
 * at each call (half_round_sr), so each format gets its own loop. */
static inline __attribute__((always_inline))
void half_round_sr_loop(int bf16, const float *restrict v, size_t n, uint64_t key, uint64_t at, uint16_t *restrict out)
{
    size_t i = 0;
#if defined(HALF_AVX512) || defined(HALF_AVX2)
    sr_gen g = sr_gen_init(key, at);
    for (; i + 16 <= n; i += 16) {
        __m256i r = sr_gen_next(&g);
#if defined(HALF_AVX512)
        __m512i b = _mm512_castps_si512(_mm512_loadu_ps(v + i)), r32 = _mm512_cvtepu16_epi32(r);
        _mm256_storeu_si256((__m256i *)(out + i), bf16 ? bf16_sr16(b, r32) : f16_sr16(b, r32));
#else
        __m256i b0 = _mm256_castps_si256(_mm256_loadu_ps(v + i)), b1 = _mm256_castps_si256(_mm256_loadu_ps(v + i + 8));
        __m256i r0 = _mm256_cvtepu16_epi32(_mm256_castsi256_si128(r)), r1 = _mm256_cvtepu16_epi32(_mm256_extracti128_si256(r, 1));
        _mm256_storeu_si256((__m256i *)(out + i), bf16 ? pack16(bf16_sr8(b0, r0), bf16_sr8(b1, r1))
                                                         : pack16(f16_sr8(b0, r0), f16_sr8(b1, r1)));
#endif
    }
#endif
    const uint64_t base = key + (at / 4 + 1) * OPTIMC_GOLDEN_GAMMA;
    for (; i < n; i += 4) {   /* the portable loop: one output, four elements */
        uint64_t z = optimc_mix64(base + (i / 4) * OPTIMC_GOLDEN_GAMMA);
        for (size_t k = 0; k < 4 && i + k < n; k++) {
            uint32_t r = (uint32_t)(z >> (16 * k)) & 0xFFFFu;
            out[i + k] = bf16 ? optimc_bf16_encode_stochastic(v[i + k], r) : optimc_f16_encode_stochastic(v[i + k], r);
        }
    }
}

static void half_round_sr(int format, const float *restrict v, size_t n, uint64_t key, uint64_t at,
                          uint16_t *restrict out)
{
    if (format == OPTIMC_PARAM_BF16) half_round_sr_loop(1, v, n, key, at, out);
    else half_round_sr_loop(0, v, n, key, at, out);
}

/* ---- per block ---- */

static void halfparam_decode(int format, int f16c, const uint16_t *restrict h, size_t n, float *restrict out)
{
    if (format == OPTIMC_PARAM_BF16) bf16_decode_wide(h, n, out);
#if defined(HALF_AVX512) || defined(HALF_AVX2)
    else if (f16c) f16_decode_hw(h, n, out);
#endif
    else f16_decode_soft(h, n, out);
    (void)f16c;
}

/* Elements [at, at + n) of a param (at a block edge) from their float32
 * values: to nearest even, or stochastically with the stream `step_key`. */
static void halfparam_encode(int format, int stochastic, int f16c, uint64_t step_key, const float *restrict v,
                             size_t at, size_t n, uint16_t *restrict out)
{
    if (stochastic) {
        half_round_sr(format, v, n, step_key, (uint64_t)at, out);
    } else if (format == OPTIMC_PARAM_BF16) {
        bf16_encode_wide(v, n, out);
#if defined(HALF_AVX512) || defined(HALF_AVX2)
    } else if (f16c) {
        f16_encode_hw(v, n, out);
#endif
    } else {
        f16_encode_soft(v, n, out);
    }
    (void)f16c;
}

static void halfparam_run(optimc_kernel_fn kernel, const optimc_tensor *x, size_t lo, size_t hi)
{
    _Alignas(64) float param[OPTIMC_QBLOCK], grad[OPTIMC_QBLOCK];
    optimc_tensor blk = *x;
    /* bytes per element of the stored state (8-bit block scales: per block) */
    size_t state_item = x->state_format == OPTIMC_STATE_BF16 ? 2 : x->state_format == OPTIMC_STATE_8BIT ? 1 : 4;
    uint16_t *stored = x->param;
    int f16c = optimc_use(OPTIMC_F16C), stochastic = x->rounding == OPTIMC_ROUND_STOCHASTIC;
    uint64_t step_key = stochastic ? optimc_sr_step_key(x->sr_key, x->step) : 0;
    for (size_t b = lo; b < hi; b += OPTIMC_QBLOCK) {
        size_t len = hi - b < OPTIMC_QBLOCK ? hi - b : OPTIMC_QBLOCK;
        float *p = x->master ? x->master + b : param;
        if (!x->master) halfparam_decode(x->param_format, f16c, stored + b, len, param);
        if (x->grad_half) {
            halfparam_decode(x->param_format, f16c, (const uint16_t *)x->grad + b, len, grad);
            blk.grad = grad;
        } else {
            blk.grad = (const float *)x->grad + b;
        }
        blk.param = p;
        for (int k = 0; k < OPTIMC_MAX_STATE; k++) {
            if (!x->state[k]) continue;
            blk.state[k] = (char *)x->state[k] + b * state_item;
            if (x->state_absmax[k]) blk.state_absmax[k] = x->state_absmax[k] + b / OPTIMC_QBLOCK;
        }
        if (x->state_format != OPTIMC_STATE_NATIVE) lowprec_run_f32(kernel, &blk, 0, len);
        else kernel(&blk, 0, len);
        halfparam_encode(x->param_format, stochastic, f16c, step_key, p, b, len, stored + b);
    }
}

/* The guard's pass over a 16-bit grad: grad_norm_acc's sum of squares and
 * all_finite, block by block through float32 (exact: every 16-bit value is
 * a float32). */
static void halfparam_grad_norm_acc(const optimc_tensor *x, double *acc)
{
    _Alignas(64) float grad[OPTIMC_QBLOCK];
    int f16c = optimc_use(OPTIMC_F16C);
    for (size_t b = 0; b < x->n; b += OPTIMC_QBLOCK) {
        size_t len = x->n - b < OPTIMC_QBLOCK ? x->n - b : OPTIMC_QBLOCK;
        halfparam_decode(x->param_format, f16c, (const uint16_t *)x->grad + b, len, grad);
        grad_norm_acc_f32(grad, 0, len, 2.0, acc);
    }
}

static int halfparam_all_finite(const optimc_tensor *x)
{
    /* 16-bit formats: the exponent bits all ones mean Inf or NaN */
    uint16_t exp = x->param_format == OPTIMC_PARAM_BF16 ? 0x7F80u : 0x7C00u;
    const uint16_t *g = x->grad;
    for (size_t i = 0; i < x->n; i++)
        if ((g[i] & exp) == exp) return 0;
    return 1;
}

/* The conversions as a whole-array service (the module functions the tests
 * use): decode, or encode to nearest (step_key unused) or stochastically. */
static void halfparam_decode_array(int format, const uint16_t *h, size_t n, float *out)
{
    int f16c = optimc_use(OPTIMC_F16C);
    for (size_t b = 0; b < n; b += OPTIMC_QBLOCK)
        halfparam_decode(format, f16c, h + b, n - b < OPTIMC_QBLOCK ? n - b : OPTIMC_QBLOCK, out + b);
}

static void halfparam_encode_array(int format, int stochastic, uint64_t step_key, const float *v, size_t n,
                                   uint16_t *out)
{
    int f16c = optimc_use(OPTIMC_F16C);
    for (size_t b = 0; b < n; b += OPTIMC_QBLOCK)
        halfparam_encode(format, stochastic, f16c, step_key, v + b, b, n - b < OPTIMC_QBLOCK ? n - b : OPTIMC_QBLOCK,
                         out + b);
}

#undef HALF_AVX512
#undef HALF_AVX2
#undef bf16_decode_wide
#undef bf16_encode_wide
