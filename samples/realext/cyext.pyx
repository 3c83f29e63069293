# cython: language_level=3, freethreading_compatible=True
"""A Cython extension with known GIL behaviour, for `gilscope check`'s tests on real
toolchains (built per interpreter by scripts/build-realext).

    spin_gil(ms)    loops on clock_gettime for ms milliseconds holding the GIL
    spin_nogil(ms)  the same loop inside `with nogil:`
"""

from libc.time cimport time_t

cdef extern from "<time.h>" nogil:
    ctypedef int clockid_t
    cdef struct timespec:
        time_t tv_sec
        long tv_nsec
    int clock_gettime(clockid_t clk, timespec *tp)
    enum: CLOCK_MONOTONIC


cdef double now_ms() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6


cdef long spin(double ms) noexcept nogil:
    cdef double end = now_ms() + ms
    cdef long turns = 0
    while now_ms() < end:
        turns += 1
    return turns


def spin_gil(double ms):
    return spin(ms)


def spin_nogil(double ms):
    cdef long turns
    with nogil:
        turns = spin(ms)
    return turns
