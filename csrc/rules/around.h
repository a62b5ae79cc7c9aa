/* aux.h — kernels around the step, for one T: the roofline stream, gradient
 * statistics (for clipping and the non-finite guard), scaling/clamping of
 * gradients, and the parameter moving average. */

/* stream_read: adds r[lo, hi) into 64 lanes, element lo + 64j + k into lane
 * k (the tail into lane 0): a loop GCC vectorizes, where a sum into a few
 * accumulators stays scalar. */
static inline void SFX(stream_read)(T *restrict lane, const T *restrict r, size_t lo, size_t hi)
{
    size_t i = lo;
    for (; i + 64 <= hi; i += 64)
        for (int k = 0; k < 64; k++) lane[k] = lane[k] + r[i + k];
    for (; i < hi; i++) lane[0] = lane[0] + r[i];
}

/* stream: rw[k][i] ← rw[k][i] + Σ_j a[j][i] for the first n_write arrays,
 * reading all n_read; the least arithmetic that still touches every byte.
 * With n_write = 0 it only reads (as the first pass of LARS's step does),
 * into lanes whose sum goes to a volatile local, so that the loads stay. */
static void SFX(stream)(void *const *arrays, int n_read, int n_write, size_t lo, size_t hi)
{
    T *restrict a0 = (T *)arrays[0];
    if (n_read == 2 && n_write == 1) {
        const T *restrict a1 = (const T *)arrays[1];
        for (size_t i = lo; i < hi; i++) a0[i] = a0[i] + a1[i];
    } else if (n_read == 3 && n_write == 2) {
        T *restrict a1 = (T *)arrays[1];
        const T *restrict a2 = (const T *)arrays[2];
        for (size_t i = lo; i < hi; i++) { T s = a2[i]; a0[i] = a0[i] + s; a1[i] = a1[i] + s; }
    } else if (n_read == 3 && n_write == 1) {
        const T *restrict a1 = (const T *)arrays[1], *restrict a2 = (const T *)arrays[2];
        for (size_t i = lo; i < hi; i++) a0[i] = a0[i] + (a1[i] + a2[i]);
    } else if (n_read == 4 && n_write == 2) {
        T *restrict a1 = (T *)arrays[1];
        const T *restrict a2 = (const T *)arrays[2], *restrict a3 = (const T *)arrays[3];
        for (size_t i = lo; i < hi; i++) { T s = a2[i] + a3[i]; a0[i] = a0[i] + s; a1[i] = a1[i] + s; }
    } else if (n_write == 0) {
        T lane[64] = {0};
        for (int j = 0; j < n_read; j++) SFX(stream_read)(lane, (const T *)arrays[j], lo, hi);
        volatile T sink = 0;
        for (int k = 0; k < 64; k++) sink = sink + lane[k];
    } else if (n_read == 4 && n_write == 3) {
        T *restrict a1 = (T *)arrays[1], *restrict a2 = (T *)arrays[2];
        const T *restrict a3 = (const T *)arrays[3];
        for (size_t i = lo; i < hi; i++) { T s = a3[i]; a0[i] = a0[i] + s; a1[i] = a1[i] + s; a2[i] = a2[i] + s; }
    } else if (n_read == 5 && n_write == 4) {
        T *restrict a1 = (T *)arrays[1], *restrict a2 = (T *)arrays[2], *restrict a3 = (T *)arrays[3];
        const T *restrict a4 = (const T *)arrays[4];
        for (size_t i = lo; i < hi; i++) {
            T s = a4[i]; a0[i] = a0[i] + s; a1[i] = a1[i] + s; a2[i] = a2[i] + s; a3[i] = a3[i] + s;
        }
    } else if (n_read == 5 && n_write == 3) {
        T *restrict a1 = (T *)arrays[1], *restrict a2 = (T *)arrays[2];
        const T *restrict a3 = (const T *)arrays[3], *restrict a4 = (const T *)arrays[4];
        for (size_t i = lo; i < hi; i++) { T s = a3[i] + a4[i]; a0[i] = a0[i] + s; a1[i] = a1[i] + s; a2[i] = a2[i] + s; }
    } else {
        for (size_t i = lo; i < hi; i++) {
            T s = 0;
            for (int j = n_write; j < n_read; j++) s = s + ((const T *)arrays[j])[i];
            for (int k = 0; k < n_write; k++) ((T *)arrays[k])[i] = ((T *)arrays[k])[i] + s;
        }
    }
}

/* grad_norm_acc: accumulates into *acc, in double, Σ|g|^norm_type over
 * g[lo, hi) (max|g| for norm_type = +inf, NaN sticky), in 8 lanes chosen by
 * index and then added in lane order: a fixed order for a given buffer. */
static void SFX(grad_norm_acc)(const void *grad, size_t lo, size_t hi, double norm_type, double *acc)
{
    const T *restrict g = (const T *)grad;
    double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int is_max = isinf(norm_type);
    if (norm_type == 2.0) {
        for (size_t i = lo; i < hi; i++) { double v = (double)g[i]; lane[i & 7] += v * v; }
    } else if (is_max) {
        for (size_t i = lo; i < hi; i++) {
            double v = fabs((double)g[i]);
            lane[i & 7] = (v > lane[i & 7] || v != v) ? v : lane[i & 7];
        }
    } else if (norm_type == 1.0) {
        for (size_t i = lo; i < hi; i++) lane[i & 7] += fabs((double)g[i]);
    } else {
        for (size_t i = lo; i < hi; i++) lane[i & 7] += pow(fabs((double)g[i]), norm_type);
    }
    for (int k = 0; k < 8; k++) {
        if (is_max) *acc = (lane[k] > *acc || lane[k] != lane[k]) ? lane[k] : *acc;
        else *acc += lane[k];
    }
}

/* all_finite: 1 if no element of g[lo, hi) is NaN or ±Inf. */
static int SFX(all_finite)(const void *grad, size_t lo, size_t hi)
{
    const T *restrict g = (const T *)grad;
    int finite = 1;
    for (size_t i = lo; i < hi; i++) finite &= (g[i] - g[i]) == 0;
    return finite;
}

/* scale_clip: g ← g·scale (mode 0) or g ← clamp(g, −v, v) (mode 1). */
static void SFX(scale_clip)(void *grad, size_t lo, size_t hi, int mode, double value)
{
    T *restrict g = (T *)grad;
    const T v = (T)value;
    if (mode == 0) {
        for (size_t i = lo; i < hi; i++) g[i] = g[i] * v;
    } else {
        for (size_t i = lo; i < hi; i++) {
            T x = g[i];
            x = x > v ? v : x;
            g[i] = x < -v ? -v : x;
        }
    }
}

/* ema: a ← a + (1 − d)(θ − a), as torch's AveragedModel EMA (lerp). */
static void SFX(ema)(void *avg, const void *param, size_t lo, size_t hi, double weight)
{
    T *restrict a = (T *)avg;
    const T *restrict p = (const T *)param;
    const T w = (T)weight, one_minus_w = (T)1 - w;
    for (size_t i = lo; i < hi; i++) a[i] = SFX(lerp)(a[i], p[i], w, one_minus_w);
}
