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

/* Runs STMT, a loop that reads the coefficients `c` (a local copy), with the
 * grad preprocessing's options as constants in the cases that occur in
 * practice: none, L2 weight decay alone, decoupled weight decay alone; other
 * combinations (clipping by value) run with the tests. GCC leaves the loops of
 * the larger rules scalar when those tests are live ("control flow in loop":
 * NAdam, RAdam, AMSGrad and centered RMSprop ran 7-10x slower per element
 * than Adam in cache); with constants it vectorizes them. Same arithmetic. */
#define OPTIMC_WITH_FIXED_PRE(c, STMT) do { \
    int clip_ = (c).pre.has_clip, l2_ = (c).pre.has_l2, decay_ = (c).pre.has_decay; \
    if (!clip_ && !l2_ && !decay_) { (c).pre.has_clip = 0; (c).pre.has_l2 = 0; (c).pre.has_decay = 0; STMT; } \
    else if (!clip_ && l2_ && !decay_) { (c).pre.has_clip = 0; (c).pre.has_l2 = 1; (c).pre.has_decay = 0; STMT; } \
    else if (!clip_ && !l2_ && decay_) { (c).pre.has_clip = 0; (c).pre.has_l2 = 0; (c).pre.has_decay = 1; STMT; } \
    else { STMT; } \
} while (0)

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
