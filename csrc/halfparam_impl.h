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
 * optimc_sr_bits for elements at, at+1, ... (at even): SplitMix64's outputs
 * number at/2 + 1 onwards of the stream `key`, each giving two elements (its
 * 64 bits, stored little-endian, are the two 32-bit words in element order),
 * generated in registers next to the rounding that uses them. */
#if defined(HALF_AVX512)
typedef struct { __m512i z, step, c1, c2; } sr_gen;

static inline sr_gen sr_gen_init(uint64_t key, uint64_t at)
{
    const uint64_t G = OPTIMC_GOLDEN_GAMMA, base = key + (at / 2 + 1) * G;
    sr_gen g;
    g.z = _mm512_add_epi64(_mm512_set1_epi64((long long)base),
                           _mm512_setr_epi64(0, (long long)G, (long long)(2 * G), (long long)(3 * G),
                                             (long long)(4 * G), (long long)(5 * G), (long long)(6 * G),
                                             (long long)(7 * G)));
    g.step = _mm512_set1_epi64((long long)(8 * G));
    g.c1 = _mm512_set1_epi64((long long)UINT64_C(0xBF58476D1CE4E5B9));
    g.c2 = _mm512_set1_epi64((long long)UINT64_C(0x94D049BB133111EB));
    return g;
}

/* the 32 random bits of the next 16 elements */
static inline __m512i sr_gen_next(sr_gen *g)
{
    __m512i z = g->z;
    g->z = _mm512_add_epi64(z, g->step);
    z = _mm512_mullo_epi64(_mm512_xor_si512(z, _mm512_srli_epi64(z, 30)), g->c1);
    z = _mm512_mullo_epi64(_mm512_xor_si512(z, _mm512_srli_epi64(z, 27)), g->c2);
    return _mm512_xor_si512(z, _mm512_srli_epi64(z, 31));
}
#elif defined(HALF_AVX2)
typedef struct { __m256i z, step, c1lo, c1hi, c2lo, c2hi; } sr_gen;

static inline sr_gen sr_gen_init(uint64_t key, uint64_t at)
{
    const uint64_t G = OPTIMC_GOLDEN_GAMMA, base = key + (at / 2 + 1) * G;
    sr_gen g;
    g.z = _mm256_add_epi64(_mm256_set1_epi64x((long long)base),
                           _mm256_setr_epi64x(0, (long long)G, (long long)(2 * G), (long long)(3 * G)));
    g.step = _mm256_set1_epi64x((long long)(4 * G));
    g.c1lo = _mm256_set1_epi64x(0x1CE4E5B9);
    g.c1hi = _mm256_set1_epi64x(0xBF58476D);
    g.c2lo = _mm256_set1_epi64x(0x133111EB);
    g.c2hi = _mm256_set1_epi64x(0x94D049BB);
    return g;
}

/* z·c mod 2^64 from 32-bit halves: lo·lo + ((hi·lo + lo·hi) << 32) */
static inline __m256i sr_mul64(__m256i z, __m256i lo, __m256i hi)
{
    __m256i cross = _mm256_add_epi64(_mm256_mul_epu32(_mm256_srli_epi64(z, 32), lo), _mm256_mul_epu32(z, hi));
    return _mm256_add_epi64(_mm256_mul_epu32(z, lo), _mm256_slli_epi64(cross, 32));
}

/* the 32 random bits of the next 8 elements */
static inline __m256i sr_gen_next(sr_gen *g)
{
    __m256i z = g->z;
    g->z = _mm256_add_epi64(z, g->step);
    z = sr_mul64(_mm256_xor_si256(z, _mm256_srli_epi64(z, 30)), g->c1lo, g->c1hi);
    z = sr_mul64(_mm256_xor_si256(z, _mm256_srli_epi64(z, 27)), g->c2lo, g->c2hi);
    return _mm256_xor_si256(z, _mm256_srli_epi64(z, 31));
}
#endif

/* ---- stochastic rounding: float32 -> 16 bits ----
 * Elements [at, at + n) of a param (at even) from their float32 values v. */

static void bf16_round_sr(const float *restrict v, size_t n, uint64_t key, uint64_t at, uint16_t *restrict out)
{
    size_t i = 0;
    /* optimc_bf16_encode_stochastic lane by lane; NaN lanes (rare) fixed after */
#if defined(HALF_AVX512)
    const __m512i low16 = _mm512_set1_epi32(0xFFFF), one = _mm512_set1_epi32(1),
                  abs_mask = _mm512_set1_epi32(0x7FFFFFFF), inf = _mm512_set1_epi32(0x7F800000),
                  quiet = _mm512_set1_epi32(0x40);
    sr_gen g = sr_gen_init(key, at);
    for (; i + 16 <= n; i += 16) {
        __m512i b = _mm512_castps_si512(_mm512_loadu_ps(v + i)), top = _mm512_srli_epi32(b, 16);
        __m512i rr = _mm512_srli_epi32(sr_gen_next(&g), 16);
        __mmask16 up = _mm512_cmpgt_epu32_mask(_mm512_and_si512(b, low16), rr);
        __m512i q = _mm512_mask_add_epi32(top, up, top, one);
        __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(b, abs_mask), inf);
        if (nan) q = _mm512_mask_mov_epi32(q, nan, _mm512_or_si512(top, quiet));
        _mm256_storeu_si256((__m256i *)(out + i), _mm512_cvtepi32_epi16(q));
    }
#elif defined(HALF_AVX2)
    const __m256i low16 = _mm256_set1_epi32(0xFFFF), abs_mask = _mm256_set1_epi32(0x7FFFFFFF),
                  inf = _mm256_set1_epi32(0x7F800000), quiet = _mm256_set1_epi32(0x40);
    sr_gen g = sr_gen_init(key, at);
    for (; i + 8 <= n; i += 8) {
        __m256i b = _mm256_castps_si256(_mm256_loadu_ps(v + i)), top = _mm256_srli_epi32(b, 16);
        __m256i rr = _mm256_srli_epi32(sr_gen_next(&g), 16);
        /* both sides below 2^16: the signed compare is the unsigned one; true is -1 */
        __m256i q = _mm256_sub_epi32(top, _mm256_cmpgt_epi32(_mm256_and_si256(b, low16), rr));
        __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(b, abs_mask), inf);
        if (!_mm256_testz_si256(nan, nan)) q = _mm256_blendv_epi8(q, _mm256_or_si256(top, quiet), nan);
        __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(q, q), 0x08);
        _mm_storeu_si128((__m128i *)(out + i), _mm256_castsi256_si128(packed));
    }
#endif
    const uint64_t base = key + (at / 2 + 1) * OPTIMC_GOLDEN_GAMMA;
    for (; i + 2 <= n; i += 2) {   /* the portable loop: one output, two elements */
        uint64_t z = optimc_mix64(base + (i / 2) * OPTIMC_GOLDEN_GAMMA);
        out[i] = optimc_bf16_encode_stochastic(v[i], (uint32_t)z);
        out[i + 1] = optimc_bf16_encode_stochastic(v[i + 1], (uint32_t)(z >> 32));
    }
    if (i < n) out[i] = optimc_bf16_encode_stochastic(v[i], optimc_sr_bits(key, at + i));
}

static void f16_round_sr(const float *restrict v, size_t n, uint64_t key, uint64_t at, uint16_t *restrict out)
{
    size_t i = 0;
    /* optimc_f16_truncate and optimc_f16_encode_stochastic lane by lane: the
     * float16-normal case for all lanes, then (when a lane needs it: rare)
     * the subnormal case, and >= 65536, Inf and NaN. Variable shifts by 32 or
     * more give 0, as optimc_shr32/shl32 do. */
#if defined(HALF_AVX512)
    const __m512i abs_mask = _mm512_set1_epi32(0x7FFFFFFF), rebias = _mm512_set1_epi32(112 << 10),
                  one = _mm512_set1_epi32(1), sign_bit = _mm512_set1_epi32(0x8000),
                  min_normal = _mm512_set1_epi32(0x38800000), normal_span = _mm512_set1_epi32(0x47800000 - 0x38800000);
    sr_gen g = sr_gen_init(key, at);
    for (; i + 16 <= n; i += 16) {
        __m512i b = _mm512_castps_si512(_mm512_loadu_ps(v + i)), a = _mm512_and_si512(b, abs_mask);
        __m512i q = _mm512_sub_epi32(_mm512_srli_epi32(a, 13), rebias), frac = _mm512_slli_epi32(a, 19);
        /* one unsigned compare finds the lanes outside [2^-14, 65536) */
        __mmask16 rare = _mm512_cmpge_epu32_mask(_mm512_sub_epi32(a, min_normal), normal_span);
        __mmask16 sub = 0, large = 0;
        if (rare) {
            sub = _mm512_cmplt_epu32_mask(a, min_normal);
            large = rare & ~sub;
            const __m512i k32 = _mm512_set1_epi32(32);
            __m512i M = _mm512_or_si512(_mm512_and_si512(a, _mm512_set1_epi32(0x7FFFFF)), _mm512_set1_epi32(0x800000));
            __m512i s = _mm512_sub_epi32(_mm512_set1_epi32(126), _mm512_srli_epi32(a, 23));
            q = _mm512_mask_srlv_epi32(q, sub, M, s);
            frac = _mm512_mask_mov_epi32(frac, sub, _mm512_or_si512(
                _mm512_sllv_epi32(M, _mm512_sub_epi32(k32, s)), _mm512_srlv_epi32(M, _mm512_sub_epi32(s, k32))));
        }
        __mmask16 up = _mm512_cmpgt_epu32_mask(frac, sr_gen_next(&g));
        q = _mm512_mask_add_epi32(q, up, q, one);
        if (large) {
            q = _mm512_mask_mov_epi32(q, large, _mm512_set1_epi32(0x7C00));
            q = _mm512_mask_mov_epi32(q, _mm512_cmpgt_epu32_mask(a, _mm512_set1_epi32(0x7F800000)),
                                      _mm512_or_si512(_mm512_set1_epi32(0x7E00), _mm512_and_si512(
                                          _mm512_srli_epi32(a, 13), _mm512_set1_epi32(0x3FF))));
        }
        q = _mm512_ternarylogic_epi32(q, _mm512_srli_epi32(b, 16), sign_bit, 0xF8);   /* q | (b>>16 & 0x8000) */
        _mm256_storeu_si256((__m256i *)(out + i), _mm512_cvtepi32_epi16(q));
    }
#elif defined(HALF_AVX2)
    const __m256i abs_mask = _mm256_set1_epi32(0x7FFFFFFF), rebias = _mm256_set1_epi32(112 << 10),
                  sign_bit = _mm256_set1_epi32(0x8000), flip = _mm256_set1_epi32((int)0x80000000u),
                  min_normal = _mm256_set1_epi32(0x38800000), below_big = _mm256_set1_epi32(0x47800000 - 1);
    sr_gen g = sr_gen_init(key, at);
    for (; i + 8 <= n; i += 8) {
        __m256i b = _mm256_castps_si256(_mm256_loadu_ps(v + i)), a = _mm256_and_si256(b, abs_mask);
        __m256i q = _mm256_sub_epi32(_mm256_srli_epi32(a, 13), rebias), frac = _mm256_slli_epi32(a, 19);
        /* a < 2^31: signed compares are the unsigned ones */
        __m256i sub = _mm256_cmpgt_epi32(min_normal, a);
        if (!_mm256_testz_si256(sub, sub)) {
            const __m256i k32 = _mm256_set1_epi32(32);
            __m256i M = _mm256_or_si256(_mm256_and_si256(a, _mm256_set1_epi32(0x7FFFFF)), _mm256_set1_epi32(0x800000));
            __m256i s = _mm256_sub_epi32(_mm256_set1_epi32(126), _mm256_srli_epi32(a, 23));
            q = _mm256_blendv_epi8(q, _mm256_srlv_epi32(M, s), sub);
            frac = _mm256_blendv_epi8(frac, _mm256_or_si256(_mm256_sllv_epi32(M, _mm256_sub_epi32(k32, s)),
                                                            _mm256_srlv_epi32(M, _mm256_sub_epi32(s, k32))), sub);
        }
        /* frac > r unsigned: both with the top bit flipped, compared signed; true is -1 */
        __m256i up = _mm256_cmpgt_epi32(_mm256_xor_si256(frac, flip), _mm256_xor_si256(sr_gen_next(&g), flip));
        q = _mm256_sub_epi32(q, up);
        __m256i large = _mm256_cmpgt_epi32(a, below_big);
        if (!_mm256_testz_si256(large, large)) {
            q = _mm256_blendv_epi8(q, _mm256_set1_epi32(0x7C00), large);
            q = _mm256_blendv_epi8(q, _mm256_or_si256(_mm256_set1_epi32(0x7E00), _mm256_and_si256(
                                          _mm256_srli_epi32(a, 13), _mm256_set1_epi32(0x3FF))),
                                   _mm256_cmpgt_epi32(a, _mm256_set1_epi32(0x7F800000)));
        }
        q = _mm256_or_si256(q, _mm256_and_si256(_mm256_srli_epi32(b, 16), sign_bit));
        __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(q, q), 0x08);
        _mm_storeu_si128((__m128i *)(out + i), _mm256_castsi256_si128(packed));
    }
#endif
    const uint64_t base = key + (at / 2 + 1) * OPTIMC_GOLDEN_GAMMA;
    for (; i + 2 <= n; i += 2) {   /* the portable loop: one output, two elements */
        uint64_t z = optimc_mix64(base + (i / 2) * OPTIMC_GOLDEN_GAMMA);
        out[i] = optimc_f16_encode_stochastic(v[i], (uint32_t)z);
        out[i + 1] = optimc_f16_encode_stochastic(v[i + 1], (uint32_t)(z >> 32));
    }
    if (i < n) out[i] = optimc_f16_encode_stochastic(v[i], optimc_sr_bits(key, at + i));
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

/* Elements [at, at + n) of a param (at even: a block edge) from their float32
 * values: to nearest even, or stochastically with the stream `step_key`. */
static void halfparam_encode(int format, int stochastic, int f16c, uint64_t step_key, const float *restrict v,
                             size_t at, size_t n, uint16_t *restrict out)
{
    if (stochastic) {
        if (format == OPTIMC_PARAM_BF16) bf16_round_sr(v, n, step_key, (uint64_t)at, out);
        else f16_round_sr(v, n, step_key, (uint64_t)at, out);
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
    int f16c = optimc_use_f16c(), stochastic = x->rounding == OPTIMC_ROUND_STOCHASTIC;
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
    int f16c = optimc_use_f16c();
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
    int f16c = optimc_use_f16c();
    for (size_t b = 0; b < n; b += OPTIMC_QBLOCK)
        halfparam_decode(format, f16c, h + b, n - b < OPTIMC_QBLOCK ? n - b : OPTIMC_QBLOCK, out + b);
}

static void halfparam_encode_array(int format, int stochastic, uint64_t step_key, const float *v, size_t n,
                                   uint16_t *out)
{
    int f16c = optimc_use_f16c();
    for (size_t b = 0; b < n; b += OPTIMC_QBLOCK)
        halfparam_encode(format, stochastic, f16c, step_key, v + b, b, n - b < OPTIMC_QBLOCK ? n - b : OPTIMC_QBLOCK,
                         out + b);
}

#undef HALF_AVX512
#undef HALF_AVX2
#undef bf16_decode_wide
#undef bf16_encode_wide
