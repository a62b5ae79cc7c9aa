/* binding.h — what the files of optimc._core share (CPython/NumPy side).
 *
 *   arrays.c      array checks (written once), labels, the memory-region map
 *   engine_type.c the Engine type: params, groups, hyperparameters, the step
 *   checkpoint.c  state views, snapshots and loading state
 *   module.c      module functions (config, threads, clipping helpers) and init
 *
 * Every check runs with the GIL held and before anything is written; only the
 * kernels run without the GIL, under the engine's lock, on memory the engine
 * holds references to for the whole call.
 */
#ifndef OPTIMC_BINDING_H
#define OPTIMC_BINDING_H
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pythread.h>
#define NPY_TARGET_VERSION NPY_1_23_API_VERSION
#define NPY_NO_DEPRECATED_API NPY_1_23_API_VERSION
#define PY_ARRAY_UNIQUE_SYMBOL optimc_ARRAY_API
#ifndef OPTIMC_BINDING_IMPORTS_ARRAY
#define NO_IMPORT_ARRAY
#endif
#include <numpy/arrayobject.h>
#include "optimc.h"
#include <structmember.h>

/* A piece of memory the optimizer writes: a param or a tensor's state block.
 * Kept sorted by address; pieces never overlap. */
typedef struct {
    const char *lo, *hi;
    Py_ssize_t tensor;
    int is_state;
} region;

typedef struct {
    PyObject_HEAD
    int algorithm;               /* -1 until _init_engine */
    const optimc_algorithm *alg;
    Py_ssize_t n_tensors, cap_tensors;
    optimc_tensor *tensors;
    PyArrayObject **params;      /* owned references */
    PyObject **shapes;           /* owned: each param's shape as handed over */
    PyObject **held;             /* owned during a step: the grads being read */
    void **blocks;               /* each tensor's state allocation */
    size_t *block_bytes;
    unsigned *masks;             /* each tensor's allocated state buffers */
    region *regions;             /* 2 per tensor at most, sorted */
    Py_ssize_t n_regions;
    PyObject *names;             /* list of str, or NULL for positional params */
    Py_ssize_t n_groups, cap_groups;
    optimc_hyper *groups;
    PyObject **lr_fns;           /* per group: a callable lr, or NULL */
    long long n_steps;           /* steps taken (skipped ones excluded) */
    long long skipped_steps;
    optimc_guard guard;
    double last_grad_norm;       /* valid once norm_measured */
    int norm_measured;
    PyThread_type_lock lock;
    int locked;
    unsigned long owner;
    unsigned long lock_fork_generation;
    struct sparse_step *sparse;  /* during a step given a SparseGrad: the plans (binding/sparse.c) */
} Engine;

/* ---- arrays.c ---- */
typedef enum { ARRAY_OK, ARRAY_NOT_ARRAY, ARRAY_BAD_DTYPE, ARRAY_BAD_LAYOUT, ARRAY_READ_ONLY } array_problem;
/* What is wrong with `o` as a native float32/float64, C-contiguous, aligned
 * (and, with `writeable`, writeable) ndarray; its optimc dtype on success. */
array_problem array_check(PyObject *o, int writeable, int *dtype);
/* Raise the error for `problem`, prefixed by `label` (a str). */
void array_raise(array_problem problem, PyObject *o, PyObject *label);
/* array_check, raising its error (prefixed by `label`) when there is one:
 * 0 if `o` is fine, -1 with the error set. */
int array_check_or_raise(PyObject *o, int writeable, int *dtype, const char *label);
int typenum_of(int dtype);
const char *dtype_name(int dtype);
size_t itemsize_of(int dtype);
size_t nbytes_of(const optimc_tensor *x);
/* The bytes of tensor x's state buffer k (its layout's elements, x's dtype; for
 * compressed state its codes, without the 8-bit block scales). */
size_t state_nbytes(const Engine *self, const optimc_tensor *x, int k);
/* Raise (naming state[i]) and return 1 when param i's step counter is at OPTIMC_MAX_STEP. */
int step_at_limit(Engine *self, Py_ssize_t i);
/* "grads[3]" or "grads['W']" as a new str */
PyObject *engine_label(Engine *self, const char *what, Py_ssize_t i);
void engine_raise(Engine *self, PyObject *exc, const char *what, Py_ssize_t i, const char *fmt, ...);
/* The region that [p, p + n) overlaps, or NULL. */
const region *regions_find(const Engine *self, const void *p, size_t n);
int regions_insert(Engine *self, const void *p, size_t n, Py_ssize_t tensor, int is_state);
/* Raise "<what>: shares memory with params[k]" (or its state) for region r. */
void raise_overlap(Engine *self, PyObject *label, const region *r);

/* ---- engine_type.c ---- */
extern PyTypeObject EngineType;
int engine_acquire(Engine *self);
void engine_release(Engine *self);
int engine_ready(Engine *self);
/* Parse a group's hyperparameters: a dict with exactly the algorithm's fields
 * (any missing or unknown key is refused); a callable lr goes to *lr_fn. */
int parse_hyper(Engine *self, PyObject *d, optimc_hyper *h, PyObject **lr_fn);
/* Raise if the options `h` need state buffers group `gi` was created without. */
int check_structure(Engine *self, Py_ssize_t gi, const optimc_hyper *h);
int check_index(Engine *self, Py_ssize_t i);

/* ---- checkpoint.c ---- */
PyObject *Engine_state(Engine *self, PyObject *args);
PyObject *Engine_snapshot(Engine *self, PyObject *noargs);
PyObject *Engine_load(Engine *self, PyObject *args);

/* ---- sparse.c: SparseGrad and row-sparse steps ---- */
typedef struct sparse_step sparse_step;
extern PyTypeObject SparseGradType;
int sparse_is_grad(PyObject *o);
/* Before the checks: if a held grad is a SparseGrad, room for the plans. */
int sparse_begin(Engine *self);
/* check_grads' hook for held grad i, a SparseGrad: check it and plan its rows. */
int sparse_check_grad(Engine *self, Py_ssize_t i, PyObject *o);
/* The step (no Python: call it without the GIL) when self->sparse is set. */
void sparse_run(Engine *self, optimc_step_report *report);
/* After the step or a failed check: free the plans. */
void sparse_end(Engine *self);
int sparse_module_init(PyObject *m);

/* ---- module.c ---- */
/* Collect a list/tuple/dict of float arrays into buffers (PyMem_Malloc'd);
 * *held: a new tuple of those arrays, to be released only after the kernel
 * that reads them without the GIL has returned (another thread may empty the
 * caller's list or dict meanwhile, which would free an array in use). */
optimc_buffer *collect_buffers(PyObject *arrays, const char *what, Py_ssize_t *n_out, int writeable,
                               PyObject **held);

/* ---- quantize.c ---- */
/* quantize_blockwise, dequantize_blockwise, dynamic_map, bf16_encode/decode */
extern PyMethodDef optimc_quantize_methods[];
/* ---- halfparam.c: bfloat16 and float16 params ---- */
/* OPTIMC_PARAM_BF16/F16 for a native-order array of ml_dtypes.bfloat16 or
 * float16, else OPTIMC_PARAM_NATIVE. */
int half_format_of(PyObject *o);
const char *half_format_name(int format);
/* array_check for a param (writeable), 16-bit params included: *format is its
 * optimc_param_format, *dtype the type its rule computes in. */
array_problem param_array_check(PyObject *o, int *dtype, int *format);
/* array_raise for a param: a wrong dtype's message names the 16-bit ones too. */
void param_array_raise(array_problem problem, PyObject *o, PyObject *label);
/* The bytes of tensor x's param (2 per element for 16-bit params). */
size_t param_nbytes(const optimc_tensor *x);
/* x->master <- the param's values (exact). */
void halfparam_init_master(optimc_tensor *x);
extern PyMethodDef optimc_halfparam_methods[];
/* ---- vector_ops.c ---- */
/* Add LBFGS's and Muon's module functions to the module. */
int vector_ops_add(PyObject *module);
#endif
