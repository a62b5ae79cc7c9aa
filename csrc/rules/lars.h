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
#define lars_STATE(S) S(trace, 1, 0, param)
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

static inline T SFX(lars_direction)(const SFX(lars_coef) *c, T theta, T g)
{
    g = SFX(grad_in)(&c->pre, g, &theta);
    return c->has_wd ? g + c->wd * theta : g;
}

static void SFX(lars_reduce)(const optimc_tensor *x, size_t lo, size_t hi, double *sums)
{
    const SFX(lars_coef) c = *(const SFX(lars_coef) *)x->coef;
    if (!c.trust) return;   /* ratio 1: nothing to read */
    OPTIMC_PTRS(x);
    double param_sq[8] = {0}, update_sq[8] = {0};
    for (size_t i = lo; i < hi; i++) {
        T theta = p[i];
        T u = SFX(lars_direction)(&c, theta, g[i]);
        param_sq[i & 7] += (double)theta * (double)theta;
        update_sq[i & 7] += (double)u * (double)u;
    }
    for (int k = 0; k < 8; k++) {
        sums[0] += param_sq[k];
        sums[1] += update_sq[k];
    }
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
