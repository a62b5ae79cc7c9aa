/* Row-wise Adagrad (torchrec's RowWiseAdagrad, FBGEMM's EXACT_ROWWISE_ADAGRAD):
 * Adagrad with one accumulator per row (rows along axis 0) — the running sum
 * of the mean of the row's squared grad — so its state is one number per row:
 *   η_t = η / (1 + (t − 1)·lr_decay)
 *   g ← g + λθ                       (L2 weight decay; decoupled: θ ← θ(1 − ηλ))
 *   G_r ← G_r + mean_j(g_rj²)         sum, layout rows (starts at initial_accumulator_value)
 *   θ_rj ← θ_rj − η_t / (√G_r + ε) · g_rj
 * The mean is summed in double, left to right. The kernel takes whole rows:
 * csrc/sparse.c runs this rule row by row, for dense grads (every row) as
 * for row-sparse ones; x->dims[0] rows of x->n / x->dims[0] elements, and
 * [lo, hi) a whole number of rows.
 */
#if defined(OPTIMC_LIST_SPARSE)
OPTIMC_LIST_SPARSE(rowwise_adagrad)
#elif defined(OPTIMC_LIST)
OPTIMC_LIST(rowwise_adagrad)
#elif !defined(T)
#define rowwise_adagrad_HYPER(F) F(lr_decay) F(initial_accumulator_value) F(eps)
#define rowwise_adagrad_STATE(S) S(sum, 1, h->initial_accumulator_value, rows, exact)
#define rowwise_adagrad_SCALARS(S) 
#define rowwise_adagrad_SPARSE(Z) 
OPTIMC_DESCRIBE(rowwise_adagrad)
#else
typedef struct {
    SFX(pre_coef) pre;
    T clr, eps;
} SFX(rowwise_adagrad_coef);

static void SFX(rowwise_adagrad_prepare)(const rowwise_adagrad_hyper *h, optimc_tensor *x)
{
    SFX(rowwise_adagrad_coef) *c = (SFX(rowwise_adagrad_coef) *)x->coef;
    SFX(pre_prepare)(h, x, &c->pre);
    c->clr = (T)(h->lr / (1.0 + (double)(x->step - 1) * h->lr_decay));
    c->eps = (T)h->eps;
}

static void SFX(rowwise_adagrad_kernel)(const optimc_tensor *x, size_t lo, size_t hi)
{
    const SFX(rowwise_adagrad_coef) c = *(const SFX(rowwise_adagrad_coef) *)x->coef;
    OPTIMC_PTRS(x);
    size_t n_rows = x->ndim ? x->dims[0] : 1, len = n_rows ? x->n / n_rows : 0;
    if (len == 0) return;
    for (size_t start = lo; start < hi; start += len) {
        size_t r = start / len, end = start + len;
        double sumsq = 0.0;
        for (size_t i = start; i < end; i++) {
            T theta = p[i];   /* a copy: the decoupled decay is applied below */
            T gi = SFX(grad_in)(&c.pre, g[i], &theta);
            sumsq += (double)gi * (double)gi;
        }
        T acc = s0[r] + (T)(sumsq / (double)len);
        s0[r] = acc;
        T mult = c.clr / (SQRT(acc) + c.eps);
        for (size_t i = start; i < end; i++) {
            T theta = p[i];
            T gi = SFX(grad_in)(&c.pre, g[i], &theta);
            p[i] = theta - mult * gi;
        }
    }
}
#endif
