/* lowprec_impl.h — how a rule's kernel runs on a tensor whose state is
 * compressed (optimc.h, optimc_state_format), for one scalar type T; included
 * by kernels_impl.h at every SIMD level.
 *
 * bfloat16 state at the avx512 level: the rules' own loops widen and round it
 * in 64-value tiles (OPTIMC_EACH, rules/common.h), so the kernel runs on the
 * tensor as it is. Below avx512 those tiles measured slower on 10^7 elements
 * than whole-block passes (docs/performance.md), so there bfloat16 goes
 * through the block wrapper as 8-bit state does.
 *
 * The block wrapper: [lo, hi) is walked in OPTIMC_QBLOCK-element blocks (lo
 * is a block edge: the step splits compressed tensors on block edges). Per
 * block: each state buffer is decoded into a stack buffer of T, the rule's
 * kernel runs on the block (a shallow copy of the tensor whose param, grad
 * and state point at the block, marked native), and each buffer is encoded
 * again (8-bit: its absmax computed afresh). One pass, nothing allocated,
 * and every rule is reused unchanged. Float64 state goes through float32 on
 * its way to bfloat16 or 8 bits. */
static void SFX(lowprec_run)(optimc_kernel_fn kernel, const optimc_tensor *x, size_t lo, size_t hi)
{
#if defined(__AVX512F__)
    if (x->state_format == OPTIMC_STATE_BF16) {
        kernel(x, lo, hi);
        return;
    }
#endif
    _Alignas(64) T buf[OPTIMC_MAX_STATE][OPTIMC_QBLOCK];
    _Alignas(64) float narrow[OPTIMC_QBLOCK];
    optimc_tensor blk = *x;
    blk.state_format = OPTIMC_STATE_NATIVE;
    const optimc_qmap *maps[2] = {NULL, NULL};
    int eight = x->state_format == OPTIMC_STATE_8BIT, vbmi = 0;
    if (eight) maps[0] = optimc_qmap_get(0), maps[1] = optimc_qmap_get(1), vbmi = optimc_use(OPTIMC_VBMI);
    for (size_t b = lo; b < hi; b += OPTIMC_QBLOCK) {
        size_t len = hi - b < OPTIMC_QBLOCK ? hi - b : OPTIMC_QBLOCK, block = b / OPTIMC_QBLOCK;
        for (int k = 0; k < OPTIMC_MAX_STATE; k++) {
            if (!x->state[k]) continue;
            /* float state is decoded in place; double through a float block */
            float *dst = sizeof(T) == sizeof(float) ? (float *)(void *)buf[k] : narrow;
            if (eight)
                optimc_q8_decode(maps[(x->state_signed >> k) & 1u], (const uint8_t *)x->state[k] + b,
                                 x->state_absmax[k][block], len, dst, vbmi);
            else
                optimc_bf16_decode_block((const uint16_t *)x->state[k] + b, len, dst);
            if (sizeof(T) != sizeof(float))
                for (size_t i = 0; i < len; i++) buf[k][i] = (T)narrow[i];
            blk.state[k] = buf[k];
        }
        blk.param = (char *)x->param + b * sizeof(T);
        blk.grad = (const char *)x->grad + b * sizeof(T);
        kernel(&blk, 0, len);
        for (int k = 0; k < OPTIMC_MAX_STATE; k++) {
            if (!x->state[k]) continue;
            const float *src = (const float *)(const void *)buf[k];
            if (sizeof(T) != sizeof(float)) {
                for (size_t i = 0; i < len; i++) narrow[i] = (float)buf[k][i];
                src = narrow;
            }
            if (eight)
                x->state_absmax[k][block] = optimc_q8_encode(maps[(x->state_signed >> k) & 1u], src, len,
                                                             (uint8_t *)x->state[k] + b, vbmi);
            else
                optimc_bf16_encode_block(src, len, (uint16_t *)x->state[k] + b);
        }
    }
}
