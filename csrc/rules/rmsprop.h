/* RMSprop (Hinton, Coursera lecture 6e; centered form: Graves 2013), as
 * torch.optim.RMSprop computes it:
 *   v ← αv + (1 − α)g²                  square_avg
 *   a ← a + (1 − α)(g − a)              grad_avg (centered only)
 *   r = √(v − a²) + ε (centered), else r = √v + ε
 *   b ← μb + g/r;  θ ← θ − ηb           momentum_buffer (momentum μ > 0)
 *   θ ← θ − η g/r                       (momentum 0)
 */
#if defined(OPTIMC_LIST)
OPTIMC_LIST(rmsprop)
#elif !defined(T)
#define rmsprop_HYPER(F) F(alpha) F(eps) F(momentum) F(centered)
#define rmsprop_STATE(S) S(square_avg, 1, 0, param, unsigned) S(momentum_buffer, h->momentum > 0, 0, param, signed) S(grad_avg, h->centered != 0, 0, param, signed)
#define rmsprop_SCALARS(S) 
OPTIMC_DESCRIBE(rmsprop)
#else
typedef struct {
    SFX(pre_coef) pre;
    T lr, alpha, one_minus_alpha, momentum, eps;
    int centered, use_momentum;
} SFX(rmsprop_coef);

static void SFX(rmsprop_prepare)(const rmsprop_hyper *h, optimc_tensor *x)
{
    SFX(rmsprop_coef) *c = (SFX(rmsprop_coef) *)x->coef;
    SFX(pre_prepare)(h, x, &c->pre);
    c->lr = (T)h->lr;
    c->alpha = (T)h->alpha;
    c->one_minus_alpha = (T)(1.0 - h->alpha);
    c->momentum = (T)h->momentum;
    c->eps = (T)h->eps;
    c->centered = h->centered != 0;
    c->use_momentum = h->momentum > 0;
}

static inline void SFX(rmsprop_update)(const SFX(rmsprop_coef) *c, T *p, T g,
                                       T *square_avg, T *momentum_buffer, T *grad_avg)
{
    T theta = *p;   /* read once, written once */
    g = SFX(grad_in)(&c->pre, g, &theta);
    *square_avg = *square_avg * c->alpha + c->one_minus_alpha * (g * g);
    T avg;
    if (c->centered) {
        /* lerp weight 1 − α, whose complement is α */
        *grad_avg = SFX(lerp)(*grad_avg, g, c->one_minus_alpha, (T)1 - c->one_minus_alpha);
        avg = SQRT(*square_avg - *grad_avg * *grad_avg) + c->eps;
    } else {
        avg = SQRT(*square_avg) + c->eps;
    }
    if (c->use_momentum) {
        *momentum_buffer = *momentum_buffer * c->momentum + g / avg;
        theta = theta - c->lr * *momentum_buffer;
    } else {
        theta = theta - c->lr * (g / avg);
    }
    *p = theta;
}

static void SFX(rmsprop_kernel)(const optimc_tensor *x, size_t lo, size_t hi)
{
    SFX(rmsprop_coef) c = *(const SFX(rmsprop_coef) *)x->coef;
    OPTIMC_PTRS(x);
    /* the options as constants in each loop, which then vectorizes */
    if (c.centered && c.use_momentum) {
        c.centered = 1, c.use_momentum = 1;
        OPTIMC_WITH_FIXED_PRE(c, OPTIMC_EACH(OPTIMC_S0 | OPTIMC_S1 | OPTIMC_S2,
                                             SFX(rmsprop_update)(&c, &p[i], g[i], st0, st1, st2)));
    } else if (c.centered) {
        c.centered = 1, c.use_momentum = 0;
        OPTIMC_WITH_FIXED_PRE(c, OPTIMC_EACH(OPTIMC_S0 | OPTIMC_S2,
                                             SFX(rmsprop_update)(&c, &p[i], g[i], st0, NULL, st2)));
    } else if (c.use_momentum) {
        c.centered = 0, c.use_momentum = 1;
        OPTIMC_EACH(OPTIMC_S0 | OPTIMC_S1, SFX(rmsprop_update)(&c, &p[i], g[i], st0, st1, NULL));
    } else {
        c.centered = 0, c.use_momentum = 0;
        OPTIMC_EACH(OPTIMC_S0, SFX(rmsprop_update)(&c, &p[i], g[i], st0, NULL, NULL));
    }
}
#endif
