/* Schedule-Free AdamW (Defazio et al. 2024, "The Road Less Scheduled"), as the
 * schedulefree package's AdamWScheduleFree (1.4.1) computes it. The param is
 * the training point y; z (= θ at the first step) and the lr weighting as in
 * sgd_schedule_free.h (lr_max, weight_sum, c, η_k); with k = t − 1:
 *   v ← β₂v + (1 − β₂)g²                                      exp_avg_sq
 *   u = g/(√(v/(1 − β₂^(k+1))) + ε)
 *   u ← u + λy                                   decay at y, after normalising
 *   y ← lerp(y, z, c)
 *   y ← y + η_k(β₁(1 − c) − 1)·u
 *   z ← z − η_k·u                                              z
 */
#if defined(OPTIMC_LIST)
OPTIMC_LIST(adamw_schedule_free)
#elif !defined(T)
#define adamw_schedule_free_HYPER(F) F(beta1) F(beta2) F(eps) F(warmup_steps) F(r) F(weight_lr_power)
#define adamw_schedule_free_STATE(S) S(z, 1, 0, param, exact) S(exp_avg_sq, 1, 0, param, unsigned)
#define adamw_schedule_free_SCALARS(S) S(lr_max, -1.0) S(weight_sum, 0.0)
OPTIMC_DESCRIBE(adamw_schedule_free)
#else
typedef struct {
    SFX(pre_coef) pre;
    T ckp1, one_minus_ckp1, y_step, lr, beta2, one_minus_beta2, bias_correction2, eps, decay;
    int first, has_decay;
} SFX(adamw_schedule_free_coef);

static void SFX(adamw_schedule_free_prepare)(const adamw_schedule_free_hyper *h, optimc_tensor *x)
{
    SFX(adamw_schedule_free_coef) *c = (SFX(adamw_schedule_free_coef) *)x->coef;
    double lr;
    double ckp1 = optimc_schedule_free_weight(h->lr, h->warmup_steps, h->r, h->weight_lr_power, x,
                                              x->scalars, &lr);
    /* maximize and clipping from the common preprocessing; the decay is applied
     * after normalising (below), not as L2 on the grad */
    optimc_common_hyper common = {h->lr, 0.0, h->maximize, 0.0};
    SFX(pre_prepare)(&common, x, &c->pre);
    c->ckp1 = (T)ckp1;
    c->one_minus_ckp1 = (T)1 - c->ckp1;   /* lerp's complement, computed as torch does */
    c->y_step = (T)(lr * (h->beta1 * (1.0 - ckp1) - 1.0));
    c->lr = (T)lr;
    c->beta2 = (T)h->beta2;
    c->one_minus_beta2 = (T)(1.0 - h->beta2);
    c->bias_correction2 = (T)(1.0 - pow(h->beta2, (double)x->step));
    c->eps = (T)h->eps;
    c->decay = (T)h->weight_decay;
    c->has_decay = h->weight_decay != 0;
    c->first = x->step == 1;   /* z starts at the param, at the first step (as the package) */
}

/* `first` is a constant in each of the kernel's two loops (z is not read on the first step) */
static inline void SFX(adamw_schedule_free_update)(const SFX(adamw_schedule_free_coef) *c, T *p, T g,
                                                   T *z, T *exp_avg_sq, int first)
{
    T y = *p;   /* read once, written once */
    T zi = first ? y : *z;
    /* grad_in without its weight decay branches (none here): fewer branches, so the loop vectorizes */
    g = g * c->pre.grad_scale;
    if (c->pre.has_clip) {
        g = g > c->pre.clip ? c->pre.clip : g;
        g = g < -c->pre.clip ? -c->pre.clip : g;
    }
    T v = *exp_avg_sq * c->beta2 + c->one_minus_beta2 * g * g;   /* torch's addcmul order */
    T u = g / (SQRT(v / c->bias_correction2) + c->eps);
    u = c->has_decay ? u + c->decay * y : u;   /* a select, so that the loop vectorizes */
    y = SFX(lerp)(y, zi, c->ckp1, c->one_minus_ckp1);
    y = y + c->y_step * u;
    *z = zi - c->lr * u;
    *exp_avg_sq = v;
    *p = y;
}

static void SFX(adamw_schedule_free_kernel)(const optimc_tensor *x, size_t lo, size_t hi)
{
    const SFX(adamw_schedule_free_coef) c = *(const SFX(adamw_schedule_free_coef) *)x->coef;
    OPTIMC_PTRS(x);
    if (c.first)
        for (size_t i = lo; i < hi; i++) SFX(adamw_schedule_free_update)(&c, &p[i], g[i], &s0[i], &s1[i], 1);
    else
        for (size_t i = lo; i < hi; i++) SFX(adamw_schedule_free_update)(&c, &p[i], g[i], &s0[i], &s1[i], 0);
}
#endif
