/* runtime.h — run-time settings: SIMD level and threads (internal, plain C).
 * The functions themselves are declared in optimc.h. */
#ifndef OPTIMC_RUNTIME_H
#define OPTIMC_RUNTIME_H
#include "optimc.h"
#endif
