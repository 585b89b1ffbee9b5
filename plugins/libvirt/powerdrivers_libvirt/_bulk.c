/*
 * powerdrivers_libvirt._bulk: every domain's UUID, name, state and reason in one call.
 *
 * libvirt-python hands out a listing one Python object and one Python-to-C call at a
 * time (a virDomain per domain, then UUIDString() and name() on each, each releasing
 * and retaking the GIL); over thousands of domains that costs more than the bulk call
 * itself. This module makes the same libvirt calls from C and returns plain tuples.
 * It takes the connection from libvirt-python's own handle (the "virConnectPtr"
 * capsule of virConnect._o), so it shares that connection and its thread-local error:
 * on failure it returns None and the caller raises libvirt.libvirtError, which reads
 * the error libvirt recorded.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <libvirt/libvirt.h>

static const char HEX[] = "0123456789abcdef";

/* The canonical 36-character text of a raw UUID. */
static PyObject *
uuid_text(const unsigned char *raw)
{
    char text[VIR_UUID_STRING_BUFLEN];
    char *out = text;
    for (int i = 0; i < VIR_UUID_BUFLEN; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            *out++ = '-';
        *out++ = HEX[raw[i] >> 4];
        *out++ = HEX[raw[i] & 0x0f];
    }
    return PyUnicode_FromStringAndSize(text, out - text);
}

/*
 * (uuid, name, state, reason) for one stats record. NULL on failure: with a Python
 * exception set, or, where libvirt failed (its error recorded), without one.
 */
static PyObject *
record_row(virDomainStatsRecordPtr record)
{
    unsigned char raw[VIR_UUID_BUFLEN];
    int state = -1;
    int reason = -1;
    const char *name = virDomainGetName(record->dom);

    if (name == NULL || virDomainGetUUID(record->dom, raw) < 0)
        return NULL;
    for (int i = 0; i < record->nparams; i++) {
        virTypedParameterPtr param = &record->params[i];
        if (param->type != VIR_TYPED_PARAM_INT)
            continue;
        if (strcmp(param->field, "state.state") == 0)
            state = param->value.i;
        else if (strcmp(param->field, "state.reason") == 0)
            reason = param->value.i;
    }
    PyObject *row = PyTuple_New(4);
    PyObject *text = uuid_text(raw);
    PyObject *py_name = PyUnicode_FromString(name);
    PyObject *py_state = PyLong_FromLong(state);
    PyObject *py_reason = PyLong_FromLong(reason);
    if (row == NULL || text == NULL || py_name == NULL || py_state == NULL || py_reason == NULL) {
        Py_XDECREF(row);
        Py_XDECREF(text);
        Py_XDECREF(py_name);
        Py_XDECREF(py_state);
        Py_XDECREF(py_reason);
        return NULL;
    }
    PyTuple_SET_ITEM(row, 0, text);
    PyTuple_SET_ITEM(row, 1, py_name);
    PyTuple_SET_ITEM(row, 2, py_state);
    PyTuple_SET_ITEM(row, 3, py_reason);
    return row;
}

PyDoc_STRVAR(domain_states_doc,
"domain_states(conn_handle, /)\n--\n\n"
"Return [(uuid, name, state, reason), ...] for every domain of the connection whose\n"
"libvirt-python handle (virConnect._o) is given, from one virConnectGetAllDomainStats\n"
"call; state and reason are libvirt's numbers (-1 where the record lacks one). Return\n"
"None when libvirt fails, in the call or naming a domain: libvirt.libvirtError() then\n"
"reads why.");

static PyObject *
domain_states(PyObject *module, PyObject *handle)
{
    (void)module;
    virConnectPtr conn = PyCapsule_GetPointer(handle, "virConnectPtr");
    virDomainStatsRecordPtr *records = NULL;
    int count;

    if (conn == NULL)
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    count = virConnectGetAllDomainStats(conn, VIR_DOMAIN_STATS_STATE, &records, 0);
    Py_END_ALLOW_THREADS
    if (count < 0)
        Py_RETURN_NONE;

    PyObject *rows = PyList_New(count);
    if (rows != NULL) {
        for (int i = 0; i < count; i++) {
            PyObject *row = record_row(records[i]);
            if (row == NULL) {
                Py_CLEAR(rows);
                if (!PyErr_Occurred())
                    rows = Py_NewRef(Py_None);
                break;
            }
            PyList_SET_ITEM(rows, i, row);
        }
    }
    /* Frees every record and releases its domain, whatever happened above. */
    virDomainStatsRecordListFree(records);
    return rows;
}

static PyMethodDef methods[] = {
    {"domain_states", domain_states, METH_O, domain_states_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "powerdrivers_libvirt._bulk",
    .m_doc = "Every domain's UUID, name, state and reason from one bulk libvirt call, in C.",
    .m_size = 0,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__bulk(void)
{
    return PyModule_Create(&module);
}
