/* arrays.c — the array checks, written once; labels for messages; the map
 * of memory an optimizer writes (for aliasing checks at O(log n) each). */
#include "binding.h"
#include <stdarg.h>
#include <string.h>

int typenum_of(int dtype) { return dtype == OPTIMC_FLOAT32 ? NPY_FLOAT32 : NPY_FLOAT64; }
const char *dtype_name(int dtype) { return dtype == OPTIMC_FLOAT32 ? "float32" : "float64"; }
size_t itemsize_of(int dtype) { return dtype == OPTIMC_FLOAT32 ? 4 : 8; }
size_t nbytes_of(const optimc_tensor *x) { return x->n * itemsize_of(x->dtype); }

size_t state_nbytes(const Engine *self, const optimc_tensor *x, int k)
{
    size_t n = optimc_state_elements(self->algorithm, x, k);
    /* compressed state (param-shaped only): uint16 bfloat16 bits or uint8 codes */
    size_t item = x->state_format == OPTIMC_STATE_BF16 ? 2 : x->state_format == OPTIMC_STATE_8BIT ? 1
                                                                                     : itemsize_of(x->dtype);
    /* SIZE_MAX when it does not fit (a 16-bit param's float32 state is twice its
     * bytes): such a block cannot be allocated, and must not wrap to a small one */
    return n > SIZE_MAX / item ? SIZE_MAX : n * item;
}

array_problem array_check(PyObject *o, int writeable, int *dtype)
{
    if (!PyArray_Check(o)) return ARRAY_NOT_ARRAY;
    PyArrayObject *a = (PyArrayObject *)o;
    int tn = PyArray_TYPE(a);
    if ((tn != NPY_FLOAT32 && tn != NPY_FLOAT64) || !PyArray_ISNOTSWAPPED(a)) return ARRAY_BAD_DTYPE;
    if (!PyArray_IS_C_CONTIGUOUS(a) || !PyArray_ISALIGNED(a)) return ARRAY_BAD_LAYOUT;
    if (writeable && !PyArray_ISWRITEABLE(a)) return ARRAY_READ_ONLY;
    *dtype = tn == NPY_FLOAT32 ? OPTIMC_FLOAT32 : OPTIMC_FLOAT64;
    return ARRAY_OK;
}

void array_raise(array_problem problem, PyObject *o, PyObject *label)
{
    switch (problem) {
    case ARRAY_NOT_ARRAY:
        PyErr_Format(PyExc_TypeError, "%U: expected a numpy.ndarray, got %s", label, Py_TYPE(o)->tp_name);
        break;
    case ARRAY_BAD_DTYPE:
        PyErr_Format(PyExc_TypeError, "%U: expected a float32 or float64 array in native byte order, got %S",
                     label, (PyObject *)PyArray_DESCR((PyArrayObject *)o));
        break;
    case ARRAY_BAD_LAYOUT:
        PyErr_Format(PyExc_ValueError, "%U: must be C-contiguous and aligned (optimc reads and writes it "
                     "in place and never copies); make it with np.ascontiguousarray", label);
        break;
    case ARRAY_READ_ONLY:
        PyErr_Format(PyExc_ValueError, "%U: is read-only; optimc writes it in place", label);
        break;
    case ARRAY_OK:
        break;
    }
}

PyObject *engine_label(Engine *self, const char *what, Py_ssize_t i)
{
    if (self->names && i < PyList_GET_SIZE(self->names))
        return PyUnicode_FromFormat("%s[%R]", what, PyList_GET_ITEM(self->names, i));
    return PyUnicode_FromFormat("%s[%zd]", what, i);
}

void engine_raise(Engine *self, PyObject *exc, const char *what, Py_ssize_t i, const char *fmt, ...)
{
    va_list va;
    va_start(va, fmt);
    PyObject *msg = PyUnicode_FromFormatV(fmt, va);
    va_end(va);
    PyObject *lab = engine_label(self, what, i);
    if (msg && lab) PyErr_Format(exc, "%U: %U", lab, msg);
    Py_XDECREF(msg);
    Py_XDECREF(lab);
}

/* The first region whose end lies past p (binary search). */
static Py_ssize_t first_ending_after(const Engine *self, const char *p)
{
    Py_ssize_t lo = 0, hi = self->n_regions;
    while (lo < hi) {
        Py_ssize_t mid = lo + (hi - lo) / 2;
        if (self->regions[mid].hi <= p) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

const region *regions_find(const Engine *self, const void *p, size_t n)
{
    if (n == 0) return NULL;
    const char *lo = p, *hi = lo + n;
    Py_ssize_t k = first_ending_after(self, lo);
    if (k < self->n_regions && self->regions[k].lo < hi) return &self->regions[k];
    return NULL;
}

/* The caller has checked that [p, p + n) overlaps no region and reserved room. */
int regions_insert(Engine *self, const void *p, size_t n, Py_ssize_t tensor, int is_state)
{
    if (n == 0) return 0;
    const char *lo = p;
    Py_ssize_t k = first_ending_after(self, lo);
    memmove(&self->regions[k + 1], &self->regions[k], sizeof(region) * (size_t)(self->n_regions - k));
    self->regions[k] = (region){lo, lo + n, tensor, is_state};
    self->n_regions++;
    return 0;
}

void raise_overlap(Engine *self, PyObject *label, const region *r)
{
    PyObject *other = engine_label(self, "params", r->tensor);
    if (!other) return;
    PyErr_Format(PyExc_ValueError,
                 "%U: shares memory with %s%U; optimc writes that memory during the step, so it "
                 "cannot also be read or written through this array (pass a separate array)",
                 label, r->is_state ? "the optimizer state of " : "", other);
    Py_DECREF(other);
}

int array_check_or_raise(PyObject *o, int writeable, int *dtype, const char *label)
{
    array_problem pr = array_check(o, writeable, dtype);
    if (pr == ARRAY_OK) return 0;
    PyObject *lab = PyUnicode_FromString(label);
    if (lab) array_raise(pr, o, lab);
    Py_XDECREF(lab);
    return -1;
}
