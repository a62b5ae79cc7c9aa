/* SGD with momentum μ, dampening τ and Nesterov momentum
 * (Sutskever et al. 2013), as torch.optim.SGD computes it:
 *   b ← g                 on a tensor's first step
 *   b ← μb + (1 − τ)g     after                    momentum_buffer
 *   d ← g + μb (nesterov), else d ← b             (d ← g without momentum)
 *   θ ← θ − ηd
 */
#if defined(OPTIMC_LIST_SPARSE)
OPTIMC_LIST_SPARSE(sgd)
#elif defined(OPTIMC_LIST)
OPTIMC_LIST(sgd)
#elif !defined(T)
#define sgd_HYPER(F) F(momentum) F(dampening) F(nesterov)
#define sgd_STATE(S) S(momentum_buffer, h->momentum != 0, 0, param, signed)
#define sgd_SCALARS(S) 
#define sgd_SPARSE(Z) Z(momentum)
OPTIMC_DESCRIBE(sgd)
#else
typedef struct {
    SFX(pre_coef) pre;
    T lr, momentum, one_minus_dampening;
    int use_momentum, first, nesterov;
} SFX(sgd_coef);

static void SFX(sgd_prepare)(const sgd_hyper *h, optimc_tensor *x)
{
    SFX(sgd_coef) *c = (SFX(sgd_coef) *)x->coef;
    SFX(pre_prepare)(h, x, &c->pre);
    c->lr = (T)h->lr;
    c->momentum = (T)h->momentum;
    c->one_minus_dampening = (T)(1.0 - h->dampening);
    c->use_momentum = h->momentum != 0;
    c->first = x->step == 1;
    c->nesterov = h->nesterov != 0;
}

static inline void SFX(sgd_update)(const SFX(sgd_coef) *c, T *p, T g, T *b)
{
    T theta = *p;   /* read once, written once */
    g = SFX(grad_in)(&c->pre, g, &theta);
    if (c->use_momentum) {
        *b = c->first ? g : *b * c->momentum + c->one_minus_dampening * g;
        g = c->nesterov ? g + c->momentum * *b : *b;
    }
    theta = theta - c->lr * g;
    *p = theta;
}

static void SFX(sgd_kernel)(const optimc_tensor *x, size_t lo, size_t hi)
{
    SFX(sgd_coef) c = *(const SFX(sgd_coef) *)x->coef;
    OPTIMC_PTRS(x);
    if (c.use_momentum)
        OPTIMC_EACH(OPTIMC_S0, SFX(sgd_update)(&c, &p[i], g[i], st0));
    else
        OPTIMC_EACH(0, SFX(sgd_update)(&c, &p[i], g[i], NULL));
}
#endif
