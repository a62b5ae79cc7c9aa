/* Adadelta (Zeiler 2012), as torch.optim.Adadelta computes it:
 *   v ← ρv + (1 − ρ)g²                  square_avg
 *   Δ = √(u + ε) / √(v + ε) · g
 *   u ← ρu + (1 − ρ)Δ²                  acc_delta
 *   θ ← θ − ηΔ
 */
#if defined(OPTIMC_LIST)
OPTIMC_LIST(adadelta)
#elif !defined(T)
#define adadelta_HYPER(F) F(rho) F(eps)
#define adadelta_STATE(S) S(square_avg, 1, 0, param, unsigned) S(acc_delta, 1, 0, param, unsigned)
#define adadelta_SCALARS(S) 
OPTIMC_DESCRIBE(adadelta)
#else
typedef struct {
    SFX(pre_coef) pre;
    T lr, rho, one_minus_rho, eps;
} SFX(adadelta_coef);

static void SFX(adadelta_prepare)(const adadelta_hyper *h, optimc_tensor *x)
{
    SFX(adadelta_coef) *c = (SFX(adadelta_coef) *)x->coef;
    SFX(pre_prepare)(h, x, &c->pre);
    c->lr = (T)h->lr;
    c->rho = (T)h->rho;
    c->one_minus_rho = (T)(1.0 - h->rho);
    c->eps = (T)h->eps;
}

static inline void SFX(adadelta_update)(const SFX(adadelta_coef) *c, T *p, T g,
                                        T *square_avg, T *acc_delta)
{
    T theta = *p;   /* read once, written once */
    g = SFX(grad_in)(&c->pre, g, &theta);
    *square_avg = *square_avg * c->rho + c->one_minus_rho * (g * g);
    T delta = SQRT(*acc_delta + c->eps) / SQRT(*square_avg + c->eps) * g;
    *acc_delta = *acc_delta * c->rho + c->one_minus_rho * (delta * delta);
    theta = theta - c->lr * delta;
    *p = theta;
}

static void SFX(adadelta_kernel)(const optimc_tensor *x, size_t lo, size_t hi)
{
    SFX(adadelta_coef) c = *(const SFX(adadelta_coef) *)x->coef;
    OPTIMC_PTRS(x);
    OPTIMC_EACH(OPTIMC_S0 | OPTIMC_S1, SFX(adadelta_update)(&c, &p[i], g[i], st0, st1));
}
#endif
