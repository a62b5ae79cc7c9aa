/* AVX-512 level (x86-64 only), 512-bit vectors. */
#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC target("avx512f,avx512vl,avx512dq,avx2,fma")
#define OPTIMC_TABLE optimc_table_avx512
#define OPTIMC_AUX optimc_aux_avx512
#include "kernels_impl.h"
#else
typedef int optimc_no_avx512;
#endif
