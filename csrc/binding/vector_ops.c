/* vector_ops.c — the module functions behind LBFGS and Muon (optimc/optimizers/
 * lbfgs.py, muon.py): flat-vector helpers, L-BFGS's pair and two-loop
 * recursion (csrc/lbfgs.c), Muon's element-wise parts (csrc/muon.c). Each
 * checks its arrays (float32/float64, C-contiguous, one dtype and size) before
 * anything is written, then runs the kernel without the GIL. */
#include "binding.h"
#include "lbfgs.h"
#include "muon.h"
#include "pool.h"

/* Check `o` as a float array (writeable if asked) of dtype *dtype and size
 * *n when those are set (>= 0), else set them. */
static int vec_arg(PyObject *o, const char *what, int writeable, int *dtype, Py_ssize_t *n, void **data)
{
    int dt;
    if (array_check_or_raise(o, writeable, &dt, what) < 0) return -1;
    Py_ssize_t size = PyArray_SIZE((PyArrayObject *)o);
    if (*dtype >= 0 && dt != *dtype) {
        PyErr_Format(PyExc_TypeError, "%s: expected %s, got %s", what, dtype_name(*dtype), dtype_name(dt));
        return -1;
    }
    if (*n >= 0 && size != *n) {
        PyErr_Format(PyExc_ValueError, "%s: expected %zd elements, got %zd", what, *n, size);
        return -1;
    }
    *dtype = dt;
    *n = size;
    *data = PyArray_DATA((PyArrayObject *)o);
    return 0;
}

#define RUN_KERNEL(stmt)                 \
    do {                                 \
        Py_BEGIN_ALLOW_THREADS           \
        optimc_fork_guard_enter();       \
        stmt;                            \
        optimc_fork_guard_leave();       \
        Py_END_ALLOW_THREADS             \
    } while (0)

/* vec_dot(a, b) -> float */
static PyObject *mod_vec_dot(PyObject *m, PyObject *args)
{
    (void)m;
    PyObject *a, *b;
    int dt = -1;
    Py_ssize_t n = -1;
    void *pa, *pb;
    double r;
    if (!PyArg_ParseTuple(args, "OO", &a, &b)) return NULL;
    if (vec_arg(a, "a", 0, &dt, &n, &pa) < 0 || vec_arg(b, "b", 0, &dt, &n, &pb) < 0) return NULL;
    RUN_KERNEL(r = optimc_vec_dot(dt, pa, pb, (size_t)n));
    return PyFloat_FromDouble(r);
}

/* vec_axpy(alpha, x, y): y += alpha·x */
static PyObject *mod_vec_axpy(PyObject *m, PyObject *args)
{
    (void)m;
    PyObject *x, *y;
    double alpha;
    int dt = -1;
    Py_ssize_t n = -1;
    void *px, *py;
    if (!PyArg_ParseTuple(args, "dOO", &alpha, &x, &y)) return NULL;
    if (vec_arg(x, "x", 0, &dt, &n, &px) < 0 || vec_arg(y, "y", 1, &dt, &n, &py) < 0) return NULL;
    RUN_KERNEL(optimc_vec_axpy(dt, alpha, px, py, (size_t)n));
    Py_RETURN_NONE;
}

/* vec_abs_max_sum(x) -> (max |x|, sum |x|) */
static PyObject *mod_vec_abs_max_sum(PyObject *m, PyObject *x)
{
    (void)m;
    int dt = -1;
    Py_ssize_t n = -1;
    void *px;
    double mx, sum;
    if (vec_arg(x, "x", 0, &dt, &n, &px) < 0) return NULL;
    RUN_KERNEL(optimc_vec_abs_max_sum(dt, px, (size_t)n, &mx, &sum));
    return Py_BuildValue("dd", mx, sum);
}

/* lbfgs_pair(g, g_prev, d, t, y, s) -> (y·s, y·y) with y = g − g_prev, s = t·d */
static PyObject *mod_lbfgs_pair(PyObject *m, PyObject *args)
{
    (void)m;
    PyObject *g, *gp, *d, *y, *s;
    double t, ys, yy;
    int dt = -1;
    Py_ssize_t n = -1;
    void *pg, *pgp, *pd, *py, *ps;
    if (!PyArg_ParseTuple(args, "OOOdOO", &g, &gp, &d, &t, &y, &s)) return NULL;
    if (vec_arg(g, "g", 0, &dt, &n, &pg) < 0 || vec_arg(gp, "g_prev", 0, &dt, &n, &pgp) < 0 ||
        vec_arg(d, "d", 0, &dt, &n, &pd) < 0 || vec_arg(y, "y", 1, &dt, &n, &py) < 0 ||
        vec_arg(s, "s", 1, &dt, &n, &ps) < 0)
        return NULL;
    RUN_KERNEL(optimc_lbfgs_pair(dt, (size_t)n, pg, pgp, pd, t, py, ps, &ys, &yy));
    return Py_BuildValue("dd", ys, yy);
}

/* lbfgs_direction(g, dirs, stps, ro, h_diag, d) -> al (list of floats):
 * d ← −H·g by the two-loop recursion over the pairs (oldest first). */
static PyObject *mod_lbfgs_direction(PyObject *m, PyObject *args)
{
    (void)m;
    PyObject *g, *dirs, *stps, *ro, *d, *out = NULL;
    double h_diag;
    int dt = -1;
    Py_ssize_t n = -1;
    void *pg, *pd;
    if (!PyArg_ParseTuple(args, "OO!O!O!dO", &g, &PyList_Type, &dirs, &PyList_Type, &stps, &PyList_Type, &ro,
                          &h_diag, &d))
        return NULL;
    if (vec_arg(g, "g", 0, &dt, &n, &pg) < 0 || vec_arg(d, "d", 1, &dt, &n, &pd) < 0) return NULL;
    /* the pairs as tuples that reference them until the kernel has returned:
     * the lists may change (another thread, or ro's __float__) meanwhile */
    PyObject *held_dirs = PySequence_Tuple(dirs), *held_stps = held_dirs ? PySequence_Tuple(stps) : NULL;
    PyObject *held_ro = held_stps ? PySequence_Tuple(ro) : NULL;
    void **pdirs = NULL, **pstps = NULL;
    double *pro = NULL, *pal = NULL;
    if (!held_ro) goto done;
    Py_ssize_t k = PyTuple_GET_SIZE(held_dirs);
    if (PyTuple_GET_SIZE(held_stps) != k || PyTuple_GET_SIZE(held_ro) != k) {
        PyErr_SetString(PyExc_ValueError, "lbfgs_direction: dirs, stps and ro differ in length");
        goto done;
    }
    if (k > INT_MAX) {
        PyErr_NoMemory();
        goto done;
    }
    size_t cells = k ? (size_t)k : 1;
    pdirs = PyMem_Malloc(sizeof(void *) * cells), pstps = PyMem_Malloc(sizeof(void *) * cells);
    pro = PyMem_Malloc(sizeof(double) * cells), pal = PyMem_Malloc(sizeof(double) * cells);
    if (!pdirs || !pstps || !pro || !pal) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < k; i++) {   /* ro first: its conversion may run code */
        pro[i] = PyFloat_AsDouble(PyTuple_GET_ITEM(held_ro, i));
        if (pro[i] == -1.0 && PyErr_Occurred()) goto done;
    }
    for (Py_ssize_t i = 0; i < k; i++) {
        char what[48];
        snprintf(what, sizeof what, "old_dirs[%zd]", i);
        if (vec_arg(PyTuple_GET_ITEM(held_dirs, i), what, 0, &dt, &n, &pdirs[i]) < 0) goto done;
        snprintf(what, sizeof what, "old_stps[%zd]", i);
        if (vec_arg(PyTuple_GET_ITEM(held_stps, i), what, 0, &dt, &n, &pstps[i]) < 0) goto done;
        if (pdirs[i] == pd || pstps[i] == pd) {
            PyErr_SetString(PyExc_ValueError, "lbfgs_direction: d is one of the stored pairs");
            goto done;
        }
    }
    if (pg == pd) {
        PyErr_SetString(PyExc_ValueError, "lbfgs_direction: d is g");
        goto done;
    }
    RUN_KERNEL(optimc_lbfgs_direction(dt, (size_t)n, pg, (const void *const *)pdirs, (const void *const *)pstps,
                                      pro, pal, (int)k, h_diag, pd));
    out = PyList_New(k);
    for (Py_ssize_t i = 0; out && i < k; i++) {
        PyObject *v = PyFloat_FromDouble(pal[i]);
        if (!v) Py_CLEAR(out);
        else PyList_SET_ITEM(out, i, v);
    }
done:
    PyMem_Free(pdirs);
    PyMem_Free(pstps);
    PyMem_Free(pro);
    PyMem_Free(pal);
    Py_XDECREF(held_dirs);
    Py_XDECREF(held_stps);
    Py_XDECREF(held_ro);
    return out;
}

/* muon_momentum(grad, buf, update, momentum, nesterov) */
static PyObject *mod_muon_momentum(PyObject *m, PyObject *args)
{
    (void)m;
    PyObject *g, *buf, *upd;
    double momentum;
    int nesterov, dt = -1;
    Py_ssize_t n = -1;
    void *pg, *pb, *pu;
    if (!PyArg_ParseTuple(args, "OOOdp", &g, &buf, &upd, &momentum, &nesterov)) return NULL;
    if (vec_arg(g, "grad", 0, &dt, &n, &pg) < 0 || vec_arg(buf, "momentum_buffer", 1, &dt, &n, &pb) < 0 ||
        vec_arg(upd, "update", 1, &dt, &n, &pu) < 0)
        return NULL;
    RUN_KERNEL(optimc_muon_momentum(dt, (size_t)n, pg, pb, pu, momentum, nesterov));
    Py_RETURN_NONE;
}

/* muon_apply(param, update, decay, alpha): param ← param·decay + alpha·update */
static PyObject *mod_muon_apply(PyObject *m, PyObject *args)
{
    (void)m;
    PyObject *p, *u;
    double decay, alpha;
    int dt = -1;
    Py_ssize_t n = -1;
    void *pp, *pu;
    if (!PyArg_ParseTuple(args, "OOdd", &p, &u, &decay, &alpha)) return NULL;
    if (vec_arg(p, "param", 1, &dt, &n, &pp) < 0 || vec_arg(u, "update", 0, &dt, &n, &pu) < 0) return NULL;
    RUN_KERNEL(optimc_muon_apply(dt, (size_t)n, pp, pu, decay, alpha));
    Py_RETURN_NONE;
}

static PyMethodDef vector_methods[] = {
    {"vec_dot", mod_vec_dot, METH_VARARGS, "(a, b) -> a·b, accumulated in double in index order."},
    {"vec_axpy", mod_vec_axpy, METH_VARARGS, "(alpha, x, y): y += alpha·x in y's dtype."},
    {"vec_abs_max_sum", mod_vec_abs_max_sum, METH_O, "(x) -> (max |x|, sum |x|)."},
    {"lbfgs_pair", mod_lbfgs_pair, METH_VARARGS, "(g, g_prev, d, t, y, s) -> (y·s, y·y): y = g − g_prev, s = t·d."},
    {"lbfgs_direction", mod_lbfgs_direction, METH_VARARGS,
     "(g, dirs, stps, ro, h_diag, d) -> al: d ← −H·g by L-BFGS's two-loop recursion."},
    {"muon_momentum", mod_muon_momentum, METH_VARARGS,
     "(grad, buf, update, momentum, nesterov): Muon's momentum and its Nesterov update."},
    {"muon_apply", mod_muon_apply, METH_VARARGS, "(param, update, decay, alpha): param ← param·decay + alpha·update."},
    {NULL, NULL, 0, NULL},
};

int vector_ops_add(PyObject *module)
{
    return PyModule_AddFunctions(module, vector_methods);
}
