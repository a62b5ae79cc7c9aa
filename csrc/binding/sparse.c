/* sparse.c (binding) — the SparseGrad type, its checks inside a step and the
 * plans the kernels use (csrc/sparse.c), and the benchmark's floor of a
 * row-sparse step. Everything here runs with the GIL held, except sparse_run
 * and the floor's kernel, which call only C on arrays held for the call. */
#include "binding.h"
#include "pool.h"
#include <string.h>

typedef struct {
    PyObject_HEAD
    PyObject *indices;   /* a 1-D int32/int64 ndarray */
    PyObject *values;    /* a float32/float64 ndarray, len(indices) rows */
} SparseGrad;

/* ---- the type ---- */

/* What is wrong with `o` as a 1-D int32/int64 C-contiguous, aligned ndarray
 * in native byte order (NULL: nothing; *exc: the exception to raise); its
 * index size in *bytes. */
static const char *index_problem(PyObject *o, int *bytes, PyObject **exc)
{
    *exc = PyExc_TypeError;
    if (!PyArray_Check(o)) return "expected a numpy.ndarray of int32 or int64";
    PyArrayObject *a = (PyArrayObject *)o;
    int size = (int)PyArray_ITEMSIZE(a);
    /* by kind and size: int64 has two type numbers (long, long long) on some platforms */
    if (!PyArray_ISSIGNED(a) || (size != 4 && size != 8) || !PyArray_ISNOTSWAPPED(a))
        return "expected dtype int32 or int64 in native byte order (optimc never casts silently)";
    *exc = PyExc_ValueError;
    if (PyArray_NDIM(a) != 1) return "expected a 1-D array of row numbers";
    if (!PyArray_IS_C_CONTIGUOUS(a) || !PyArray_ISALIGNED(a))
        return "must be C-contiguous and aligned; make it with np.ascontiguousarray";
    *bytes = size;
    return NULL;
}

static PyObject *SparseGrad_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    static char *names[] = {"indices", "values", NULL};
    PyObject *indices, *values;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO:SparseGrad", names, &indices, &values)) return NULL;
    int bytes, dtype;
    PyObject *exc;
    const char *why = index_problem(indices, &bytes, &exc);
    if (why) {
        PyErr_Format(exc, "SparseGrad: indices: %s", why);
        return NULL;
    }
    if (array_check_or_raise(values, 0, &dtype, "SparseGrad: values") < 0) return NULL;
    PyArrayObject *v = (PyArrayObject *)values;
    npy_intp nnz = PyArray_DIM((PyArrayObject *)indices, 0);
    if (PyArray_NDIM(v) < 1 || PyArray_DIM(v, 0) != nnz) {
        PyObject *shape = PyObject_GetAttrString(values, "shape");
        if (shape)
            PyErr_Format(PyExc_ValueError,
                         "SparseGrad: values: expected shape (%zd, ...) (one row per index), got %R",
                         (Py_ssize_t)nnz, shape);
        Py_XDECREF(shape);
        return NULL;
    }
    SparseGrad *self = (SparseGrad *)type->tp_alloc(type, 0);
    if (!self) return NULL;
    Py_INCREF(indices);
    Py_INCREF(values);
    self->indices = indices;
    self->values = values;
    return (PyObject *)self;
}

static void SparseGrad_dealloc(SparseGrad *self)
{
    Py_XDECREF(self->indices);
    Py_XDECREF(self->values);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *SparseGrad_repr(SparseGrad *self)
{
    PyArrayObject *v = (PyArrayObject *)self->values;
    PyObject *shape = PyObject_GetAttrString(self->values, "shape"), *out = NULL;
    if (shape)
        out = PyUnicode_FromFormat("SparseGrad(%zd rows, values %R %S)",
                                   (Py_ssize_t)PyArray_DIM(v, 0), shape, (PyObject *)PyArray_DESCR(v));
    Py_XDECREF(shape);
    return out;
}

static PyObject *SparseGrad_reduce(SparseGrad *self, PyObject *noargs)
{
    (void)noargs;
    return Py_BuildValue("O(OO)", (PyObject *)Py_TYPE(self), self->indices, self->values);
}

static PyMemberDef SparseGrad_members[] = {
    {"indices", T_OBJECT_EX, offsetof(SparseGrad, indices), READONLY, "the row numbers (1-D int32/int64)"},
    {"values", T_OBJECT_EX, offsetof(SparseGrad, values), READONLY,
     "the grad rows: values[k] is the grad of row indices[k]"},
    {NULL, 0, 0, 0, NULL},
};

static PyMethodDef SparseGrad_methods[] = {
    {"__reduce__", (PyCFunction)SparseGrad_reduce, METH_NOARGS, "pickle support"},
    {NULL, NULL, 0, NULL},
};

PyTypeObject SparseGradType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "optimc.SparseGrad",
    .tp_basicsize = sizeof(SparseGrad),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "SparseGrad(indices, values)\n--\n\n"
              "A row-sparse gradient of a param with ndim >= 1 (rows along axis 0): row\n"
              "indices[k] has grad values[k]. indices: 1-D int32/int64; values: shape\n"
              "(len(indices),) + param.shape[1:], the param's dtype. Repeated indices are\n"
              "summed in the order given. Pass it in step()'s grads in place of the dense\n"
              "grad; the optimizers whose rule takes it (optimc.sparse.takers()) update\n"
              "only the rows given. The arrays are referenced, not copied.",
    .tp_new = SparseGrad_new,
    .tp_dealloc = (destructor)SparseGrad_dealloc,
    .tp_repr = (reprfunc)SparseGrad_repr,
    .tp_members = SparseGrad_members,
    .tp_methods = SparseGrad_methods,
};

int sparse_is_grad(PyObject *o) { return Py_IS_TYPE(o, &SparseGradType); }

/* ---- inside a step ---- */

struct sparse_step {
    optimc_sparse **ptrs;     /* per tensor: its plan, or NULL for a dense grad */
    optimc_sparse *plans;     /* per tensor */
};

void sparse_end(Engine *self)
{
    sparse_step *st = self->sparse;
    if (!st) return;
    for (Py_ssize_t i = 0; i < self->n_tensors; i++)
        if (st->ptrs[i]) optimc_sparse_free(st->ptrs[i]);
    PyMem_Free(st->ptrs);
    PyMem_Free(st->plans);
    PyMem_Free(st);
    self->sparse = NULL;
}

int sparse_begin(Engine *self)
{
    /* a rule with per-row state runs row by row for dense grads too */
    int any = optimc_sparse_rowwise(self->algorithm);
    self->sparse = NULL;
    for (Py_ssize_t i = 0; i < self->n_tensors && !any; i++) any = sparse_is_grad(self->held[i]);
    if (!any) return 0;
    size_t n = (size_t)self->n_tensors;
    sparse_step *st = PyMem_Calloc(1, sizeof *st);
    if (st) {
        st->ptrs = PyMem_Calloc(n, sizeof(optimc_sparse *));
        st->plans = PyMem_Calloc(n, sizeof(optimc_sparse));
    }
    if (!st || !st->ptrs || !st->plans) {
        if (st) { PyMem_Free(st->ptrs); PyMem_Free(st->plans); }
        PyMem_Free(st);
        PyErr_NoMemory();
        return -1;
    }
    self->sparse = st;
    return 0;
}

/* The optimizers that take SparseGrads, for messages: the classes say it
 * (their `_sparse_takers`, from the rules' marks); a bare Engine has none. */
static PyObject *sparse_takers(Engine *self)
{
    PyObject *t = PyObject_GetAttrString((PyObject *)self, "_sparse_takers");
    if (t && PyUnicode_Check(t)) return t;
    Py_XDECREF(t);
    PyErr_Clear();
    return PyUnicode_FromString("the optimizers whose rule has a sparse mark");
}

int sparse_check_grad(Engine *self, Py_ssize_t i, PyObject *o)
{
    SparseGrad *sg = (SparseGrad *)o;
    optimc_tensor *x = &self->tensors[i];
    PyArrayObject *p = self->params[i];
    const char *option;
    if (!optimc_sparse_accepts(self->algorithm, &self->groups[x->group], &option)) {
        PyObject *takers = sparse_takers(self);
        if (!takers) return -1;
        if (!option) {
            engine_raise(self, PyExc_TypeError, "grads", i,
                         "%s does not take a SparseGrad (a row-sparse grad); %U do. "
                         "Pass a dense grad, or use one of those", Py_TYPE(self)->tp_name, takers);
        } else {
            int k = optimc_hyper_index(self->algorithm, option);
            PyObject *v = PyFloat_FromDouble(self->groups[x->group].v[k]);
            if (v)
                engine_raise(self, PyExc_TypeError, "grads", i,
                             "%s takes a SparseGrad only with %s=0 (as torch.optim's sparse %s), and "
                             "param group %d has %s=%R; %U take SparseGrads",
                             Py_TYPE(self)->tp_name, option, Py_TYPE(self)->tp_name, x->group, option, v, takers);
            Py_XDECREF(v);
        }
        Py_DECREF(takers);
        return -1;
    }
    if (x->state_format != OPTIMC_STATE_NATIVE) {
        /* the row step addresses state rows directly; compressed state is stored in blocks */
        engine_raise(self, PyExc_TypeError, "grads", i,
                     "a SparseGrad needs full-precision state, and this optimizer keeps its state "
                     "with state_dtype=%s; create it with state_dtype=None to train with sparse grads",
                     x->state_format == OPTIMC_STATE_BF16 ? "'bfloat16'" : "'8bit'");
        return -1;
    }
    if (PyArray_NDIM(p) < 1) {
        engine_raise(self, PyExc_ValueError, "grads", i,
                     "a SparseGrad gives rows along axis 0; the param is 0-d (pass a dense grad)");
        return -1;
    }
    int bytes, dtype;
    PyObject *exc;
    const char *why = index_problem(sg->indices, &bytes, &exc);
    if (why) {
        engine_raise(self, exc, "grads", i, "indices: %s", why);
        return -1;
    }
    array_problem pr = array_check(sg->values, 0, &dtype);
    if (pr == ARRAY_OK && dtype != x->dtype) {
        engine_raise(self, PyExc_TypeError, "grads", i,
                     "values: expected dtype %s (the param's), got %S; optimc never casts silently",
                     dtype_name(x->dtype), (PyObject *)PyArray_DESCR((PyArrayObject *)sg->values));
        return -1;
    }
    if (pr != ARRAY_OK) {
        PyObject *lab = engine_label(self, "grads", i);
        PyObject *full = lab ? PyUnicode_FromFormat("%U.values", lab) : NULL;
        if (full) array_raise(pr, sg->values, full);
        Py_XDECREF(lab);
        Py_XDECREF(full);
        return -1;
    }
    PyArrayObject *idx = (PyArrayObject *)sg->indices, *v = (PyArrayObject *)sg->values;
    npy_intp nnz = PyArray_DIM(idx, 0);
    int same = PyArray_NDIM(v) == PyArray_NDIM(p) && PyArray_DIM(v, 0) == nnz;
    for (int k = 1; same && k < PyArray_NDIM(p); k++) same = PyArray_DIM(v, k) == PyArray_DIM(p, k);
    if (!same) {
        PyObject *got = PyObject_GetAttrString(sg->values, "shape");
        PyObject *rest = PyTuple_GetSlice(self->shapes[i], 1, PyArray_NDIM(p));
        if (got && rest)
            engine_raise(self, PyExc_ValueError, "grads", i,
                         "values: expected shape (%zd,) + %R (one row per index, each shaped like "
                         "a row of the param %R), got %R", (Py_ssize_t)nnz, rest, self->shapes[i], got);
        Py_XDECREF(got);
        Py_XDECREF(rest);
        return -1;
    }
    size_t n_rows = (size_t)PyArray_DIM(p, 0);
    size_t row_len = n_rows ? (size_t)PyArray_SIZE(p) / n_rows : 0;
    const region *r = regions_find(self, PyArray_DATA(v), (size_t)nnz * row_len * itemsize_of(x->dtype));
    if (r) {
        PyObject *lab = engine_label(self, "grads", i);
        PyObject *full = lab ? PyUnicode_FromFormat("%U.values", lab) : NULL;
        if (full) raise_overlap(self, full, r);
        Py_XDECREF(lab);
        Py_XDECREF(full);
        return -1;
    }
    if (step_at_limit(self, i)) return -1;
    optimc_sparse *s = &self->sparse->plans[i];
    memset(s, 0, sizeof *s);
    s->indices = PyArray_DATA(idx);
    s->index_bytes = bytes;
    s->nnz = (size_t)nnz;
    s->values = PyArray_DATA(v);
    s->row_len = row_len;
    s->n_rows = n_rows;
    size_t bad = 0;
    int rc = optimc_sparse_plan(s, x->dtype, &bad);
    if (rc == OPTIMC_SPARSE_NO_MEMORY) {
        PyErr_NoMemory();
        return -1;
    }
    if (rc == OPTIMC_SPARSE_BAD_INDEX) {
        long long value = bytes == 4 ? (long long)((const int32_t *)s->indices)[bad]
                                     : (long long)((const int64_t *)s->indices)[bad];
        engine_raise(self, PyExc_ValueError, "grads", i,
                     "indices[%zu] is %lld, out of range for a param with %zd rows "
                     "(expected 0 <= index < %zd)", bad, value, (Py_ssize_t)s->n_rows, (Py_ssize_t)s->n_rows);
        return -1;
    }
    self->sparse->ptrs[i] = s;
    return 0;
}

void sparse_run(Engine *self, optimc_step_report *report)
{
    optimc_sparse_step(self->algorithm, self->groups, self->tensors, self->sparse->ptrs,
                       (size_t)self->n_tensors, &self->guard, report);
}

/* ---- module functions ---- */

/* coalesce(grad) -> (rows, values): the distinct rows (int64, ascending) and
 * their summed values (repeats summed in the order given). */
static PyObject *mod_coalesce(PyObject *m, PyObject *arg)
{
    (void)m;
    if (!sparse_is_grad(arg))
        return PyErr_Format(PyExc_TypeError, "grad: expected an optimc.SparseGrad, got %s", Py_TYPE(arg)->tp_name);
    SparseGrad *sg = (SparseGrad *)arg;
    int bytes, dtype;
    PyObject *exc;
    const char *why = index_problem(sg->indices, &bytes, &exc);
    if (why) return PyErr_Format(exc, "SparseGrad: indices: %s", why);
    array_problem pr = array_check(sg->values, 0, &dtype);
    PyArrayObject *idx = (PyArrayObject *)sg->indices, *v = (PyArrayObject *)sg->values;
    if (pr != ARRAY_OK || PyArray_NDIM(v) < 1 || PyArray_DIM(v, 0) != PyArray_DIM(idx, 0))
        return PyErr_Format(PyExc_ValueError, "SparseGrad: values: no longer one float row per index");
    optimc_sparse s;
    memset(&s, 0, sizeof s);
    s.indices = PyArray_DATA(idx);
    s.index_bytes = bytes;
    s.nnz = (size_t)PyArray_DIM(idx, 0);
    s.values = PyArray_DATA(v);
    s.row_len = s.nnz ? (size_t)PyArray_SIZE(v) / s.nnz : 0;
    /* no table to check against: only that no index is negative */
    int64_t top = -1;
    for (size_t k = 0; k < s.nnz; k++) {
        int64_t r = bytes == 4 ? ((const int32_t *)s.indices)[k] : ((const int64_t *)s.indices)[k];
        if (r < 0)
            return PyErr_Format(PyExc_ValueError, "SparseGrad: indices[%zu] is %lld; expected >= 0", k, (long long)r);
        if (r > top) top = r;
    }
    s.n_rows = (size_t)(top + 1);
    size_t bad;
    if (optimc_sparse_plan(&s, dtype, &bad) != 0) return PyErr_NoMemory();
    optimc_sparse_coalesce(&s, dtype);
    npy_intp dims[NPY_MAXDIMS];
    dims[0] = (npy_intp)s.n_unique;
    for (int k = 1; k < PyArray_NDIM(v); k++) dims[k] = PyArray_DIM(v, k);
    PyObject *rows = PyArray_SimpleNew(1, dims, NPY_INT64);
    PyObject *vals = PyArray_SimpleNew(PyArray_NDIM(v), dims, typenum_of(dtype));
    if (!rows || !vals) {
        Py_XDECREF(rows);
        Py_XDECREF(vals);
        optimc_sparse_free(&s);
        return NULL;
    }
    size_t row_bytes = s.row_len * itemsize_of(dtype);
    for (size_t r = 0; r < s.n_unique; r++) {
        ((int64_t *)PyArray_DATA((PyArrayObject *)rows))[r] = s.rows[r];
        if (row_bytes) memcpy((char *)PyArray_DATA((PyArrayObject *)vals) + r * row_bytes, s.grad[r], row_bytes);
    }
    optimc_sparse_free(&s);
    return Py_BuildValue("NN", rows, vals);
}

/* Whether [a, a + na) and [b, b + nb) share a byte. */
static int overlaps(const void *a, size_t na, const void *b, size_t nb)
{
    const char *x = a, *y = b;
    return na && nb && x < y + nb && y < x + na;
}

#define FLOOR_MAX_STATE 4

/* sparse_floor(param, states, indices, values, coalesce): the least work of a
 * row-sparse step (csrc/sparse.c, optimc_sparse_floor): each given row of
 * param and of every state array += its values. The benchmark's floor. */
static PyObject *mod_sparse_floor(PyObject *m, PyObject *args)
{
    (void)m;
    PyObject *param, *states, *indices, *values;
    int coalesce;
    if (!PyArg_ParseTuple(args, "OO!OOp:sparse_floor", &param, &PyList_Type, &states, &indices, &values, &coalesce))
        return NULL;
    int dtype, vdtype, bytes;
    if (array_check_or_raise(param, 1, &dtype, "sparse_floor: param") < 0) return NULL;
    PyArrayObject *p = (PyArrayObject *)param;
    if (PyArray_NDIM(p) < 1)
        return PyErr_Format(PyExc_ValueError, "sparse_floor: param: expected rows along axis 0 (ndim >= 1)");
    Py_ssize_t n_state = PyList_GET_SIZE(states);
    if (n_state > FLOOR_MAX_STATE)
        return PyErr_Format(PyExc_ValueError, "sparse_floor: states: expected at most %d arrays, got %zd",
                            FLOOR_MAX_STATE, n_state);
    PyObject *held[FLOOR_MAX_STATE];
    void *ptrs[FLOOR_MAX_STATE];
    size_t nbytes = (size_t)PyArray_NBYTES(p);
    for (Py_ssize_t b = 0; b < n_state; b++) {
        held[b] = PyList_GET_ITEM(states, b);
        int sd;
        array_problem pr = array_check(held[b], 1, &sd);
        if (pr != ARRAY_OK || sd != dtype || !PyArray_SAMESHAPE((PyArrayObject *)held[b], p)) {
            PyObject *lab = PyUnicode_FromFormat("sparse_floor: states[%zd]", b);
            if (lab && pr != ARRAY_OK) array_raise(pr, held[b], lab);
            else if (lab) PyErr_Format(PyExc_ValueError, "%U: expected an array of the param's shape and dtype", lab);
            Py_XDECREF(lab);
            return NULL;
        }
        ptrs[b] = PyArray_DATA((PyArrayObject *)held[b]);
        int clash = overlaps(ptrs[b], nbytes, PyArray_DATA(p), nbytes);
        for (Py_ssize_t c = 0; c < b && !clash; c++) clash = overlaps(ptrs[b], nbytes, ptrs[c], nbytes);
        if (clash)
            return PyErr_Format(PyExc_ValueError, "sparse_floor: states[%zd]: shares memory with the param "
                                "or another state array", b);
    }
    PyObject *exc;
    const char *why = index_problem(indices, &bytes, &exc);
    if (why) return PyErr_Format(exc, "sparse_floor: indices: %s", why);
    if (array_check_or_raise(values, 0, &vdtype, "sparse_floor: values") < 0) return NULL;
    if (vdtype != dtype)
        return PyErr_Format(PyExc_TypeError, "sparse_floor: values: expected the param's dtype %s",
                            dtype_name(dtype));
    PyArrayObject *idx = (PyArrayObject *)indices, *v = (PyArrayObject *)values;
    npy_intp nnz = PyArray_DIM(idx, 0);
    int same = PyArray_NDIM(v) == PyArray_NDIM(p) && PyArray_DIM(v, 0) == nnz;
    for (int k = 1; same && k < PyArray_NDIM(p); k++) same = PyArray_DIM(v, k) == PyArray_DIM(p, k);
    if (!same)
        return PyErr_Format(PyExc_ValueError, "sparse_floor: values: expected one row of the param per index");
    size_t vbytes = (size_t)PyArray_NBYTES(v);
    int clash = overlaps(PyArray_DATA(v), vbytes, PyArray_DATA(p), nbytes);
    for (Py_ssize_t b = 0; b < n_state && !clash; b++) clash = overlaps(PyArray_DATA(v), vbytes, ptrs[b], nbytes);
    if (clash) return PyErr_Format(PyExc_ValueError, "sparse_floor: values: shares memory with an array it writes");
    optimc_sparse s;
    memset(&s, 0, sizeof s);
    s.indices = PyArray_DATA(idx);
    s.index_bytes = bytes;
    s.nnz = (size_t)nnz;
    s.values = PyArray_DATA(v);
    s.n_rows = (size_t)PyArray_DIM(p, 0);
    s.row_len = s.n_rows ? (size_t)PyArray_SIZE(p) / s.n_rows : 0;
    /* the states list may change while the GIL is released: its arrays are held */
    for (Py_ssize_t b = 0; b < n_state; b++) Py_INCREF(held[b]);
    size_t bad = 0;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    optimc_fork_guard_enter();
    rc = optimc_sparse_floor(dtype, PyArray_DATA(p), ptrs, (int)n_state, &s, coalesce, &bad);
    optimc_fork_guard_leave();
    Py_END_ALLOW_THREADS
    for (Py_ssize_t b = 0; b < n_state; b++) Py_DECREF(held[b]);
    if (rc == OPTIMC_SPARSE_NO_MEMORY) return PyErr_NoMemory();
    if (rc == OPTIMC_SPARSE_BAD_INDEX) {
        long long value = bytes == 4 ? (long long)((const int32_t *)s.indices)[bad]
                                     : (long long)((const int64_t *)s.indices)[bad];
        return PyErr_Format(PyExc_ValueError, "sparse_floor: indices[%zu] is %lld, out of range for a param "
                            "with %zu rows", bad, value, s.n_rows);
    }
    Py_RETURN_NONE;
}

static PyMethodDef sparse_methods[] = {
    {"coalesce", mod_coalesce, METH_O,
     "coalesce(grad: SparseGrad) -> (rows, values): distinct rows ascending, repeats summed in order."},
    {"sparse_floor", mod_sparse_floor, METH_VARARGS,
     "sparse_floor(param, states, indices, values, coalesce): the benchmark's floor of a row-sparse step:\n"
     "each given row of param and of every state array += its values (coalesce: sorted and summed first)."},
    {NULL, NULL, 0, NULL},
};

int sparse_module_init(PyObject *m)
{
    if (PyType_Ready(&SparseGradType) < 0) return -1;
    Py_INCREF(&SparseGradType);
    if (PyModule_AddObject(m, "SparseGrad", (PyObject *)&SparseGradType) < 0) {
        Py_DECREF(&SparseGradType);
        return -1;
    }
    return PyModule_AddFunctions(m, sparse_methods);
}
