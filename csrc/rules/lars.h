/* LARS (You, Gitman & Ginsburg 2017, "Large Batch Training of
 * Convolutional Networks"), as optax.lars computes it: the grad plus weight
 * decay, scaled per tensor by a trust ratio, then by −η, then momentum.
 *   u = g + λθ                                  (λθ where weight_decay_mask)
 *   r = c·‖θ‖/(‖u‖ + ε), or 1 if either norm is 0 (1 where not trust_ratio_mask)
 *   u ← (u·r)·(−η)
 *   b ← u + μb                                  trace
 *   θ ← θ + (u + μb if nesterov, else b)
 * The norms need the whole tensor before any θ changes: the first pass sums
 * θ² and u² (only where the trust ratio is on), the second updates.
 */
#if defined(OPTIMC_LIST_REDUCING)
OPTIMC_LIST_REDUCING(lars)
#elif defined(OPTIMC_LIST)
OPTIMC_LIST(lars)
#elif !defined(T)
#define lars_HYPER(F) F(weight_decay_mask) F(trust_coefficient) F(eps) F(trust_ratio_mask) F(momentum) F(nesterov)
#define lars_STATE(S) S(trace, 1, 0, param, exact)
#define lars_SCALARS(S)
#define lars_SUMS(S) S(param_sq) S(update_sq)
OPTIMC_DESCRIBE(lars)
#else
typedef struct {
    SFX(pre_coef) pre;
    T wd, ratio, neg_lr, momentum;
    int has_wd, trust, nesterov;
} SFX(lars_coef);

static void SFX(lars_prepare)(const lars_hyper *h, optimc_tensor *x)
{
    SFX(lars_coef) *c = (SFX(lars_coef) *)x->coef;
    SFX(pre_prepare)(h, x, &c->pre);
    c->pre.has_l2 = c->pre.has_decay = 0;   /* λθ is added below, where the mask says */
    c->wd = (T)h->weight_decay;
    c->has_wd = h->weight_decay != 0 && h->weight_decay_mask != 0;
    c->trust = h->trust_ratio_mask != 0;
    c->neg_lr = (T)(-h->lr);
    c->momentum = (T)h->momentum;
    c->nesterov = h->nesterov != 0;
    c->ratio = 1;
}

/* common.h's grad_in as selects (λθ is added by lars_direction, where the
 * mask says), so that the loops vectorize */
static inline T SFX(lars_direction)(const SFX(lars_coef) *c, T theta, T g)
{
    g = g * c->pre.grad_scale;
    T high = g > c->pre.clip ? c->pre.clip : g;
    T clipped = high < -c->pre.clip ? -c->pre.clip : high;
    g = c->pre.has_clip ? clipped : g;
    T decayed = g + c->wd * theta;   /* computed either way: a select, not a branch */
    return c->has_wd ? decayed : g;
}

/* The first pass, in blocks of 64 (rules/reduce.h): u of the block, then
 * the squares of θ and u into the lanes of sums 0 and 1. */
static void SFX(lars_reduce)(const optimc_tensor *x, size_t lo, size_t hi, double *sums)
{
    const SFX(lars_coef) c = *(const SFX(lars_coef) *)x->coef;
    if (!c.trust) return;   /* ratio 1: nothing to read */
    OPTIMC_PTRS(x);
    double lanes[2][8] = {{0}};
    T us[64];
    for (size_t at = lo; at < hi; at += 64) {
        size_t len = hi - at < 64 ? hi - at : 64;
        for (size_t j = 0; j < len; j++) us[j] = SFX(lars_direction)(&c, p[at + j], g[at + j]);
        SFX(lanes_add_squares)(lanes[0], p + at, len);
        SFX(lanes_add_squares)(lanes[1], us, len);
    }
    SFX(lanes_finish)(sums, lanes, 2);
}

static void SFX(lars_finish)(const lars_hyper *h, optimc_tensor *x, const double *sums)
{
    SFX(lars_coef) *c = (SFX(lars_coef) *)x->coef;
    double param_norm = sqrt(sums[0]), update_norm = sqrt(sums[1]);
    if (c->trust && param_norm != 0 && update_norm != 0)
        c->ratio = (T)(h->trust_coefficient * param_norm / (update_norm + h->eps));
}

static void SFX(lars_kernel)(const optimc_tensor *x, size_t lo, size_t hi)
{
    const SFX(lars_coef) c = *(const SFX(lars_coef) *)x->coef;
    OPTIMC_PTRS(x);
    for (size_t i = lo; i < hi; i++) {
        T theta = p[i];
        T u = (SFX(lars_direction)(&c, theta, g[i]) * c.ratio) * c.neg_lr;
        T b = u + c.momentum * s0[i];
        s0[i] = b;
        p[i] = theta + (c.nesterov ? u + c.momentum * b : b);
    }
}
#endif
