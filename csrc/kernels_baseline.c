/* The portable level: SSE2 on x86-64, plain C elsewhere. */
#define OPTIMC_TABLE optimc_table_baseline
#define OPTIMC_AUX optimc_aux_baseline
#include "kernels_impl.h"
