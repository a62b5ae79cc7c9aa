/* reduce.h — what rules with per-tensor reductions share (see describe.h),
 * included once per scalar type T like common.h.
 *
 * Their sums go into 8 lanes in double: element lo + 8j + k of a reduce call's
 * range [lo, lo + n) into lane k, in order of j, and the lanes are added in
 * lane order at the end, so a chunk's sum is one fixed sequence of IEEE
 * operations at every SIMD level. Rules compute their values in blocks of at
 * most 64 (a loop the compiler vectorizes) and add a block at a time. */

/* lane[k] += Σ_j v[8j + k]², in order of j (len ≤ 64; a block starts on a
 * multiple of 8 from lo, so a short last block fills the first lanes). */
static inline void SFX(lanes_add_squares)(double lane[8], const T *v, size_t len)
{
    size_t j = 0;
    for (; j + 8 <= len; j += 8)
        for (int k = 0; k < 8; k++) lane[k] += (double)v[j + k] * (double)v[j + k];
    for (int k = 0; j < len; j++, k++) lane[k] += (double)v[j] * (double)v[j];
}

/* sums[k] += the lanes of sum k, in lane order. */
static inline void SFX(lanes_finish)(double *sums, double lanes[][8], int n_sums)
{
    for (int s = 0; s < n_sums; s++)
        for (int k = 0; k < 8; k++) sums[s] += lanes[s][k];
}
