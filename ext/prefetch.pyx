# cython: language_level=3, boundscheck=False, wraparound=False
"""Reading arrays into the shared cache on a worker thread while this thread works (private; see
``runtime.postprocess``). The worker and its rules are in ext/prefetch_worker.h."""

cimport numpy as cnp

cnp.import_array()


cdef extern from "prefetch_worker.h":
    enum: PREFETCH_MAX_RANGES
    unsigned long prefetch_submit(const char* const* starts, const Py_ssize_t* lengths, int n) noexcept nogil
    void prefetch_release(unsigned long ticket) noexcept nogil


def submit(*arrays) -> int:
    """Have the worker read the C-contiguous ``arrays`` (at most 8), in order; returns at once.

    Returns a ticket for :func:`release`, or 0 when there is nothing to read, the worker is busy with
    another caller's job, or it cannot run (then nothing is read). The arrays must stay alive until
    the ticket is released.
    """
    cdef const char* starts[PREFETCH_MAX_RANGES]
    cdef Py_ssize_t lengths[PREFETCH_MAX_RANGES]
    cdef int n = 0
    cdef cnp.ndarray a
    if len(arrays) > PREFETCH_MAX_RANGES:
        raise ValueError(f"at most {PREFETCH_MAX_RANGES} arrays, got {len(arrays)}")
    for obj in arrays:
        a = <cnp.ndarray?> obj
        if not cnp.PyArray_IS_C_CONTIGUOUS(a):
            raise ValueError("prefetched arrays must be C-contiguous")
        starts[n] = <const char*> cnp.PyArray_DATA(a)
        lengths[n] = cnp.PyArray_NBYTES(a)
        n += 1
    return prefetch_submit(starts, lengths, n) if n else 0


def release(unsigned long ticket) -> None:
    """Return once the worker no longer reads the arrays of ``ticket`` (0: nothing to do)."""
    with nogil:
        prefetch_release(ticket)
