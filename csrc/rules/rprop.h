/* Rprop (Riedmiller & Braun 1993, "A direct adaptive method for faster
 * backpropagation learning: the RPROP algorithm"), as torch.optim.Rprop
 * computes it: only the grad's sign moves θ, by a per-element step size.
 *   s = sign(g·prev)            (sign(NaN) = 0, as torch.sign)
 *   f = η₊ if s > 0, η₋ if s < 0, 1 if s = 0
 *   Δ ← clamp(Δ·f, step_size_min, step_size_max)    step_size (Δ = lr at t = 1)
 *   g ← 0 where f = η₋          (after a sign flip: no step, and no memory of it)
 *   θ ← θ − sign(g)·Δ
 *   prev ← g                                         prev
 */
#if defined(OPTIMC_LIST)
OPTIMC_LIST(rprop)
#elif !defined(T)
#define rprop_HYPER(F) F(etaminus) F(etaplus) F(step_size_min) F(step_size_max)
#define rprop_STATE(S) S(prev, 1, 0, param, exact) S(step_size, 1, 0, param, exact)
#define rprop_SCALARS(S)
OPTIMC_DESCRIBE(rprop)
#else
typedef struct {
    SFX(pre_coef) pre;
    T lr, etaminus, etaplus, step_size_min, step_size_max;
    int first;
} SFX(rprop_coef);

static void SFX(rprop_prepare)(const rprop_hyper *h, optimc_tensor *x)
{
    SFX(rprop_coef) *c = (SFX(rprop_coef) *)x->coef;
    SFX(pre_prepare)(h, x, &c->pre);
    c->lr = (T)h->lr;
    c->etaminus = (T)h->etaminus;
    c->etaplus = (T)h->etaplus;
    c->step_size_min = (T)h->step_size_min;
    c->step_size_max = (T)h->step_size_max;
    c->first = x->step == 1;   /* the step sizes start at the first step's lr */
}

static inline void SFX(rprop_update)(const SFX(rprop_coef) *c, T *p, T g, T *prev, T *step_size)
{
    T theta = *p;   /* read once, written once */
    g = SFX(grad_in)(&c->pre, g, &theta);
    T delta = c->first ? c->lr : *step_size;
    T s = g * *prev;
    /* torch replaces sign(s) by the factor; its sign(NaN) is 0, so NaN gives 1 */
    T f = s > 0 ? c->etaplus : (s < 0 ? c->etaminus : (T)1);
    delta = delta * f;
    delta = delta < c->step_size_min ? c->step_size_min : (delta > c->step_size_max ? c->step_size_max : delta);
    if (f == c->etaminus) g = 0;
    T sign = (T)((g > 0) - (g < 0));   /* torch's sign: 0 for NaN */
    theta = theta - sign * delta;
    *step_size = delta;
    *prev = g;
    *p = theta;
}

static void SFX(rprop_kernel)(const optimc_tensor *x, size_t lo, size_t hi)
{
    const SFX(rprop_coef) c = *(const SFX(rprop_coef) *)x->coef;
    OPTIMC_PTRS(x);
    for (size_t i = lo; i < hi; i++) SFX(rprop_update)(&c, &p[i], g[i], &s0[i], &s1[i]);
}
#endif
