/* checkpoint.c — state out (views, snapshots) and in (load). State views are
 * made from the engine's own sizes and shapes, never the param's current ones;
 * a load checks every field of every entry before it writes any. */
#include "binding.h"
#include <math.h>
#include <string.h>

static PyObject *state_view(Engine *self, Py_ssize_t i, int k)
{
    size_t shape[OPTIMC_MAX_DIMS], elements;
    int nd = optimc_layout_shape(self->alg->state_layout[k], &self->tensors[i], shape, &elements);
    npy_intp dims[OPTIMC_MAX_DIMS];
    for (int d = 0; d < nd; d++) dims[d] = (npy_intp)shape[d];
    PyArray_Descr *descr = PyArray_DescrFromType(typenum_of(self->tensors[i].dtype));
    PyObject *view = PyArray_NewFromDescr(&PyArray_Type, descr, nd, dims, NULL,
                                          self->tensors[i].state[k], NPY_ARRAY_CARRAY, NULL);
    if (!view) return NULL;
    Py_INCREF(self);
    if (PyArray_SetBaseObject((PyArrayObject *)view, (PyObject *)self) < 0) {
        Py_DECREF(view);
        return NULL;
    }
    return view;
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
        PyObject *v = state_view(self, i, k);
        if (v && copy) Py_SETREF(v, PyArray_NewCopy((PyArrayObject *)v, NPY_CORDER));
        int rc = v ? PyDict_SetItemString(bufs, alg->state_names[k], v) : -1;
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
    PyObject **sources = PyMem_Calloc((size_t)n * OPTIMC_MAX_STATE + 1, sizeof(PyObject *));
    optimc_hyper *groups = PyMem_Calloc((size_t)n_groups + 1, sizeof(optimc_hyper));
    PyObject **lr_fns = PyMem_Calloc((size_t)n_groups + 1, sizeof(PyObject *));
    if (!steps || !scalars || !sources || !groups || !lr_fns) { PyErr_NoMemory(); goto done; }
    for (Py_ssize_t i = 0; i < n; i++)
        if (check_entry(self, i, PyList_GET_ITEM(entries, i), &steps[i], &scalars[i * OPTIMC_MAX_SCALARS],
                        &sources[i * OPTIMC_MAX_STATE]) < 0)
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
    for (Py_ssize_t j = 0; j < n * OPTIMC_MAX_STATE; j++) {
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
        for (int k = 0; k < OPTIMC_MAX_STATE; k++)
            if (x->state[k])
                memcpy(x->state[k], PyArray_DATA((PyArrayObject *)sources[i * OPTIMC_MAX_STATE + k]),
                       state_nbytes(self, x, k));
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
