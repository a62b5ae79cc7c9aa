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

/* A kernel's loop over [lo, hi): the pointers are restrict so the loop
 * vectorizes; `UPDATE` is the rule's one-element update. */
#define OPTIMC_PTRS(x) \
    T *restrict p = (T *)(x)->param; \
    const T *restrict g = (const T *)(x)->grad; \
    T *restrict s0 = (T *)(x)->state[0]; \
    T *restrict s1 = (T *)(x)->state[1]; \
    T *restrict s2 = (T *)(x)->state[2]; \
    T *restrict s3 = (T *)(x)->state[3]; \
    (void)s0; (void)s1; (void)s2; (void)s3

/* A rule's one-element update, inlined into each of its OPTIMC_LOOP's loops
 * (a kernel holds one loop per state format: left to its heuristics, GCC
 * stops inlining in the larger kernels, and the loop stops vectorizing). */
#ifndef OPTIMC_UPDATE
#define OPTIMC_UPDATE static inline __attribute__((always_inline))
#endif

/* A rule's loop over [lo, hi) (after OPTIMC_PTRS), for every state format
 * (optimc_state_format, csrc/optimc.h):
 *     OPTIMC_LOOP(x, lo, hi, MASK, <name>_update(&c, &p[i], g[i], &S0, &S1, NULL));
 * MASK, a constant, says which state buffers the update uses (bit k: state
 * k); the update reads and writes them as the locals S0..S3. Native state:
 * the loop over [lo, hi), S<k> loaded from and stored to the buffer. Compressed
 * state (lo is then a block edge: the step splits such tensors on block
 * edges), per block of OPTIMC_QBLOCK elements: each buffer the update uses is
 * decoded into a block of T on the stack (bfloat16: widened exactly; 8 bits:
 * map[code]·absmax in float), the same loop runs on the block, and the block
 * is encoded again (bfloat16: rounded to nearest even, double through float;
 * 8 bits: with its absmax afresh; quantize.h). Each step is a plain loop of
 * one type, so each vectorizes, and the block stays in L1. */
#ifndef OPTIMC_LOOP
#define OPTIMC_LOOP(x, lo, hi, MASK, ...) do { \
        if ((x)->state_format == OPTIMC_STATE_NATIVE) { \
            OPTIMC_LOOP_(lo, hi, MASK, OPTIMC_NATIVE_AT_, __VA_ARGS__) \
        } else { \
            int eight_ = (x)->state_format == OPTIMC_STATE_8BIT; \
            const optimc_qmap *q_[OPTIMC_MAX_STATE] = {NULL, NULL, NULL, NULL}; \
            _Alignas(64) T blk_[OPTIMC_MAX_STATE][OPTIMC_QBLOCK]; \
            for (int k_ = 0; eight_ && k_ < OPTIMC_MAX_STATE; k_++) \
                if ((MASK) >> k_ & 1) q_[k_] = optimc_qmap_get((x)->state_signed >> k_ & 1u); \
            for (size_t b_ = (lo); b_ < (hi); b_ += OPTIMC_QBLOCK) { \
                size_t n_ = (hi) - b_ < OPTIMC_QBLOCK ? (hi) - b_ : OPTIMC_QBLOCK; \
                for (int k_ = 0; k_ < OPTIMC_MAX_STATE; k_++) \
                    if ((MASK) >> k_ & 1) SFX(lowprec_decode)(x, k_, q_[k_], b_, n_, blk_[k_]); \
                OPTIMC_LOOP_(b_, b_ + n_, MASK, OPTIMC_BLOCK_AT_, __VA_ARGS__) \
                for (int k_ = 0; k_ < OPTIMC_MAX_STATE; k_++) \
                    if ((MASK) >> k_ & 1) SFX(lowprec_encode)(x, k_, q_[k_], b_, n_, blk_[k_]); \
            } \
        } \
    } while (0)

/* The loop over [lo, hi) with S<k> read from and written to AT(k). */
#define OPTIMC_NATIVE_AT_(k) s##k[i]
#define OPTIMC_BLOCK_AT_(k) blk_[k][i - b_]
#define OPTIMC_LOOP_(lo, hi, MASK, AT, ...) \
    for (size_t i = (lo); i < (hi); i++) { \
        T S0 = (MASK) & 1 ? AT(0) : (T)0, S1 = (MASK) & 2 ? AT(1) : (T)0, \
          S2 = (MASK) & 4 ? AT(2) : (T)0, S3 = (MASK) & 8 ? AT(3) : (T)0; \
        (void)S0; (void)S1; (void)S2; (void)S3; \
        __VA_ARGS__; \
        if ((MASK) & 1) AT(0) = S0; \
        if ((MASK) & 2) AT(1) = S1; \
        if ((MASK) & 4) AT(2) = S2; \
        if ((MASK) & 8) AT(3) = S3; \
    }
#endif

/* Elements [b, b + n) of compressed state buffer k (n <= OPTIMC_QBLOCK; b a
 * block edge) into v, and back; q is the buffer's map (8 bits) or NULL. */
static inline void SFX(lowprec_decode)(const optimc_tensor *x, int k, const optimc_qmap *q, size_t b, size_t n,
                                       T *restrict v)
{
    if (q) {
        const uint8_t *restrict c = (const uint8_t *)x->state[k] + b;
        float a = x->state_absmax[k][b / OPTIMC_QBLOCK];
        if (sizeof(T) == sizeof(float)) optimc_q8_decode(q, c, a, n, (float *)(void *)v);
        else for (size_t j = 0; j < n; j++) v[j] = (T)(q->code[c[j]] * a);
    } else {
        const uint16_t *restrict h = (const uint16_t *)x->state[k] + b;
        if (sizeof(T) == sizeof(float)) optimc_bf16_decode_block(h, n, (float *)(void *)v);
        else for (size_t j = 0; j < n; j++) v[j] = (T)optimc_bf16_decode(h[j]);
    }
}

static inline void SFX(lowprec_encode)(const optimc_tensor *x, int k, const optimc_qmap *q, size_t b, size_t n,
                                       const T *restrict v)
{
    _Alignas(64) float narrow[OPTIMC_QBLOCK];
    const float *f = (const float *)(const void *)v;
    if (sizeof(T) != sizeof(float)) {
        for (size_t j = 0; j < n; j++) narrow[j] = (float)v[j];
        f = narrow;
    }
    if (q) {
        x->state_absmax[k][b / OPTIMC_QBLOCK] = optimc_q8_encode(q, f, n, (uint8_t *)x->state[k] + b);
    } else {
        optimc_bf16_encode_block(f, n, (uint16_t *)x->state[k] + b);
    }
}
