/* Schedule-Free SGD (Defazio et al. 2024, "The Road Less Scheduled"), as the
 * schedulefree package's SGDScheduleFree (1.4.1) computes it. The param is
 * the training point y; z is the base SGD sequence (z = θ at the first step)
 * and the average x is never stored (train()/eval() move θ between y and x).
 * Per tensor, with k = t − 1 steps taken before this one:
 *   η_k = lr·min(1, (k + 1)/warmup_steps)      (no warm-up when warmup_steps = 0)
 *   lr_max ← max(lr_max, η_k)                                  lr_max (starts at −1)
 *   w = (k + 1)^r · lr_max^weight_lr_power;  Σw ← Σw + w        weight_sum
 *   c = w/Σw (0 when Σw = 0)
 *   g ← g + λy                                   L2 decay, at y
 *   y ← lerp(y, z, c)
 *   y ← y + η_k(β(1 − c) − 1)·g                  β = momentum
 *   z ← z − η_k·g                                              z
 */
#if defined(OPTIMC_LIST)
OPTIMC_LIST(sgd_schedule_free)
#elif !defined(T)
#define sgd_schedule_free_HYPER(F) F(momentum) F(warmup_steps) F(r) F(weight_lr_power)
#define sgd_schedule_free_STATE(S) S(z, 1, 0, param, exact)
#define sgd_schedule_free_SCALARS(S) S(lr_max, -1.0) S(weight_sum, 0.0)
OPTIMC_DESCRIBE(sgd_schedule_free)
#endif

/* The averaging weight c of this step and the scheduled lr, shared by both
 * Schedule-Free rules: updates the tensor's lr_max (scalars[0]) and
 * weight_sum (scalars[1]) as the package updates its group's. */
#if !defined(OPTIMC_LIST) && !defined(OPTIMC_SCHEDULE_FREE_WEIGHT)
#define OPTIMC_SCHEDULE_FREE_WEIGHT
static inline double optimc_schedule_free_weight(double lr, double warmup_steps, double r,
                                                 double weight_lr_power, const optimc_tensor *x_,
                                                 double *scalars, double *scheduled_lr)
{
    double k = (double)(x_->step - 1);
    double sched = k < warmup_steps ? (k + 1.0) / warmup_steps : 1.0;
    double lr_t = lr * sched;
    double *lr_max = &scalars[0], *weight_sum = &scalars[1];
    if (lr_t > *lr_max) *lr_max = lr_t;
    double weight = pow(k + 1.0, r) * pow(*lr_max, weight_lr_power);
    *weight_sum = *weight_sum + weight;
    *scheduled_lr = lr_t;
    return *weight_sum == 0.0 ? 0.0 : weight / *weight_sum;
}
#endif

#if !defined(OPTIMC_LIST) && defined(T)
typedef struct {
    SFX(pre_coef) pre;
    T ckp1, one_minus_ckp1, y_step, lr;
    int first;
} SFX(sgd_schedule_free_coef);

static void SFX(sgd_schedule_free_prepare)(const sgd_schedule_free_hyper *h, optimc_tensor *x)
{
    SFX(sgd_schedule_free_coef) *c = (SFX(sgd_schedule_free_coef) *)x->coef;
    double lr;
    double ckp1 = optimc_schedule_free_weight(h->lr, h->warmup_steps, h->r, h->weight_lr_power, x,
                                              x->scalars, &lr);
    SFX(pre_prepare)(h, x, &c->pre);
    c->ckp1 = (T)ckp1;
    c->one_minus_ckp1 = (T)1 - c->ckp1;   /* lerp's complement, computed as torch does */
    c->y_step = (T)(lr * (h->momentum * (1.0 - ckp1) - 1.0));
    c->lr = (T)lr;
    c->first = x->step == 1;   /* z starts at the param, at the first step (as the package) */
}

/* `first` is a constant in each of the kernel's two loops (z is not read on the first step) */
static inline void SFX(sgd_schedule_free_update)(const SFX(sgd_schedule_free_coef) *c, T *p, T g, T *z,
                                                 int first)
{
    T y = *p;   /* read once, written once */
    T zi = first ? y : *z;
    g = SFX(grad_in)(&c->pre, g, &y);
    y = SFX(lerp)(y, zi, c->ckp1, c->one_minus_ckp1);
    y = y + c->y_step * g;
    *z = zi - c->lr * g;
    *p = y;
}

static void SFX(sgd_schedule_free_kernel)(const optimc_tensor *x, size_t lo, size_t hi)
{
    const SFX(sgd_schedule_free_coef) c = *(const SFX(sgd_schedule_free_coef) *)x->coef;
    OPTIMC_PTRS(x);
    if (c.first)
        for (size_t i = lo; i < hi; i++) SFX(sgd_schedule_free_update)(&c, &p[i], g[i], &s0[i], 1);
    else
        for (size_t i = lo; i < hi; i++) SFX(sgd_schedule_free_update)(&c, &p[i], g[i], &s0[i], 0);
}
#endif
