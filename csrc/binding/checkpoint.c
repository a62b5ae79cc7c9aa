/* checkpoint.c — state out (views, snapshots) and in (load). State views are
 * made from the engine's own sizes and shapes, never the param's current ones;
 * a load checks every field of every entry before it writes any. */
#include "binding.h"
#include "lowprec.h"
#include <math.h>
#include <string.h>

/* The numpy type a state buffer is stored as: the param's, or uint16
 * (bfloat16 bits) or uint8 (8-bit codes). */
static int state_typenum(const optimc_tensor *x)
{
    switch (x->state_format) {
    case OPTIMC_STATE_BF16: return NPY_UINT16;
    case OPTIMC_STATE_8BIT: return NPY_UINT8;
    default: return typenum_of(x->dtype);
    }
}

/* A view of the engine's memory keeps the engine alive (its base). */
static PyObject *owned_by(Engine *self, PyObject *view)
{
    if (!view) return NULL;
    Py_INCREF(self);
    if (PyArray_SetBaseObject((PyArrayObject *)view, (PyObject *)self) < 0) {
        Py_DECREF(view);
        return NULL;
    }
    return view;
}

/* buffer k of param i (param-shaped), or with `scales` its 8-bit block
 * scales (1-D float32, one per 256 elements) */
static PyObject *state_view_of(Engine *self, Py_ssize_t i, int k, int scales)
{
    size_t shape[OPTIMC_MAX_DIMS], elements;
    int nd = optimc_layout_shape(self->alg->state_layout[k], &self->tensors[i], shape, &elements);
    npy_intp dims[OPTIMC_MAX_DIMS];
    for (int d = 0; d < nd; d++) dims[d] = (npy_intp)shape[d];
    const optimc_tensor *x = &self->tensors[i];
    if (scales) {
        nd = 1;
        dims[0] = (npy_intp)optimc_qblocks(x->n);
    }
    PyArray_Descr *descr = PyArray_DescrFromType(scales ? NPY_FLOAT32 : state_typenum(x));
    PyObject *view = PyArray_NewFromDescr(&PyArray_Type, descr, nd, dims, NULL,
                                          scales ? (void *)x->state_absmax[k] : x->state[k], NPY_ARRAY_CARRAY, NULL);
    return owned_by(self, view);
}

/* The master weights of a 16-bit param (float32, the param's shape). */
static PyObject *master_view_of(Engine *self, Py_ssize_t i)
{
    const optimc_tensor *x = &self->tensors[i];
    npy_intp dims[OPTIMC_MAX_DIMS];
    for (int d = 0; d < x->ndim; d++) dims[d] = (npy_intp)x->dims[d];
    PyObject *view = PyArray_SimpleNewFromData(x->ndim, dims, NPY_FLOAT32, x->master);
    return owned_by(self, view);
}

/* (step, {scalar: value}, {buffer: view or copy}) of param i */
static PyObject *tensor_state(Engine *self, Py_ssize_t i, int copy)
{
    const optimc_algorithm *alg = self->alg;
    const optimc_tensor *x = &self->tensors[i];
    PyObject *scalars = PyDict_New(), *bufs = PyDict_New(), *out = NULL;
    if (!scalars || !bufs) goto done;
    for (int s = 0; s < alg->n_scalars; s++) {
        PyObject *v = PyFloat_FromDouble(x->scalars[s]);
        int rc = v ? PyDict_SetItemString(scalars, alg->scalar_names[s], v) : -1;
        Py_XDECREF(v);
        if (rc < 0) goto done;
    }
    for (int k = 0; k < alg->n_state; k++) {
        if (!x->state[k]) continue;
        PyObject *v = state_view_of(self, i, k, 0);
        if (v && copy) Py_SETREF(v, PyArray_NewCopy((PyArrayObject *)v, NPY_CORDER));
        int rc = v ? PyDict_SetItemString(bufs, alg->state_names[k], v) : -1;
        Py_XDECREF(v);
        if (rc < 0) goto done;
        if (!x->state_absmax[k]) continue;
        v = state_view_of(self, i, k, 1);   /* "<buffer>_absmax" */
        if (v && copy) Py_SETREF(v, PyArray_NewCopy((PyArrayObject *)v, NPY_CORDER));
        PyObject *key = v ? PyUnicode_FromFormat("%s_absmax", alg->state_names[k]) : NULL;
        rc = key ? PyDict_SetItem(bufs, key, v) : -1;
        Py_XDECREF(key);
        Py_XDECREF(v);
        if (rc < 0) goto done;
    }
    if (x->master) {   /* "master": the float32 copy of a 16-bit param */
        PyObject *v = master_view_of(self, i);
        if (v && copy) Py_SETREF(v, PyArray_NewCopy((PyArrayObject *)v, NPY_CORDER));
        int rc = v ? PyDict_SetItemString(bufs, "master", v) : -1;
        Py_XDECREF(v);
        if (rc < 0) goto done;
    }
    out = Py_BuildValue("LOO", (long long)x->step, scalars, bufs);
done:
    Py_XDECREF(scalars);
    Py_XDECREF(bufs);
    return out;
}

/* _state(i[, copy]) */
PyObject *Engine_state(Engine *self, PyObject *args)
{
    Py_ssize_t i;
    int copy = 0;
    if (!PyArg_ParseTuple(args, "n|p", &i, &copy) || engine_ready(self) < 0 || check_index(self, i) < 0)
        return NULL;
    if (copy && engine_acquire(self) < 0) return NULL;
    PyObject *out = tensor_state(self, i, copy);
    if (copy) engine_release(self);
    return out;
}

/* _snapshot(): every param's state (copies) and the counters, all from
 * between two steps */
PyObject *Engine_snapshot(Engine *self, PyObject *noargs)
{
    (void)noargs;
    if (engine_ready(self) < 0 || engine_acquire(self) < 0) return NULL;
    PyObject *entries = PyList_New(self->n_tensors), *out = NULL;
    for (Py_ssize_t i = 0; entries && i < self->n_tensors; i++) {
        PyObject *e = tensor_state(self, i, 1);
        if (!e) { Py_CLEAR(entries); break; }
        PyList_SET_ITEM(entries, i, e);
    }
    if (entries) out = Py_BuildValue("N(LL)", entries, self->n_steps, self->skipped_steps);
    engine_release(self);
    return out;
}

/* An integer counter in [0, OPTIMC_MAX_STEP], or -1 with an error naming it. */
static long long counter(PyObject *v, PyObject *label)
{
    if (!PyLong_Check(v) || PyBool_Check(v)) {
        PyErr_Format(PyExc_TypeError, "%U: expected an int, got %R", label, v);
        return -1;
    }
    int overflow = 0;
    long long c = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (c == -1 && PyErr_Occurred()) return -1;
    if (overflow || c < 0 || c > OPTIMC_MAX_STEP) {
        PyErr_Format(PyExc_ValueError, "%U: expected an int in [0, 2**53], got %R", label, v);
        return -1;
    }
    return c;
}

/* A C-contiguous, aligned array of `typenum` with n elements? */
static int is_array_of(PyObject *a, int typenum, size_t n)
{
    return a && PyArray_Check(a) && PyArray_TYPE((PyArrayObject *)a) == typenum
           && PyArray_ISCARRAY_RO((PyArrayObject *)a) && PyArray_ISNOTSWAPPED((PyArrayObject *)a)
           && (size_t)PyArray_SIZE((PyArrayObject *)a) == n;
}

/* A compressed buffer's entries: its codes (uint16 bfloat16 bits or uint8
 * codes) and, for 8 bits, "<name>_absmax" (finite, >= 0: a negative or NaN
 * scale is a corrupt checkpoint). */
static int check_compressed(const optimc_tensor *x, int k, PyObject *bufs, PyObject *lab, const char *name,
                            PyObject *a, PyObject **codes, PyObject **scales)
{
    int eight = x->state_format == OPTIMC_STATE_8BIT;
    if (!is_array_of(a, eight ? NPY_UINT8 : NPY_UINT16, x->n)) {
        PyErr_Format(PyExc_ValueError, "%U['%s']: expected a C-contiguous %s array of %zu elements, got %R", lab,
                     name, eight ? "uint8 (8-bit codes)" : "uint16 (bfloat16 bits)", x->n,
                     a ? (PyObject *)Py_TYPE(a) : Py_None);
        return -1;
    }
    *codes = a;
    *scales = NULL;
    if (!eight) return 0;
    (void)k;
    PyObject *key = PyUnicode_FromFormat("%s_absmax", name);
    PyObject *s = key ? PyDict_GetItemWithError(bufs, key) : NULL;
    Py_XDECREF(key);
    if (!s && PyErr_Occurred()) return -1;
    size_t nb = optimc_qblocks(x->n);
    if (!is_array_of(s, NPY_FLOAT32, nb)) {
        PyErr_Format(PyExc_ValueError, "%U['%s_absmax']: expected a C-contiguous float32 array of %zu block "
                     "scales, got %R", lab, name, nb, s ? (PyObject *)Py_TYPE(s) : Py_None);
        return -1;
    }
    const float *v = PyArray_DATA((PyArrayObject *)s);
    for (size_t b = 0; b < nb; b++)
        if (!(v[b] >= 0.0f) || isinf(v[b])) {
            PyObject *got = PyFloat_FromDouble(v[b]);
            if (got)
                PyErr_Format(PyExc_ValueError, "%U['%s_absmax'][%zu]: a block scale must be finite and >= 0, "
                             "got %R (a corrupt checkpoint?)", lab, name, b, got);
            Py_XDECREF(got);
            return -1;
        }
    *scales = s;
    return 0;
}

/* Check entry i = (step, {scalar: float}, {buffer: array}); fills the
 * tensor's new step/scalars and the (referenced) source arrays. */
static int check_entry(Engine *self, Py_ssize_t i, PyObject *e, long long *step, double *scalars,
                       PyObject **sources)
{
    const optimc_algorithm *alg = self->alg;
    const optimc_tensor *x = &self->tensors[i];
    PyObject *lab = engine_label(self, "state", i), *sub = NULL;
    int rc = -1;
    if (!lab) return -1;
    if (!PyTuple_Check(e) || PyTuple_GET_SIZE(e) != 3 || !PyDict_Check(PyTuple_GET_ITEM(e, 1))
        || !PyDict_Check(PyTuple_GET_ITEM(e, 2))) {
        PyErr_Format(PyExc_TypeError, "%U: expected (step, scalars, buffers)", lab);
        goto done;
    }
    sub = PyUnicode_FromFormat("%U['step']", lab);
    if (!sub || (*step = counter(PyTuple_GET_ITEM(e, 0), sub)) < 0) goto done;
    PyObject *sc = PyTuple_GET_ITEM(e, 1), *bufs = PyTuple_GET_ITEM(e, 2);
    if (PyDict_Size(sc) != alg->n_scalars) {
        PyErr_Format(PyExc_ValueError, "%U: expected %d scalar entries (%s), got %R", lab, alg->n_scalars,
                     alg->n_scalars ? alg->scalar_names[0] : "none", sc);
        goto done;
    }
    for (int s = 0; s < alg->n_scalars; s++) {
        PyObject *v = PyDict_GetItemString(sc, alg->scalar_names[s]);
        double d = v && PyFloat_Check(v) ? PyFloat_AS_DOUBLE(v) : NAN;
        if (!isfinite(d)) {
            PyErr_Format(PyExc_ValueError, "%U['%s']: expected a finite float, got %R", lab,
                         alg->scalar_names[s], v ? v : Py_None);
            goto done;
        }
        scalars[s] = d;
    }
    int count = 0;
    for (int k = 0; k < alg->n_state; k++) {
        sources[k] = NULL;
        if (!x->state[k]) continue;
        count++;
        PyObject *a = PyDict_GetItemString(bufs, alg->state_names[k]);
        if (x->state_format != OPTIMC_STATE_NATIVE) {
            if (check_compressed(x, k, bufs, lab, alg->state_names[k], a, &sources[k], &sources[k + OPTIMC_MAX_STATE]) < 0)
                goto done;
            count += x->state_absmax[k] != NULL;
            continue;
        }
        int dtype = -1;
        size_t elements = optimc_state_elements(self->algorithm, x, k);
        if (!a || array_check(a, 0, &dtype) != ARRAY_OK || dtype != x->dtype
            || (size_t)PyArray_SIZE((PyArrayObject *)a) != elements) {
            PyErr_Format(PyExc_ValueError, "%U['%s']: expected a C-contiguous %s array of %zu elements, got %R",
                         lab, alg->state_names[k], dtype_name(x->dtype), elements,
                         a ? (PyObject *)Py_TYPE(a) : Py_None);
            goto done;
        }
        sources[k] = a;
    }
    sources[2 * OPTIMC_MAX_STATE] = NULL;
    if (x->master) {
        count++;
        PyObject *a = PyDict_GetItemString(bufs, "master");
        if (!is_array_of(a, NPY_FLOAT32, x->n)) {
            PyErr_Format(PyExc_ValueError, "%U['master']: expected a C-contiguous float32 array of %zu elements "
                         "(the master weights), got %R", lab, x->n, a ? (PyObject *)Py_TYPE(a) : Py_None);
            goto done;
        }
        sources[2 * OPTIMC_MAX_STATE] = a;
    }
    if (PyDict_Size(bufs) != count) {
        PyErr_Format(PyExc_ValueError, "%U: unexpected state buffers in %R", lab, bufs);
        goto done;
    }
    rc = 0;
done:
    Py_XDECREF(sub);
    Py_DECREF(lab);
    return rc;
}

/* per param: its buffers, their 8-bit block scales, its master weights */
#define SOURCES_PER (2 * OPTIMC_MAX_STATE + 1)

/* _load(entries, hypers, counters) */
PyObject *Engine_load(Engine *self, PyObject *args)
{
    PyObject *entries, *hypers, *counters, *result = NULL;
    if (!PyArg_ParseTuple(args, "O!O!O!", &PyList_Type, &entries, &PyList_Type, &hypers, &PyTuple_Type, &counters)
        || engine_ready(self) < 0)
        return NULL;
    Py_ssize_t n = self->n_tensors, n_groups = self->n_groups, owned = 0;
    if (PyList_GET_SIZE(entries) != n || PyList_GET_SIZE(hypers) != n_groups || PyTuple_GET_SIZE(counters) != 2) {
        PyErr_Format(PyExc_ValueError, "state: expected %zd entries, %zd groups and 2 counters", n, n_groups);
        return NULL;
    }
    long long *steps = PyMem_Calloc((size_t)n + 1, sizeof(long long));
    double *scalars = PyMem_Calloc((size_t)n * OPTIMC_MAX_SCALARS + 1, sizeof(double));
    /* per param: its buffers, then their 8-bit block scales */
    PyObject **sources = PyMem_Calloc((size_t)n * SOURCES_PER + 1, sizeof(PyObject *));
    optimc_hyper *groups = PyMem_Calloc((size_t)n_groups + 1, sizeof(optimc_hyper));
    PyObject **lr_fns = PyMem_Calloc((size_t)n_groups + 1, sizeof(PyObject *));
    if (!steps || !scalars || !sources || !groups || !lr_fns) { PyErr_NoMemory(); goto done; }
    for (Py_ssize_t i = 0; i < n; i++)
        if (check_entry(self, i, PyList_GET_ITEM(entries, i), &steps[i], &scalars[i * OPTIMC_MAX_SCALARS],
                        &sources[i * SOURCES_PER]) < 0)
            goto done;
    for (Py_ssize_t gi = 0; gi < n_groups; gi++)
        if (parse_hyper(self, PyList_GET_ITEM(hypers, gi), &groups[gi], &lr_fns[gi]) < 0
            || check_structure(self, gi, &groups[gi]) < 0)
            goto done;
    PyObject *lab_steps = PyUnicode_FromString("state_dict['step_count']");
    PyObject *lab_skipped = PyUnicode_FromString("state_dict['skipped_steps']");
    long long n_steps = lab_steps ? counter(PyTuple_GET_ITEM(counters, 0), lab_steps) : -1;
    long long skipped = n_steps >= 0 && lab_skipped ? counter(PyTuple_GET_ITEM(counters, 1), lab_skipped) : -1;
    Py_XDECREF(lab_steps);
    Py_XDECREF(lab_skipped);
    if (n_steps < 0 || skipped < 0) goto done;
    /* a source that is this optimizer's own memory (a live view) is copied
     * first, so that no copy reads what an earlier one wrote */
    for (Py_ssize_t j = 0; j < n * SOURCES_PER; j++) {
        PyObject *a = sources[j];
        if (!a) continue;
        if (regions_find(self, PyArray_DATA((PyArrayObject *)a), (size_t)PyArray_NBYTES((PyArrayObject *)a)))
            sources[j] = PyArray_NewCopy((PyArrayObject *)a, NPY_CORDER);
        else
            Py_INCREF(a);
        if (!sources[j]) goto done;
        owned = j + 1;
    }
    if (engine_acquire(self) < 0) goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        optimc_tensor *x = &self->tensors[i];
        x->step = steps[i];
        memcpy(x->scalars, &scalars[i * OPTIMC_MAX_SCALARS], sizeof x->scalars);
        PyObject **src = &sources[i * SOURCES_PER];
        for (int k = 0; k < OPTIMC_MAX_STATE; k++) {
            if (!x->state[k]) continue;
            memcpy(x->state[k], PyArray_DATA((PyArrayObject *)src[k]), state_nbytes(self, x, k));
            if (x->state_absmax[k])
                memcpy(x->state_absmax[k], PyArray_DATA((PyArrayObject *)src[k + OPTIMC_MAX_STATE]),
                       optimc_qblocks(x->n) * sizeof(float));
        }
        if (x->master) memcpy(x->master, PyArray_DATA((PyArrayObject *)src[2 * OPTIMC_MAX_STATE]), x->n * sizeof(float));
    }
    for (Py_ssize_t gi = 0; gi < n_groups; gi++) {
        self->groups[gi] = groups[gi];
        Py_XINCREF(lr_fns[gi]);
        Py_XSETREF(self->lr_fns[gi], lr_fns[gi]);
    }
    self->n_steps = n_steps;
    self->skipped_steps = skipped;
    engine_release(self);
    result = Py_None;
    Py_INCREF(result);
done:
    /* sources hold references only where the copy loop reached */
    for (Py_ssize_t j = 0; j < owned; j++) Py_XDECREF(sources[j]);
    PyMem_Free(steps);
    PyMem_Free(scalars);
    PyMem_Free(sources);
    PyMem_Free(groups);
    PyMem_Free(lr_fns);
    return result;
}
