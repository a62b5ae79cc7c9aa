/* halfparam.c (binding) — bfloat16 and float16 params: recognising their
 * arrays (ml_dtypes.bfloat16 is a user-defined NumPy dtype, found by its
 * type's name, so optimc needs ml_dtypes only when a user brings it), the
 * master copy, and the conversions of the SIMD level in use as module
 * functions for tests:
 *   f16_encode(x float32) -> uint16 (round to nearest even)
 *   f16_decode(h uint16) -> float32
 *   half_encode(x float32, format, step_key=None) -> uint16: "bfloat16" or
 *       "float16", to nearest even, or stochastically with the stream
 *       step_key (element i takes the generator's bits number i)
 * (F16C on or off for the tests: module.c's set_cpu_feature.) */
#include "binding.h"
#include "halfparam.h"
#include "kernels.h"
#include <string.h>

int half_format_of(PyObject *o)
{
    if (!PyArray_Check(o)) return OPTIMC_PARAM_NATIVE;
    PyArrayObject *a = (PyArrayObject *)o;
    if (PyArray_ITEMSIZE(a) != 2 || !PyArray_ISNOTSWAPPED(a)) return OPTIMC_PARAM_NATIVE;
    if (PyArray_TYPE(a) == NPY_FLOAT16) return OPTIMC_PARAM_F16;
    const char *name = PyArray_DESCR(a)->typeobj->tp_name;
    if (PyArray_TYPE(a) >= NPY_USERDEF && (strcmp(name, "ml_dtypes.bfloat16") == 0 || strcmp(name, "bfloat16") == 0))
        return OPTIMC_PARAM_BF16;
    return OPTIMC_PARAM_NATIVE;
}

const char *half_format_name(int format)
{
    return format == OPTIMC_PARAM_BF16 ? "bfloat16" : format == OPTIMC_PARAM_F16 ? "float16" : "float32";
}

array_problem param_array_check(PyObject *o, int *dtype, int *format)
{
    *format = half_format_of(o);
    if (*format == OPTIMC_PARAM_NATIVE) return array_check(o, 1, dtype);
    PyArrayObject *a = (PyArrayObject *)o;
    if (!PyArray_IS_C_CONTIGUOUS(a) || !PyArray_ISALIGNED(a)) return ARRAY_BAD_LAYOUT;
    if (!PyArray_ISWRITEABLE(a)) return ARRAY_READ_ONLY;
    *dtype = OPTIMC_FLOAT32;   /* the rule computes, and the state is kept, in float32 */
    return ARRAY_OK;
}

void param_array_raise(array_problem problem, PyObject *o, PyObject *label)
{
    if (problem != ARRAY_BAD_DTYPE) {
        array_raise(problem, o, label);
        return;
    }
    PyErr_Format(PyExc_TypeError, "%U: expected a float32 or float64 array, or a bfloat16 (ml_dtypes) or "
                 "float16 one, in native byte order; got %S", label, (PyObject *)PyArray_DESCR((PyArrayObject *)o));
}

size_t param_nbytes(const optimc_tensor *x)
{
    return x->param_format != OPTIMC_PARAM_NATIVE ? 2 * x->n : x->n * itemsize_of(x->dtype);
}

void halfparam_init_master(optimc_tensor *x)
{
    const uint16_t *h = x->param;
    for (size_t i = 0; i < x->n; i++)
        x->master[i] = x->param_format == OPTIMC_PARAM_BF16 ? optimc_bf16_decode(h[i]) : optimc_f16_decode(h[i]);
}

/* ---- module functions ---- */

static PyArrayObject *take(PyObject *o, int typenum, const char *name)
{
    if (!PyArray_Check(o) || PyArray_TYPE((PyArrayObject *)o) != typenum
        || !PyArray_ISCARRAY_RO((PyArrayObject *)o)) {
        PyErr_Format(PyExc_TypeError, "%s: expected a C-contiguous %s array, got %R", name,
                     typenum == NPY_FLOAT32 ? "float32" : "uint16", o);
        return NULL;
    }
    return (PyArrayObject *)o;
}

static PyObject *encode(PyObject *o, int format, int stochastic, uint64_t step_key)
{
    PyArrayObject *x = take(o, NPY_FLOAT32, "x");
    if (!x) return NULL;
    npy_intp n = PyArray_SIZE(x);
    PyObject *out = PyArray_SimpleNew(1, &n, NPY_UINT16);
    if (!out) return NULL;
    const float *src = PyArray_DATA(x);
    uint16_t *dst = PyArray_DATA((PyArrayObject *)out);
    Py_BEGIN_ALLOW_THREADS
    optimc_level_aux()->half_encode(format, stochastic, step_key, src, (size_t)n, dst);
    Py_END_ALLOW_THREADS
    return out;
}

static PyObject *mod_f16_encode(PyObject *m, PyObject *o)
{
    (void)m;
    return encode(o, OPTIMC_PARAM_F16, 0, 0);
}

static PyObject *mod_f16_decode(PyObject *m, PyObject *o)
{
    (void)m;
    PyArrayObject *h = take(o, NPY_UINT16, "h");
    if (!h) return NULL;
    npy_intp n = PyArray_SIZE(h);
    PyObject *out = PyArray_SimpleNew(1, &n, NPY_FLOAT32);
    if (!out) return NULL;
    const uint16_t *src = PyArray_DATA(h);
    float *dst = PyArray_DATA((PyArrayObject *)out);
    Py_BEGIN_ALLOW_THREADS
    optimc_level_aux()->half_decode(OPTIMC_PARAM_F16, src, (size_t)n, dst);
    Py_END_ALLOW_THREADS
    return out;
}

static PyObject *mod_half_encode(PyObject *m, PyObject *args)
{
    (void)m;
    PyObject *o, *key = Py_None;
    const char *name;
    if (!PyArg_ParseTuple(args, "Os|O:half_encode", &o, &name, &key)) return NULL;
    int format = strcmp(name, "bfloat16") == 0 ? OPTIMC_PARAM_BF16 : strcmp(name, "float16") == 0 ? OPTIMC_PARAM_F16 : 0;
    if (!format) return PyErr_Format(PyExc_ValueError, "format: expected 'bfloat16' or 'float16', got %R",
                                     PyTuple_GET_ITEM(args, 1));
    uint64_t step_key = 0;
    if (key != Py_None) {
        if (!PyLong_Check(key)) return PyErr_Format(PyExc_TypeError, "step_key: expected an int or None, got %R", key);
        step_key = PyLong_AsUnsignedLongLong(key);
        if (step_key == (uint64_t)-1 && PyErr_Occurred()) {
            PyErr_Clear();
            return PyErr_Format(PyExc_ValueError, "step_key: expected an int in [0, 2**64), got %R", key);
        }
    }
    return encode(o, format, key != Py_None, step_key);
}

PyMethodDef optimc_halfparam_methods[] = {
    {"f16_encode", mod_f16_encode, METH_O, "float32 array -> uint16 float16 bits (round to nearest even), 1-D."},
    {"f16_decode", mod_f16_decode, METH_O, "uint16 float16 bits -> float32 array (exact), 1-D."},
    {"half_encode", mod_half_encode, METH_VARARGS,
     "half_encode(x float32, format, step_key=None) -> uint16 bits: to nearest even, or stochastically."},
    {NULL, NULL, 0, NULL},
};
