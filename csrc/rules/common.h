/* common.h — what every rule shares, included once per scalar type T with
 * SFX(name) giving the type's suffix and SQRT/ABS its math functions.
 *
 * Every rule starts from the same grad preprocessing, in torch.optim's order:
 *   g ← s·g          s = −1 with maximize (and the clipping factor, if any)
 *   g ← clamp(g, ±c) the guard's clip_value, if any
 *   g ← g + λθ       L2 weight decay
 *   θ ← θ(1 − ηλ)    decoupled weight decay (instead of L2)
 */
typedef struct {
    T grad_scale, clip, l2, decay;
    int has_clip, has_l2, has_decay;
} SFX(pre_coef);

/* `hyper` is an algorithm's <name>_hyper, which starts with the common fields. */
static inline void SFX(pre_prepare)(const void *hyper, const optimc_tensor *x, SFX(pre_coef) *c)
{
    const optimc_common_hyper *h = hyper;
    double wd = h->weight_decay;
    int decoupled = h->decoupled_weight_decay != 0;
    c->grad_scale = (T)(h->maximize != 0 ? -x->grad_scale : x->grad_scale);
    c->has_clip = x->grad_clip > 0;
    c->clip = (T)x->grad_clip;
    c->has_l2 = wd != 0 && !decoupled;
    c->has_decay = wd != 0 && decoupled;
    c->l2 = (T)wd;
    c->decay = (T)(1.0 - h->lr * wd);
}

static inline T SFX(grad_in)(const SFX(pre_coef) *c, T g, T *p)
{
    g = g * c->grad_scale;
    if (c->has_clip) {
        g = g > c->clip ? c->clip : g;
        g = g < -c->clip ? -c->clip : g;
    }
    if (c->has_l2) g = g + c->l2 * *p;
    if (c->has_decay) *p = *p * c->decay;
    return g;
}

/* torch.lerp's two-sided form: a + w(b − a), or b − (b − a)(1 − w) for w ≥ ½. */
static inline T SFX(lerp)(T a, T b, T w, T one_minus_w)
{
    return (w < (T)0.5) ? a + w * (b - a) : b - (b - a) * one_minus_w;
}

/* The moment estimates of the Adam family, in torch's order:
 *   m ← m + (1 − β₁)(g − m)    exp_avg (torch.lerp)
 *   v ← β₂v + (1 − β₂)g²        exp_avg_sq */
typedef struct {
    T one_minus_beta1, beta1, beta2, one_minus_beta2;
} SFX(moments_coef);

static inline void SFX(moments_prepare)(double beta1, double beta2, SFX(moments_coef) *c)
{
    c->one_minus_beta1 = (T)(1.0 - beta1);
    c->beta1 = (T)1 - c->one_minus_beta1;   /* lerp's complement, computed as torch does */
    c->beta2 = (T)beta2;
    c->one_minus_beta2 = (T)(1.0 - beta2);
}

static inline void SFX(moments_update)(const SFX(moments_coef) *c, T g, T *exp_avg, T *exp_avg_sq)
{
    *exp_avg = SFX(lerp)(*exp_avg, g, c->one_minus_beta1, c->beta1);
    *exp_avg_sq = *exp_avg_sq * c->beta2 + c->one_minus_beta2 * (g * g);
}

/* Runs its statement, a loop that reads the coefficients `c` (a local copy), with the
 * grad preprocessing's options as constants in the cases that occur in
 * practice: none, L2 weight decay alone, decoupled weight decay alone; other
 * combinations (clipping by value) run with the tests. GCC leaves the loops of
 * the larger rules scalar when those tests are live ("control flow in loop":
 * NAdam, RAdam, AMSGrad and centered RMSprop ran 7-10x slower per element
 * than Adam in cache); with constants it vectorizes them. Same arithmetic. */
#define OPTIMC_WITH_FIXED_PRE(c, ...) do { \
    int clip_ = (c).pre.has_clip, l2_ = (c).pre.has_l2, decay_ = (c).pre.has_decay; \
    if (!clip_ && !l2_ && !decay_) { (c).pre.has_clip = 0; (c).pre.has_l2 = 0; (c).pre.has_decay = 0; __VA_ARGS__; } \
    else if (!clip_ && l2_ && !decay_) { (c).pre.has_clip = 0; (c).pre.has_l2 = 1; (c).pre.has_decay = 0; __VA_ARGS__; } \
    else if (!clip_ && !l2_ && decay_) { (c).pre.has_clip = 0; (c).pre.has_l2 = 0; (c).pre.has_decay = 1; __VA_ARGS__; } \
    else { __VA_ARGS__; } \
} while (0)

/* A kernel's pointers: param, grad and its state buffers as T (s0..s3), or,
 * with the state stored in bfloat16, as uint16 bits (h0..h3; s0..s3 are
 * then NULL). Restrict so that the loops vectorize. */
#define OPTIMC_PTRS(x) \
    T *restrict p = (T *)(x)->param; \
    const T *restrict g = (const T *)(x)->grad; \
    const int bf16_state_ = (x)->state_format == OPTIMC_STATE_BF16; \
    T *restrict s0 = bf16_state_ ? NULL : (T *)(x)->state[0]; \
    T *restrict s1 = bf16_state_ ? NULL : (T *)(x)->state[1]; \
    T *restrict s2 = bf16_state_ ? NULL : (T *)(x)->state[2]; \
    T *restrict s3 = bf16_state_ ? NULL : (T *)(x)->state[3]; \
    uint16_t *restrict h0 = bf16_state_ ? (uint16_t *)(x)->state[0] : NULL; \
    uint16_t *restrict h1 = bf16_state_ ? (uint16_t *)(x)->state[1] : NULL; \
    uint16_t *restrict h2 = bf16_state_ ? (uint16_t *)(x)->state[2] : NULL; \
    uint16_t *restrict h3 = bf16_state_ ? (uint16_t *)(x)->state[3] : NULL; \
    (void)s0; (void)s1; (void)s2; (void)s3; (void)h0; (void)h1; (void)h2; (void)h3

/* Which state buffers a loop's update reads and writes (OPTIMC_EACH). */
#define OPTIMC_S0 1
#define OPTIMC_S1 2
#define OPTIMC_S2 4
#define OPTIMC_S3 8

/* A kernel's loop over [lo, hi) (the kernel's arguments): runs its last
 * argument, a rule's one-element update at element i whose state values
 * are *st0..*st3, for the buffers in USED (OPTIMC_S0 | ...; the others' stN
 * are NULL).
 *
 * At the avx512 level, state stored in bfloat16 is widened into tiles of
 * OPTIMC_TILE values on the stack, updated there by the same update (with
 * the grad preprocessing's options as constants, so that it vectorizes) and
 * rounded back to nearest even (through float for double params): tiles small
 * enough that the conversions of one overlap the divisions of the next, where
 * the block wrapper's whole-block passes (lowprec_impl.h) ran one after the
 * other. Below avx512 the block wrapper measured faster on 10^7 elements,
 * and hands the kernel native buffers; there the loop is the plain one. */
#define OPTIMC_TILE 64
#define OPTIMC_EACH_NATIVE(USED, ...) \
    for (size_t i = lo; i < hi; i++) { \
        T *st0 = (USED) & OPTIMC_S0 ? s0 + i : NULL, *st1 = (USED) & OPTIMC_S1 ? s1 + i : NULL; \
        T *st2 = (USED) & OPTIMC_S2 ? s2 + i : NULL, *st3 = (USED) & OPTIMC_S3 ? s3 + i : NULL; \
        (void)st0; (void)st1; (void)st2; (void)st3; \
        __VA_ARGS__; \
    }
#if defined(__AVX512F__)
#define OPTIMC_EACH(USED, ...) do { \
    if (!bf16_state_) { \
        OPTIMC_EACH_NATIVE(USED, __VA_ARGS__) \
    } else { \
        _Alignas(64) T tile_[4][OPTIMC_TILE]; \
        uint16_t *restrict h_[4] = {h0, h1, h2, h3}; \
        const int hw_ = optimc_use(OPTIMC_AVX512BF16);   /* how the tiles are rounded */ \
        OPTIMC_WITH_FIXED_PRE(c, for (size_t t_ = lo; t_ < hi; t_ += OPTIMC_TILE) { \
            size_t n_ = hi - t_ < OPTIMC_TILE ? hi - t_ : OPTIMC_TILE; \
            for (int k_ = 0; k_ < 4; k_++) \
                if ((USED) & (1 << k_)) SFX(bf16_widen)(h_[k_] + t_, n_, tile_[k_]); \
            for (size_t j_ = 0; j_ < n_; j_++) { \
                size_t i = t_ + j_; \
                T *st0 = (USED) & OPTIMC_S0 ? tile_[0] + j_ : NULL, *st1 = (USED) & OPTIMC_S1 ? tile_[1] + j_ : NULL; \
                T *st2 = (USED) & OPTIMC_S2 ? tile_[2] + j_ : NULL, *st3 = (USED) & OPTIMC_S3 ? tile_[3] + j_ : NULL; \
                (void)st0; (void)st1; (void)st2; (void)st3; \
                __VA_ARGS__; \
            } \
            for (int k_ = 0; k_ < 4; k_++) \
                if ((USED) & (1 << k_)) SFX(bf16_round)(tile_[k_], n_, h_[k_] + t_, hw_); \
        }); \
    } \
} while (0)
#else
#define OPTIMC_EACH(USED, ...) do { OPTIMC_EACH_NATIVE(USED, __VA_ARGS__) } while (0)
#endif

#if defined(__AVX512F__)
/* bfloat16 bits to T and back for the tiles (round to nearest even; double
 * through float). */
static inline void SFX(bf16_widen)(const uint16_t *restrict h, size_t n, T *restrict out)
{
    if (sizeof(T) == sizeof(float)) {
        optimc_bf16_decode_block(h, n, (float *)(void *)out);
    } else {
        _Alignas(64) float f[OPTIMC_TILE];
        optimc_bf16_decode_block(h, n, f);
        for (size_t i = 0; i < n; i++) out[i] = (T)f[i];
    }
}

static inline void SFX(bf16_round)(const T *restrict v, size_t n, uint16_t *restrict h, int avx512bf16)
{
    _Alignas(64) float f[OPTIMC_TILE];
    const float *x = (const float *)(const void *)v;
    if (sizeof(T) != sizeof(float)) {
        for (size_t i = 0; i < n; i++) f[i] = (float)v[i];
        x = f;
    }
    if (avx512bf16)
        optimc_bf16_encode_block_avx512bf16(x, n, h);
    else
        optimc_bf16_encode_block(x, n, h);
}
#endif
