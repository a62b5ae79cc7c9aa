/* lowprec_impl.h — a rule's kernel over [lo, hi) of a tensor whose state is
 * stored in bfloat16 or 8 bits (optimc.h, optimc_state_format), for one
 * scalar type T; included by kernels_impl.h at every SIMD level.
 *
 * Every rule that takes compressed state (a moment-like buffer, checked when
 * the group is added) writes its loop with OPTIMC_LOOP (rules/common.h),
 * which converts the state in the loop itself: bfloat16 widened and rounded
 * back per element, 8 bits decoded per element and encoded per block of
 * OPTIMC_QBLOCK elements (lo is a block edge: the step splits compressed
 * tensors on block edges). So this is the kernel itself; it stays a separate
 * entry (the engine's and halfparam_impl.h's) so that the formats have one
 * place to grow. */
static void SFX(lowprec_run)(optimc_kernel_fn kernel, const optimc_tensor *x, size_t lo, size_t hi)
{
    kernel(x, lo, hi);
}
