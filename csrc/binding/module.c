/* module.c — optimc._core: module functions (configuration, threads, the
 * clipping/EMA/roofline helpers) and module initialisation. The Engine type
 * lives in engine_type.c, state in and out in checkpoint.c. */
#define OPTIMC_BINDING_IMPORTS_ARRAY
#include "binding.h"
#include "pool.h"
#include "runtime.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- module functions ---- */

/* Collect a list/tuple/dict of grads into buffers; checks first. The arrays
 * checked are those of *held (a tuple that references them), not the caller's
 * container, which another thread can change once the GIL is released. */
optimc_buffer *collect_buffers(PyObject *arrays, const char *what, Py_ssize_t *n_out, int writeable,
                               PyObject **held)
{
    *held = NULL;
    PyObject *values = PyDict_Check(arrays) ? PyDict_Values(arrays) : NULL;
    PyObject *seq = PyDict_Check(arrays) ? (values ? PySequence_Tuple(values) : NULL)
                    : PyList_Check(arrays) || PyTuple_Check(arrays) ? PySequence_Tuple(arrays) : NULL;
    Py_XDECREF(values);
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
        int dtype;
        array_problem pr = array_check(o, writeable, &dtype);
        if (pr != ARRAY_OK) {
            lab = keys ? PyUnicode_FromFormat("%s[%R]", what, PyList_GET_ITEM(keys, i))
                       : PyUnicode_FromFormat("%s[%zd]", what, i);
            if (lab) array_raise(pr, o, lab);
            goto fail;
        }
        bufs[i].data = PyArray_DATA((PyArrayObject *)o);
        bufs[i].n = (size_t)PyArray_SIZE((PyArrayObject *)o);
        bufs[i].dtype = dtype;
    }
    Py_XDECREF(keys);
    *n_out = n;
    *held = seq;
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
    PyObject *held;
    optimc_buffer *bufs = collect_buffers(arrays, "grads", &n, writeable, &held);
    if (!bufs) return NULL;
    Py_BEGIN_ALLOW_THREADS
    optimc_fork_guard_enter();
    optimc_grad_stats(bufs, (size_t)n, norm_type, &total, &finite);
    optimc_fork_guard_leave();
    Py_END_ALLOW_THREADS
    PyMem_Free(bufs);
    Py_DECREF(held);
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
    PyObject *held;
    optimc_buffer *bufs = collect_buffers(arrays, "grads", &n, 1, &held);
    if (!bufs) return NULL;
    Py_BEGIN_ALLOW_THREADS
    optimc_fork_guard_enter();
    optimc_scale_clip(bufs, (size_t)n, mode, value);
    optimc_fork_guard_leave();
    Py_END_ALLOW_THREADS
    PyMem_Free(bufs);
    Py_DECREF(held);
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
    PyObject *held_a, *held_p = NULL;
    optimc_buffer *a = collect_buffers(avgs, "averages", &na, 1, &held_a);
    if (!a) return NULL;
    optimc_buffer *p = collect_buffers(params, "params", &np_, 0, &held_p);
    if (!p) { PyMem_Free(a); Py_DECREF(held_a); return NULL; }
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
    optimc_fork_guard_enter();
    optimc_ema(a, p, (size_t)na, weight);
    optimc_fork_guard_leave();
    Py_END_ALLOW_THREADS
    PyMem_Free(a);
    PyMem_Free(p);
    Py_DECREF(held_a);
    Py_DECREF(held_p);
    Py_RETURN_NONE;
fail:
    PyMem_Free(a);
    PyMem_Free(p);
    Py_DECREF(held_a);
    Py_DECREF(held_p);
    return NULL;
}

/* stream(arrays, n_write): the roofline kernel over same-size arrays (n_write = 0: reads only) */
static PyObject *mod_stream(PyObject *m, PyObject *args)
{
    (void)m;
    PyObject *arrays;
    int n_write;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "O!i", &PyList_Type, &arrays, &n_write)) return NULL;
    PyObject *held;
    optimc_buffer *bufs = collect_buffers(arrays, "arrays", &n, 1, &held);
    if (!bufs) return NULL;
    void *ptrs[16];
    int ok = n <= 16 && n_write >= 0 && n_write < n;
    for (Py_ssize_t i = 0; ok && i < n; i++) {
        ptrs[i] = bufs[i].data;
        ok = bufs[i].n == bufs[0].n && bufs[i].dtype == bufs[0].dtype;
    }
    if (!ok) {
        PyMem_Free(bufs);
        Py_DECREF(held);
        PyErr_SetString(PyExc_ValueError, "stream: 1..16 arrays of one size and dtype, 0 <= n_write < len(arrays)");
        return NULL;
    }
    optimc_buffer first = bufs[0];
    PyMem_Free(bufs);
    Py_BEGIN_ALLOW_THREADS
    optimc_fork_guard_enter();
    optimc_stream(first.dtype, ptrs, (int)n, n_write, first.n);
    optimc_fork_guard_leave();
    Py_END_ALLOW_THREADS
    Py_DECREF(held);
    Py_RETURN_NONE;
}

static void free_block(PyObject *capsule)
{
    free(PyCapsule_GetPointer(capsule, "optimc.block"));
}

/* zeros_like(array): a zeroed, 64-byte-aligned array of its shape and dtype in
 * memory the C side allocated (freed with the last array that uses it) */
static PyObject *mod_zeros_like(PyObject *m, PyObject *arg)
{
    (void)m;
    int dtype;
    if (array_check_or_raise(arg, 0, &dtype, "like") < 0) return NULL;
    PyArrayObject *a = (PyArrayObject *)arg;
    size_t nbytes = (size_t)PyArray_NBYTES(a), size = nbytes ? (nbytes + 63) / 64 * 64 : 64;
    void *block = NULL;
    if (posix_memalign(&block, 64, size) != 0) return PyErr_NoMemory();
    memset(block, 0, size);
    PyObject *capsule = PyCapsule_New(block, "optimc.block", free_block);
    if (!capsule) {
        free(block);
        return NULL;
    }
    PyArray_Descr *descr = PyArray_DescrFromType(typenum_of(dtype));
    PyObject *out = PyArray_NewFromDescr(&PyArray_Type, descr, PyArray_NDIM(a), PyArray_DIMS(a), NULL, block,
                                         NPY_ARRAY_CARRAY, NULL);
    if (!out) {
        Py_DECREF(capsule);
        return NULL;
    }
    if (PyArray_SetBaseObject((PyArrayObject *)out, capsule) < 0) {   /* steals the capsule */
        Py_DECREF(out);
        return NULL;
    }
    return out;
}

static PyObject *names_tuple(const char *const *names, int n)
{
    PyObject *t = PyTuple_New(n);
    for (int k = 0; t && k < n; k++) {
        PyObject *s = PyUnicode_FromString(names[k]);
        if (!s) { Py_CLEAR(t); break; }
        PyTuple_SET_ITEM(t, k, s);
    }
    return t;
}

/* algorithms() -> {name: {"fields": (...), "state": (...), "layouts": (...), "scalars": (...), "sparse": ...}} */
static PyObject *mod_algorithms(PyObject *m, PyObject *noargs)
{
    (void)m; (void)noargs;
    /* optimc_layout's values, by name, in enum order */
    static const char *layout_names[] = {"param", "rows", "row_factor", "col_factor"};
    PyObject *out = PyDict_New();
    for (int a = 0; out && a < optimc_n_algorithms; a++) {
        const optimc_algorithm *alg = &optimc_algorithms[a];
        static const char *const kinds[] = {"exact", "signed", "unsigned"};
        const char *layouts[OPTIMC_MAX_STATE], *kind_names[OPTIMC_MAX_STATE];
        for (int k = 0; k < alg->n_state; k++) {
            layouts[k] = layout_names[alg->state_layout[k]];
            kind_names[k] = kinds[alg->state_kind[k]];
        }
        /* sparse: None, or the fields that must be 0 for row-sparse grads */
        PyObject *sparse = alg->sparse ? names_tuple(alg->sparse_zero, alg->n_sparse_zero) : (Py_INCREF(Py_None), Py_None);
        PyObject *d = Py_BuildValue("{s:N,s:N,s:N,s:N,s:N,s:N}",
                                    "fields", names_tuple(alg->hyper_names, alg->n_hyper),
                                    "state", names_tuple(alg->state_names, alg->n_state),
                                    "layouts", names_tuple(layouts, alg->n_state),
                                    "state_kind", names_tuple(kind_names, alg->n_state),
                                    "scalars", names_tuple(alg->scalar_names, alg->n_scalars),
                                    "sparse", sparse);
        if (!d || PyDict_SetItemString(out, alg->name, d) < 0) Py_CLEAR(out);
        Py_XDECREF(d);
    }
    return out;
}

/* The CPU features of runtime.h, by their Python names (in optimc_feature order). */
static const char *const feature_names[OPTIMC_N_FEATURES] = {"f16c", "avx512bf16", "vbmi"};

static PyObject *mod_config(PyObject *m, PyObject *noargs)
{
    (void)m; (void)noargs;
    PyObject *features = PyDict_New();
    for (int f = 0; features && f < OPTIMC_N_FEATURES; f++) {
        if (PyDict_SetItemString(features, feature_names[f], optimc_use(f) ? Py_True : Py_False) < 0)
            Py_CLEAR(features);
    }
    if (!features) return NULL;
    return Py_BuildValue("{s:s,s:s,s:i,s:n,s:s,s:N}",
                         "simd", optimc_level_name(optimc_get_level()),
                         "cpu_simd", optimc_level_name(optimc_cpu_level()),
                         "num_threads", optimc_get_num_threads(),
                         "thread_threshold", (Py_ssize_t)optimc_get_thread_threshold(),
                         "compile_flags", OPTIMC_CFLAGS,
                         "cpu_features", features);
}

static PyObject *mod_set_cpu_feature(PyObject *m, PyObject *args)
{
    (void)m;
    const char *name;
    int on;
    if (!PyArg_ParseTuple(args, "sp:set_cpu_feature", &name, &on)) return NULL;
    for (int f = 0; f < OPTIMC_N_FEATURES; f++)
        if (strcmp(name, feature_names[f]) == 0) return PyBool_FromLong(optimc_set_feature(f, on));
    return PyErr_Format(PyExc_ValueError, "name: expected 'f16c', 'avx512bf16' or 'vbmi', got '%s'", name);
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
    if (n < 1 || n > OPTIMC_MAX_THREADS)
        return PyErr_Format(PyExc_ValueError, "n: expected 1..%d threads, got %ld", OPTIMC_MAX_THREADS, n);
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
    {"algorithms", mod_algorithms, METH_NOARGS,
     "The C registry: {rule name: {'fields', 'state', 'layouts', 'state_kind', 'scalars', 'sparse'}} (what each rule file declares; 'sparse': None, or the fields that must be 0 for row-sparse grads)."},
    {"config", mod_config, METH_NOARGS, "SIMD level, threads and build flags."},
    {"zeros_like", mod_zeros_like, METH_O,
     "A zeroed, 64-byte-aligned array like the given float array, in C-allocated memory."},
    {"set_simd", mod_set_simd, METH_O, "Use a SIMD level no higher than the CPU's; returns it."},
    {"set_cpu_feature", mod_set_cpu_feature, METH_VARARGS,
     "(name, on) -> bool: use a CPU feature ('f16c', 'avx512bf16', 'vbmi') where the CPU has it, or not; returns whether it is in use (the bits are the same either way)."},
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
    if (vector_ops_add(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&EngineType);
    if (PyModule_AddObject(m, "Engine", (PyObject *)&EngineType) < 0) {
        Py_DECREF(&EngineType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddFunctions(m, optimc_quantize_methods) < 0) {   /* binding/quantize.c */
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddFunctions(m, optimc_halfparam_methods) < 0) {   /* binding/halfparam.c */
        Py_DECREF(m);
        return NULL;
    }
    if (sparse_module_init(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
