/* ASGD (Polyak & Juditsky 1992, "Acceleration of stochastic approximation by
 * averaging"), as torch.optim.ASGD (PyTorch 2.13, single-tensor path) computes
 * it. η_t and μ_t are per-tensor scalars set at the end of the previous step
 * (η₁ = the first step's lr, μ₁ = 1):
 *   θ ← θ(1 − λη_t)
 *   θ ← θ − η_t·g
 *   ā ← θ if μ_t = 1, else ā + (θ − ā)·μ_t                 ax (the average)
 *   η_{t+1} = lr/(1 + λ·lr·t)^α,  μ_{t+1} = 1/max(1, t − t₀)   eta, mu
 */
#if defined(OPTIMC_LIST)
OPTIMC_LIST(asgd)
#elif !defined(T)
#define asgd_HYPER(F) F(lambd) F(alpha) F(t0)
#define asgd_STATE(S) S(ax, 1, 0, param, exact)
/* eta starts at the first step's lr, inside prepare (initial state never reads lr) */
#define asgd_SCALARS(S) S(eta, 0.0) S(mu, 1.0)
OPTIMC_DESCRIBE(asgd)
#else
typedef struct {
    SFX(pre_coef) pre;
    T decay, neg_eta, mu;
    int copy;
} SFX(asgd_coef);

static void SFX(asgd_prepare)(const asgd_hyper *h, optimc_tensor *x)
{
    SFX(asgd_coef) *c = (SFX(asgd_coef) *)x->coef;
    double t = (double)x->step;
    double *eta = &x->scalars[0], *mu = &x->scalars[1];   /* asgd_SCALARS */
    if (x->step == 1) *eta = h->lr;
    SFX(pre_prepare)(h, x, &c->pre);
    c->decay = (T)(1.0 - h->lambd * *eta);
    c->neg_eta = (T)(-*eta);
    c->mu = (T)*mu;
    c->copy = *mu == 1.0;
    /* the next step's, from this step's lr (torch updates them after the step) */
    *eta = h->lr / pow(1.0 + h->lambd * h->lr * t, h->alpha);
    *mu = 1.0 / (t - h->t0 > 1.0 ? t - h->t0 : 1.0);
}

static inline void SFX(asgd_update)(const SFX(asgd_coef) *c, T *p, T g, T *ax)
{
    T theta = *p;   /* read once, written once */
    g = SFX(grad_in)(&c->pre, g, &theta);
    theta = theta * c->decay;
    theta = theta + c->neg_eta * g;
    *ax = c->copy ? theta : *ax + (theta - *ax) * c->mu;
    *p = theta;
}

static void SFX(asgd_kernel)(const optimc_tensor *x, size_t lo, size_t hi)
{
    const SFX(asgd_coef) c = *(const SFX(asgd_coef) *)x->coef;
    OPTIMC_PTRS(x);
    for (size_t i = lo; i < hi; i++) SFX(asgd_update)(&c, &p[i], g[i], &s0[i]);
}
#endif
