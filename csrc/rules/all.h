/* all.h — THE list of algorithms: one line each, in registry order. Each
 * rule file holds everything about its algorithm (see describe.h); the enum
 * of C ids, the kernel tables and the registry are generated from this list,
 * and the Python classes find their algorithm here by name. */
#include "sgd.h"
#include "adagrad.h"
#include "rmsprop.h"
#include "adadelta.h"
#include "adam.h"
#include "adamax.h"
#include "nadam.h"
#include "radam.h"
#include "lion.h"
#include "rprop.h"
#include "lamb.h"
#include "lars.h"
#include "asgd.h"
#include "sgd_schedule_free.h"
#include "adamw_schedule_free.h"
#include "sparse_adam.h"
#include "rowwise_adagrad.h"
#include "adafactor.h"
