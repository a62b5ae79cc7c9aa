/* module.c — the CPython/NumPy binding: optimc._core.
 *
 * `Engine` owns the parameter references, the C state buffers (one 64-byte
 * aligned block per tensor, allocated once) and a lock. Every check runs with
 * the GIL held and before anything is written; only optimc_step runs without
 * the GIL, under the engine's lock (as numpy.random.Generator does).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pythread.h>
#define NPY_TARGET_VERSION NPY_1_23_API_VERSION
#define NPY_NO_DEPRECATED_API NPY_1_23_API_VERSION
#include <numpy/arrayobject.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "optimc.h"

#define STATE_ALIGN 64

typedef struct {
    PyObject_HEAD
    int algorithm;               /* -1 until _init_engine */
    Py_ssize_t n_tensors, cap_tensors;
    optimc_tensor *tensors;
    PyArrayObject **params;      /* owned references */
    void **blocks;               /* each tensor's state allocation */
    unsigned *masks;             /* each tensor's allocated state buffers */
    optimc_buffer *grad_bufs;    /* scratch for the gradient statistics */
    PyObject *names;             /* list of str, or NULL for positional params */
    Py_ssize_t n_groups, cap_groups;
    optimc_hyper *groups;
    PyObject **lr_fns;           /* per group: a callable lr, or NULL */
    long long n_steps;           /* steps taken (skipped ones excluded) */
    double max_grad_norm;        /* 0: no clipping inside step */
    int skip_nonfinite;
    long long skipped_steps;
    double last_grad_norm;       /* valid once norm_measured */
    int norm_measured;
    PyThread_type_lock lock;
    int locked;
    unsigned long owner;
} Engine;

/* ---- small helpers ---- */

static int typenum_of(int dtype) { return dtype == OPTIMC_FLOAT32 ? NPY_FLOAT32 : NPY_FLOAT64; }
static const char *dtype_name(int dtype) { return dtype == OPTIMC_FLOAT32 ? "float32" : "float64"; }
static size_t itemsize_of(int dtype) { return dtype == OPTIMC_FLOAT32 ? 4 : 8; }

/* "grads[3]" or "grads['W']" as a new str */
static PyObject *label(Engine *self, const char *what, Py_ssize_t i)
{
    if (self->names) return PyUnicode_FromFormat("%s[%R]", what, PyList_GET_ITEM(self->names, i));
    return PyUnicode_FromFormat("%s[%zd]", what, i);
}

static void raise_for(Engine *self, PyObject *exc, const char *what, Py_ssize_t i, const char *fmt, ...)
{
    va_list va;
    va_start(va, fmt);
    PyObject *msg = PyUnicode_FromFormatV(fmt, va);
    va_end(va);
    PyObject *lab = label(self, what, i);
    if (msg && lab) PyErr_Format(exc, "%U: %U", lab, msg);
    Py_XDECREF(msg);
    Py_XDECREF(lab);
}

static PyObject *shape_of(PyArrayObject *a)
{
    int nd = PyArray_NDIM(a);
    PyObject *t = PyTuple_New(nd);
    for (int k = 0; t && k < nd; k++)
        PyTuple_SET_ITEM(t, k, PyLong_FromSsize_t(PyArray_DIM(a, k)));
    return t;
}

static int overlaps(const void *a, size_t na, const void *b, size_t nb)
{
    const char *x = a, *y = b;
    return na && nb && x < y + nb && y < x + na;
}

static int engine_acquire(Engine *self)
{
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

static void engine_release(Engine *self)
{
    self->locked = 0;
    PyThread_release_lock(self->lock);
}

static int need_algorithm(Engine *self)
{
    if (self->algorithm < 0) {
        PyErr_SetString(PyExc_RuntimeError, "optimizer engine not initialised");
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
        free(self->blocks[i]);
    }
    free(self->tensors);
    free(self->params);
    free(self->blocks);
    free(self->masks);
    free(self->grad_bufs);
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
    Py_RETURN_NONE;
}

/* ---- hyperparameters ---- */

static int get_double(PyObject *d, const char *key, double *out)
{
    PyObject *v = PyDict_GetItemString(d, key);  /* borrowed */
    if (!v) return 0;
    double x = PyFloat_AsDouble(v);
    if (x == -1.0 && PyErr_Occurred()) return -1;
    *out = x;
    return 0;
}

static int get_bool(PyObject *d, const char *key, int *out)
{
    PyObject *v = PyDict_GetItemString(d, key);
    if (!v) return 0;
    int b = PyObject_IsTrue(v);
    if (b < 0) return -1;
    *out = b;
    return 0;
}

/* Parse the engine view of a group (C field names; see Optimizer._engine_hyper)
 * into *h, and its lr into *lr_fn when lr is callable. */
static int parse_hyper(PyObject *d, optimc_hyper *h, PyObject **lr_fn)
{
    if (!PyDict_Check(d)) {
        PyErr_SetString(PyExc_TypeError, "hyperparameters must be a dict");
        return -1;
    }
    memset(h, 0, sizeof *h);
    *lr_fn = NULL;
    PyObject *lr = PyDict_GetItemString(d, "lr");
    if (lr && PyCallable_Check(lr)) {
        *lr_fn = lr;
        h->lr = 0.0;
    } else if (get_double(d, "lr", &h->lr) < 0) {
        return -1;
    }
    if (get_double(d, "weight_decay", &h->weight_decay) < 0 || get_double(d, "momentum", &h->momentum) < 0
        || get_double(d, "dampening", &h->dampening) < 0 || get_double(d, "eps", &h->eps) < 0
        || get_double(d, "beta1", &h->beta1) < 0 || get_double(d, "beta2", &h->beta2) < 0
        || get_double(d, "alpha", &h->alpha) < 0 || get_double(d, "rho", &h->rho) < 0
        || get_double(d, "lr_decay", &h->lr_decay) < 0 || get_double(d, "momentum_decay", &h->momentum_decay) < 0
        || get_double(d, "initial_accumulator_value", &h->initial_accumulator_value) < 0
        || get_bool(d, "nesterov", &h->nesterov) < 0 || get_bool(d, "maximize", &h->maximize) < 0
        || get_bool(d, "centered", &h->centered) < 0 || get_bool(d, "amsgrad", &h->amsgrad) < 0
        || get_bool(d, "decoupled", &h->decoupled) < 0)
        return -1;
    return 0;
}

/* The names of the state buffers in `mask` as "a, b". */
static PyObject *state_names_of(int algorithm, unsigned mask)
{
    const optimc_algorithm *alg = &optimc_algorithms[algorithm];
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

static PyObject *Engine_set_hyper(Engine *self, PyObject *args)
{
    Py_ssize_t gi;
    PyObject *d, *lr_fn;
    optimc_hyper h;
    int apply = 1;
    if (!PyArg_ParseTuple(args, "nO|p", &gi, &d, &apply) || need_algorithm(self) < 0) return NULL;
    if (gi < 0 || gi >= self->n_groups) return PyErr_Format(PyExc_IndexError, "no param group %zd", gi);
    if (parse_hyper(d, &h, &lr_fn) < 0) return NULL;
    unsigned need = optimc_algorithms[self->algorithm].state_mask(&h);
    for (Py_ssize_t i = 0; i < self->n_tensors; i++) {
        unsigned missing = need & ~self->masks[i];
        if (self->tensors[i].group == gi && missing) {
            PyObject *names = state_names_of(self->algorithm, missing);
            if (names)
                PyErr_Format(PyExc_ValueError,
                             "param group %zd was created without the state these options need (%U); "
                             "state buffers are allocated once, when a group is added: create the "
                             "optimizer (or add the group) with these options instead",
                             gi, names);
            Py_XDECREF(names);
            return NULL;
        }
    }
    if (!apply) Py_RETURN_NONE;   /* a dry run: the options were only checked */
    if (engine_acquire(self) < 0) return NULL;
    Py_XINCREF(lr_fn);
    Py_XSETREF(self->lr_fns[gi], lr_fn);
    self->groups[gi] = h;
    engine_release(self);
    Py_RETURN_NONE;
}

/* ---- adding parameters ---- */

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
        || grow((void **)&self->blocks, cap, sizeof(void *)) < 0
        || grow((void **)&self->masks, cap, sizeof(unsigned)) < 0
        || grow((void **)&self->grad_bufs, cap, sizeof(optimc_buffer)) < 0)
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

/* Check a would-be param (index i among all params). */
static int check_param(Engine *self, PyObject *o, Py_ssize_t i, int *dtype)
{
    if (!PyArray_Check(o)) {
        raise_for(self, PyExc_TypeError, "params", i, "expected a numpy.ndarray, got %s", Py_TYPE(o)->tp_name);
        return -1;
    }
    PyArrayObject *a = (PyArrayObject *)o;
    int tn = PyArray_TYPE(a);
    if ((tn != NPY_FLOAT32 && tn != NPY_FLOAT64) || !PyArray_ISNOTSWAPPED(a)) {
        raise_for(self, PyExc_TypeError, "params", i,
                  "expected a float32 or float64 array in native byte order, got %S",
                  (PyObject *)PyArray_DESCR(a));
        return -1;
    }
    if (!PyArray_IS_C_CONTIGUOUS(a) || !PyArray_ISALIGNED(a)) {
        raise_for(self, PyExc_ValueError, "params", i,
                  "must be C-contiguous and aligned (it is updated in place, so optimc cannot copy it); "
                  "make it with np.ascontiguousarray before handing it over");
        return -1;
    }
    if (!PyArray_ISWRITEABLE(a)) {
        raise_for(self, PyExc_ValueError, "params", i, "is read-only; optimc updates params in place");
        return -1;
    }
    *dtype = tn == NPY_FLOAT32 ? OPTIMC_FLOAT32 : OPTIMC_FLOAT64;
    return 0;
}

static size_t nbytes_of(const optimc_tensor *x) { return x->n * itemsize_of(x->dtype); }

/* _add_group(arrays, names_or_None, hyper): append a group, allocating and
 * initialising its state. Checks everything before changing anything. */
static PyObject *Engine_add_group(Engine *self, PyObject *args)
{
    PyObject *arrays, *names, *d, *lr_fn;
    optimc_hyper h;
    if (!PyArg_ParseTuple(args, "O!OO", &PyList_Type, &arrays, &names, &d) || need_algorithm(self) < 0)
        return NULL;
    if (parse_hyper(d, &h, &lr_fn) < 0) return NULL;
    Py_ssize_t m = PyList_GET_SIZE(arrays), base = self->n_tensors;
    int named = names != Py_None;
    if (named && (!PyList_Check(names) || PyList_GET_SIZE(names) != m)) {
        PyErr_SetString(PyExc_TypeError, "names must be a list as long as the arrays");
        return NULL;
    }
    if (self->n_tensors > 0 && named != (self->names != NULL)) {
        PyErr_SetString(PyExc_ValueError,
                        "param groups must all be named (dicts) or all positional (lists)");
        return NULL;
    }
    if (engine_acquire(self) < 0) return NULL;
    if (reserve_tensors(self, base + m) < 0 || reserve_groups(self, self->n_groups + 1) < 0) goto fail;
    if (named && !self->names) {
        self->names = PyList_New(0);
        if (!self->names) goto fail;
    }
    /* names go in first so that error messages can use them; popped on failure */
    for (Py_ssize_t j = 0; named && j < m; j++) {
        PyObject *key = PyList_GET_ITEM(names, j);
        int dup = PySequence_Contains(self->names, key);
        if (dup != 0) {
            if (dup > 0) PyErr_Format(PyExc_ValueError, "params[%R]: the name is used twice", key);
            goto unname;
        }
        if (PyList_Append(self->names, key) < 0) goto unname;
    }
    unsigned mask = optimc_algorithms[self->algorithm].state_mask(&h);
    for (Py_ssize_t j = 0; j < m; j++) {
        PyObject *o = PyList_GET_ITEM(arrays, j);
        optimc_tensor *x = &self->tensors[base + j];
        int dtype;
        if (check_param(self, o, base + j, &dtype) < 0) goto unname;
        memset(x, 0, sizeof *x);
        x->param = PyArray_DATA((PyArrayObject *)o);
        x->n = (size_t)PyArray_SIZE((PyArrayObject *)o);
        x->dtype = dtype;
        for (Py_ssize_t k = 0; k < base + j; k++) {
            if (self->params[k] == (PyArrayObject *)o
                || overlaps(x->param, nbytes_of(x), self->tensors[k].param, nbytes_of(&self->tensors[k]))) {
                PyObject *other = label(self, "params", k);
                if (other)
                    raise_for(self, PyExc_ValueError, "params", base + j,
                              "%s %U (the same array passed twice, or views of one buffer); each "
                              "param must be its own array",
                              self->params[k] == (PyArrayObject *)o ? "is the same array as" : "shares memory with",
                              other);
                Py_XDECREF(other);
                goto unname;
            }
        }
        self->params[base + j] = (PyArrayObject *)o;   /* reference taken below */
    }
    /* allocate every block before committing any */
    for (Py_ssize_t j = 0; j < m; j++) {
        optimc_tensor *x = &self->tensors[base + j];
        size_t per = (nbytes_of(x) + STATE_ALIGN - 1) / STATE_ALIGN * STATE_ALIGN;
        if (per == 0) per = STATE_ALIGN;
        size_t total = per * (size_t)__builtin_popcount(mask);
        void *block = NULL;
        if (total && posix_memalign(&block, STATE_ALIGN, total) != 0) {
            for (Py_ssize_t k = 0; k < j; k++) free(self->blocks[base + k]);
            PyErr_NoMemory();
            goto unname;
        }
        self->blocks[base + j] = block;
        char *cursor = block;
        for (int k = 0; k < OPTIMC_MAX_STATE; k++) {
            x->state[k] = (mask & (1u << k)) ? cursor : NULL;
            if (mask & (1u << k)) cursor += per;
        }
        x->group = (int)self->n_groups;
        x->grad_scale = 1.0;
        optimc_init_state(self->algorithm, &h, x);
        self->masks[base + j] = mask;
        Py_INCREF(self->params[base + j]);
    }
    self->groups[self->n_groups] = h;
    Py_XINCREF(lr_fn);
    self->lr_fns[self->n_groups] = lr_fn;
    self->n_groups++;
    self->n_tensors = base + m;
    engine_release(self);
    Py_RETURN_NONE;
unname:
    if (named && self->names && PyList_SetSlice(self->names, base, PyList_GET_SIZE(self->names), NULL) < 0)
        PyErr_WriteUnraisable((PyObject *)self);
    if (self->names && PyList_GET_SIZE(self->names) == 0) Py_CLEAR(self->names);
fail:
    engine_release(self);
    return NULL;
}

/* ---- the step ---- */

/* Find the grads and check them against the params; fills tensors[].grad.
 * Writes nothing else. */
static int gather_grads(Engine *self, PyObject *grads)
{
    Py_ssize_t n = self->n_tensors;
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
                if (!PyErr_Occurred()) raise_for(self, PyExc_ValueError, "grads", i, "missing");
                return -1;
            }
        } else {
            o = PySequence_Fast_GET_ITEM(grads, i);
        }
        optimc_tensor *x = &self->tensors[i];
        PyArrayObject *p = self->params[i];
        /* the param itself may have been changed since it was handed over */
        if (PyArray_DATA(p) != x->param || (size_t)PyArray_SIZE(p) != x->n
            || PyArray_TYPE(p) != typenum_of(x->dtype) || !PyArray_IS_C_CONTIGUOUS(p)) {
            raise_for(self, PyExc_ValueError, "params", i, "its dtype, size or memory changed after it was handed to the optimizer");
            return -1;
        }
        if (!PyArray_ISWRITEABLE(p)) {
            raise_for(self, PyExc_ValueError, "params", i, "was made read-only after it was handed to the optimizer");
            return -1;
        }
        if (!PyArray_Check(o)) {
            raise_for(self, PyExc_TypeError, "grads", i, "expected a numpy.ndarray, got %s", Py_TYPE(o)->tp_name);
            return -1;
        }
        PyArrayObject *g = (PyArrayObject *)o;
        if (PyArray_TYPE(g) != typenum_of(x->dtype) || !PyArray_ISNOTSWAPPED(g)) {
            raise_for(self, PyExc_TypeError, "grads", i,
                      "expected dtype %s (the param's), got %S; optimc never casts silently",
                      dtype_name(x->dtype), (PyObject *)PyArray_DESCR(g));
            return -1;
        }
        int same = PyArray_NDIM(g) == PyArray_NDIM(p);
        for (int k = 0; same && k < PyArray_NDIM(p); k++) same = PyArray_DIM(g, k) == PyArray_DIM(p, k);
        if (!same) {
            PyObject *want = shape_of(p), *got = shape_of(g);
            if (want && got)
                raise_for(self, PyExc_ValueError, "grads", i, "expected shape %R (the param's), got %R", want, got);
            Py_XDECREF(want);
            Py_XDECREF(got);
            return -1;
        }
        if (!PyArray_IS_C_CONTIGUOUS(g) || !PyArray_ISALIGNED(g)) {
            raise_for(self, PyExc_ValueError, "grads", i,
                      "must be C-contiguous and aligned; pass np.ascontiguousarray(grad)");
            return -1;
        }
        const void *gd = PyArray_DATA(g);
        int clash = overlaps(gd, nbytes_of(x), x->param, nbytes_of(x));
        for (int k = 0; !clash && k < OPTIMC_MAX_STATE; k++)
            clash = x->state[k] && overlaps(gd, nbytes_of(x), x->state[k], nbytes_of(x));
        if (clash) {
            raise_for(self, PyExc_ValueError, "grads", i, "shares memory with its param or its optimizer state");
            return -1;
        }
        x->grad = gd;
        self->grad_bufs[i].data = (void *)gd;
        self->grad_bufs[i].n = x->n;
        self->grad_bufs[i].dtype = x->dtype;
    }
    if (self->names && PyDict_Size(grads) != n) {
        /* every name was found, so some key is extra */
        PyObject *key, *value;
        Py_ssize_t pos = 0;
        while (PyDict_Next(grads, &pos, &key, &value)) {
            int known = PySequence_Contains(self->names, key);
            if (known < 0) return -1;
            if (!known) {
                PyErr_Format(PyExc_ValueError, "grads[%R]: no param has this name", key);
                return -1;
            }
        }
    }
    return 0;
}

/* Evaluate callable learning rates for this step (count = steps taken). */
static int evaluate_lr_fns(Engine *self, double *lrs)
{
    for (Py_ssize_t gi = 0; gi < self->n_groups; gi++) {
        lrs[gi] = self->groups[gi].lr;
        if (!self->lr_fns[gi]) continue;
        PyObject *v = PyObject_CallFunction(self->lr_fns[gi], "L", self->n_steps);
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
    if (need_algorithm(self) < 0 || engine_acquire(self) < 0) return NULL;
    double lr_stack[16], *lrs = self->n_groups <= 16 ? lr_stack : PyMem_Malloc(sizeof(double) * self->n_groups);
    if (!lrs) { engine_release(self); return PyErr_NoMemory(); }
    if (gather_grads(self, grads) < 0 || evaluate_lr_fns(self, lrs) < 0) goto fail;
    for (Py_ssize_t gi = 0; gi < self->n_groups; gi++) self->groups[gi].lr = lrs[gi];

    int skip = 0;
    double scale = 1.0;
    Py_BEGIN_ALLOW_THREADS
    if (self->max_grad_norm > 0 || self->skip_nonfinite) {
        double sumsq;
        int finite;
        optimc_grad_stats(self->grad_bufs, (size_t)self->n_tensors, 2.0, &sumsq, &finite);
        self->last_grad_norm = sqrt(sumsq);
        self->norm_measured = 1;
        /* an overflowing norm of finite grads would clip them to zero: skip that too */
        skip = self->skip_nonfinite && (!finite || !isfinite(self->last_grad_norm));
        if (!skip && self->max_grad_norm > 0) {
            double coef = self->max_grad_norm / (self->last_grad_norm + 1e-6);
            if (coef < 1.0) scale = coef;
        }
    }
    if (!skip) {
        for (Py_ssize_t i = 0; i < self->n_tensors; i++) self->tensors[i].grad_scale = scale;
        optimc_step(self->algorithm, self->groups, self->tensors, (size_t)self->n_tensors);
    }
    Py_END_ALLOW_THREADS
    if (skip) self->skipped_steps++;
    else self->n_steps++;
    if (lrs != lr_stack) PyMem_Free(lrs);
    engine_release(self);
    Py_RETURN_NONE;
fail:
    if (lrs != lr_stack) PyMem_Free(lrs);
    engine_release(self);
    return NULL;
}

/* ---- state access ---- */

static PyObject *state_view(Engine *self, Py_ssize_t i, int k)
{
    PyArrayObject *p = self->params[i];
    PyArray_Descr *descr = PyArray_DescrFromType(typenum_of(self->tensors[i].dtype));
    PyObject *view = PyArray_NewFromDescr(&PyArray_Type, descr, PyArray_NDIM(p), PyArray_DIMS(p), NULL,
                                          self->tensors[i].state[k], NPY_ARRAY_CARRAY, NULL);
    if (!view) return NULL;
    Py_INCREF(self);
    if (PyArray_SetBaseObject((PyArrayObject *)view, (PyObject *)self) < 0) {
        Py_DECREF(view);
        return NULL;
    }
    return view;
}

static int check_index(Engine *self, Py_ssize_t i)
{
    if (i < 0 || i >= self->n_tensors) {
        PyErr_Format(PyExc_IndexError, "no param %zd (this optimizer has %zd)", i, self->n_tensors);
        return -1;
    }
    return 0;
}

/* _state(i, copy): {name: array} for param i's buffers — views of the C
 * buffers (they keep the engine alive), or copies taken under the lock. */
static PyObject *Engine_state(Engine *self, PyObject *args)
{
    Py_ssize_t i;
    int copy = 0;
    if (!PyArg_ParseTuple(args, "n|p", &i, &copy) || need_algorithm(self) < 0 || check_index(self, i) < 0)
        return NULL;
    if (copy && engine_acquire(self) < 0) return NULL;
    const optimc_algorithm *alg = &optimc_algorithms[self->algorithm];
    PyObject *d = PyDict_New();
    for (int k = 0; d && k < alg->n_state; k++) {
        if (!self->tensors[i].state[k]) continue;
        PyObject *v = state_view(self, i, k);
        if (v && copy) Py_SETREF(v, PyArray_NewCopy((PyArrayObject *)v, NPY_CORDER));
        if (!v || PyDict_SetItemString(d, alg->state_names[k], v) < 0) Py_CLEAR(d);
        Py_XDECREF(v);
    }
    if (copy) engine_release(self);
    return d;
}

/* _scalars(i) -> (step, mu_product) */
static PyObject *Engine_scalars(Engine *self, PyObject *arg)
{
    Py_ssize_t i = PyLong_AsSsize_t(arg);
    if ((i == -1 && PyErr_Occurred()) || check_index(self, i) < 0) return NULL;
    return Py_BuildValue("Ld", (long long)self->tensors[i].step, self->tensors[i].mu_product);
}

/* _restore(entries): entries[i] = (step, mu_product, {name: C-contiguous array});
 * every entry is checked before any is copied. */
static PyObject *Engine_restore(Engine *self, PyObject *entries)
{
    if (need_algorithm(self) < 0) return NULL;
    if (!PyList_Check(entries) || PyList_GET_SIZE(entries) != self->n_tensors) {
        PyErr_Format(PyExc_ValueError, "state: expected a list of %zd entries", self->n_tensors);
        return NULL;
    }
    const optimc_algorithm *alg = &optimc_algorithms[self->algorithm];
    for (Py_ssize_t i = 0; i < self->n_tensors; i++) {
        PyObject *e = PyList_GET_ITEM(entries, i), *bufs;
        long long step;
        double mu;
        if (!PyArg_ParseTuple(e, "LdO!", &step, &mu, &PyDict_Type, &bufs)) return NULL;
        if (step < 0) { raise_for(self, PyExc_ValueError, "state", i, "step must be >= 0"); return NULL; }
        int count = 0;
        for (int k = 0; k < alg->n_state; k++) {
            if (!self->tensors[i].state[k]) continue;
            PyObject *a = PyDict_GetItemString(bufs, alg->state_names[k]);
            count++;
            if (!a || !PyArray_Check(a) || PyArray_TYPE((PyArrayObject *)a) != typenum_of(self->tensors[i].dtype)
                || !PyArray_ISNOTSWAPPED((PyArrayObject *)a)
                || (size_t)PyArray_SIZE((PyArrayObject *)a) != self->tensors[i].n
                || !PyArray_IS_C_CONTIGUOUS((PyArrayObject *)a)) {
                raise_for(self, PyExc_ValueError, "state", i, "%s: expected a C-contiguous %s array of %zu elements",
                          alg->state_names[k], dtype_name(self->tensors[i].dtype), self->tensors[i].n);
                return NULL;
            }
        }
        if (PyDict_Size(bufs) != count) {
            raise_for(self, PyExc_ValueError, "state", i, "unexpected state buffers");
            return NULL;
        }
    }
    if (engine_acquire(self) < 0) return NULL;
    for (Py_ssize_t i = 0; i < self->n_tensors; i++) {
        PyObject *e = PyList_GET_ITEM(entries, i);
        optimc_tensor *x = &self->tensors[i];
        x->step = PyLong_AsLongLong(PyTuple_GET_ITEM(e, 0));
        x->mu_product = PyFloat_AsDouble(PyTuple_GET_ITEM(e, 1));
        PyObject *bufs = PyTuple_GET_ITEM(e, 2);
        for (int k = 0; k < alg->n_state; k++)
            if (x->state[k])
                memcpy(x->state[k], PyArray_DATA((PyArrayObject *)PyDict_GetItemString(bufs, alg->state_names[k])),
                       nbytes_of(x));
    }
    engine_release(self);
    Py_RETURN_NONE;
}

/* ---- the guard (clipping and the non-finite check inside step) ---- */

static PyObject *Engine_set_guard(Engine *self, PyObject *args)
{
    double max_grad_norm;
    int skip;
    if (!PyArg_ParseTuple(args, "dp", &max_grad_norm, &skip)) return NULL;
    if (engine_acquire(self) < 0) return NULL;
    self->max_grad_norm = max_grad_norm;
    self->skip_nonfinite = skip;
    engine_release(self);
    Py_RETURN_NONE;
}

static PyObject *Engine_set_counters(Engine *self, PyObject *args)
{
    long long n_steps, skipped;
    if (!PyArg_ParseTuple(args, "LL", &n_steps, &skipped)) return NULL;
    if (n_steps < 0 || skipped < 0) {
        PyErr_SetString(PyExc_ValueError, "step counters must be >= 0");
        return NULL;
    }
    self->n_steps = n_steps;
    self->skipped_steps = skipped;
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
        PyObject *v = PyFloat_FromDouble(self->groups[gi].lr);
        if (!v) { Py_CLEAR(out); break; }
        PyList_SET_ITEM(out, gi, v);
    }
    return out;
}

static PyObject *Engine_get_state_bytes(Engine *self, void *c)
{
    (void)c;
    size_t total = 0;
    for (Py_ssize_t i = 0; i < self->n_tensors; i++)
        total += nbytes_of(&self->tensors[i]) * (size_t)__builtin_popcount(self->masks[i]);
    return PyLong_FromSize_t(total);
}

static PyMethodDef Engine_methods[] = {
    {"_init_engine", (PyCFunction)Engine_init_engine, METH_O, "Bind the engine to an algorithm (once)."},
    {"_add_group", (PyCFunction)Engine_add_group, METH_VARARGS, "Append a param group: (arrays, names, hyper)."},
    {"_set_hyper", (PyCFunction)Engine_set_hyper, METH_VARARGS, "Set (or with apply=False only check) group i's hyperparameters: (i, hyper[, apply])."},
    {"_state", (PyCFunction)Engine_state, METH_VARARGS, "Param i's state buffers: views, or copies."},
    {"_scalars", (PyCFunction)Engine_scalars, METH_O, "Param i's (step, mu_product)."},
    {"_restore", (PyCFunction)Engine_restore, METH_O, "Replace all state from checked entries."},
    {"_set_guard", (PyCFunction)Engine_set_guard, METH_VARARGS, "(max_grad_norm, skip_nonfinite)."},
    {"_set_counters", (PyCFunction)Engine_set_counters, METH_VARARGS, "(steps, skipped_steps)."},
    {"step", (PyCFunction)Engine_step, METH_O,
     "step(grads)\n--\n\nUpdate every param in place from its grad, in one call into C.\n\n"
     "grads is a list/tuple in param order, or a dict with the params' names.\n"
     "Every grad is checked before anything is written; a bad one raises\n"
     "TypeError/ValueError naming it and leaves params and state untouched."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Engine_getset[] = {
    {"_n_tensors", (getter)Engine_get_n_tensors, NULL, "number of params", NULL},
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

static PyTypeObject EngineType = {
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

/* ---- module functions ---- */

/* Collect a list/tuple/dict of grads into buffers; checks first. */
static optimc_buffer *collect_buffers(PyObject *arrays, const char *what, Py_ssize_t *n_out, int writeable)
{
    PyObject *seq = PyDict_Check(arrays) ? PyDict_Values(arrays) : PySequence_Fast(arrays, "");
    if (!seq || (!PyList_Check(arrays) && !PyTuple_Check(arrays) && !PyDict_Check(arrays))) {
        Py_XDECREF(seq);
        PyErr_Format(PyExc_TypeError, "%s: expected a list, tuple or dict of arrays, got %s", what,
                     Py_TYPE(arrays)->tp_name);
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    optimc_buffer *bufs = NULL;
    PyObject *keys = PyDict_Check(arrays) ? PyDict_Keys(arrays) : NULL, *lab = NULL;
    if (PyDict_Check(arrays) && !keys) goto fail;
    if (n == 0) {
        PyErr_Format(PyExc_ValueError, "%s: no arrays given", what);
        goto fail;
    }
    bufs = PyMem_Malloc(sizeof(optimc_buffer) * (size_t)n);
    if (!bufs) { PyErr_NoMemory(); goto fail; }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *o = PySequence_Fast_GET_ITEM(seq, i);
#define LABEL() (lab = keys ? PyUnicode_FromFormat("%s[%R]", what, PyList_GET_ITEM(keys, i)) \
                            : PyUnicode_FromFormat("%s[%zd]", what, i))
        if (!PyArray_Check(o)) {
            if (!LABEL()) goto fail;
            PyErr_Format(PyExc_TypeError, "%U: expected a numpy.ndarray, got %s", lab, Py_TYPE(o)->tp_name);
            goto fail;
        }
        PyArrayObject *a = (PyArrayObject *)o;
        int tn = PyArray_TYPE(a);
        if ((tn != NPY_FLOAT32 && tn != NPY_FLOAT64) || !PyArray_ISNOTSWAPPED(a)) {
            if (!LABEL()) goto fail;
            PyErr_Format(PyExc_TypeError, "%U: expected float32 or float64, got %S", lab,
                         (PyObject *)PyArray_DESCR(a));
            goto fail;
        }
        if (!PyArray_IS_C_CONTIGUOUS(a) || !PyArray_ISALIGNED(a) || (writeable && !PyArray_ISWRITEABLE(a))) {
            if (!LABEL()) goto fail;
            PyErr_Format(PyExc_ValueError, "%U: must be a C-contiguous, aligned%s array", lab,
                         writeable ? ", writeable" : "");
            goto fail;
        }
        bufs[i].data = PyArray_DATA(a);
        bufs[i].n = (size_t)PyArray_SIZE(a);
        bufs[i].dtype = tn == NPY_FLOAT32 ? OPTIMC_FLOAT32 : OPTIMC_FLOAT64;
#undef LABEL
    }
    Py_DECREF(seq);
    Py_XDECREF(keys);
    *n_out = n;
    return bufs;
fail:
    PyMem_Free(bufs);
    Py_XDECREF(seq);
    Py_XDECREF(keys);
    Py_XDECREF(lab);
    return NULL;
}

/* grad_norm(grads, norm_type) -> (total_norm, all_finite) */
static PyObject *mod_grad_norm(PyObject *m, PyObject *args)
{
    (void)m;
    PyObject *arrays;
    double norm_type, total;
    int finite, writeable = 0;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "Od|p", &arrays, &norm_type, &writeable)) return NULL;
    optimc_buffer *bufs = collect_buffers(arrays, "grads", &n, writeable);
    if (!bufs) return NULL;
    Py_BEGIN_ALLOW_THREADS
    optimc_grad_stats(bufs, (size_t)n, norm_type, &total, &finite);
    Py_END_ALLOW_THREADS
    PyMem_Free(bufs);
    if (!isinf(norm_type)) total = norm_type == 2.0 ? sqrt(total) : norm_type == 1.0 ? total : pow(total, 1.0 / norm_type);
    return Py_BuildValue("dO", total, finite ? Py_True : Py_False);
}

/* scale_clip(grads, mode, value): mode 0 scales, 1 clamps, in place */
static PyObject *mod_scale_clip(PyObject *m, PyObject *args)
{
    (void)m;
    PyObject *arrays;
    int mode;
    double value;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "Oid", &arrays, &mode, &value)) return NULL;
    optimc_buffer *bufs = collect_buffers(arrays, "grads", &n, 1);
    if (!bufs) return NULL;
    Py_BEGIN_ALLOW_THREADS
    optimc_scale_clip(bufs, (size_t)n, mode, value);
    Py_END_ALLOW_THREADS
    PyMem_Free(bufs);
    Py_RETURN_NONE;
}

/* ema(averages, params, weight): avg ← avg + weight·(param − avg) */
static PyObject *mod_ema(PyObject *m, PyObject *args)
{
    (void)m;
    PyObject *avgs, *params;
    double weight;
    Py_ssize_t na, np_;
    if (!PyArg_ParseTuple(args, "OOd", &avgs, &params, &weight)) return NULL;
    optimc_buffer *a = collect_buffers(avgs, "averages", &na, 1);
    if (!a) return NULL;
    optimc_buffer *p = collect_buffers(params, "params", &np_, 0);
    if (!p) { PyMem_Free(a); return NULL; }
    if (na != np_) {
        PyErr_Format(PyExc_ValueError, "params: expected %zd arrays, got %zd", na, np_);
        goto fail;
    }
    for (Py_ssize_t i = 0; i < na; i++) {
        if (a[i].n != p[i].n || a[i].dtype != p[i].dtype) {
            PyErr_Format(PyExc_ValueError, "params[%zd]: size or dtype differs from its average's", i);
            goto fail;
        }
    }
    Py_BEGIN_ALLOW_THREADS
    optimc_ema(a, p, (size_t)na, weight);
    Py_END_ALLOW_THREADS
    PyMem_Free(a);
    PyMem_Free(p);
    Py_RETURN_NONE;
fail:
    PyMem_Free(a);
    PyMem_Free(p);
    return NULL;
}

/* stream(arrays, n_write): the roofline kernel over same-size arrays */
static PyObject *mod_stream(PyObject *m, PyObject *args)
{
    (void)m;
    PyObject *arrays;
    int n_write;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "O!i", &PyList_Type, &arrays, &n_write)) return NULL;
    optimc_buffer *bufs = collect_buffers(arrays, "arrays", &n, 1);
    if (!bufs) return NULL;
    void *ptrs[16];
    int ok = n <= 16 && n_write >= 1 && n_write < n;
    for (Py_ssize_t i = 0; ok && i < n; i++) {
        ptrs[i] = bufs[i].data;
        ok = bufs[i].n == bufs[0].n && bufs[i].dtype == bufs[0].dtype;
    }
    if (!ok) {
        PyMem_Free(bufs);
        PyErr_SetString(PyExc_ValueError, "stream: 2..16 arrays of one size and dtype, 1 <= n_write < len(arrays)");
        return NULL;
    }
    optimc_buffer first = bufs[0];
    PyMem_Free(bufs);
    Py_BEGIN_ALLOW_THREADS
    optimc_stream(first.dtype, ptrs, (int)n, n_write, first.n);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *mod_algorithms(PyObject *m, PyObject *noargs)
{
    (void)m; (void)noargs;
    PyObject *d = PyDict_New();
    for (int a = 0; d && a < OPTIMC_N_ALGORITHMS; a++) {
        const optimc_algorithm *alg = &optimc_algorithms[a];
        PyObject *names = PyTuple_New(alg->n_state);
        for (int k = 0; names && k < alg->n_state; k++)
            PyTuple_SET_ITEM(names, k, PyUnicode_FromString(alg->state_names[k]));
        if (!names || PyDict_SetItemString(d, alg->name, names) < 0) Py_CLEAR(d);
        Py_XDECREF(names);
    }
    return d;
}

static PyObject *mod_config(PyObject *m, PyObject *noargs)
{
    (void)m; (void)noargs;
    return Py_BuildValue("{s:s,s:s,s:i,s:n,s:s}",
                         "simd", optimc_level_name(optimc_get_level()),
                         "cpu_simd", optimc_level_name(optimc_cpu_level()),
                         "num_threads", optimc_get_num_threads(),
                         "thread_threshold", (Py_ssize_t)optimc_get_thread_threshold(),
                         "compile_flags", OPTIMC_CFLAGS);
}

static PyObject *mod_set_simd(PyObject *m, PyObject *arg)
{
    (void)m;
    const char *name = PyUnicode_AsUTF8(arg);
    if (!name) return NULL;
    for (int l = 0; l < OPTIMC_N_LEVELS; l++) {
        if (strcmp(name, optimc_level_name(l)) == 0) {
            if (l > optimc_cpu_level())
                return PyErr_Format(PyExc_ValueError, "simd: this CPU supports at most %s, not %s",
                                    optimc_level_name(optimc_cpu_level()), name);
            return PyUnicode_FromString(optimc_level_name(optimc_set_level(l)));
        }
    }
    return PyErr_Format(PyExc_ValueError, "simd: expected 'baseline', 'avx2' or 'avx512', got %R", arg);
}

static PyObject *mod_set_num_threads(PyObject *m, PyObject *arg)
{
    (void)m;
    long n = PyLong_AsLong(arg);
    if (n == -1 && PyErr_Occurred()) return NULL;
    if (n < 1 || n > 256) return PyErr_Format(PyExc_ValueError, "n: expected 1..256 threads, got %ld", n);
    optimc_set_num_threads((int)n);
    Py_RETURN_NONE;
}

static PyObject *mod_set_thread_threshold(PyObject *m, PyObject *arg)
{
    (void)m;
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    if (n == -1 && PyErr_Occurred()) return NULL;
    if (n < 0) return PyErr_Format(PyExc_ValueError, "bytes: expected >= 0, got %zd", n);
    optimc_set_thread_threshold((size_t)n);
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"algorithms", mod_algorithms, METH_NOARGS, "{algorithm: state buffer names} from the C registry."},
    {"config", mod_config, METH_NOARGS, "SIMD level, threads and build flags."},
    {"set_simd", mod_set_simd, METH_O, "Use a SIMD level no higher than the CPU's; returns it."},
    {"set_num_threads", mod_set_num_threads, METH_O, "Threads used for large steps."},
    {"set_thread_threshold", mod_set_thread_threshold, METH_O, "Bytes a step moves (reads + writes) from which it uses threads."},
    {"grad_norm", mod_grad_norm, METH_VARARGS, "(grads, norm_type[, writeable]) -> (total_norm, all_finite); writeable: also require writeable grads."},
    {"scale_clip", mod_scale_clip, METH_VARARGS, "(grads, mode, value): scale (0) or clamp (1) in place."},
    {"ema", mod_ema, METH_VARARGS, "(averages, params, weight): avg += weight * (param - avg)."},
    {"stream", mod_stream, METH_VARARGS, "(arrays, n_write): the roofline kernel."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "_core", "optimc's C engine (see csrc/).", -1, module_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__core(void)
{
    import_array();
    if (PyType_Ready(&EngineType) < 0) return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    if (!m) return NULL;
    Py_INCREF(&EngineType);
    if (PyModule_AddObject(m, "Engine", (PyObject *)&EngineType) < 0) {
        Py_DECREF(&EngineType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
