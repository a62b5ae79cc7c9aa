/* describe.h — how a rule file describes its algorithm to the registry.
 *
 * Each csrc/rules/<name>.h is included three ways (see all.h):
 *   with OPTIMC_LIST(name) defined: it says only OPTIMC_LIST(<name>);
 *   without T:                       its description (this file's macros);
 *   with T (float or double):        its kernel for that scalar type.
 *
 * The description is three lists and one line:
 *   <name>_HYPER(F)    F(field) for each hyperparameter after the common four
 *                      (lr, weight_decay, maximize, decoupled_weight_decay);
 *                      flags are 0 or 1. These are the keys the binding takes.
 *   <name>_STATE(S)    S(buffer, needed, initial, layout, kind) for each state buffer,
 *                      named as PyTorch names it: whether the options `h` need it,
 *                      its initial value (expressions over `h`, the typed
 *                      hyperparameters), its shape (an optimc_layout without
 *                      its prefix: `param` is the param's shape and dtype) and
 *                      what it holds, for state_dtype (an optimc_moment_kind
 *                      without its prefix: `signed` or `unsigned` moments can
 *                      be stored in bfloat16 or 8 bits; `exact` cannot).
 *   <name>_SCALARS(S)  S(scalar, initial) for each per-tensor scalar (x->scalars[k]).
 *   OPTIMC_DESCRIBE(<name>)  makes the typed struct <name>_hyper.
 *
 * Per-tensor reductions (norms a rule needs before its update, such as
 * LAMB's and LARS's trust ratios). Such a rule's first branch is
 *     #if defined(OPTIMC_LIST_REDUCING)
 *     OPTIMC_LIST_REDUCING(<name>)
 *     #elif defined(OPTIMC_LIST)
 *     OPTIMC_LIST(<name>)
 * (a generator that does not care sees a plain rule); its description adds
 *   <name>_SUMS(S)     S(sum) for each per-tensor sum (at most OPTIMC_MAX_SUMS);
 * and its typed branch adds, besides prepare and kernel (which runs last):
 *   <name>_reduce(x, lo, hi, sums)  adds its sums over elements [lo, hi) to
 *                      sums[] (in double, in a fixed order for given lo, hi);
 *                      it may update state, as each element is reduced once;
 *   <name>_finish(h, x, sums)       turns the tensor's totals into its
 *                      step's constants in x->coef (after prepare).
 * optimc_step calls reduce on whole chunks whose boundaries depend only on
 * the tensor's size and adds the chunks' sums in order, so the totals do not
 * depend on the thread count; chunks start on multiples of 16 elements.
 *
 * Two reduce passes (a rule whose second sums need what the first pass's
 * finish made, such as Adafactor's RMS of an update built from the updated
 * row and column factors). Its first branch is
 *     #if defined(OPTIMC_LIST_TWO_PASS)
 *     OPTIMC_LIST_TWO_PASS(<name>)
 *     #elif defined(OPTIMC_LIST)
 *     OPTIMC_LIST(<name>)
 * its description declares <name>_SUMS as above (both passes use those
 * slots; each pass starts them at 0), and its typed branch has
 *   <name>_reduce(x, chunk, lo, hi, sums), <name>_finish(h, x, sums)   pass 1
 *   <name>_reduce2(x, chunk, lo, hi, sums), <name>_finish2(h, x, sums) pass 2
 * then the kernel. Its params of ndim >= 2 take factored chunks (optimc.h,
 * optimc_factored): each chunk holds whole matrices or a run of whole rows of
 * one matrix, so per-row sums stay inside one chunk; `chunk` indexes the
 * tensor's scratch x->scratch (optimc_scratch_elements doubles: a row of
 * `cols` doubles per chunk, for per-column partial sums, then one double per
 * matrix), which a finish may combine in chunk order. Below 2-D the chunks
 * are the ordinary ones and x->scratch is NULL.
 *
 * Row-sparse grads (optimc.SparseGrad). A rule whose update at the rows a
 * grad gives is its sparse semantics (the dense rule at those rows, or its
 * own lazy form) says so in its first branch,
 *     #if defined(OPTIMC_LIST_SPARSE)
 *     OPTIMC_LIST_SPARSE(<name>)
 *     #elif defined(OPTIMC_LIST)
 *     OPTIMC_LIST(<name>)
 * and its description adds
 *   <name>_SPARSE(Z)   Z(field) for each field that must be 0 for it to take
 *                      them (SGD's momentum: no buffer to update lazily);
 *                      empty when it always does.
 * The registry publishes the mark (optimc_algorithm.sparse, sparse_zero;
 * _core.algorithms()[name]["sparse"]); sparse.c and the classes read it.
 */
#ifndef OPTIMC_RULES_DESCRIBE_H
#define OPTIMC_RULES_DESCRIBE_H
#include "../optimc.h"

/* The fields every algorithm starts with; pre_prepare (common.h) reads them. */
typedef struct {
    double lr, weight_decay, maximize, decoupled_weight_decay;
} optimc_common_hyper;

#define OPTIMC_FIELD(f) double f;
#define OPTIMC_DESCRIBE(name) \
    typedef struct { \
        double lr, weight_decay, maximize, decoupled_weight_decay; \
        name##_HYPER(OPTIMC_FIELD) \
    } name##_hyper; \
    _Static_assert(sizeof(name##_hyper) <= sizeof(optimc_hyper), \
                   #name ": more hyperparameters than OPTIMC_MAX_HYPER");

/* Counting a list: (0 LIST(OPTIMC_ONE)) is its length. */
#define OPTIMC_ONE(...) + 1
#endif
