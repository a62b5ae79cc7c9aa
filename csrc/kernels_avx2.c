/* AVX2 level (x86-64 only). FMA is enabled for the target but contraction is
 * off, so results equal the baseline's bit for bit. */
#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC target("avx2,fma")
#define OPTIMC_TABLE optimc_table_avx2
#define OPTIMC_AUX optimc_aux_avx2
#include "kernels_impl.h"
#else
typedef int optimc_no_avx2;   /* empty translation unit elsewhere */
#endif
