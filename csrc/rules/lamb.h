/* LAMB (You et al. 2020, "Large Batch Optimization for Deep Learning:
 * Training BERT in 76 minutes"), as optax.lamb computes it: Adam's step
 * plus weight decay, scaled per tensor by the trust ratio ‖θ‖/‖u‖.
 *   m ← (1 − β₁)g + β₁m                         mu
 *   v ← (1 − β₂)g² + β₂v                        nu
 *   u = (m/(1 − β₁ᵗ)) / (√(v/(1 − β₂ᵗ) + ε_root) + ε) + λθ   (λθ where mask)
 *   r = ‖θ‖/‖u‖, or 1 if either norm is 0       (norms over the whole tensor)
 *   θ ← θ + (u·r)·(−η)
 * The norms need every element's u before any θ changes: the first pass
 * updates m and v and sums θ² and u², the second recomputes u from them.
 */
#if defined(OPTIMC_LIST_REDUCING)
OPTIMC_LIST_REDUCING(lamb)
#elif defined(OPTIMC_LIST)
OPTIMC_LIST(lamb)
#elif !defined(T)
#define lamb_HYPER(F) F(b1) F(b2) F(eps) F(eps_root) F(mask)
#define lamb_STATE(S) S(mu, 1, 0, param, exact) S(nu, 1, 0, param, exact)
#define lamb_SCALARS(S)
#define lamb_SUMS(S) S(param_sq) S(update_sq)
OPTIMC_DESCRIBE(lamb)
#else
typedef struct {
    SFX(pre_coef) pre;
    T one_minus_b1, b1, one_minus_b2, b2, inv_bias_correction1, inv_bias_correction2, eps, eps_root, wd;
    T ratio, neg_lr;
    int has_wd;
} SFX(lamb_coef);

static void SFX(lamb_prepare)(const lamb_hyper *h, optimc_tensor *x)
{
    SFX(lamb_coef) *c = (SFX(lamb_coef) *)x->coef;
    double t = (double)x->step;
    SFX(pre_prepare)(h, x, &c->pre);
    c->pre.has_l2 = c->pre.has_decay = 0;   /* λθ joins the update instead */
    c->one_minus_b1 = (T)(1.0 - h->b1);
    c->b1 = (T)h->b1;
    c->one_minus_b2 = (T)(1.0 - h->b2);
    c->b2 = (T)h->b2;
    /* reciprocals: both passes compute u, and three divisions per element
     * made them arithmetic-bound (one rounding more than dividing, far
     * inside optax's tolerances) */
    c->inv_bias_correction1 = (T)(1.0 / (1.0 - pow(h->b1, t)));
    c->inv_bias_correction2 = (T)(1.0 / (1.0 - pow(h->b2, t)));
    c->eps = (T)h->eps;
    c->eps_root = (T)h->eps_root;
    c->wd = (T)h->weight_decay;
    c->has_wd = h->weight_decay != 0 && h->mask != 0;
    c->neg_lr = (T)(-h->lr);
    c->ratio = 1;
}

/* common.h's grad_in without its weight decay (λθ joins u instead), as
 * selects, so that the loops vectorize */
static inline T SFX(lamb_grad_in)(const SFX(lamb_coef) *c, T g)
{
    g = g * c->pre.grad_scale;
    T high = g > c->pre.clip ? c->pre.clip : g;
    T clipped = high < -c->pre.clip ? -c->pre.clip : high;
    return c->pre.has_clip ? clipped : g;
}

/* u from the updated moments (the same operations in both passes): one
 * square root and one division */
static inline T SFX(lamb_direction)(const SFX(lamb_coef) *c, T theta, T m, T v)
{
    T u = (m * c->inv_bias_correction1) / (SQRT(v * c->inv_bias_correction2 + c->eps_root) + c->eps);
    return c->has_wd ? u + c->wd * theta : u;
}

/* One element of the first pass: the moments m and v updated (in place) and
 * u from them. */
static inline T SFX(lamb_first)(const SFX(lamb_coef) *c, T theta, T g, T *m, T *v)
{
    T gi = SFX(lamb_grad_in)(c, g);
    *m = c->one_minus_b1 * gi + c->b1 * *m;
    *v = c->one_minus_b2 * (gi * gi) + c->b2 * *v;
    return SFX(lamb_direction)(c, theta, *m, *v);
}

/* The first pass, in blocks of 64 (rules/reduce.h): the moments written
 * back, and θ and u of the block, whose squares go into the lanes of sums 0
 * and 1. */
static void SFX(lamb_reduce)(const optimc_tensor *x, size_t lo, size_t hi, double *sums)
{
    const SFX(lamb_coef) c = *(const SFX(lamb_coef) *)x->coef;
    OPTIMC_PTRS(x);
    double lanes[2][8] = {{0}};
    T us[64];
    for (size_t at = lo; at < hi; at += 64) {
        size_t len = hi - at < 64 ? hi - at : 64;
        for (size_t j = 0; j < len; j++) {
            T m = s0[at + j], v = s1[at + j];
            us[j] = SFX(lamb_first)(&c, p[at + j], g[at + j], &m, &v);
            s0[at + j] = m;
            s1[at + j] = v;
        }
        SFX(lanes_add_squares)(lanes[0], p + at, len);
        SFX(lanes_add_squares)(lanes[1], us, len);
    }
    SFX(lanes_finish)(sums, lanes, 2);
}

static void SFX(lamb_finish)(const lamb_hyper *h, optimc_tensor *x, const double *sums)
{
    SFX(lamb_coef) *c = (SFX(lamb_coef) *)x->coef;
    double param_norm = sqrt(sums[0]), update_norm = sqrt(sums[1]);
    (void)h;
    c->ratio = (T)(param_norm == 0 || update_norm == 0 ? 1.0 : param_norm / update_norm);
}

static void SFX(lamb_kernel)(const optimc_tensor *x, size_t lo, size_t hi)
{
    const SFX(lamb_coef) c = *(const SFX(lamb_coef) *)x->coef;
    OPTIMC_PTRS(x);
    (void)g;   /* the first pass read it */
    for (size_t i = lo; i < hi; i++) {
        T theta = p[i];
        T u = SFX(lamb_direction)(&c, theta, s0[i], s1[i]);
        p[i] = theta + (u * c.ratio) * c.neg_lr;
    }
}
#endif
