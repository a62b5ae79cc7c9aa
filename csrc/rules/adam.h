/* Adam (Kingma & Ba 2015), with AMSGrad (Reddi et al. 2018) and decoupled
 * weight decay (AdamW, Loshchilov & Hutter 2019), as torch.optim.Adam
 * computes it:
 *   m ← m + (1 − β₁)(g − m)             exp_avg
 *   v ← β₂v + (1 − β₂)g²                exp_avg_sq
 *   v̂ ← max(v̂, v) (amsgrad), else v̂ = v  max_exp_avg_sq
 *   θ ← θ − η/(1 − β₁ᵗ) · m / (√v̂ / √(1 − β₂ᵗ) + ε)
 */
#if defined(OPTIMC_LIST)
OPTIMC_LIST(adam)
#elif !defined(T)
#define adam_HYPER(F) F(beta1) F(beta2) F(eps) F(amsgrad)
#define adam_STATE(S) S(exp_avg, 1, 0, param, signed) S(exp_avg_sq, 1, 0, param, unsigned) S(max_exp_avg_sq, h->amsgrad != 0, 0, param, unsigned)
#define adam_SCALARS(S) 
OPTIMC_DESCRIBE(adam)
#else
typedef struct {
    SFX(pre_coef) pre;
    SFX(moments_coef) moments;
    T step_size, bias_correction2_sqrt, eps;
    int amsgrad;
} SFX(adam_coef);

static void SFX(adam_prepare)(const adam_hyper *h, optimc_tensor *x)
{
    SFX(adam_coef) *c = (SFX(adam_coef) *)x->coef;
    double t = (double)x->step;
    SFX(pre_prepare)(h, x, &c->pre);
    SFX(moments_prepare)(h->beta1, h->beta2, &c->moments);
    c->step_size = (T)(h->lr / (1.0 - pow(h->beta1, t)));
    c->bias_correction2_sqrt = (T)sqrt(1.0 - pow(h->beta2, t));
    c->eps = (T)h->eps;
    c->amsgrad = h->amsgrad != 0;
}

static inline void SFX(adam_update)(const SFX(adam_coef) *c, T *p, T g,
                                    T *exp_avg, T *exp_avg_sq, T *max_exp_avg_sq)
{
    T theta = *p;   /* read once, written once */
    g = SFX(grad_in)(&c->pre, g, &theta);
    SFX(moments_update)(&c->moments, g, exp_avg, exp_avg_sq);
    T v = *exp_avg_sq;
    if (c->amsgrad) {
        T running_max = *max_exp_avg_sq;   /* stored either way: no branch in the loop */
        v = v > running_max ? v : running_max;
        *max_exp_avg_sq = v;
    }
    T denom = SQRT(v) / c->bias_correction2_sqrt + c->eps;
    theta = theta - c->step_size * (*exp_avg / denom);
    *p = theta;
}

static void SFX(adam_kernel)(const optimc_tensor *x, size_t lo, size_t hi)
{
    SFX(adam_coef) c = *(const SFX(adam_coef) *)x->coef;
    OPTIMC_PTRS(x);
    if (c.amsgrad)
        OPTIMC_WITH_FIXED_PRE(c, OPTIMC_EACH(OPTIMC_S0 | OPTIMC_S1 | OPTIMC_S2,
                                             SFX(adam_update)(&c, &p[i], g[i], st0, st1, st2)));
    else
        OPTIMC_EACH(OPTIMC_S0 | OPTIMC_S1, SFX(adam_update)(&c, &p[i], g[i], st0, st1, NULL));
}
#endif
