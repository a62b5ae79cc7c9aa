/* Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms",
 * Algorithm 2), with decoupled weight decay:
 *   c = β₁m + (1 − β₁)g
 *   θ ← θ(1 − ηλ) − η·sign(c)
 *   m ← β₂m + (1 − β₂)g                 exp_avg
 */
#if defined(OPTIMC_LIST)
OPTIMC_LIST(lion)
#elif !defined(T)
#define lion_HYPER(F) F(beta1) F(beta2)
#define lion_STATE(S) S(exp_avg, 1, 0, param, signed)
#define lion_SCALARS(S) 
OPTIMC_DESCRIBE(lion)
#else
typedef struct {
    SFX(pre_coef) pre;
    T lr, beta1, one_minus_beta1, beta2, one_minus_beta2;
} SFX(lion_coef);

static void SFX(lion_prepare)(const lion_hyper *h, optimc_tensor *x)
{
    SFX(lion_coef) *c = (SFX(lion_coef) *)x->coef;
    SFX(pre_prepare)(h, x, &c->pre);
    c->lr = (T)h->lr;
    c->beta1 = (T)h->beta1;
    c->one_minus_beta1 = (T)(1.0 - h->beta1);
    c->beta2 = (T)h->beta2;
    c->one_minus_beta2 = (T)(1.0 - h->beta2);
}

static inline void SFX(lion_update)(const SFX(lion_coef) *c, T *p, T g, T *exp_avg)
{
    T theta = *p;   /* read once, written once */
    g = SFX(grad_in)(&c->pre, g, &theta);
    T direction = *exp_avg * c->beta1 + c->one_minus_beta1 * g;
    /* np.sign: a NaN stays NaN, so a NaN grad is not silently ignored */
    T sign = direction > 0 ? (T)1 : (direction < 0 ? (T)-1 : (direction == 0 ? (T)0 : direction));
    theta = theta - c->lr * sign;
    *exp_avg = *exp_avg * c->beta2 + c->one_minus_beta2 * g;
    *p = theta;
}

static void SFX(lion_kernel)(const optimc_tensor *x, size_t lo, size_t hi)
{
    SFX(lion_coef) c = *(const SFX(lion_coef) *)x->coef;
    OPTIMC_PTRS(x);
    OPTIMC_EACH(OPTIMC_S0, SFX(lion_update)(&c, &p[i], g[i], st0));
}
#endif
