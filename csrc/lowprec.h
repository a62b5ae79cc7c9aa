/* lowprec.h — state stored in bfloat16 or 8 bits (plain C11): what the
 * engine calls besides the per-level block wrapper (lowprec_impl.h). */
#ifndef OPTIMC_LOWPREC_H
#define OPTIMC_LOWPREC_H
#include "optimc.h"
#include "quantize.h"

/* The number of 8-bit blocks (block scales) of an n-element buffer. */
static inline size_t optimc_qblocks(size_t n) { return (n + OPTIMC_QBLOCK - 1) / OPTIMC_QBLOCK; }

/* Fill compressed state buffer k of x with the value v, in its format. */
void optimc_lowprec_fill(optimc_tensor *x, int k, double v);

/* Bytes of one compressed (or native) state buffer of x, block scales included. */
size_t optimc_lowprec_buffer_bytes(const optimc_tensor *x);
#endif
