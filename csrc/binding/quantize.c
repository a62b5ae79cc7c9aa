/* quantize.c (binding) — the quantizer as module functions, for checkpoint
 * conversions between state dtypes (optimc/optimizers/checkpoint.py) and for
 * the tests that compare it with bitsandbytes:
 *   quantize_blockwise(x, signed) -> (codes uint8, absmax float32)
 *   dequantize_blockwise(codes, absmax, signed) -> float32
 *   dynamic_map(signed) -> float32[256]
 *   bf16_encode(x float32) -> uint16;  bf16_decode(h uint16) -> float32
 * Arrays are taken as 1-D views of any C-contiguous array of the named dtype. */
#include "binding.h"
#include "quantize.h"

/* A C-contiguous, aligned array of `typenum`, or NULL with a TypeError. */
static PyArrayObject *take(PyObject *o, int typenum, const char *name)
{
    if (!PyArray_Check(o) || PyArray_TYPE((PyArrayObject *)o) != typenum
        || !PyArray_ISCARRAY_RO((PyArrayObject *)o)) {
        PyArray_Descr *d = PyArray_DescrFromType(typenum);
        PyErr_Format(PyExc_TypeError, "%s: expected a C-contiguous %s array, got %R", name,
                     d ? d->typeobj->tp_name : "?", o);
        Py_XDECREF(d);
        return NULL;
    }
    return (PyArrayObject *)o;
}

static PyObject *new_1d(int typenum, Py_ssize_t n)
{
    npy_intp dims[1] = {n};
    return PyArray_SimpleNew(1, dims, typenum);
}

static PyObject *mod_quantize_blockwise(PyObject *m, PyObject *args)
{
    (void)m;
    PyObject *xo;
    int is_signed;
    if (!PyArg_ParseTuple(args, "Op", &xo, &is_signed)) return NULL;
    PyArrayObject *x = take(xo, NPY_FLOAT32, "x");
    if (!x) return NULL;
    Py_ssize_t n = PyArray_SIZE(x), nb = (n + OPTIMC_QBLOCK - 1) / OPTIMC_QBLOCK;
    PyObject *codes = new_1d(NPY_UINT8, n), *absmax = new_1d(NPY_FLOAT32, nb);
    if (!codes || !absmax) {
        Py_XDECREF(codes);
        Py_XDECREF(absmax);
        return NULL;
    }
    optimc_quantize_blockwise(is_signed, PyArray_DATA(x), (size_t)n, PyArray_DATA((PyArrayObject *)codes),
                              PyArray_DATA((PyArrayObject *)absmax));
    return Py_BuildValue("(NN)", codes, absmax);
}

static PyObject *mod_dequantize_blockwise(PyObject *m, PyObject *args)
{
    (void)m;
    PyObject *co, *ao;
    int is_signed;
    if (!PyArg_ParseTuple(args, "OOp", &co, &ao, &is_signed)) return NULL;
    PyArrayObject *codes = take(co, NPY_UINT8, "codes"), *absmax = codes ? take(ao, NPY_FLOAT32, "absmax") : NULL;
    if (!absmax) return NULL;
    Py_ssize_t n = PyArray_SIZE(codes), nb = (n + OPTIMC_QBLOCK - 1) / OPTIMC_QBLOCK;
    if (PyArray_SIZE(absmax) != nb)
        return PyErr_Format(PyExc_ValueError, "absmax: expected %zd block scales for %zd codes, got %zd",
                            nb, n, (Py_ssize_t)PyArray_SIZE(absmax));
    PyObject *out = new_1d(NPY_FLOAT32, n);
    if (!out) return NULL;
    optimc_dequantize_blockwise(is_signed, PyArray_DATA(codes), PyArray_DATA(absmax), (size_t)n,
                                PyArray_DATA((PyArrayObject *)out));
    return out;
}

static PyObject *mod_dynamic_map(PyObject *m, PyObject *arg)
{
    (void)m;
    int is_signed = PyObject_IsTrue(arg);
    if (is_signed < 0) return NULL;
    PyObject *out = new_1d(NPY_FLOAT32, 256);
    if (out) memcpy(PyArray_DATA((PyArrayObject *)out), optimc_qmap_get(is_signed)->code, 256 * sizeof(float));
    return out;
}

static PyObject *mod_bf16_encode(PyObject *m, PyObject *arg)
{
    (void)m;
    PyArrayObject *x = take(arg, NPY_FLOAT32, "x");
    if (!x) return NULL;
    PyObject *out = new_1d(NPY_UINT16, PyArray_SIZE(x));
    if (out) optimc_bf16_encode_array(PyArray_DATA(x), (size_t)PyArray_SIZE(x), PyArray_DATA((PyArrayObject *)out));
    return out;
}

static PyObject *mod_bf16_decode(PyObject *m, PyObject *arg)
{
    (void)m;
    PyArrayObject *h = take(arg, NPY_UINT16, "h");
    if (!h) return NULL;
    PyObject *out = new_1d(NPY_FLOAT32, PyArray_SIZE(h));
    if (out) optimc_bf16_decode_array(PyArray_DATA(h), (size_t)PyArray_SIZE(h), PyArray_DATA((PyArrayObject *)out));
    return out;
}

PyMethodDef optimc_quantize_methods[] = {
    {"quantize_blockwise", mod_quantize_blockwise, METH_VARARGS,
     "(x float32, signed) -> (codes uint8, absmax float32): 8-bit blockwise dynamic quantization, 256 per block."},
    {"dequantize_blockwise", mod_dequantize_blockwise, METH_VARARGS,
     "(codes uint8, absmax float32, signed) -> float32."},
    {"dynamic_map", mod_dynamic_map, METH_O, "(signed) -> the 256 float32 values of the dynamic map."},
    {"bf16_encode", mod_bf16_encode, METH_O, "(x float32) -> uint16 bfloat16 bits, round to nearest even."},
    {"bf16_decode", mod_bf16_decode, METH_O, "(h uint16) -> float32."},
    {NULL, NULL, 0, NULL},
};
