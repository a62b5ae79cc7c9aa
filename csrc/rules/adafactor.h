/* Adafactor (Shazeer & Stern 2018, "Adafactor: Adaptive Learning Rates with
 * Sublinear Memory Cost"), as torch.optim.Adafactor computes it:
 *   w = t^beta2_decay                          (1 − β̂₂ₜ)
 *   ρ = min(η, 1/√t);  α = max(ε₂, RMS(θ))·ρ    (RMS of θ before the decay)
 *   θ ← θ(1 − ηλ)                              (weight decay, always decoupled)
 *   ndim ≥ 2, factored over the last two dims (matrices of R rows × C columns):
 *     r_i ← lerp(r_i, mean_j g_ij², w)          row_var, shape[:-1] + (1,)
 *     c_j ← lerp(c_j, mean_i g_ij², w)          col_var, shape[:-2] + (1, C)
 *     V_ij = (r_i·c_j) / max(mean_i r_i, ε₁)
 *   below 2-D: V ← lerp(V, g², w)               variance
 *   U = g · 1/√max(V, ε₁²);  θ ← θ − α/max(1, RMS(U)/d) · U
 * eps1 < 0 stands for torch's None: the machine epsilon of the param's dtype.
 *
 * Two reduce passes (OPTIMC_LIST_TWO_PASS: factored chunks of whole rows, see
 * optimc.h). Pass 1 sums θ², and per row Σg² (the row's r_i updated at
 * once) and per column Σg² into the chunk's scratch row (a chunk holding
 * whole matrices updates their c_j itself; pieces of a matrix are added in
 * piece order by the finish, which also keeps each such matrix's mean of r).
 * Pass 2 sums U² from the updated factors; the kernel recomputes U and
 * updates θ. Below 2-D, pass 1 updates V and sums U² as well. Every sum is in
 * double, in an order fixed by the shape (rules/reduce.h).
 */
#if defined(OPTIMC_LIST_TWO_PASS)
OPTIMC_LIST_TWO_PASS(adafactor)
#elif defined(OPTIMC_LIST)
OPTIMC_LIST(adafactor)
#elif !defined(T)
#define adafactor_HYPER(F) F(beta2_decay) F(eps1) F(eps2) F(d)
#define adafactor_STATE(S) S(row_var, ndim >= 2, 0, row_factor, exact) S(col_var, ndim >= 2, 0, col_factor, exact) \
                           S(variance, ndim < 2, 0, param, exact)
#define adafactor_SCALARS(S)
#define adafactor_SUMS(S) S(param_sq) S(update_sq)
OPTIMC_DESCRIBE(adafactor)
#else
#include <float.h>
typedef struct {
    SFX(pre_coef) pre;
    T w, one_minus_w, eps1, eps1_sq, decay, neg_step;
    int has_decay;
    double rho, alpha, d;
} SFX(adafactor_coef);

static void SFX(adafactor_prepare)(const adafactor_hyper *h, optimc_tensor *x)
{
    SFX(adafactor_coef) *c = (SFX(adafactor_coef) *)x->coef;
    double t = (double)x->step;
    double eps1 = h->eps1 >= 0 ? h->eps1 : (sizeof(T) == sizeof(float) ? (double)FLT_EPSILON : DBL_EPSILON);
    SFX(pre_prepare)(h, x, &c->pre);
    c->pre.has_l2 = c->pre.has_decay = 0;   /* the decay is applied in the kernel */
    c->w = (T)pow(t, h->beta2_decay);
    c->one_minus_w = (T)1 - c->w;           /* as torch's lerp computes it */
    c->eps1 = (T)eps1;
    c->eps1_sq = (T)(eps1 * eps1);
    c->has_decay = h->weight_decay != 0;
    c->decay = (T)(1.0 - h->lr * h->weight_decay);
    double inv_sqrt_t = 1.0 / pow(t, 0.5);
    c->rho = h->lr < inv_sqrt_t ? h->lr : inv_sqrt_t;
    c->alpha = 0.0;
    c->d = h->d;
    c->neg_step = 0;
}

/* the grad as the rule reads it: maximize's sign and the guard's scale, clip */
static inline T SFX(adafactor_grad)(const SFX(adafactor_coef) *c, T g)
{
    g = g * c->pre.grad_scale;
    T high = g > c->pre.clip ? c->pre.clip : g;
    T clipped = high < -c->pre.clip ? -c->pre.clip : high;
    return c->pre.has_clip ? clipped : g;
}

/* U = g · 1/√max(V, ε₁²) */
static inline T SFX(adafactor_direction)(const SFX(adafactor_coef) *c, T v, T g)
{
    v = v < c->eps1_sq ? c->eps1_sq : v;
    return ((T)1 / SQRT(v)) * g;
}

/* max(mean of a matrix's R row factors, ε₁) (a NaN stays, as torch's clamp keeps it) */
static T SFX(adafactor_row_mean)(const SFX(adafactor_coef) *c, const T *r, size_t rows)
{
    double lane[8] = {0}, sum = 0.0;
    size_t i = 0;
    for (; i + 8 <= rows; i += 8)
        for (int k = 0; k < 8; k++) lane[k] += (double)r[i + k];
    for (int k = 0; i < rows; i++, k++) lane[k] += (double)r[i];
    for (int k = 0; k < 8; k++) sum += lane[k];
    T mean = (T)(sum / (double)rows);
    return mean < c->eps1 ? c->eps1 : mean;
}

/* matrix m's clamped mean of r: kept by the finish when chunks hold pieces
 * of matrices, else computed (the same function, so the same bits) */
static T SFX(adafactor_matrix_mean)(const SFX(adafactor_coef) *c, const optimc_tensor *x,
                                     const optimc_factored *f, size_t m)
{
    if (f->pieces) return (T)x->scratch[f->chunks * f->cols + m];
    return SFX(adafactor_row_mean)(c, (const T *)x->state[0] + m * f->rows, f->rows);
}

/* The first pass over chunk `chunk`, elements [lo, hi). */
static void SFX(adafactor_reduce)(const optimc_tensor *x, size_t chunk, size_t lo, size_t hi, double *sums)
{
    const SFX(adafactor_coef) c = *(const SFX(adafactor_coef) *)x->coef;
    OPTIMC_PTRS(x);
    double lanes[2][8] = {{0}};
    T gs[64];
    if (x->ndim < 2) {
        for (size_t at = lo; at < hi; at += 64) {
            size_t len = hi - at < 64 ? hi - at : 64;
            for (size_t j = 0; j < len; j++) {
                T gi = SFX(adafactor_grad)(&c, g[at + j]);
                T v = SFX(lerp)(s2[at + j], gi * gi, c.w, c.one_minus_w);
                s2[at + j] = v;
                gs[j] = SFX(adafactor_direction)(&c, v, gi);
            }
            SFX(lanes_add_squares)(lanes[0], p + at, len);
            SFX(lanes_add_squares)(lanes[1], gs, len);
        }
        SFX(lanes_finish)(sums, lanes, 2);
        return;
    }
    optimc_factored f;
    optimc_factored_chunks(x, &f);
    size_t C = f.cols, R = f.rows;
    double *col = x->scratch + chunk * C;   /* this chunk's column sums of g² */
    for (size_t start = lo; start < hi; start += C) {
        size_t r = start / C, m = r / R, i = r % R;
        if (start == lo || i == 0)
            for (size_t j = 0; j < C; j++) col[j] = 0.0;
        double row_lane[8] = {0}, row_sum = 0.0;
        for (size_t at = 0; at < C; at += 64) {
            size_t len = C - at < 64 ? C - at : 64;
            for (size_t j = 0; j < len; j++) gs[j] = SFX(adafactor_grad)(&c, g[start + at + j]);
            SFX(lanes_add_squares)(row_lane, gs, len);
            for (size_t j = 0; j < len; j++) col[at + j] += (double)gs[j] * (double)gs[j];
            SFX(lanes_add_squares)(lanes[0], p + start + at, len);
        }
        for (int k = 0; k < 8; k++) row_sum += row_lane[k];
        s0[r] = SFX(lerp)(s0[r], (T)(row_sum / (double)C), c.w, c.one_minus_w);
        if (f.pieces == 0 && i == R - 1)   /* the whole matrix was in this chunk */
            for (size_t j = 0; j < C; j++)
                s1[m * C + j] = SFX(lerp)(s1[m * C + j], (T)(col[j] / (double)R), c.w, c.one_minus_w);
    }
    SFX(lanes_finish)(sums, lanes, 1);
}

static double SFX(adafactor_rms)(double sum_sq, size_t n)
{
    double norm = (double)(T)sqrt(sum_sq);   /* torch's norm, in the param's dtype */
    return norm / pow((double)n, 0.5);
}

/* α; below 2-D also the step (pass 1 summed U²); for pieces of matrices,
 * each column's sums added in piece order into c_j, and each matrix's mean of r. */
static void SFX(adafactor_finish)(const adafactor_hyper *h, optimc_tensor *x, const double *sums)
{
    SFX(adafactor_coef) *c = (SFX(adafactor_coef) *)x->coef;
    if (x->n == 0) return;   /* nothing to update (torch cannot step an empty param) */
    double rms = SFX(adafactor_rms)(sums[0], x->n);
    c->alpha = (rms > h->eps2 ? rms : h->eps2) * c->rho;
    if (x->ndim < 2) {
        double ratio = SFX(adafactor_rms)(sums[1], x->n) / c->d;
        c->neg_step = (T)(-c->alpha / (ratio > 1.0 ? ratio : 1.0));
        return;
    }
    optimc_factored f;
    optimc_factored_chunks(x, &f);
    if (!f.pieces) return;
    T *row_var = (T *)x->state[0], *col_var = (T *)x->state[1];
    size_t C = f.cols;
    for (size_t m = 0; m < f.matrices; m++) {
        for (size_t j = 0; j < C; j++) {
            double s = 0.0;
            for (size_t piece = 0; piece < f.pieces; piece++) s += x->scratch[(m * f.pieces + piece) * C + j];
            col_var[m * C + j] = SFX(lerp)(col_var[m * C + j], (T)(s / (double)f.rows), c->w, c->one_minus_w);
        }
        x->scratch[f.chunks * C + m] = (double)SFX(adafactor_row_mean)(c, row_var + m * f.rows, f.rows);
    }
}

/* The second pass: ΣU² of a factored tensor (below 2-D, pass 1 did it). */
static void SFX(adafactor_reduce2)(const optimc_tensor *x, size_t chunk, size_t lo, size_t hi, double *sums)
{
    const SFX(adafactor_coef) c = *(const SFX(adafactor_coef) *)x->coef;
    (void)chunk;
    if (x->ndim < 2) return;
    OPTIMC_PTRS(x);
    (void)p;
    optimc_factored f;
    optimc_factored_chunks(x, &f);
    size_t C = f.cols, R = f.rows;
    double lanes[2][8] = {{0}};
    T us[64], mean = 0;
    for (size_t start = lo; start < hi; start += C) {
        size_t r = start / C, m = r / R;
        if (start == lo || r % R == 0) mean = SFX(adafactor_matrix_mean)(&c, x, &f, m);
        T row = s0[r];
        const T *cols = s1 + m * C;
        for (size_t at = 0; at < C; at += 64) {
            size_t len = C - at < 64 ? C - at : 64;
            for (size_t j = 0; j < len; j++)
                us[j] = SFX(adafactor_direction)(&c, (row * cols[at + j]) / mean,
                                                 SFX(adafactor_grad)(&c, g[start + at + j]));
            SFX(lanes_add_squares)(lanes[1], us, len);
        }
    }
    SFX(lanes_finish)(sums, lanes, 2);
}

static void SFX(adafactor_finish2)(const adafactor_hyper *h, optimc_tensor *x, const double *sums)
{
    SFX(adafactor_coef) *c = (SFX(adafactor_coef) *)x->coef;
    (void)h;
    if (x->n == 0 || x->ndim < 2) return;
    double ratio = SFX(adafactor_rms)(sums[1], x->n) / c->d;
    c->neg_step = (T)(-c->alpha / (ratio > 1.0 ? ratio : 1.0));
}

/* θ ← θ(1 − ηλ) + (−α/denom)·U over [lo, hi) (any split: U is recomputed). */
static void SFX(adafactor_kernel)(const optimc_tensor *x, size_t lo, size_t hi)
{
    const SFX(adafactor_coef) c = *(const SFX(adafactor_coef) *)x->coef;
    OPTIMC_PTRS(x);
    if (x->ndim < 2) {
        for (size_t i = lo; i < hi; i++) {
            T theta = c.has_decay ? p[i] * c.decay : p[i];
            p[i] = theta + c.neg_step * SFX(adafactor_direction)(&c, s2[i], SFX(adafactor_grad)(&c, g[i]));
        }
        return;
    }
    optimc_factored f;
    optimc_factored_chunks(x, &f);
    size_t C = f.cols, R = f.rows, current = (size_t)-1;
    T mean = 0;
    for (size_t i = lo; i < hi;) {
        size_t r = i / C, m = r / R, end = (r + 1) * C < hi ? (r + 1) * C : hi;
        if (m != current) mean = SFX(adafactor_matrix_mean)(&c, x, &f, m), current = m;
        T row = s0[r];
        const T *cols = s1 + m * C;
        size_t first = r * C;   /* element k is in column k − first */
        for (size_t k = i; k < end; k++) {
            T theta = c.has_decay ? p[k] * c.decay : p[k];
            T u = SFX(adafactor_direction)(&c, (row * cols[k - first]) / mean, SFX(adafactor_grad)(&c, g[k]));
            p[k] = theta + c.neg_step * u;
        }
        i = end;
    }
}
#endif
