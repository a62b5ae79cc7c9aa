/* SparseAdam, as torch.optim.SparseAdam computes it: Adam whose moments and
 * params change only at the rows the grad gives (lazy moments), with one
 * step counter per tensor and ε added after the bias-corrected root:
 *   Δm = (1 − β₁)(g − m);  m ← m + Δm                   exp_avg
 *   Δv = (1 − β₂)(g² − v); v ← v + Δv                   exp_avg_sq
 *   θ ← θ − η·√(1 − β₂ᵗ)/(1 − β₁ᵗ) · m / (√v + ε)
 * A dense grad is every row given once. weight_decay (L2, optimc's extension;
 * torch has none) is added to the grad at the given rows.
 */
#if defined(OPTIMC_LIST_SPARSE)
OPTIMC_LIST_SPARSE(sparse_adam)
#elif defined(OPTIMC_LIST)
OPTIMC_LIST(sparse_adam)
#elif !defined(T)
#define sparse_adam_HYPER(F) F(beta1) F(beta2) F(eps)
#define sparse_adam_STATE(S) S(exp_avg, 1, 0, param, exact) S(exp_avg_sq, 1, 0, param, exact)
#define sparse_adam_SCALARS(S) 
#define sparse_adam_SPARSE(Z) 
OPTIMC_DESCRIBE(sparse_adam)
#else
typedef struct {
    SFX(pre_coef) pre;
    T one_minus_beta1, one_minus_beta2, neg_step_size, eps;
} SFX(sparse_adam_coef);

static void SFX(sparse_adam_prepare)(const sparse_adam_hyper *h, optimc_tensor *x)
{
    SFX(sparse_adam_coef) *c = (SFX(sparse_adam_coef) *)x->coef;
    double t = (double)x->step;
    SFX(pre_prepare)(h, x, &c->pre);
    c->one_minus_beta1 = (T)(1.0 - h->beta1);
    c->one_minus_beta2 = (T)(1.0 - h->beta2);
    c->neg_step_size = (T)(-(h->lr * sqrt(1.0 - pow(h->beta2, t)) / (1.0 - pow(h->beta1, t))));
    c->eps = (T)h->eps;
}

static inline void SFX(sparse_adam_update)(const SFX(sparse_adam_coef) *c, T *p, T g, T *exp_avg, T *exp_avg_sq)
{
    T theta = *p;   /* read once, written once */
    g = SFX(grad_in)(&c->pre, g, &theta);
    T m = *exp_avg + (g - *exp_avg) * c->one_minus_beta1;
    T v = *exp_avg_sq + (g * g - *exp_avg_sq) * c->one_minus_beta2;
    *exp_avg = m;
    *exp_avg_sq = v;
    theta = theta + c->neg_step_size * (m / (SQRT(v) + c->eps));
    *p = theta;
}

static void SFX(sparse_adam_kernel)(const optimc_tensor *x, size_t lo, size_t hi)
{
    const SFX(sparse_adam_coef) c = *(const SFX(sparse_adam_coef) *)x->coef;
    OPTIMC_PTRS(x);
    for (size_t i = lo; i < hi; i++) SFX(sparse_adam_update)(&c, &p[i], g[i], &s0[i], &s1[i]);
}
#endif
