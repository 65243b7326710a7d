"""Exact integer sums ``x @ W`` for the emulator's dense synapses, by the cheapest exact path.

The emulator's synaptic sum is ``sum_i x_i * w_ij`` over integer inputs ``x``
(0/1 spikes or graded values) and integer effective weights ``w``. Three
exact ways to compute it are offered, and :class:`DenseAccumulator` picks one
per call from the shape and the measured activity (fraction of nonzero
inputs):

* ``blas``: a float32 / float64 BLAS GEMM, exact when every partial sum is
  below 2**24 / 2**53 (the emulator's ``_matmul_dtype``), else int64 numpy.
* ``int8``: onnxruntime's ``MatMulInteger`` (uint8 x int8 -> int32, MLAS
  kernels: AVX-512 VNNI / AVX2 / NEON). Taken when the inputs fit uint8
  (``max_in <= 255``), the weights divided by their common factor ``g`` fit
  int8, and the sum's bound is below 2**31 (so int32 cannot wrap). Some
  kernels (AVX2 ``vpmaddubsw``) add pairs of products in saturating int16;
  when ``2 * max_in * max|w/g|`` could exceed 32767 the inputs are split into
  4-bit halves, ``x = 16 * hi + lo``, and two GEMMs run (each pair then stays
  below 3,840). Every result is therefore exact on every kernel.
* ``event``: event-driven accumulation, the weight rows of the nonzero inputs
  gathered and summed (scipy's CSR x dense product, int32 / int64), for very
  sparse input where neither GEMM path applies.

The choice uses relative costs per multiply-accumulate measured on the 2-core
development machine (below; ``benchmarks/emulator_vs_lava.py`` records the GEMM
rates of the real shapes): int8 ran 6-14x faster than float32 on the default
network's shapes, the CSR gather beat float32 only below ~0.5% activity and
never beat int8. The choice never changes the result, only its speed.
"""

from __future__ import annotations

import threading
from typing import Optional

import numpy as np

__all__ = ["DenseAccumulator", "int8_available", "set_int8_enabled", "PATHS"]

PATHS = ("blas", "int8", "event")
# below this many multiply-accumulates a session call (~20-40 us) costs more than BLAS saves
INT8_MIN_MACS = 1 << 20
# Costs relative to one float32 BLAS multiply-accumulate, measured on the development machine with
# (2048 x 784) @ (784 x 256): float32 ~7 ms; MatMulInteger 0.5-1.1 ms; scipy's CSR product 7.4 ms at
# 0.2% activity, 15.8 ms at 3% (building the CSR matrix scans every input element: ~200 MACs' worth;
# each gathered weight ~40). So the gather wins only below ~0.5% activity, and only where int8 cannot run.
EVENT_COST_PER_GATHER = 40.0
EVENT_COST_PER_SCAN = 200.0
INT8_COST_PER_MAC = 0.12
INT8_COST_PER_INPUT = 0.5         # the conversion of the input to uint8
_PAIR_LIMIT = 32767               # a saturating int16 pair sum of u8 x s8 products stays exact below this

FORCE_PATH: Optional[str] = None
"""Tests set one of :data:`PATHS` to run every sum it can do that way (int8 where its conditions hold),
whatever the cost model says (the random networks of the differential tests are too small to pick it)."""

_enabled = True
_local = threading.local()


def set_int8_enabled(flag: bool) -> bool:
    """Turn the onnxruntime int8 path on or off (tests compare both); returns the previous setting."""
    global _enabled
    old, _enabled = _enabled, bool(flag)
    return old


def int8_available() -> bool:
    """True where onnxruntime imports (and the int8 path is not switched off)."""
    if not _enabled:
        return False
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def set_thread_budget(threads: Optional[int]) -> None:
    """Threads the int8 GEMMs of the calling thread may use (None: all usable CPUs); the emulator's
    worker threads set 1, as they do for BLAS."""
    _local.threads = threads


def _usable_cpus() -> int:
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


class _MatMulInteger:
    """``x (rows, k) uint8 @ w8 (k, n) int8 -> int32`` through onnxruntime sessions (per thread count, one per
    concurrent caller)."""

    def __init__(self, w8: np.ndarray):
        self.w8 = np.ascontiguousarray(w8, dtype=np.int8)
        self._idle: dict = {}            # thread count -> sessions no call is using
        self._lock = threading.Lock()

    def _acquire(self, threads: int):
        """A session no other call is running: concurrent calls on one session scale ~1.4x on 2 threads,
        on a session each ~1.8x (measured, onnxruntime 1.23), so each concurrent caller gets its own
        (at most as many as callers ever ran at once)."""
        with self._lock:
            idle = self._idle.setdefault(threads, [])
            if idle:
                return idle.pop()
        return self._new_session(threads)

    def _release(self, threads: int, sess) -> None:
        with self._lock:
            self._idle[threads].append(sess)

    def _new_session(self, threads: int):
        import onnxruntime as ort
        from onnx import TensorProto, helper

        k, n = self.w8.shape
        graph = helper.make_graph(
            [helper.make_node("MatMulInteger", ["x", "w"], ["y"])], "synapse",
            [helper.make_tensor_value_info("x", TensorProto.UINT8, [None, k])],
            [helper.make_tensor_value_info("y", TensorProto.INT32, [None, n])],
            [helper.make_tensor("w", TensorProto.INT8, [k, n], self.w8.tobytes(), raw=True)])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        model.ir_version = 8
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        # no busy-waiting after a call: spinning ORT threads starve numpy's BLAS threads that run next
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        threads = getattr(_local, "threads", None) or _usable_cpus()
        sess = self._acquire(threads)
        try:
            return sess.run(None, {"x": x})[0]
        finally:
            self._release(threads, sess)


class DenseAccumulator:
    """The exact sum ``x @ W.T`` of one dense synapse by the cheapest exact path.

    ``weight``: effective weights (out, in) int64; ``max_in``: the largest input
    value; ``bound``: the largest ``|sum|`` possible; ``blas_mat``: ``W.T`` in the
    BLAS dtype (float32 / float64 / int64) the emulator proved exact.
    ``rows_by_path`` counts the input rows each path summed (for ``--verbose``).
    """

    def __init__(self, weight: np.ndarray, max_in: int, bound: int, blas_mat: np.ndarray):
        self.blas_mat = blas_mat
        self.k, self.n = blas_mat.shape
        self.max_in = int(max_in)
        self.bound = int(bound)
        self.rows_by_path = {p: 0 for p in PATHS}
        self._count_lock = threading.Lock()
        self.int_dtype = np.int32 if self.bound < (1 << 31) else np.int64
        self._w_int = None                       # (in, out) in int_dtype, for the event path
        self._weight = weight
        w = np.asarray(weight, dtype=np.int64)
        self.factor = max(int(np.gcd.reduce(np.abs(w).ravel())) if w.size else 1, 1)
        w8 = w // self.factor
        self.int8_possible = (self.max_in <= 255 and self.bound < (1 << 31) and w8.size > 0
                              and int(w8.min()) >= -128 and int(w8.max()) <= 127)
        self._gemm = _MatMulInteger(w8.T) if self.int8_possible else None
        wmax = int(np.abs(w8).max(initial=0))
        self.split_nibbles = 2 * self.max_in * wmax > _PAIR_LIMIT

    # -- the choice -------------------------------------------------------------
    def choose(self, rows: int, density: float) -> str:
        """The path for ``rows`` input rows with a fraction ``density`` of nonzero inputs."""
        macs = rows * self.k * self.n
        if FORCE_PATH is not None and (FORCE_PATH != "int8" or (self._gemm is not None and int8_available())):
            return FORCE_PATH
        cost = {"blas": float(macs)}
        if self._gemm is not None and macs >= INT8_MIN_MACS and int8_available():
            cost["int8"] = macs * INT8_COST_PER_MAC * (2 if self.split_nibbles else 1) \
                + rows * self.k * INT8_COST_PER_INPUT
        cost["event"] = rows * self.k * EVENT_COST_PER_SCAN + density * macs * EVENT_COST_PER_GATHER
        return min(cost, key=cost.get)

    def _count(self, path: str, rows: int) -> None:
        with self._count_lock:
            self.rows_by_path[path] += rows

    # -- the sums -----------------------------------------------------------------
    def __call__(self, x: np.ndarray, density: Optional[float] = None) -> np.ndarray:
        """The exact sums for ``x`` (rows, in) holding integers (any numeric dtype): an array in the BLAS
        dtype or an int32 / int64 array, integer values either way."""
        r, factor = self.unscaled(x, density)
        if factor != 1:
            r *= factor                           # |factor * sum| <= bound < 2**31
        return r

    def unscaled(self, x: np.ndarray, density: Optional[float] = None) -> tuple[np.ndarray, int]:
        """``(r, f)`` with the exact sums ``= f * r``: the int8 path leaves the weights' common factor ``f``
        to the caller (who may fold it into a shift); the other paths return ``f = 1``."""
        rows = x.shape[0]
        if density is None:
            density = 1.0 if rows * self.k * self.n < INT8_MIN_MACS else np.count_nonzero(x) / max(x.size, 1)
        path = self.choose(rows, density)
        self._count(path, rows)
        if path == "int8":
            return self._int8(x), self.factor
        if path == "event":
            return self._event(x), 1
        return x.astype(self.blas_mat.dtype, copy=False) @ self.blas_mat, 1

    def _int8(self, x: np.ndarray) -> np.ndarray:
        xu = x.view(np.uint8) if x.dtype == np.bool_ else x.astype(np.uint8, copy=False)
        xu = np.ascontiguousarray(xu)
        if self.split_nibbles:                    # x = 16 * hi + lo: each GEMM's pair sums stay exact
            r = self._gemm(xu >> 4)
            r <<= 4
            r += self._gemm(xu & 15)
        else:
            r = self._gemm(xu)
        return r

    def _event(self, x: np.ndarray) -> np.ndarray:
        import scipy.sparse as sp

        if self._w_int is None:
            self._w_int = np.ascontiguousarray(np.asarray(self._weight).T.astype(self.int_dtype))
        xs = sp.csr_matrix(x.view(np.uint8) if x.dtype == np.bool_ else x)
        if xs.dtype != self.int_dtype:
            xs = xs.astype(self.int_dtype)
        return np.asarray(xs @ self._w_int)
