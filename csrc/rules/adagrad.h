/* Adagrad (Duchi et al. 2011), as torch.optim.Adagrad computes it:
 *   η_t = η / (1 + (t − 1)·lr_decay)
 *   G ← G + g²                          sum (starts at initial_accumulator_value)
 *   θ ← θ − η_t · g / (√G + ε)
 */
#if defined(OPTIMC_LIST_SPARSE)
OPTIMC_LIST_SPARSE(adagrad)
#elif defined(OPTIMC_LIST)
OPTIMC_LIST(adagrad)
#elif !defined(T)
#define adagrad_HYPER(F) F(lr_decay) F(initial_accumulator_value) F(eps)
#define adagrad_STATE(S) S(sum, 1, h->initial_accumulator_value, param, unsigned)
#define adagrad_SCALARS(S) 
#define adagrad_SPARSE(Z) Z(weight_decay)
OPTIMC_DESCRIBE(adagrad)
#else
typedef struct {
    SFX(pre_coef) pre;
    T clr, eps;
} SFX(adagrad_coef);

static void SFX(adagrad_prepare)(const adagrad_hyper *h, optimc_tensor *x)
{
    SFX(adagrad_coef) *c = (SFX(adagrad_coef) *)x->coef;
    SFX(pre_prepare)(h, x, &c->pre);
    c->clr = (T)(h->lr / (1.0 + (double)(x->step - 1) * h->lr_decay));
    c->eps = (T)h->eps;
}

static inline void SFX(adagrad_update)(const SFX(adagrad_coef) *c, T *p, T g, T *sum)
{
    T theta = *p;   /* read once, written once */
    g = SFX(grad_in)(&c->pre, g, &theta);
    *sum = *sum + g * g;
    theta = theta - c->clr * (g / (SQRT(*sum) + c->eps));
    *p = theta;
}

static void SFX(adagrad_kernel)(const optimc_tensor *x, size_t lo, size_t hi)
{
    SFX(adagrad_coef) c = *(const SFX(adagrad_coef) *)x->coef;
    OPTIMC_PTRS(x);
    OPTIMC_EACH(OPTIMC_S0, SFX(adagrad_update)(&c, &p[i], g[i], st0));
}
#endif
