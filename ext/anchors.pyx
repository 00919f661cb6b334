# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Per-anchor rows of per-level maps (private; use ``runtime.decode.gather_anchor_rows``)."""

from libc.stdint cimport int64_t


def gather_rows(tuple maps, const int64_t[::1] level_ends, const int64_t[::1] anchor_ids, float[:, ::1] out):
    """out[k] = column ``anchor_ids[k] - start`` of the level map holding that global anchor id.

    maps       : per-level (C, N_l) float32 C-contiguous arrays; global ids run through the levels
                 in order.
    level_ends : (L,) int64 cumulative N_l.
    anchor_ids : (n,) int64, each in [0, level_ends[-1]) (IndexError otherwise, nothing promised
                 about ``out``).
    out        : (n, C) float32.
    """
    cdef Py_ssize_t n = anchor_ids.shape[0], levels = level_ends.shape[0], channels = out.shape[1]
    cdef Py_ssize_t k, c, lv, local, start
    cdef int64_t a
    cdef const float[:, ::1] m
    if levels == 0 or len(maps) != levels:
        raise ValueError(f"expected {levels} level maps, got {len(maps)}")
    for lv in range(levels):
        m = maps[lv]
        start = level_ends[lv - 1] if lv else 0
        if m.shape[0] != channels or m.shape[1] != level_ends[lv] - start:
            raise ValueError(f"level {lv}: map of shape ({m.shape[0]}, {m.shape[1]}) does not match "
                             f"{channels} channels and {level_ends[lv] - start} anchors")
        for k in range(n):
            a = anchor_ids[k]
            if a < start or a >= level_ends[lv]:
                if lv == 0 and (a < 0 or a >= level_ends[levels - 1]):
                    raise IndexError(f"anchor id {a} is outside [0, {level_ends[levels - 1]})")
                continue
            local = a - start
            for c in range(channels):
                out[k, c] = m[c, local]
