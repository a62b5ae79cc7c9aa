/* halfparam_impl.h — the block wrapper that steps a bfloat16 or float16 param
 * (optimc.h, optimc_param_format) with any element-wise rule's float32
 * kernel; included by kernels_impl.h after the float instantiation (it calls
 * the float versions of lowprec_run, grad_norm_acc and all_finite).
 *
 * [lo, hi) is walked in OPTIMC_QBLOCK-element blocks (lo is a block edge:
 * the step splits such tensors on block edges). Per block: the param is the
 * float32 master (master weights) or the param decoded into a stack block;
 * the grad is read in place (float32) or decoded (16-bit); the rule's kernel
 * runs on the block — through lowprec_run when the state is compressed too —
 * and the float32 result is written to the param, rounded to nearest even or
 * stochastically (halfparam.h). One pass, nothing allocated. */
#include "halfparam.h"

static void halfparam_decode(int format, const uint16_t *restrict h, size_t n, float *restrict out)
{
    if (format == OPTIMC_PARAM_BF16) optimc_bf16_decode_block(h, n, out);
    else for (size_t i = 0; i < n; i++) out[i] = optimc_f16_decode(h[i]);
}

/* Elements [at, at + n) of a tensor from their float32 values. */
static void halfparam_encode(const optimc_tensor *x, const float *restrict v, size_t at, size_t n,
                             uint16_t *restrict out)
{
    int bf16 = x->param_format == OPTIMC_PARAM_BF16;
    if (x->rounding == OPTIMC_ROUND_STOCHASTIC) {
        uint64_t key = optimc_sr_step_key(x->sr_key, x->step);
        for (size_t i = 0; i < n; i++) {
            uint32_t r = optimc_sr_bits(key, (uint64_t)(at + i));
            out[i] = bf16 ? optimc_bf16_encode_stochastic(v[i], r) : optimc_f16_encode_stochastic(v[i], r);
        }
    } else if (bf16) {
        optimc_bf16_encode_block(v, n, out);
    } else {
        for (size_t i = 0; i < n; i++) out[i] = optimc_f16_encode(v[i]);
    }
}

static void halfparam_run(optimc_kernel_fn kernel, const optimc_tensor *x, size_t lo, size_t hi)
{
    _Alignas(64) float param[OPTIMC_QBLOCK], grad[OPTIMC_QBLOCK];
    optimc_tensor blk = *x;
    /* bytes per element of the stored state (8-bit block scales: per block) */
    size_t state_item = x->state_format == OPTIMC_STATE_BF16 ? 2 : x->state_format == OPTIMC_STATE_8BIT ? 1 : 4;
    uint16_t *stored = x->param;
    for (size_t b = lo; b < hi; b += OPTIMC_QBLOCK) {
        size_t len = hi - b < OPTIMC_QBLOCK ? hi - b : OPTIMC_QBLOCK;
        float *p = x->master ? x->master + b : param;
        if (!x->master) halfparam_decode(x->param_format, stored + b, len, param);
        if (x->grad_half) {
            halfparam_decode(x->param_format, (const uint16_t *)x->grad + b, len, grad);
            blk.grad = grad;
        } else {
            blk.grad = (const float *)x->grad + b;
        }
        blk.param = p;
        for (int k = 0; k < OPTIMC_MAX_STATE; k++) {
            if (!x->state[k]) continue;
            blk.state[k] = (char *)x->state[k] + b * state_item;
            if (x->state_absmax[k]) blk.state_absmax[k] = x->state_absmax[k] + b / OPTIMC_QBLOCK;
        }
        if (x->state_format != OPTIMC_STATE_NATIVE) lowprec_run_f32(kernel, &blk, 0, len);
        else kernel(&blk, 0, len);
        halfparam_encode(x, p, b, len, stored + b);
    }
}

/* The guard's pass over a 16-bit grad: grad_norm_acc's sum of squares and
 * all_finite, block by block through float32 (exact: every 16-bit value is
 * a float32). */
static void halfparam_grad_norm_acc(const optimc_tensor *x, double *acc)
{
    _Alignas(64) float grad[OPTIMC_QBLOCK];
    for (size_t b = 0; b < x->n; b += OPTIMC_QBLOCK) {
        size_t len = x->n - b < OPTIMC_QBLOCK ? x->n - b : OPTIMC_QBLOCK;
        halfparam_decode(x->param_format, (const uint16_t *)x->grad + b, len, grad);
        grad_norm_acc_f32(grad, 0, len, 2.0, acc);
    }
}

static int halfparam_all_finite(const optimc_tensor *x)
{
    /* 16-bit formats: the exponent bits all ones mean Inf or NaN */
    uint16_t exp = x->param_format == OPTIMC_PARAM_BF16 ? 0x7F80u : 0x7C00u;
    const uint16_t *g = x->grad;
    for (size_t i = 0; i < x->n; i++)
        if ((g[i] & exp) == exp) return 0;
    return 1;
}
