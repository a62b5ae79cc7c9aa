/* engine_type.c — the Engine type: the C side of an optimizer. It owns
 * references to its params, one 64-byte-aligned state block per param
 * (allocated once), the groups' hyperparameters and a lock; `step` checks
 * everything with the GIL held, then runs the kernels without it. */
#include "binding.h"
#include "pool.h"
#include "lowprec.h"
#include "halfparam.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define STATE_ALIGN 64

/* A state block: 64-byte aligned; from HUGE_FROM bytes on, aligned to and
 * advised for transparent huge pages (as NumPy does for its large arrays),
 * so that steps touching rows scattered over a large table (row-sparse
 * grads) do not pay a TLB miss and a page walk per row. */
#define HUGE_PAGE ((size_t)2 << 20)
#define HUGE_FROM ((size_t)4 << 20)
static void *state_alloc(size_t bytes)
{
    void *block = NULL;
    if (bytes == 0) return NULL;
    if (posix_memalign(&block, bytes >= HUGE_FROM ? HUGE_PAGE : STATE_ALIGN, bytes) != 0) return NULL;
#ifdef MADV_HUGEPAGE
    if (bytes >= HUGE_FROM) (void)madvise(block, bytes, MADV_HUGEPAGE);
#endif
    return block;
}

/* A state block's sizes, saturating at SIZE_MAX: a param that claims more
 * elements than memory holds (a view made with as_strided, say) must fail to
 * allocate, not wrap around to a small block that the initial state overruns. */
static size_t add_sat(size_t a, size_t b) { return a > SIZE_MAX - b ? SIZE_MAX : a + b; }
static size_t mul_sat(size_t a, size_t b) { return b && a > SIZE_MAX / b ? SIZE_MAX : a * b; }
static size_t lines_of(size_t bytes)   /* rounded up to whole 64-byte lines */
{
    return bytes > SIZE_MAX - STATE_ALIGN ? SIZE_MAX : (bytes + STATE_ALIGN - 1) / STATE_ALIGN * STATE_ALIGN;
}

/* ---- the lock ---- */

/* A lock inherited through fork() may be held by a thread the child does not
 * have: the child makes a fresh one (the pool's fork guard makes sure no
 * kernel was half-run at the fork). */
static int renew_lock_after_fork(Engine *self)
{
    unsigned long gen = optimc_fork_generation();
    if (gen == self->lock_fork_generation) return 0;
    PyThread_type_lock fresh = PyThread_allocate_lock();
    if (!fresh) { PyErr_NoMemory(); return -1; }
    /* the old lock may be held by a thread that no longer exists: leak it */
    self->lock = fresh;
    self->locked = 0;
    self->lock_fork_generation = gen;
    return 0;
}

int engine_acquire(Engine *self)
{
    if (renew_lock_after_fork(self) < 0) return -1;
    unsigned long me = PyThread_get_thread_ident();
    if (self->locked && self->owner == me) {
        PyErr_SetString(PyExc_RuntimeError,
                        "this optimizer is already busy in this thread (a re-entrant call, e.g. "
                        "from an lr callable)");
        return -1;
    }
    if (!PyThread_acquire_lock(self->lock, NOWAIT_LOCK)) {
        Py_BEGIN_ALLOW_THREADS
        PyThread_acquire_lock(self->lock, WAIT_LOCK);
        Py_END_ALLOW_THREADS
    }
    self->locked = 1;
    self->owner = me;
    return 0;
}

void engine_release(Engine *self)
{
    self->locked = 0;
    PyThread_release_lock(self->lock);
}

int engine_ready(Engine *self)
{
    if (self->algorithm < 0) {
        PyErr_SetString(PyExc_RuntimeError, "optimizer engine not initialised");
        return -1;
    }
    return 0;
}

int check_index(Engine *self, Py_ssize_t i)
{
    if (i < 0 || i >= self->n_tensors) {
        PyErr_Format(PyExc_IndexError, "no param %zd (this optimizer has %zd)", i, self->n_tensors);
        return -1;
    }
    return 0;
}

/* ---- lifecycle ---- */

static PyObject *Engine_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    (void)args; (void)kw;
    Engine *self = (Engine *)type->tp_alloc(type, 0);
    if (!self) return NULL;
    self->algorithm = -1;
    self->lock = PyThread_allocate_lock();
    self->lock_fork_generation = optimc_fork_generation();
    if (!self->lock) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    return (PyObject *)self;
}

static int Engine_traverse(Engine *self, visitproc visit, void *arg)
{
    for (Py_ssize_t i = 0; i < self->n_tensors; i++) Py_VISIT(self->params[i]);
    for (Py_ssize_t g = 0; g < self->n_groups; g++) Py_VISIT(self->lr_fns[g]);
    Py_VISIT(self->names);
    return 0;
}

static int Engine_clear(Engine *self)
{
    for (Py_ssize_t g = 0; g < self->n_groups; g++) Py_CLEAR(self->lr_fns[g]);
    Py_CLEAR(self->names);
    /* params stay until dealloc: the tensors point into them */
    return 0;
}

static void Engine_dealloc(Engine *self)
{
    PyObject_GC_UnTrack(self);
    Engine_clear(self);
    for (Py_ssize_t i = 0; i < self->n_tensors; i++) {
        Py_XDECREF(self->params[i]);
        Py_XDECREF(self->shapes[i]);
        free(self->blocks[i]);
    }
    free(self->tensors);
    free(self->params);
    free(self->shapes);
    free(self->held);
    free(self->blocks);
    free(self->block_bytes);
    free(self->masks);
    free(self->regions);
    free(self->groups);
    free(self->lr_fns);
    if (self->lock) PyThread_free_lock(self->lock);
    /* a Python subclass's dealloc drops its own type reference */
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Engine_init_engine(Engine *self, PyObject *arg)
{
    const char *name = PyUnicode_AsUTF8(arg);
    if (!name) return NULL;
    if (self->algorithm >= 0) {
        PyErr_SetString(PyExc_RuntimeError, "engine already initialised");
        return NULL;
    }
    int a = optimc_find_algorithm(name);
    if (a < 0) return PyErr_Format(PyExc_ValueError, "unknown algorithm %R", arg);
    self->algorithm = a;
    self->alg = &optimc_algorithms[a];
    Py_RETURN_NONE;
}

/* ---- hyperparameters: exactly the algorithm's fields ---- */

static PyObject *field_list(const optimc_algorithm *alg)
{
    PyObject *names = PyList_New(alg->n_hyper);
    for (int k = 0; names && k < alg->n_hyper; k++) {
        PyObject *s = PyUnicode_FromString(alg->hyper_names[k]);
        if (!s) { Py_CLEAR(names); break; }
        PyList_SET_ITEM(names, k, s);
    }
    return names;
}

int parse_hyper(Engine *self, PyObject *d, optimc_hyper *h, PyObject **lr_fn)
{
    const optimc_algorithm *alg = self->alg;
    if (!PyDict_Check(d)) {
        PyErr_Format(PyExc_TypeError, "hyperparameters: expected a dict, got %s", Py_TYPE(d)->tp_name);
        return -1;
    }
    memset(h, 0, sizeof *h);
    *lr_fn = NULL;
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(d, &pos, &key, &value)) {
        const char *name = PyUnicode_Check(key) ? PyUnicode_AsUTF8(key) : NULL;
        int k = name ? optimc_hyper_index(self->algorithm, name) : -1;
        if (k < 0) {
            PyErr_Clear();
            PyObject *fields = field_list(alg);
            if (fields)
                PyErr_Format(PyExc_ValueError, "hyperparameters: %R is not a field of %s (its fields: %R)",
                             key, alg->name, fields);
            Py_XDECREF(fields);
            return -1;
        }
        if (k == 0 && PyCallable_Check(value)) {
            *lr_fn = value;
            h->v[0] = NAN;   /* evaluated before each step; nothing may use it before */
            continue;
        }
        int number = PyFloat_Check(value) || PyLong_Check(value) || PyObject_HasAttrString(value, "__float__");
        double x = number ? PyFloat_AsDouble(value) : -1.0;
        if (!number || (x == -1.0 && PyErr_Occurred())) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError, "hyperparameters: %s: expected a number, got %R", name, value);
            return -1;
        }
        h->v[k] = x;
    }
    if (PyDict_Size(d) != alg->n_hyper) {
        for (int k = 0; k < alg->n_hyper; k++) {
            PyObject *v = PyDict_GetItemString(d, alg->hyper_names[k]);
            if (!v) {
                PyErr_Format(PyExc_ValueError, "hyperparameters: %s needs the field %s (missing)",
                             alg->name, alg->hyper_names[k]);
                return -1;
            }
        }
    }
    return 0;
}

/* The names of the state buffers in `mask` as "a, b". */
static PyObject *state_names_of(const optimc_algorithm *alg, unsigned mask)
{
    PyObject *parts = PyList_New(0), *sep = NULL, *out = NULL;
    if (!parts) return NULL;
    for (int k = 0; k < alg->n_state; k++) {
        if (!(mask & (1u << k))) continue;
        PyObject *s = PyUnicode_FromString(alg->state_names[k]);
        if (!s || PyList_Append(parts, s) < 0) { Py_XDECREF(s); goto done; }
        Py_DECREF(s);
    }
    sep = PyUnicode_FromString(", ");
    if (sep) out = PyUnicode_Join(sep, parts);
done:
    Py_XDECREF(sep);
    Py_DECREF(parts);
    return out;
}

int check_structure(Engine *self, Py_ssize_t gi, const optimc_hyper *h)
{
    for (Py_ssize_t i = 0; i < self->n_tensors; i++) {
        unsigned need = self->alg->state_mask(h, self->tensors[i].ndim);
        if (self->tensors[i].group != gi || need == self->masks[i]) continue;
        /* the buffers are fixed when a group is added, in both directions: a
         * buffer dropped now would make the state disagree with the options */
        PyObject *have = state_names_of(self->alg, self->masks[i]), *want = state_names_of(self->alg, need);
        if (have && want)
            PyErr_Format(PyExc_ValueError,
                         "param group %zd was created with the state buffers (%U), but these options "
                         "need (%U); state buffers are allocated once, when a group is added: create "
                         "the optimizer (or add the group) with these options instead",
                         gi, have, want);
        Py_XDECREF(have);
        Py_XDECREF(want);
        return -1;
    }
    return 0;
}

/* _set_hyper(i, hyper[, apply]): set (or with apply=False only check) group i */
static PyObject *Engine_set_hyper(Engine *self, PyObject *args)
{
    Py_ssize_t gi;
    PyObject *d, *lr_fn;
    optimc_hyper h;
    int apply = 1;
    if (!PyArg_ParseTuple(args, "nO|p", &gi, &d, &apply) || engine_ready(self) < 0) return NULL;
    if (gi < 0 || gi >= self->n_groups) return PyErr_Format(PyExc_IndexError, "no param group %zd", gi);
    if (parse_hyper(self, d, &h, &lr_fn) < 0 || check_structure(self, gi, &h) < 0) return NULL;
    if (!apply) Py_RETURN_NONE;
    if (engine_acquire(self) < 0) return NULL;
    Py_XINCREF(lr_fn);
    Py_XSETREF(self->lr_fns[gi], lr_fn);
    self->groups[gi] = h;
    engine_release(self);
    Py_RETURN_NONE;
}

/* ---- adding parameters ---- */

/* A state format the group's buffers can take: every buffer the options
 * need must be a moment (optimc_moment_kind), not an exact value. */
static int check_state_format(Engine *self, const optimc_hyper *h, int format, Py_ssize_t min_8bit)
{
    if (format < OPTIMC_STATE_NATIVE || format > OPTIMC_STATE_8BIT || min_8bit < 0) {
        PyErr_Format(PyExc_ValueError, "state_format: expected 0, 1 or 2 and min_8bit_size >= 0, got %d, %zd",
                     format, min_8bit);
        return -1;
    }
    if (format == OPTIMC_STATE_NATIVE) return 0;
    unsigned need = 0;   /* for params of any rank */
    for (int ndim = 0; ndim <= 2; ndim++) need |= self->alg->state_mask(h, ndim);
    for (int k = 0; k < self->alg->n_state; k++)
        if ((need & (1u << k)) && (self->alg->state_kind[k] == optimc_moment_exact
                                   || self->alg->state_layout[k] != optimc_layout_param)) {
            PyErr_Format(PyExc_ValueError,
                         "state_dtype=%s: %s's state buffer '%s' holds exact values or is not shaped like "
                         "the param, and cannot be stored in low precision; use state_dtype=None",
                         format == OPTIMC_STATE_8BIT ? "'8bit'" : "'bfloat16'", self->alg->name,
                         self->alg->state_names[k]);
            return -1;
        }
    return 0;
}

static int grow(void **p, Py_ssize_t n, size_t size)
{
    void *q = realloc(*p, (size_t)(n ? n : 1) * size);
    if (!q) { PyErr_NoMemory(); return -1; }
    *p = q;
    return 0;
}

static int reserve_tensors(Engine *self, Py_ssize_t n)
{
    if (n <= self->cap_tensors) return 0;
    Py_ssize_t cap = n > 2 * self->cap_tensors ? n : 2 * self->cap_tensors;
    if (grow((void **)&self->tensors, cap, sizeof(optimc_tensor)) < 0
        || grow((void **)&self->params, cap, sizeof(PyArrayObject *)) < 0
        || grow((void **)&self->shapes, cap, sizeof(PyObject *)) < 0
        || grow((void **)&self->held, cap, sizeof(PyObject *)) < 0
        || grow((void **)&self->blocks, cap, sizeof(void *)) < 0
        || grow((void **)&self->block_bytes, cap, sizeof(size_t)) < 0
        || grow((void **)&self->masks, cap, sizeof(unsigned)) < 0
        || grow((void **)&self->regions, 2 * cap, sizeof(region)) < 0)
        return -1;
    self->cap_tensors = cap;
    return 0;
}

static int reserve_groups(Engine *self, Py_ssize_t n)
{
    if (n <= self->cap_groups) return 0;
    Py_ssize_t cap = n > 2 * self->cap_groups ? n : 2 * self->cap_groups;
    if (grow((void **)&self->groups, cap, sizeof(optimc_hyper)) < 0
        || grow((void **)&self->lr_fns, cap, sizeof(PyObject *)) < 0)
        return -1;
    self->cap_groups = cap;
    return 0;
}

static PyObject *shape_of(PyArrayObject *a)
{
    int nd = PyArray_NDIM(a);
    PyObject *t = PyTuple_New(nd);
    for (int k = 0; t && k < nd; k++) {
        PyObject *d = PyLong_FromSsize_t(PyArray_DIM(a, k));
        if (!d) { Py_CLEAR(t); break; }
        PyTuple_SET_ITEM(t, k, d);
    }
    return t;
}

/* Undo a failed _add_group: the regions, shapes and blocks of tensors
 * [base, base + m) and the names appended for them. Keeps the error set. */
static void unadd(Engine *self, Py_ssize_t base, Py_ssize_t m, Py_ssize_t n_names)
{
    Py_ssize_t kept = 0;
    for (Py_ssize_t r = 0; r < self->n_regions; r++)
        if (self->regions[r].tensor < base) self->regions[kept++] = self->regions[r];
    self->n_regions = kept;
    for (Py_ssize_t j = 0; j < m; j++) {
        Py_CLEAR(self->shapes[base + j]);
        free(self->blocks[base + j]);
        self->blocks[base + j] = NULL;
    }
    if (self->names) {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        if (PyList_SetSlice(self->names, n_names, PyList_GET_SIZE(self->names), NULL) < 0) PyErr_Clear();
        if (PyList_GET_SIZE(self->names) == 0) Py_CLEAR(self->names);
        PyErr_Restore(type, value, tb);
    }
}

/* A 16-bit param needs an element-wise rule: refused (TypeError) for rules
 * with per-tensor sums or state not shaped like the param. */
static int refuse_half_param(Engine *self, Py_ssize_t i, int half)
{
    int shaped = 1;
    for (int k = 0; k < self->alg->n_state; k++) shaped &= self->alg->state_layout[k] == optimc_layout_param;
    if (self->alg->n_sums == 0 && shaped) return 0;
    engine_raise(self, PyExc_TypeError, "params", i,
                 "%s params are stepped block by block through float32, which needs an element-wise "
                 "rule; %s %s, so it takes float32 or float64 params only",
                 half_format_name(half), self->alg->name,
                 self->alg->n_sums ? "computes per-tensor norms" : "keeps state not shaped like the param");
    return -1;
}

/* _add_group(arrays, names_or_None, hyper[, state_format, min_8bit, rounding, seed]):
 * append a group (rounding and seed: how its 16-bit params are written), allocating and
 * initialising its state. Checks everything before changing anything. */
static PyObject *Engine_add_group(Engine *self, PyObject *args)
{
    PyObject *arrays, *names, *d, *lr_fn;
    optimc_hyper h;
    int format = OPTIMC_STATE_NATIVE, rounding = OPTIMC_ROUND_NEAREST;
    Py_ssize_t min_8bit = 0;
    unsigned long long seed = 0;
    if (!PyArg_ParseTuple(args, "O!OO|iniK", &PyList_Type, &arrays, &names, &d, &format, &min_8bit,
                          &rounding, &seed)
        || engine_ready(self) < 0)
        return NULL;
    if (rounding < OPTIMC_ROUND_NEAREST || rounding > OPTIMC_ROUND_STOCHASTIC) {
        PyErr_Format(PyExc_ValueError, "rounding: expected 0, 1 or 2, got %d", rounding);
        return NULL;
    }
    if (parse_hyper(self, d, &h, &lr_fn) < 0 || check_state_format(self, &h, format, min_8bit) < 0) return NULL;
    Py_ssize_t m = PyList_GET_SIZE(arrays), base = self->n_tensors;
    int named = names != Py_None;
    if (named && (!PyList_Check(names) || PyList_GET_SIZE(names) != m)) {
        PyErr_SetString(PyExc_TypeError, "names must be a list as long as the arrays");
        return NULL;
    }
    if (self->n_tensors > 0 && named != (self->names != NULL)) {
        PyErr_SetString(PyExc_ValueError,
                        "params: param groups must all be named (dicts) or all positional (lists)");
        return NULL;
    }
    for (Py_ssize_t j = 0; named && j < m; j++) {
        PyObject *key = PyList_GET_ITEM(names, j);
        if (!PyUnicode_CheckExact(key)) {
            PyErr_Format(PyExc_TypeError, "params: param names must be str, got %R", key);
            return NULL;
        }
    }
    if (engine_acquire(self) < 0) return NULL;
    Py_ssize_t n_names = self->names ? PyList_GET_SIZE(self->names) : 0;
    if (reserve_tensors(self, base + m) < 0 || reserve_groups(self, self->n_groups + 1) < 0) goto fail;
    for (Py_ssize_t j = 0; j < m; j++) self->shapes[base + j] = NULL, self->blocks[base + j] = NULL;
    if (named && !self->names && !(self->names = PyList_New(0))) goto fail;
    /* names go in first so that error messages can use them; removed on failure */
    for (Py_ssize_t j = 0; named && j < m; j++) {
        PyObject *key = PyList_GET_ITEM(names, j);
        int dup = PySequence_Contains(self->names, key);
        if (dup != 0) {
            if (dup > 0) PyErr_Format(PyExc_ValueError, "params[%R]: the name is used twice", key);
            goto undo;
        }
        if (PyList_Append(self->names, key) < 0) goto undo;
    }
    for (Py_ssize_t j = 0; j < m; j++) {
        PyObject *o = PyList_GET_ITEM(arrays, j);
        optimc_tensor *x = &self->tensors[base + j];
        int dtype, half;
        array_problem pr = param_array_check(o, &dtype, &half);
        if (pr != ARRAY_OK) {
            PyObject *lab = engine_label(self, "params", base + j);
            if (lab) param_array_raise(pr, o, lab);
            Py_XDECREF(lab);
            goto undo;
        }
        if (half && refuse_half_param(self, base + j, half) < 0) goto undo;
        memset(x, 0, sizeof *x);
        x->param = PyArray_DATA((PyArrayObject *)o);
        x->n = (size_t)PyArray_SIZE((PyArrayObject *)o);
        x->ndim = PyArray_NDIM((PyArrayObject *)o);
        for (int d = 0; d < x->ndim; d++) x->dims[d] = (size_t)PyArray_DIM((PyArrayObject *)o, d);
        x->dtype = dtype;
        x->param_format = half;
        x->rounding = half ? rounding : OPTIMC_ROUND_NEAREST;
        x->sr_key = optimc_sr_param_key(seed, (uint64_t)(base + j));
        /* the same array twice, two views of one buffer, a view of this
         * optimizer's state: all refused, so that no memory is written twice */
        const region *r = regions_find(self, x->param, param_nbytes(x));
        if (r) {
            PyObject *lab = engine_label(self, "params", base + j);
            if (lab) raise_overlap(self, lab, r);
            Py_XDECREF(lab);
            goto undo;
        }
        self->shapes[base + j] = shape_of((PyArrayObject *)o);
        if (!self->shapes[base + j]) goto undo;
        /* 8-bit state only from min_8bit elements on (smaller tensors stay native) */
        x->state_format = format == OPTIMC_STATE_8BIT && x->n < (size_t)min_8bit ? OPTIMC_STATE_NATIVE : format;
        for (int k = 0; k < self->alg->n_state; k++)
            if (self->alg->state_kind[k] == optimc_moment_signed) x->state_signed |= 1u << k;
        /* each 8-bit buffer's codes are followed by its block scales */
        size_t scales = x->state_format == OPTIMC_STATE_8BIT
                        ? (optimc_qblocks(x->n) * sizeof(float) + STATE_ALIGN - 1) / STATE_ALIGN * STATE_ALIGN : 0;
        /* one block holds the buffers, each starting on a 64-byte line */
        unsigned mask = self->alg->state_mask(&h, x->ndim);
        size_t per[OPTIMC_MAX_STATE] = {0}, total = 0;
        for (int k = 0; k < OPTIMC_MAX_STATE; k++) {
            if (!(mask & (1u << k))) continue;
            per[k] = lines_of(state_nbytes(self, x, k));
            if (per[k] == 0) per[k] = STATE_ALIGN;   /* an empty param still has (empty) buffers */
            per[k] = add_sat(per[k], scales);
            total = add_sat(total, per[k]);
        }
        /* a two-pass rule's factored tensors: the reduction scratch after the buffers */
        size_t scratch = mul_sat(optimc_scratch_elements(self->algorithm, x), sizeof(double));
        total = add_sat(total, lines_of(scratch));
        /* master weights: a float32 copy of the param after the state buffers */
        size_t master_at = total;
        if (x->rounding == OPTIMC_ROUND_MASTER)
            total = add_sat(total, x->n ? lines_of(mul_sat(x->n, sizeof(float))) : STATE_ALIGN);
        void *block = total == SIZE_MAX ? NULL : state_alloc(total);
        if (total && !block) {
            PyErr_NoMemory();
            goto undo;
        }
        self->blocks[base + j] = block;
        self->block_bytes[base + j] = total;
        char *cursor = block;
        for (int k = 0; k < OPTIMC_MAX_STATE; k++) {
            x->state[k] = (mask & (1u << k)) ? cursor : NULL;
            x->state_absmax[k] = (mask & (1u << k)) && scales ? (float *)(cursor + per[k] - scales) : NULL;
            cursor += per[k];
        }
        x->scratch = scratch ? (double *)(void *)cursor : NULL;
        x->group = (int)self->n_groups;
        x->grad_scale = 1.0;
        if (x->rounding == OPTIMC_ROUND_MASTER) {
            x->master = (float *)(void *)((char *)block + master_at);
            halfparam_init_master(x);
        }
        regions_insert(self, x->param, param_nbytes(x), base + j, 0);
        regions_insert(self, block, total, base + j, 1);
        optimc_init_state(self->algorithm, &h, x);
        self->masks[base + j] = mask;
    }
    for (Py_ssize_t j = 0; j < m; j++) {
        self->params[base + j] = (PyArrayObject *)PyList_GET_ITEM(arrays, j);
        Py_INCREF(self->params[base + j]);
    }
    self->groups[self->n_groups] = h;
    Py_XINCREF(lr_fn);
    self->lr_fns[self->n_groups] = lr_fn;
    self->n_groups++;
    self->n_tensors = base + m;
    engine_release(self);
    Py_RETURN_NONE;
undo:
    unadd(self, base, m, n_names);
fail:
    engine_release(self);
    return NULL;
}

/* ---- the step ---- */

int step_at_limit(Engine *self, Py_ssize_t i)
{
    if (self->tensors[i].step < OPTIMC_MAX_STEP) return 0;
    engine_raise(self, PyExc_ValueError, "state", i,
                 "step: the counter is at its limit (2**53 steps); load a checkpoint with a "
                 "smaller step to go on");
    return 1;
}

static void release_held(Engine *self, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++) Py_CLEAR(self->held[i]);
}

/* Take a reference to every grad, in param order (self->held). User code
 * (a key's __eq__) may run here, so nothing is checked yet. */
static int hold_grads(Engine *self, PyObject *grads, Py_ssize_t *n_held)
{
    Py_ssize_t n = self->n_tensors;
    *n_held = 0;
    if (self->names) {
        if (!PyDict_Check(grads)) {
            PyErr_Format(PyExc_TypeError,
                         "grads: this optimizer's params are named, so step() takes a dict "
                         "name -> array with the same keys; got %s", Py_TYPE(grads)->tp_name);
            return -1;
        }
    } else if (!PyList_Check(grads) && !PyTuple_Check(grads)) {
        PyErr_Format(PyExc_TypeError,
                     "grads: expected a list or tuple of %zd arrays (one per param, in order), got %s",
                     n, Py_TYPE(grads)->tp_name);
        return -1;
    } else if (PySequence_Fast_GET_SIZE(grads) != n) {
        PyErr_Format(PyExc_ValueError, "grads: expected %zd arrays (one per param), got %zd",
                     n, PySequence_Fast_GET_SIZE(grads));
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *o;
        if (self->names) {
            o = PyDict_GetItemWithError(grads, PyList_GET_ITEM(self->names, i));
            if (!o) {
                if (!PyErr_Occurred()) engine_raise(self, PyExc_ValueError, "grads", i, "missing");
                return -1;
            }
        } else {
            o = PySequence_Fast_GET_ITEM(grads, i);   /* no user code runs in this loop */
        }
        Py_INCREF(o);
        self->held[i] = o;
        *n_held = i + 1;
    }
    if (self->names && PyDict_Size(grads) != n) {
        PyObject *key, *value;
        Py_ssize_t pos = 0;
        while (PyDict_Next(grads, &pos, &key, &value)) {
            Py_INCREF(key);
            int known = PySequence_Contains(self->names, key);
            if (known == 0) PyErr_Format(PyExc_ValueError, "grads[%R]: no param has this name", key);
            Py_DECREF(key);
            if (known <= 0) return -1;
        }
    }
    return 0;
}

/* The end of a grad's checks: it overlaps nothing the step writes, and the
 * param's counter can go on; then it is the tensor's grad. */
static int check_grad_memory(Engine *self, Py_ssize_t i, PyArrayObject *g)
{
    const region *r = regions_find(self, PyArray_DATA(g), (size_t)PyArray_NBYTES(g));
    if (r) {
        PyObject *lab = engine_label(self, "grads", i);
        if (lab) raise_overlap(self, lab, r);
        Py_XDECREF(lab);
        return -1;
    }
    if (step_at_limit(self, i)) return -1;
    self->tensors[i].grad = PyArray_DATA(g);
    return 0;
}

/* A dense grad's shape is its param's; then the memory checks above. */
static int check_grad_shape_and_memory(Engine *self, Py_ssize_t i, PyArrayObject *g)
{
    PyArrayObject *p = self->params[i];
    int same = PyArray_NDIM(g) == PyArray_NDIM(p);
    for (int k = 0; same && k < PyArray_NDIM(p); k++) same = PyArray_DIM(g, k) == PyArray_DIM(p, k);
    if (!same) {
        PyObject *got = shape_of(g);
        if (got)
            engine_raise(self, PyExc_ValueError, "grads", i, "expected shape %R (the param's), got %R",
                         self->shapes[i], got);
        Py_XDECREF(got);
        return -1;
    }
    return check_grad_memory(self, i, g);
}

/* A 16-bit param's grad: the param's dtype or float32, its shape, C order. */
static int check_half_grad(Engine *self, Py_ssize_t i, PyObject *o)
{
    optimc_tensor *x = &self->tensors[i];
    int dtype = -1, half = half_format_of(o);
    array_problem pr = half ? ARRAY_OK : array_check(o, 0, &dtype);
    if ((pr == ARRAY_OK && half != x->param_format && !(half == 0 && dtype == OPTIMC_FLOAT32))
        || pr == ARRAY_BAD_DTYPE) {
        if (PyArray_Check(o)) {
            engine_raise(self, PyExc_TypeError, "grads", i,
                         "expected dtype %s (the param's) or float32, got %S; optimc never casts silently",
                         half_format_name(x->param_format), (PyObject *)PyArray_DESCR((PyArrayObject *)o));
            return -1;
        }
    }
    PyArrayObject *g = (PyArrayObject *)o;
    if (pr == ARRAY_OK && half && (!PyArray_IS_C_CONTIGUOUS(g) || !PyArray_ISALIGNED(g))) pr = ARRAY_BAD_LAYOUT;
    if (pr != ARRAY_OK) {
        PyObject *lab = engine_label(self, "grads", i);
        if (lab) array_raise(pr, o, lab);
        Py_XDECREF(lab);
        return -1;
    }
    if (check_grad_shape_and_memory(self, i, g) < 0) return -1;
    x->grad_half = half != 0;
    return 0;
}

/* Row-sparse grads run their own step (csrc/sparse.c), which knows no
 * 16-bit params: refused when the optimizer has any. */
static int refuse_sparse_with_half(Engine *self, Py_ssize_t i)
{
    for (Py_ssize_t j = 0; j < self->n_tensors; j++) {
        if (!self->tensors[j].param_format) continue;
        PyObject *other = engine_label(self, "params", j);
        if (other)
            engine_raise(self, PyExc_TypeError, "grads", i,
                         "a SparseGrad cannot be used in an optimizer with %s params (%U is); give dense "
                         "grads, or keep the embedding tables in float32 or float64",
                         half_format_name(self->tensors[j].param_format), other);
        Py_XDECREF(other);
        return -1;
    }
    return 0;
}

/* Check the held grads against the params, and the params themselves; fills
 * tensors[].grad. Runs no user code and writes nothing else. */
static int check_grads(Engine *self)
{
    for (Py_ssize_t i = 0; i < self->n_tensors; i++) {
        optimc_tensor *x = &self->tensors[i];
        PyArrayObject *p = self->params[i];
        /* the param itself may have been changed since it was handed over */
        int changed = x->param_format ? half_format_of((PyObject *)p) != x->param_format
                                      : PyArray_TYPE(p) != typenum_of(x->dtype);
        if (PyArray_DATA(p) != x->param || (size_t)PyArray_SIZE(p) != x->n
            || changed || !PyArray_IS_C_CONTIGUOUS(p)) {
            engine_raise(self, PyExc_ValueError, "params", i,
                         "its dtype, size or memory changed after it was handed to the optimizer");
            return -1;
        }
        if (!PyArray_ISWRITEABLE(p)) {
            engine_raise(self, PyExc_ValueError, "params", i, "was made read-only after it was handed to the optimizer");
            return -1;
        }
        PyObject *o = self->held[i];
        if (sparse_is_grad(o)) {
            if (refuse_sparse_with_half(self, i) < 0 || sparse_check_grad(self, i, o) < 0) return -1;
            continue;
        }
        if (x->param_format) {
            if (check_half_grad(self, i, o) < 0) return -1;
            continue;
        }
        int dtype;
        array_problem pr = array_check(o, 0, &dtype);
        if (pr == ARRAY_OK && dtype != x->dtype) pr = ARRAY_BAD_DTYPE;
        if (pr == ARRAY_BAD_DTYPE && PyArray_Check(o)) {
            engine_raise(self, PyExc_TypeError, "grads", i,
                         "expected dtype %s (the param's), got %S; optimc never casts silently",
                         dtype_name(x->dtype), (PyObject *)PyArray_DESCR((PyArrayObject *)o));
            return -1;
        }
        if (pr != ARRAY_OK) {
            PyObject *lab = engine_label(self, "grads", i);
            if (lab) array_raise(pr, o, lab);
            Py_XDECREF(lab);
            return -1;
        }
        if (check_grad_shape_and_memory(self, i, (PyArrayObject *)o) < 0) return -1;
    }
    if (self->n_steps >= OPTIMC_MAX_STEP || self->skipped_steps >= OPTIMC_MAX_STEP) {
        PyErr_SetString(PyExc_ValueError, "step_count: the counter is at its limit (2**53 steps)");
        return -1;
    }
    return 0;
}

/* Evaluate callable learning rates for this step (count = steps taken). */
static int evaluate_lr_fns(Engine *self, double *lrs)
{
    for (Py_ssize_t gi = 0; gi < self->n_groups; gi++) {
        lrs[gi] = self->groups[gi].v[0];
        if (!self->lr_fns[gi]) continue;
        PyObject *fn = self->lr_fns[gi];
        Py_INCREF(fn);   /* the callable may replace itself */
        PyObject *v = PyObject_CallFunction(fn, "L", self->n_steps);
        Py_DECREF(fn);
        if (!v) return -1;
        double lr = PyBool_Check(v) ? -1.0 : PyFloat_AsDouble(v);
        if (PyBool_Check(v) || (lr == -1.0 && PyErr_Occurred())) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError, "lr: the callable lr of param group %zd returned %R for step %lld; "
                         "expected a number", gi, v, self->n_steps);
            Py_DECREF(v);
            return -1;
        }
        if (!(lr >= 0 && isfinite(lr))) {
            PyErr_Format(PyExc_ValueError,
                         "lr: the callable lr of param group %zd returned %R for step %lld; "
                         "expected a finite number >= 0", gi, v, self->n_steps);
            Py_DECREF(v);
            return -1;
        }
        Py_DECREF(v);
        lrs[gi] = lr;
    }
    return 0;
}

static PyObject *Engine_step(Engine *self, PyObject *grads)
{
    if (engine_ready(self) < 0 || engine_acquire(self) < 0) return NULL;
    Py_ssize_t n_held = 0, n_groups = self->n_groups;
    double lr_stack[16], *lrs = n_groups <= 16 ? lr_stack : PyMem_Malloc(sizeof(double) * (size_t)n_groups);
    if (!lrs) { engine_release(self); return PyErr_NoMemory(); }
    /* user code first (callable lrs, dict keys), then the checks, then no
     * Python until the kernels are done */
    Py_INCREF(grads);
    if (evaluate_lr_fns(self, lrs) < 0 || hold_grads(self, grads, &n_held) < 0 || sparse_begin(self) < 0
        || check_grads(self) < 0)
        goto fail;
    for (Py_ssize_t gi = 0; gi < n_groups; gi++) self->groups[gi].v[0] = lrs[gi];
    optimc_step_report report;
    Py_BEGIN_ALLOW_THREADS
    optimc_fork_guard_enter();
    if (self->sparse) sparse_run(self, &report);
    else optimc_step(self->algorithm, self->groups, self->tensors, (size_t)self->n_tensors, &self->guard, &report);
    if (report.skipped) self->skipped_steps++;
    else self->n_steps++;
    if (report.norm_measured) {
        self->last_grad_norm = report.grad_norm;
        self->norm_measured = 1;
    }
    optimc_fork_guard_leave();
    Py_END_ALLOW_THREADS
    sparse_end(self);
    release_held(self, n_held);
    Py_DECREF(grads);
    if (lrs != lr_stack) PyMem_Free(lrs);
    engine_release(self);
    Py_RETURN_NONE;
fail:
    sparse_end(self);
    release_held(self, n_held);
    Py_DECREF(grads);
    if (lrs != lr_stack) PyMem_Free(lrs);
    engine_release(self);
    return NULL;
}

/* ---- the guard and counters ---- */

static PyObject *Engine_set_guard(Engine *self, PyObject *args)
{
    optimc_guard guard = {0, 0, 0};
    if (!PyArg_ParseTuple(args, "ddp", &guard.max_grad_norm, &guard.clip_value, &guard.skip_nonfinite))
        return NULL;
    if (!(guard.max_grad_norm >= 0 && isfinite(guard.max_grad_norm)) || !(guard.clip_value >= 0 && isfinite(guard.clip_value))) {
        PyErr_SetString(PyExc_ValueError, "guard: max_grad_norm and clip_value must be finite and >= 0");
        return NULL;
    }
    if (engine_acquire(self) < 0) return NULL;
    self->guard = guard;
    engine_release(self);
    Py_RETURN_NONE;
}

static PyObject *Engine_get_n_tensors(Engine *self, void *c) { (void)c; return PyLong_FromSsize_t(self->n_tensors); }
static PyObject *Engine_get_n_steps(Engine *self, void *c) { (void)c; return PyLong_FromLongLong(self->n_steps); }
static PyObject *Engine_get_skipped(Engine *self, void *c) { (void)c; return PyLong_FromLongLong(self->skipped_steps); }
static PyObject *Engine_get_last_norm(Engine *self, void *c)
{
    (void)c;
    if (!self->norm_measured) Py_RETURN_NONE;
    return PyFloat_FromDouble(self->last_grad_norm);
}
static PyObject *Engine_get_last_lr(Engine *self, void *c)
{
    (void)c;
    PyObject *out = PyList_New(self->n_groups);
    for (Py_ssize_t gi = 0; out && gi < self->n_groups; gi++) {
        PyObject *v = PyFloat_FromDouble(self->groups[gi].v[0]);
        if (!v) { Py_CLEAR(out); break; }
        PyList_SET_ITEM(out, gi, v);
    }
    return out;
}

static PyObject *Engine_get_state_bytes(Engine *self, void *c)
{
    (void)c;
    size_t total = 0;   /* what the buffers hold (block scales included), not their padding */
    for (Py_ssize_t i = 0; i < self->n_tensors; i++)
        for (int k = 0; k < OPTIMC_MAX_STATE; k++)
            if (self->tensors[i].state[k])
                total += state_nbytes(self, &self->tensors[i], k)
                         + (self->tensors[i].state_absmax[k] ? optimc_qblocks(self->tensors[i].n) * sizeof(float) : 0);
    for (Py_ssize_t i = 0; i < self->n_tensors; i++)   /* and reduction scratch (Adafactor's) */
        total += optimc_scratch_elements(self->algorithm, &self->tensors[i]) * sizeof(double);
    for (Py_ssize_t i = 0; i < self->n_tensors; i++)   /* master weights */
        if (self->tensors[i].master) total += self->tensors[i].n * sizeof(float);
    return PyLong_FromSize_t(total);
}

static PyObject *Engine_get_fields(Engine *self, void *c)
{
    (void)c;
    if (engine_ready(self) < 0) return NULL;
    PyObject *out = field_list(self->alg);
    if (out) Py_SETREF(out, PyList_AsTuple(out));
    return out;
}

static PyMethodDef Engine_methods[] = {
    {"_init_engine", (PyCFunction)Engine_init_engine, METH_O, "Bind the engine to an algorithm (once)."},
    {"_add_group", (PyCFunction)Engine_add_group, METH_VARARGS,
     "Append a param group: (arrays, names, hyper[, state_format, min_8bit, rounding, seed])."},
    {"_set_hyper", (PyCFunction)Engine_set_hyper, METH_VARARGS,
     "Set (or with apply=False only check) group i's hyperparameters: (i, hyper[, apply])."},
    {"_state", (PyCFunction)Engine_state, METH_VARARGS, "Param i's state: (step, {scalar: value}, {buffer: view})."},
    {"_snapshot", (PyCFunction)Engine_snapshot, METH_NOARGS,
     "Copies of all state and the counters, taken under the lock: (entries, (steps, skipped))."},
    {"_load", (PyCFunction)Engine_load, METH_VARARGS,
     "Replace all state, every group's hyperparameters and the counters: (entries, hypers, counters); "
     "all checked before any is taken."},
    {"_set_guard", (PyCFunction)Engine_set_guard, METH_VARARGS, "(max_grad_norm, clip_value, skip_nonfinite); 0 is off."},
    {"step", (PyCFunction)Engine_step, METH_O,
     "step(grads)\n--\n\nUpdate every param in place from its grad, in one call into C.\n\n"
     "grads is a list/tuple in param order, or a dict with the params' names.\n"
     "Every grad is checked before anything is written; a bad one raises\n"
     "TypeError/ValueError naming it and leaves params and state untouched."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Engine_getset[] = {
    {"_n_tensors", (getter)Engine_get_n_tensors, NULL, "number of params", NULL},
    {"_fields", (getter)Engine_get_fields, NULL, "the algorithm's hyperparameter fields, from the C registry", NULL},
    {"step_count", (getter)Engine_get_n_steps, NULL, "steps taken (skipped steps excluded)", NULL},
    {"skipped_steps", (getter)Engine_get_skipped, NULL, "steps skipped by skip_nonfinite", NULL},
    {"last_grad_norm", (getter)Engine_get_last_norm, NULL,
     "global L2 norm of the grads at the last step, measured when max_grad_norm or skip_nonfinite is on",
     NULL},
    {"last_lr", (getter)Engine_get_last_lr, NULL,
     "the learning rate of each param group as of the last step (a callable lr's last value)", NULL},
    {"state_bytes", (getter)Engine_get_state_bytes, NULL, "bytes of optimizer state owned by C", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject EngineType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "optimc._core.Engine",
    .tp_basicsize = sizeof(Engine),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The C side of an optimizer: params, state buffers and the step.",
    .tp_new = Engine_new,
    .tp_dealloc = (destructor)Engine_dealloc,
    .tp_traverse = (traverseproc)Engine_traverse,
    .tp_clear = (inquiry)Engine_clear,
    .tp_methods = Engine_methods,
    .tp_getset = Engine_getset,
};
