/* lowprec.c — initial values and sizes of compressed state (see lowprec.h). */
#include "lowprec.h"

void optimc_lowprec_fill(optimc_tensor *x, int k, double v)
{
    float f = (float)v, block[OPTIMC_QBLOCK];
    if (x->state_format == OPTIMC_STATE_BF16) {
        uint16_t h = optimc_bf16_encode(f), *out = x->state[k];
        for (size_t i = 0; i < x->n; i++) out[i] = h;
        return;
    }
    /* 8-bit: every block encodes the same values, so encode one and copy it */
    uint8_t codes[OPTIMC_QBLOCK], *out = x->state[k];
    float absmax;
    for (int i = 0; i < OPTIMC_QBLOCK; i++) block[i] = f;
    optimc_quantize_blockwise((x->state_signed >> k) & 1u, block, OPTIMC_QBLOCK, codes, &absmax);
    for (size_t b = 0; b < x->n; b += OPTIMC_QBLOCK) {
        size_t len = x->n - b < OPTIMC_QBLOCK ? x->n - b : OPTIMC_QBLOCK;
        memcpy(out + b, codes, len);
        x->state_absmax[k][b / OPTIMC_QBLOCK] = absmax;
    }
}

size_t optimc_lowprec_buffer_bytes(const optimc_tensor *x)
{
    switch (x->state_format) {
    case OPTIMC_STATE_BF16: return 2 * x->n;
    case OPTIMC_STATE_8BIT: return x->n + sizeof(float) * optimc_qblocks(x->n);
    default: return x->n * (x->dtype == OPTIMC_FLOAT32 ? 4 : 8);
    }
}
