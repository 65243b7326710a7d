"""Read a lava-dl netx HDF5 file into the fixed-point IR (:func:`read_netx`).

``read_netx(path)`` reads files written by :func:`~neurodeploy.io.netx_writer.write_netx`
(exactly, from their ``neurodeploy`` group, checked against the netx
datasets), also ones written by other tools (slayer's ``export_hdf5``,
hand-made files), and returns the IR of what netx would run (the mapping:
:mod:`neurodeploy.io.netx_semantics`). Files without the ``neurodeploy`` group
are read from the netx datasets alone, with ``bias_exp = 6`` and the simplest
exact weight representation (``weight_exp 0``, 8 bits, when that is exact,
otherwise netx's own scaled representation).

Untrusted files
---------------
``read_netx`` reads any file safely: only regular files (a named pipe is
refused, not waited on), only hard links and data stored in the file itself
(no soft or external links, no external or virtual dataset storage). Every
size is checked from HDF5 metadata before anything is read or allocated
(``MAX_LAYERS`` layer entries, ``MAX_LAYER_ELEMENTS`` per dataset and per
layer's neurons, ``MAX_TOTAL_ELEMENTS`` per file, ``MAX_NDIM``,
``MAX_TIME_STEPS``, ``MAX_STRING_CHARS``, ``MAX_JSON_DEPTH``); every value's
dtype, integrality and range before it is cast (no complex, bool or string
where a number belongs, no fraction truncated, no unsigned value wrapped).
Each problem is one :class:`NetxFormatError` line; h5py errors are caught only
around single h5py calls (a corrupt file), never around our own code.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from ..errors import bounded
from ..fileio import FileAccessError, require_regular_file
from ..ir import MAX_DELAY, DU_RANGE, DV_RANGE, IR_EXP_RANGE, LAVA_NUM_WEIGHT_BITS_RANGE, SIGN_MODES, ConvLayer, DenseLayer, InputEncoding, IRError, Layer, Network, Neurons, SigmaDeltaNeurons
from .netx_semantics import (
    EXTRA_GROUP,
    FORMAT_VERSION,
    IDECAY_RANGE,
    NETX_BIAS_EXP,
    NETX_SDNN_STATE_EXP,
    NETX_SPIKE_EXP,
    NOT_IMPLEMENTED_BY_NETX,
    SDNN_ACTIVATIONS,
    SPIKE_EXP_RANGE,
    READOUTS,
    SUPPORTED_TYPES,
    VDECAY_RANGE,
    VTH_MAX,
    VTH_RANGE,
    NetxExportError,
    NetxFormatError,
    _approx_values,
    _ir_bias,
    _ir_synapse,
    _is_integrator,
    _lava_sign_mode,
    _never_spikes,
    NETX_INTEGRATOR,
    _netx_dense_semantics,
    _synapses,
    ir_conv_weights,
    ir_dense_weights,
    neurons_from_netx,
    sigma_delta_from_netx,
)

__all__ = ["read_netx", "MAX_LAYERS", "MAX_LAYER_ELEMENTS", "MAX_TOTAL_ELEMENTS", "MAX_NDIM", "MAX_TIME_STEPS",
           "MAX_STRING_CHARS", "MAX_JSON_DEPTH", "MAX_INT_VALUE"]

PathLike = Union[str, os.PathLike]
CONV_SUM_LIMIT = 2**23 - 1      # Lava's PyConvModelFixed: signed_clamp(sum, 24 bits) wraps beyond this


# What one file may declare. Every size is checked from HDF5 metadata (a dataset's or attribute's declared
# shape and dtype) before anything is read or allocated: a 2 KB file can declare a (1, 1e5, 1e5) input, a
# per-channel bias over 10**9 neurons or an empty chunked weight dataset of 10**10 elements.
MAX_LAYERS = 256                # entries of 'layer' (and of 'neurodeploy/layers')
MAX_LAYER_ELEMENTS = 2**26      # elements of one dataset; neurons of one layer or of the input (64 Mi)
MAX_TOTAL_ELEMENTS = 2**27      # elements read from one file (datasets and neurons, all layers together)
MAX_NDIM = 8                    # entries of a declared shape
MAX_TIME_STEPS = 1_000_000      # 'neurodeploy' attribute time_steps and read_netx(time_steps=...)
MAX_STRING_CHARS = 1 << 20      # one string dataset or attribute (the metadata JSON included)
MAX_JSON_DEPTH = 64             # nesting of the metadata / input_encoding JSON
MAX_INT_VALUE = 2**31 - 1       # |weight|, |bias|: netx casts to int and Lava to int32
_SMALL = 64                     # elements of a scalar, pair or string dataset / attribute

# What h5py raises on a corrupt file or a datatype numpy has no equivalent for. Caught only around single
# h5py calls (``_Reader.h5``), never around our own code, so a bug of ours keeps its traceback.
_H5PY_ERRORS = (OSError, RuntimeError, KeyError, TypeError, ValueError)

_EXPECTED_KINDS = {"iuf": "real numbers", "iu": "integers", "SO": "a string", "biu": "a boolean"}
_KIND_NAMES = {"i": "integers", "u": "unsigned integers", "f": "floats", "b": "booleans", "S": "bytes",
               "O": "objects", "V": "compound or opaque", "U": "unicode", "M": "datetimes", "m": "timedeltas",
               "c": "complex numbers: the imaginary part would be lost"}


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 80 else text[:77] + "..."


def _h5_name(obj: Any, key: Optional[str] = None) -> str:
    try:
        base = str(obj.name or "")
    except _H5PY_ERRORS:
        base = "?"
    return base if key is None else f"{base.rstrip('/')}/{key}"


def _json_depth(text: str) -> int:
    """Deepest nesting of ``[``/``{`` in a JSON text (outside strings), without parsing it."""
    depth = peak = 0
    in_str = esc = False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            peak = max(peak, depth)
        elif ch in "]}":
            depth -= 1
    return peak


class _Reader:
    """Reads one file; every problem becomes a NetxFormatError naming file, layer and field."""

    def __init__(self, path: Path, f, spike_exp: int = NETX_SPIKE_EXP) -> None:
        self.input_neurons = None
        self.spike_exp = int(spike_exp)   # netx's Network(spike_exp=...): not in the file
        self.path = path
        self.f = f
        self.total = 0  # elements read or allocated so far (MAX_TOTAL_ELEMENTS)

    def error(self, message: str, layer: Optional[int] = None, field: Optional[str] = None,
              kind: Optional[str] = None) -> NetxFormatError:
        where = str(self.path)
        if layer is not None:
            where += f": layer {layer}" + (f" ({kind})" if kind else "")
        if field is not None:
            where += f": field '{field}'"
        return NetxFormatError(f"{where}: {message}", path=str(self.path), layer=layer, field=field)

    # ---------------------------------------------------------------- HDF5 access

    def h5(self, fn, what: str, layer: Optional[int] = None, field: Optional[str] = None,
           kind: Optional[str] = None):
        """``fn()``, one h5py call; h5py's errors (a corrupt file) become a NetxFormatError naming the object."""
        try:
            return fn()
        except _H5PY_ERRORS as exc:
            raise self.error(f"HDF5 object {bounded(what, 80)} cannot be read (a corrupt file or an HDF5 type "
                             f"numpy lacks; {type(exc).__name__}: {_one_line(exc)})", layer, field, kind) from None

    def spend(self, n: int, layer: Optional[int], field: Optional[str], kind: Optional[str]) -> None:
        self.total += int(n)
        if self.total > MAX_TOTAL_ELEMENTS:
            raise self.error(f"the file declares more than {MAX_TOTAL_ELEMENTS} elements in all (datasets and "
                             f"neurons; limit MAX_TOTAL_ELEMENTS); refusing to read it", layer, field, kind)

    def child(self, group, key: str, layer: Optional[int], field: Optional[str], kind: Optional[str], want: type):
        """``group[key]`` as ``want`` (h5py.Group or h5py.Dataset), or None if absent; only hard links."""
        import h5py

        what = _h5_name(group, key)
        noun = {h5py.Group: "group", h5py.Dataset: "dataset"}.get(want, "dataset or group")
        link = self.h5(lambda: group.get(key, getlink=True), what, layer, field, kind)
        if link is None:
            return None
        if not isinstance(link, h5py.HardLink):
            raise self.error(f"is a {type(link).__name__} (to another object or file); expected a plain {noun}, "
                             f"links are not followed", layer, field, kind)
        obj = self.h5(lambda: group[key], what, layer, field, kind)
        if not isinstance(obj, want):
            raise self.error(f"expected a {noun}, found a {type(obj).__name__}", layer, field, kind)
        return obj

    def check_dtype(self, dtype, kinds: str, size: int, layer, field, kind) -> None:
        import h5py

        ok = dtype.kind in kinds
        if dtype.kind == "O":
            ok = "O" in kinds and h5py.check_string_dtype(dtype) is not None
        if not ok:
            what = _KIND_NAMES.get(dtype.kind, f"kind {dtype.kind!r}")
            raise self.error(f"dtype {bounded(str(dtype), 60)} ({what}), expected "
                             f"{_EXPECTED_KINDS.get(kinds, 'another type')}", layer, field, kind)
        if dtype.kind == "S" and dtype.itemsize * size > MAX_STRING_CHARS:
            raise self.error(f"{size} strings of {dtype.itemsize} bytes, more than the limit of "
                             f"{MAX_STRING_CHARS} characters (MAX_STRING_CHARS)", layer, field, kind)

    def read(self, ds, layer: Optional[int], field: str, kind: Optional[str], kinds: str,
             max_size: Optional[int] = None, expect: str = ""):
        """A dataset's value, after checking its declared shape, dtype and storage (nothing big read before)."""
        max_size = MAX_LAYER_ELEMENTS if max_size is None else max_size
        what = _h5_name(ds)
        shape = self.h5(lambda: ds.shape, what, layer, field, kind)
        if shape is None:
            raise self.error("has an empty (null) dataspace, expected a value", layer, field, kind)
        size = math.prod(int(s) for s in shape)
        if size > max_size:
            limit = expect or (f"at most {max_size} elements" + (" (MAX_LAYER_ELEMENTS)"
                                                                 if max_size == MAX_LAYER_ELEMENTS else ""))
            raise self.error(f"declares shape {bounded(tuple(shape))} ({size} elements), expected {limit}",
                             layer, field, kind)
        self.check_dtype(self.h5(lambda: ds.dtype, what, layer, field, kind), kinds, size, layer, field, kind)
        virtual = self.h5(lambda: ds.is_virtual, what, layer, field, kind)
        external = self.h5(lambda: ds.id.get_create_plist().get_external_count(), what, layer, field, kind)
        if virtual or external:
            raise self.error("keeps its data in other files (virtual or external storage), expected the data "
                             "in this file", layer, field, kind)
        self.spend(size, layer, field, kind)
        return self.h5(lambda: ds[()], what, layer, field, kind)

    def dataset(self, group, key: str, layer: Optional[int], kind: Optional[str] = None, required: bool = True,
                field: Optional[str] = None, kinds: str = "iuf", max_size: Optional[int] = None,
                expect: str = ""):
        import h5py

        field = field or key
        ds = self.child(group, key, layer, field, kind, h5py.Dataset)
        if ds is None:
            if self.h5(lambda: key in group.attrs, _h5_name(group, key), layer, field, kind):
                raise self.error(f"'{key}' is an HDF5 attribute, but netx reads datasets only", layer, field, kind)
            if required:
                raise self.error("missing (netx needs this dataset)", layer, field, kind)
            return None
        return self.read(ds, layer, field, kind, kinds, max_size, expect)

    def string(self, group, key: str, layer: Optional[int], kind: Optional[str] = None,
               field: Optional[str] = None) -> str:
        key_field = field or key
        value = self.dataset(group, key, layer, kind, field=key_field, kinds="SO", max_size=_SMALL)
        if isinstance(value, np.ndarray):
            if value.size < 1:
                raise self.error("empty string array", layer, key_field, kind)
            value = value.reshape(-1)[0]
        if isinstance(value, (bytes, np.bytes_)):
            try:
                return bytes(value).decode("ascii")
            except UnicodeDecodeError:
                raise self.error(f"value {bounded(value)} is not ASCII", layer, key_field, kind) from None
        if isinstance(value, str):
            return value
        raise self.error(f"value {bounded(value)} is not a string (expected bytes such as b'dense')",
                         layer, key_field, kind)

    def _integral(self, arr: np.ndarray, layer, field, kind) -> list[int]:
        """The values of a small real array as Python ints; NaN, inf and fractions refused (no truncation)."""
        if arr.dtype.kind in "iu":
            return [int(v) for v in arr.reshape(-1)]
        out = []
        for v in arr.reshape(-1):
            x = float(v)
            if not math.isfinite(x):
                raise self.error(f"value {bounded(arr.tolist())} is not a finite number", layer, field, kind)
            if not x.is_integer():
                raise self.error(f"value {bounded(arr.tolist())} is not an integer", layer, field, kind)
            out.append(int(x))
        return out

    def integer(self, group, key: str, layer: int, kind: str, lo: Optional[int] = None, hi: Optional[int] = None,
                expected: str = "", field: Optional[str] = None) -> int:
        field = field or key
        value = self.dataset(group, key, layer, kind, field=field, max_size=1, expect="one number")
        arr = np.asarray(value)
        if arr.size != 1:
            raise self.error(f"value {bounded(value)} has shape {arr.shape}, expected one number", layer, field, kind)
        x = self._integral(arr, layer, field, kind)[0]
        if (lo is not None and x < lo) or (hi is not None and x > hi):
            rng = f"{lo if lo is not None else '-inf'}..{hi if hi is not None else 'inf'}"
            raise self.error(f"value {bounded(x)} is out of range, expected {expected or rng}", layer, field, kind)
        return x

    def int_pair(self, group, key: str, layer: int, kind: str, default: Optional[int] = None) -> tuple[int, int]:
        expect = "a non-negative integer or an (H, W) pair"
        value = self.dataset(group, key, layer, kind, required=default is None, max_size=2, expect=expect)
        if value is None:
            return (default, default)  # type: ignore[return-value]
        arr = np.asarray(value)
        if arr.size == 1:
            arr = np.repeat(arr.reshape(-1), 2)
        if arr.shape != (2,):
            raise self.error(f"value {bounded(value)}, expected {expect}", layer, key, kind)
        pair = self._integral(arr, layer, key, kind)
        if min(pair) < 0 or max(pair) > MAX_LAYER_ELEMENTS:
            raise self.error(f"value {pair}, expected {expect} (at most {MAX_LAYER_ELEMENTS})", layer, key, kind)
        return pair[0], pair[1]

    def shape(self, group, layer: int, kind: str, ndim: Optional[int] = None) -> tuple[int, ...]:
        expect = f"{ndim} positive integers (C, H, W)" if ndim else f"1..{MAX_NDIM} positive integers"
        value = self.dataset(group, "shape", layer, kind, max_size=MAX_NDIM, expect=expect)
        arr = np.atleast_1d(np.asarray(value))
        if arr.ndim != 1 or arr.size < 1:
            raise self.error(f"value {bounded(value)}, expected {expect}", layer, "shape", kind)
        dims = self._integral(arr, layer, "shape", kind)
        if min(dims) < 1:
            raise self.error(f"value {bounded(dims)}, expected positive integers", layer, "shape", kind)
        if ndim is not None and len(dims) != ndim:
            raise self.error(f"value {bounded(dims)} has {len(dims)} entries, expected {ndim} (C, H, W)",
                             layer, "shape", kind)
        n = math.prod(dims)
        if n > MAX_LAYER_ELEMENTS:
            raise self.error(f"value {bounded(dims)} declares {n} neurons, more than the limit of "
                             f"{MAX_LAYER_ELEMENTS} (MAX_LAYER_ELEMENTS)", layer, "shape", kind)
        self.spend(n, layer, "shape", kind)
        return tuple(dims)

    def int_array(self, group, key: str, layer: int, kind: str, required: bool = True) -> Optional[np.ndarray]:
        """A numeric dataset as int64: NaN, inf, fractions and |values| beyond 2**31 - 1 refused before the cast
        (netx would truncate fractions with ``astype(int)``; a file holding them is not a quantized network)."""
        value = self.dataset(group, key, layer, kind, required=required)
        if value is None:
            return None
        arr = np.asarray(value)
        if arr.size == 0:
            return arr.astype(np.int64)
        if arr.dtype.kind == "f":
            finite = np.isfinite(arr)
            if not finite.all():
                bad = tuple(int(i) for i in np.argwhere(~finite)[0]) if arr.ndim else ()
                raise self.error(f"value {arr[bad] if arr.ndim else arr!r} at index {list(bad)} is not finite "
                                 f"(expected finite numbers)", layer, key, kind)
            if np.abs(arr).max() > MAX_INT_VALUE:
                raise self.error(f"values up to {float(np.abs(arr).max())!r} overflow netx's int cast (expected "
                                 f"|value| <= {MAX_INT_VALUE})", layer, key, kind)
            frac = arr != np.trunc(arr)
            if frac.any():
                bad = tuple(int(i) for i in np.argwhere(frac)[0]) if arr.ndim else ()
                raise self.error(f"value {float(arr[bad])!r} at index {list(bad)} is not an integer (netx would "
                                 f"truncate it; expected the integer weights of a quantized network)",
                                 layer, key, kind)
        else:
            lo, hi = int(arr.min()), int(arr.max())
            if lo < -MAX_INT_VALUE or hi > MAX_INT_VALUE:
                raise self.error(f"values span {bounded(lo)}..{bounded(hi)}, expected |value| <= {MAX_INT_VALUE}",
                                 layer, key, kind)
        return arr.astype(np.int64)

    # ---------------------------------------------------------------- layers

    def neuron_value(self, ng, key: str, layer: int, kind: str, out_shape: tuple[int, ...], lo: int, hi: int,
                     expected: str):
        """``iDecay`` / ``vDecay`` / ``vThMant``: one integer, or netx's per-neuron array (dense: one value per
        neuron; conv: one per channel), returned as an int or an int64 array in the IR's (C, H, W) order."""
        field = f"neuron/{key}"
        n = math.prod(out_shape)
        value = self.dataset(ng, key, layer, kind, field=field, max_size=max(n, 1),
                             expect=f"one number or {n} (one per neuron)" if len(out_shape) == 1
                             else f"one number or {out_shape[0]} (one per channel)")
        arr = np.asarray(value)
        if arr.dtype.kind == "f":
            raise self.error(f"value {bounded(arr.tolist())} is a float ({arr.dtype}): netx hands it to Lava's "
                             f"LIF, whose integer shifts fail on floats (the process hangs); expected integers",
                             layer, field, kind)
        vals = np.asarray(self._integral(arr, layer, field, kind), dtype=np.int64)
        if vals.size and (int(vals.min()) < lo or int(vals.max()) > hi):
            bad = int(vals[(vals < lo) | (vals > hi)][0])
            raise self.error(f"value {bounded(bad)} is out of range, expected {expected}", layer, field, kind)
        if arr.ndim == 0 or (arr.size == 1 and n == 1):
            return int(vals.reshape(-1)[0])
        if len(out_shape) == 1:
            if arr.shape != (n,):
                raise self.error(f"shape {tuple(arr.shape)}, expected one number or ({n},), one per neuron "
                                 f"(netx passes the array to Lava's LIF as is)", layer, field, kind)
            return vals
        c, h, w = out_shape
        if arr.shape != (c,):
            raise self.error(f"shape {tuple(arr.shape)}, expected one number or ({c},), one per channel: netx "
                             f"passes the array to Lava's LIF as is, where it broadcasts against the (W, H, C) "
                             f"state only per channel (other shapes make the process fail and hang)",
                             layer, field, kind)
        return np.repeat(vals, h * w)

    def neurons(self, g, layer: int, kind: str, bias: np.ndarray, out_shape: tuple[int, ...]) -> Neurons:
        import h5py

        ng = self.child(g, "neuron", layer, "neuron", kind, h5py.Group)
        if ng is None:
            if kind not in ("dense", "dense_rec"):
                raise self.error("missing: netx substitutes its non-spiking integrator only for dense layers; "
                                 "expected a 'neuron' group with type CUBA, iDecay, vDecay, vThMant",
                                 layer, "neuron", kind)
            # netx's own output integrator (hdf5.py create_dense): CUBA iDecay 0, vDecay 4096,
            # vThMant 1 << 18 - 1 == 1 << 17 (never reached), plus the layer's bias
            return neurons_from_netx(NETX_INTEGRATOR["iDecay"], NETX_INTEGRATOR["vDecay"],
                                     NETX_INTEGRATOR["vThMant"], self.wrap_bias(bias, layer, kind))
        ntype = self.string(ng, "type", layer, kind, field="neuron/type")
        if ntype == "SDNN":
            return self.sigma_delta(g, ng, layer, kind, bias, False)
        if ntype not in ("CUBA", "LOIHI"):
            why = "netx builds no neuron for it or one this reader does not support"
            raise self.error(f"value {bounded(ntype)} is not supported ({why}); expected 'CUBA' (or 'LOIHI'), "
                             f"Loihi's current-based LIF", layer, "neuron/type", kind)
        if self.h5(lambda: "messageBits" in ng, _h5_name(ng, "messageBits"), layer, "neuron/messageBits", kind):
            raise self.error("present: netx 0.6.0 reads a 'messageBits' dataset as a group-like NetDict and "
                             "fails building the neuron (ValueError: setting an array element with a sequence); "
                             "expected no 'messageBits' (CUBA neurons send binary spikes)",
                             layer, "neuron/messageBits", kind)
        if self.h5(lambda: "gradedSpike" in ng, _h5_name(ng, "gradedSpike"), layer, "neuron/gradedSpike", kind):
            graded = self.dataset(ng, "gradedSpike", layer, kind, field="neuron/gradedSpike", kinds="biuf",
                                  max_size=1, expect="one boolean")
            if bool(np.asarray(graded).reshape(-1)[0]) if np.asarray(graded).size else False:
                warnings.warn(f"{self.path}: layer {layer} ({kind}): field 'neuron/gradedSpike': value True is "
                              f"ignored by netx, whose CUBA neurons send binary 0/1 spikes; read as binary "
                              f"spikes, as netx runs it", stacklevel=3)
        idecay = self.neuron_value(ng, "iDecay", layer, kind, out_shape, *IDECAY_RANGE,
                                   "0..4096 (du = iDecay - 1 in -1..4095; iDecay 0: the current never decays)")
        vdecay = self.neuron_value(ng, "vDecay", layer, kind, out_shape, *VDECAY_RANGE,
                                   "0..4096 (dv = vDecay; 4096: v keeps nothing)")
        vth = self.neuron_value(ng, "vThMant", layer, kind, out_shape, 0, VTH_RANGE[1],
                                f"0..{VTH_RANGE[1]} (vth << 6 within int32; above 131071 v never reaches it)")
        return neurons_from_netx(idecay, vdecay, vth, self.wrap_bias(bias, layer, kind))

    def sigma_delta(self, g, ng, layer: int, kind: str, bias: np.ndarray, is_input: bool) -> SigmaDeltaNeurons:
        """An ``SDNN`` neuron as netx builds it (``get_neuron_params``): Delta for the input layer, Sigma for a
        ``sigma_output`` key, else SigmaDelta (ReLU); what netx cannot run exactly is refused."""
        if self.h5(lambda: "messageBits" in ng, _h5_name(ng, "messageBits"), layer, "neuron/messageBits", kind):
            raise self.error("present: netx 0.6.0 reads a 'messageBits' dataset as a group-like NetDict and "
                             "fails building the next synapse; expected no 'messageBits' (SDNN neurons send "
                             "16-bit graded messages)", layer, "neuron/messageBits", kind)
        if self.h5(lambda: "activation" in ng, _h5_name(ng, "activation"), layer, "neuron/activation", kind):
            act = self.string(ng, "activation", layer, kind, field="neuron/activation")
            if act.lower() not in SDNN_ACTIVATIONS:
                raise self.error(f"value {bounded(act)} is not run by netx, which never passes an activation to "
                                 f"Lava's sigma-delta processes (they run ReLU); expected 'relu'",
                                 layer, "neuron/activation", kind)
        sigma = not is_input and self.h5(lambda: "sigma_output" in ng, _h5_name(ng, "sigma_output"), layer,
                                         "neuron/sigma_output", kind)
        if sigma:
            flag = np.asarray(self.dataset(ng, "sigma_output", layer, kind, field="neuron/sigma_output",
                                           kinds="biuf", max_size=1, expect="one boolean"))
            if flag.size != 1 or not bool(flag.reshape(-1)[0]):
                raise self.error(f"value {bounded(flag.tolist())}: netx builds a Sigma output for any "
                                 f"'sigma_output' key, false included; expected True (or no key for a "
                                 f"SigmaDelta layer)", layer, "neuron/sigma_output", kind)
            if self.h5(lambda: "bias" in g, _h5_name(g, "bias"), layer, "bias", kind):
                raise self.error("present on a sigma_output layer: netx passes it to Lava's Sigma, which takes "
                                 "no bias (netx fails building the network); expected no 'bias'",
                                 layer, "bias", kind)
            return sigma_delta_from_netx("sigma", 0, np.zeros_like(bias), self.spike_exp)
        k = 1 << (self.spike_exp + NETX_SDNN_STATE_EXP)
        value = np.asarray(self.dataset(ng, "vThMant", layer, kind, field="neuron/vThMant", max_size=64,
                                        expect="one number"))
        if value.size != 1:
            raise self.error(f"shape {tuple(value.shape)}, expected one number: netx passes vThMant to Lava's "
                             f"{'Delta' if is_input else 'SigmaDelta'}, whose threshold Var has shape (1,) (an "
                             f"array fails to broadcast and the process hangs)", layer, "neuron/vThMant", kind)
        vth = self._integral(value, layer, "neuron/vThMant", kind)[0]
        vmax = (2**31 - 1) // k
        if not 0 <= vth <= vmax:
            raise self.error(f"value {bounded(vth)} is out of range, expected 0..{vmax} (Lava stores vThMant << "
                             f"{self.spike_exp + NETX_SDNN_STATE_EXP} (spike_exp {self.spike_exp} + state_exp "
                             f"{NETX_SDNN_STATE_EXP}) as int32)", layer, "neuron/vThMant", kind)
        if is_input:
            return sigma_delta_from_netx("delta", vth, np.zeros_like(bias), self.spike_exp)
        if kind == "dense_rec":
            raise self.error("value 'SDNN' on a dense_rec layer is not supported (a recurrent sigma-delta layer); "
                             "expected 'CUBA' or 'LOIHI' for dense_rec", layer, "neuron/type", kind)
        scaled = bias.astype(np.int64) * k
        wrapped = ((scaled + 2**31) % 2**32) - 2**31
        if np.any(wrapped != scaled):
            idx = int(np.argwhere(wrapped != scaled)[0][0])
            warnings.warn(f"{self.path}: layer {layer} ({kind}): field 'bias': value {int(bias[idx])} (neuron "
                          f"{idx}) times {k} wraps to {int(wrapped[idx])}: Lava's SigmaDelta scales the int32 "
                          f"bias in int32; the emulator runs the wrapped value as Lava does", stacklevel=4)
        return sigma_delta_from_netx("sigma_delta", vth, bias.astype(np.int64), self.spike_exp)

    def wrap_bias(self, bias: np.ndarray, layer: int, kind: str) -> np.ndarray:
        wrapped = ((bias + 2**15) % 2**16) - 2**15
        if np.any(wrapped != bias):
            idx = int(np.argwhere(wrapped != bias)[0][0])
            warnings.warn(f"{self.path}: layer {layer} ({kind}): field 'bias': value {int(bias[idx])} (neuron "
                          f"{idx}) wraps to {int(wrapped[idx])}: Lava's LIF stores bias_mant as int16; the IR "
                          f"holds the wrapped values Lava runs", stacklevel=4)
        return wrapped.astype(np.int64)

    def dense(self, g, layer: int, kind: str, in_shape: tuple[int, ...]) -> DenseLayer:
        out = math.prod(self.shape(g, layer, kind))
        n_in = math.prod(in_shape)
        import h5py

        if isinstance(self.child(g, "weight", layer, "weight", kind, h5py.HLObject), h5py.Group):
            raise self.error("complex (weight/real, weight/imag) synapses are not supported, expected a real "
                             "weight dataset", layer, "weight", kind)
        parts = []
        for key, cols in (("weight", n_in), ("weight_rec", out)) if kind == "dense_rec" else (("weight", n_in),):
            w = self.int_array(g, key, layer, kind)
            if w.ndim == 1 and w.size == out * cols:
                w = w.reshape(out, cols)  # netx reshapes 1-D weights to (out, -1)
            if w.shape != (out, cols):
                raise self.error(f"shape {tuple(w.shape)}, expected {(out, cols)} (out, in) for {out} neurons and "
                                 f"{cols} inputs", layer, key, kind)
            parts.append(w)
        delay = self.delay(g, layer, kind, out, n_in)
        bias = self.bias(g, layer, kind, (out,))
        nrn = self.neurons(g, layer, kind, bias, (out,))
        if delay is not None and isinstance(nrn, SigmaDeltaNeurons):
            if np.any(delay):
                raise self.error(f"delays (max {int(delay.max())}) on a sigma-delta layer are not supported (netx "
                                 f"builds a DelayDense with graded input; not mapped here); expected none or 0",
                                 layer, "delay", kind)
            delay = None                         # all zero: Lava's DelayDense computes what Dense does
        try:
            canon, rep = _netx_dense_semantics(parts)
        except ValueError as exc:
            raise self.error(f"values in [{min(int(p.min()) for p in parts)}, {max(int(p.max()) for p in parts)}]: "
                             f"{exc}", layer, "weight", kind) from None
        if rep["clipped"]:
            warnings.warn(f"{self.path}: layer {layer}: netx clips mixed-sign weights to [-256, 254]; "
                          f"the IR holds the clipped weights", stacklevel=3)
        else:
            # netx's optimize_weight_bits and Lava's own sign mode, clip and truncation can change stored
            # weights (inhibitory -128 * 2**k: netx scales to -256, Lava clips to -255 and truncates)
            for key, w, (c, e) in zip(("weight", "weight_rec"), parts, canon):
                scaled = w.astype(np.int64) << -e
                if not np.array_equal(scaled, c):
                    idx = tuple(int(v) for v in np.argwhere(scaled != c)[0])
                    runs = f"{int(c[idx])}" if e == 0 else f"{int(c[idx])} * 2**{e}"
                    warnings.warn(f"{self.path}: layer {layer} ({kind}): field '{key}': value {int(w[idx])} at "
                                  f"{list(idx)} runs as {runs} in netx + Lava (netx's optimize_weight_bits, then "
                                  f"Lava's sign mode, clip and truncation); the IR holds what Lava runs",
                                  stacklevel=3)
        # Prefer the plain representation (exponent 0, 8 bits) where it is exact, else netx's own.
        try:
            ws, exp, nbits, sm = ir_dense_weights(canon, rep)
        except ValueError as exc:
            raise self.error(str(exc), layer, "weight_rec", kind) from None
        if isinstance(nrn, SigmaDeltaNeurons) and len(parts) == 1:
            # graded input: Lava's int32 dot runs on netx's scaled weights; keep netx's representation (the
            # same effective weights) so that even a wrapping sum is Lava's
            w_opt = rep["weights"][0]
            sm_opt = _lava_sign_mode(w_opt)
            if rep["num_weight_bits"] <= 8 or sm_opt == "mixed":
                ws, exp, nbits, sm = [w_opt], rep["weight_exp"], rep["num_weight_bits"], sm_opt
        return DenseLayer(weight=ws[0], neurons=nrn, weight_exp=exp, num_weight_bits=nbits, sign_mode=sm,
                          weight_rec=ws[1] if len(ws) > 1 else None, weight_rec_exp=exp,
                          name=f"layer/{layer}", delay=delay)

    def delay(self, g, layer: int, kind: str, out: int, n_in: int) -> Optional[np.ndarray]:
        """A dense layer's ``delay`` as netx builds Lava's DelayDense from it: (out, in) per synapse, or None for
        none / all zero. netx takes a scalar, one value per output neuron (checked first) or one per input."""
        if not self.h5(lambda: "delay" in g, _h5_name(g, "delay"), layer, "delay", kind):
            return None
        d = self.int_array(g, "delay", layer, kind)
        if d.size == 0 or not np.any(d != 0):
            return None
        if kind == "dense_rec":
            raise self.error(f"delays (max {int(d.max())}) on a recurrent layer: netx builds both DelayDense "
                             f"synapses without the weight exponent (weights 2**sb too large), expected none or 0",
                             layer, "delay", kind)
        if int(d.min()) < 0:
            raise self.error(f"value {int(d.min())}, expected delays >= 0 (Lava's DelayDense raises)",
                             layer, "delay", kind)
        if d.size == 1:
            m = np.full((out, n_in), int(d.reshape(-1)[0]), dtype=np.int64)
        elif d.ndim == 1 and d.size == out:
            m = np.repeat(d.astype(np.int64)[:, None], n_in, axis=1)
        elif d.ndim == 1 and d.size == n_in:
            m = np.repeat(d.astype(np.int64)[None, :], out, axis=0)
        else:
            raise self.error(f"shape {tuple(d.shape)}, expected a scalar, ({out},) per neuron or ({n_in},) per "
                             f"input (netx raises otherwise)", layer, "delay", kind)
        if int(m.max()) > MAX_DELAY:
            warnings.warn(f"{self.path}: layer {layer} ({kind}): field 'delay': value {int(m.max())}: netx clips "
                          f"delays to 0..{MAX_DELAY}; the IR holds the clipped delays", stacklevel=4)
            m = np.minimum(m, MAX_DELAY)
        return m

    def conv(self, g, layer: int, kind: str, in_shape: tuple[int, ...]) -> ConvLayer:
        if len(in_shape) != 3:
            raise self.error(f"the input of a conv layer has shape {in_shape}, expected (C, H, W); give the file "
                             f"an 'input' layer 0 with a 3-entry shape", layer, "shape", kind)
        out_shape = self.shape(g, layer, kind, ndim=3)
        w = self.int_array(g, "weight", layer, kind)
        if w.ndim == 5 and w.shape[4] == 1:
            w = w[..., 0]  # slayer's trailing time axis
        groups = self.integer(g, "groups", layer, kind, 1, None, ">= 1")
        if w.ndim != 4 or w.shape[0] != out_shape[0] or w.shape[1] * groups != in_shape[0]:
            raise self.error(f"shape {tuple(w.shape)}, expected ({out_shape[0]}, {in_shape[0] // max(groups, 1)}, "
                             f"kH, kW) (out channels, in channels / groups, kernel H, W)", layer, "weight", kind)
        stride = self.int_pair(g, "stride", layer, kind)
        padding = self.int_pair(g, "padding", layer, kind)
        dilation = self.int_pair(g, "dilation", layer, kind)
        if min(stride) < 1 or min(dilation) < 1:
            raise self.error(f"stride {stride} / dilation {dilation} must be >= 1", layer, "stride", kind)
        c, h, wd = out_shape
        if self.h5(lambda: "delay" in g, _h5_name(g, "delay"), layer, "delay", kind):
            d = self.int_array(g, "delay", layer, kind)
            if d.size and np.any(d != 0):
                raise self.error(f"delays (max {int(d.max())}) on a conv layer: netx ignores them (Lava 0.10 has "
                                 f"no delayed Conv), so the file does not run as written; expected none or 0",
                                 layer, "delay", kind)
        bias = self.bias(g, layer, kind, out_shape)
        nrn = self.neurons(g, layer, kind, bias, out_shape)
        # Lava's Conv uses the stored integers as they are; find an exact IR representation.
        try:
            weight, exp, nbits, sm = ir_conv_weights(w)
        except ValueError as exc:
            raise self.error(str(exc), layer, "weight", kind) from None
        # Lava's Conv wraps its sums to 24 bits (signed_clamp), the IR's conv does not: refuse what could wrap.
        # Inputs are binary (netx's input_message_bits 0, or a CUBA population's spikes), so a sum is at most the
        # sum of one output channel's |weights|.
        reach = int(np.abs(w.astype(np.int64)).reshape(w.shape[0], -1).sum(axis=1).max(initial=0))
        if reach > CONV_SUM_LIMIT:
            raise self.error(f"one output's binary-input sum can reach {reach}, beyond {CONV_SUM_LIMIT} where "
                             f"Lava's Conv (netx) wraps it to 24 bits; the IR's conv does not wrap, so it is not "
                             f"run", layer, "weight", kind)
        layer_ir = ConvLayer(weight=weight, neurons=nrn, in_shape=tuple(in_shape), stride=stride, padding=padding,
                             dilation=dilation, groups=groups, weight_exp=exp, num_weight_bits=nbits, sign_mode=sm,
                             name=f"layer/{layer}")
        if tuple(layer_ir.out_shape) != tuple(out_shape):
            raise self.error(f"value {list(out_shape)}, but a {w.shape[2]}x{w.shape[3]} kernel with stride {stride}, "
                             f"padding {padding}, dilation {dilation} on input {list(in_shape)} gives "
                             f"{list(layer_ir.out_shape)}", layer, "shape", kind)
        return layer_ir

    def bias(self, g, layer: int, kind: str, out_shape: tuple[int, ...]) -> np.ndarray:
        n = math.prod(out_shape)
        b = self.int_array(g, "bias", layer, kind, required=False)
        if b is None:
            return np.zeros(n, dtype=np.int64)
        if len(out_shape) == 1:
            if b.size == 1:
                return np.full(n, int(b.reshape(-1)[0]), dtype=np.int64)
            if b.shape == (n,):
                return b
            raise self.error(f"shape {tuple(b.shape)}, expected ({n},) or a scalar", layer, "bias", kind)
        c, h, w = out_shape
        if b.shape == (w, h, c):  # per neuron, Lava's (W, H, C) layout
            return b.transpose(2, 1, 0).reshape(-1)
        if b.ndim >= 1 and b.shape[0] == c and b.size == c:  # per channel
            return np.repeat(b.reshape(c), h * w)
        raise self.error(f"shape {tuple(b.shape)}, expected ({c},) per channel or {(w, h, c)} per neuron "
                         f"(Lava's W, H, C order)", layer, "bias", kind)

    # ---------------------------------------------------------------- network

    def layer_group(self, parent, name: str, field: str) -> tuple[Any, int]:
        """A group of numbered entries (``layer``, ``neurodeploy/layers``) and its size, at most MAX_LAYERS."""
        import h5py

        g = self.child(parent, name, None, field, None, h5py.Group)
        if g is None:
            return None, 0
        n = self.h5(lambda: len(g), _h5_name(g), field=field)
        if n > MAX_LAYERS:
            raise self.error(f"{n} layer entries, more than the limit of {MAX_LAYERS} (MAX_LAYERS)", field=field)
        return g, n

    def netx_network(self) -> tuple[tuple[int, ...], list[Layer], list[int]]:
        """The layers netx would build; returns input shape, IR layers and their netx indices."""
        import h5py

        lg, n = self.layer_group(self.f, "layer", "layer")
        if lg is None:
            raise self.error("missing 'layer' group: not a netx network description", field="layer")
        keys = self.h5(lambda: [str(k) for k in lg.keys()], "/layer", field="layer")
        expected = [str(i) for i in range(len(keys))]
        if sorted(keys, key=lambda k: (len(k), k)) != expected:
            raise self.error(f"layer entries {bounded(sorted(keys))}, expected consecutive indices 0..{len(keys) - 1} "
                             f"(netx reads layer[i] for i in range(len(layer)))", field="layer")
        if not keys:
            raise self.error("no layers", field="layer")
        in_shape: Optional[tuple[int, ...]] = None
        layers: list[Layer] = []
        indices: list[int] = []
        flatten_next = False
        prev_kind = None
        for i in range(len(keys)):
            g = self.child(lg, str(i), i, None, None, h5py.Group)
            kind = self.string(g, "type", i)
            if kind in NOT_IMPLEMENTED_BY_NETX or kind not in SUPPORTED_TYPES:
                why = "netx 0.6.0 raises NotImplementedError for it" if kind in NOT_IMPLEMENTED_BY_NETX \
                    else "unknown layer type"
                raise self.error(f"value {bounded(kind)} is not supported ({why}); expected one of "
                                 f"{', '.join(SUPPORTED_TYPES)}", i, "type", kind if len(kind) <= 16 else None)
            if kind == "input":
                if i != 0:
                    raise self.error("an input layer must be layer 0", i, "type", kind)
                in_shape = self.shape(g, i, kind)
                if self.h5(lambda: "neuron" in g, _h5_name(g, "neuron"), i, "neuron", kind):
                    ng = self.child(g, "neuron", i, "neuron", kind, h5py.Group)
                    ntype = self.string(ng, "type", i, kind, field="neuron/type") if ng is not None else "?"
                    if ntype == "SDNN":   # netx's Input block with a Delta encoder, fed through its a_in
                        self.input_neurons = self.sigma_delta(g, ng, i, kind, np.zeros(math.prod(in_shape),
                                                                                       np.int64), True)
                        continue
                    if ntype not in ("CUBA", "LOIHI"):
                        raise self.error(f"an input layer with a neuron of type {bounded(ntype)} (netx builds "
                                         f"an input neuron population) is not supported yet; expected 'CUBA', "
                                         f"'LOIHI', 'SDNN' or only 'shape'", i, "neuron", kind)
                    # netx's Input block: a LIF of the input shape, no synapse, bias 0 (the file's
                    # weight/bias are only netx's transform metadata); the user sets its bias per sample
                    self.input_neurons = self.neurons(g, i, kind, np.zeros(math.prod(in_shape), np.int64),
                                                      tuple(in_shape))
            elif kind == "flatten":
                flatten_next = True
            else:
                cur: Optional[tuple[int, ...]] = layers[-1].out_shape if layers else in_shape
                if kind == "conv":
                    if flatten_next:
                        raise self.error("a flatten layer must be followed by a dense layer", i, "type", kind)
                    if cur is None:
                        raise self.error("the input shape is unknown: a conv first layer needs an 'input' layer 0 "
                                         "with shape (C, H, W)", i, "shape", kind)
                    layer = self.conv(g, i, kind, cur)
                else:
                    if cur is None:
                        ds = self.child(g, "weight", i, "weight", kind, h5py.Dataset)
                        wshape = self.h5(lambda: ds.shape, _h5_name(ds), i, "weight", kind) if ds is not None \
                            else None
                        if wshape is None or len(wshape) != 2 or not 1 <= wshape[1] <= MAX_LAYER_ELEMENTS:
                            raise self.error(f"shape {bounded(wshape)}: the input size of a first dense layer "
                                             f"without an input layer comes from a 2-D (out, in) weight with "
                                             f"1..{MAX_LAYER_ELEMENTS} inputs", i, "weight", kind)
                        cur = (int(wshape[1]),)
                        in_shape = cur
                    if prev_kind == "conv" and not flatten_next:
                        raise self.error("a dense layer after a conv layer needs a 'flatten' layer between them "
                                         "(netx connects (W, H, C) to a vector only through flatten)", i, "type", kind)
                    layer = self.dense(g, i, kind, cur)
                    flatten_next = False
                layers.append(layer)
                indices.append(i)
                prev_kind = kind
        if not layers:
            raise self.error("no dense or conv layers", field="layer")
        assert in_shape is not None
        self.check_one_neuron_family(layers, indices)
        return in_shape, layers, indices

    def check_one_neuron_family(self, layers: list[Layer], indices: list[int]) -> None:
        """Sigma-delta (SDNN) and CUBA neurons do not mix here (netx would run the mix; our backends do not)."""
        pops = ([(0, "input", self.input_neurons)] if self.input_neurons is not None else []) + \
            [(i, layer.kind, layer.neurons) for i, layer in zip(indices, layers)]
        first = isinstance(pops[0][2], SigmaDeltaNeurons)
        for i, kind, nrn in pops[1:]:
            if isinstance(nrn, SigmaDeltaNeurons) != first:
                have, other = ("'SDNN'", "CUBA") if not first else ("a CUBA neuron", "SDNN")
                raise self.error(f"value {have} in a network whose layer {pops[0][0]} has {other} neurons: "
                                 f"sigma-delta and CUBA layers in one network are not supported; expected "
                                 f"{other} neurons throughout", i, "neuron/type", kind)

    # ---------------------------------------------------------------- the 'neurodeploy' group (attributes)

    def attr(self, obj, name: str, field: str, kinds: str, max_size: int = 1, required: bool = True):
        """An attribute's value after checking its declared shape and dtype; None if absent and not required."""
        what = f"{_h5_name(obj)}@{name}"
        if not self.h5(lambda: name in obj.attrs, what, field=field):
            if required:
                raise self.error("missing attribute", field=field)
            return None
        aid = self.h5(lambda: obj.attrs.get_id(name), what, field=field)
        shape = self.h5(lambda: aid.shape, what, field=field)
        if shape is None:
            raise self.error("has an empty (null) dataspace, expected a value", field=field)
        size = math.prod(int(s) for s in shape)
        if not 1 <= size <= max_size:
            raise self.error(f"declares shape {bounded(tuple(shape))} ({size} elements), expected 1.."
                             f"{max_size}", field=field)
        self.check_dtype(self.h5(lambda: aid.dtype, what, field=field), kinds, size, None, field, None)
        return self.h5(lambda: obj.attrs[name], what, field=field)

    def attr_int(self, obj, name: str, field: str, lo: int, hi: Optional[int], expected: str = "") -> int:
        value = self.attr(obj, name, field, "iuf")
        arr = np.asarray(value)
        if arr.dtype.kind == "f":
            raise self.error(f"value {bounded(value)} ({arr.dtype}), expected an integer", field=field)
        x = int(arr.reshape(-1)[0])
        if x < lo or (hi is not None and x > hi):
            rng = expected or (f"{lo}..{hi}" if hi is not None else f">= {lo}")
            raise self.error(f"value {bounded(x)} is out of range, expected {rng}", field=field)
        return x

    def attr_bool(self, obj, name: str, field: str, default: bool) -> bool:
        value = self.attr(obj, name, field, "biu", required=False)
        if value is None:
            return default
        x = np.asarray(value).reshape(-1)[0]
        if x.dtype.kind != "b" and int(x) not in (0, 1):
            raise self.error(f"value {bounded(value)}, expected a boolean", field=field)
        return bool(x)

    def attr_ints(self, obj, name: str, field: str, n: Optional[int], lo: int) -> tuple[int, ...]:
        expect = f"{n if n is not None else f'1..{MAX_NDIM}'} integers >= {lo}"
        value = self.attr(obj, name, field, "iu", max_size=n or MAX_NDIM)
        arr = np.atleast_1d(np.asarray(value))
        vals = [int(v) for v in arr.reshape(-1)]
        if arr.ndim != 1 or not vals or (n is not None and len(vals) != n) or min(vals) < lo \
                or max(vals) > MAX_LAYER_ELEMENTS:
            raise self.error(f"value {bounded(vals)}, expected {expect} (at most {MAX_LAYER_ELEMENTS})", field=field)
        return tuple(vals)

    def attr_str(self, obj, name: str, field: str, default: Optional[str] = None) -> str:
        value = self.attr(obj, name, field, "SO", required=default is None)
        if value is None:
            return default  # type: ignore[return-value]
        if isinstance(value, np.ndarray):
            value = value.reshape(-1)[0]
        if isinstance(value, (bytes, np.bytes_)):
            try:
                value = bytes(value).decode("utf8")
            except UnicodeDecodeError:
                raise self.error(f"value {bounded(value)} is not UTF-8 text", field=field) from None
        if not isinstance(value, str):
            raise self.error(f"value {bounded(value)}, expected a string", field=field)
        try:
            value.encode("utf8")
        except UnicodeEncodeError:  # h5py decodes invalid bytes of variable-length strings to surrogates
            raise self.error(f"value {bounded(value)} is not UTF-8 text", field=field) from None
        if len(value) > MAX_STRING_CHARS:
            raise self.error(f"a string of {len(value)} characters, more than the limit of {MAX_STRING_CHARS} "
                             f"(MAX_STRING_CHARS)", field=field)
        return value

    def attr_json(self, obj, name: str, field: str) -> Any:
        text = self.attr_str(obj, name, field)
        depth = _json_depth(text)
        if depth > MAX_JSON_DEPTH:
            raise self.error(f"JSON nested {depth} levels deep, more than the limit of {MAX_JSON_DEPTH} "
                             f"(MAX_JSON_DEPTH)", field=field)
        try:
            return json.loads(text)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, a 5,000-digit integer
            raise self.error(f"value {bounded(text, 60)} is not valid JSON ({_one_line(exc)})", field=field) from None

    def input_encoding(self, g) -> InputEncoding:
        field = f"{EXTRA_GROUP}/input_encoding"
        enc = self.attr_json(g, "input_encoding", field)
        if not isinstance(enc, dict) or sorted(enc) != ["bits", "kind", "scale"]:
            raise self.error(f"value {bounded(enc)}, expected a JSON object with kind, bits and scale", field=field)
        kind, bits, scale = enc["kind"], enc["bits"], enc["scale"]
        if kind not in ("graded", "spikes"):
            raise self.error(f"kind {bounded(kind)}, expected 'graded' or 'spikes'", field=field)
        if type(bits) is not int or not 1 <= bits <= 32:
            raise self.error(f"bits {bounded(bits)}, expected an integer 1..32", field=field)
        if type(scale) not in (int, float) or not 0 < scale <= 2**53:  # NaN fails too
            raise self.error(f"scale {bounded(scale)}, expected a finite number > 0 (at most 2**53)", field=field)
        return InputEncoding(kind=kind, bits=bits, scale=float(scale))

    def extras(self, in_shape: tuple[int, ...], netx_layers: list[Layer], indices: list[int]) -> Optional[Network]:
        import h5py

        g = self.child(self.f, EXTRA_GROUP, None, EXTRA_GROUP, None, h5py.Group)
        if g is None:
            return None
        src = f"group '{EXTRA_GROUP}'"
        self.attr_int(g, "format_version", f"{EXTRA_GROUP}/format_version", FORMAT_VERSION, FORMAT_VERSION,
                                f"{FORMAT_VERSION} (a different version: written by a newer neurodeploy?)")
        readout = self.attr_str(g, "readout", f"{EXTRA_GROUP}/readout", "spikes")  # older files: spikes
        if readout not in READOUTS:
            raise self.error(f"readout {bounded(readout)}, expected one of {READOUTS}", field=f"{EXTRA_GROUP}/readout")
        input_shape = self.attr_ints(g, "input_shape", f"{EXTRA_GROUP}/input_shape", None, 1)
        if math.prod(input_shape) > MAX_LAYER_ELEMENTS:
            raise self.error(f"value {list(input_shape)} declares more than {MAX_LAYER_ELEMENTS} inputs "
                             f"(MAX_LAYER_ELEMENTS)", field=f"{EXTRA_GROUP}/input_shape")
        network = Network(
            input_shape=input_shape, layers=[],
            time_steps=self.attr_int(g, "time_steps", f"{EXTRA_GROUP}/time_steps", 1, MAX_TIME_STEPS,
                                     f"1..{MAX_TIME_STEPS} (MAX_TIME_STEPS)"),
            input_encoding=self.input_encoding(g), profile=self.attr_str(g, "profile", f"{EXTRA_GROUP}/profile"),
            metadata=self.attr_json(g, "metadata", f"{EXTRA_GROUP}/metadata"), readout=readout)
        if not isinstance(network.metadata, dict):
            raise self.error(f"value {bounded(network.metadata)}, expected a JSON object",
                             field=f"{EXTRA_GROUP}/metadata")
        lg, n = self.layer_group(g, "layers", f"{EXTRA_GROUP}/layers")
        if lg is None:
            raise self.error("missing group", field=f"{EXTRA_GROUP}/layers")
        if n != len(netx_layers):
            raise self.error(f"{n} layers, but the netx part has {len(netx_layers)}", field=f"{EXTRA_GROUP}/layers")
        exact_flags = []
        for k in range(n):
            layer, exact = self.extra_layer(lg, k)
            network.layers.append(layer)
            exact_flags.append(exact)
        try:
            network.validate(f"{self.path}: {src}")
        except IRError as exc:
            raise NetxFormatError(f"{exc}", path=str(self.path), field=EXTRA_GROUP) from None
        self.check_same(network, in_shape, netx_layers, indices, exact_flags)
        return network

    def extra_layer(self, lg, k: int) -> tuple[Layer, bool]:
        """Layer ``k`` of the ``neurodeploy/layers`` group and its ``netx_exact`` flag: attributes checked
        first, then its arrays read."""
        import h5py

        base = f"{EXTRA_GROUP}/layers/{k}"
        e = self.child(lg, str(k), None, base, None, h5py.Group)
        if e is None:
            raise self.error(f"missing (expected entries 0..{len(lg) - 1})", field=base)
        exact = self.attr_bool(e, "netx_exact", f"{base}/netx_exact", True)
        kind = self.attr_str(e, "kind", f"{base}/kind")
        if kind not in ("dense", "dense_rec", "conv"):
            raise self.error(f"layer kind {bounded(kind)}, expected dense, dense_rec or conv", field=f"{base}/kind")
        common = dict(
            name=self.attr_str(e, "name", f"{base}/name"),
            sign_mode=self.attr_str(e, "sign_mode", f"{base}/sign_mode"),
            weight_exp=self.attr_int(e, "weight_exp", f"{base}/weight_exp", *IR_EXP_RANGE),
            num_weight_bits=self.attr_int(e, "num_weight_bits", f"{base}/num_weight_bits",
                                          *LAVA_NUM_WEIGHT_BITS_RANGE))
        if common["sign_mode"] not in SIGN_MODES:
            raise self.error(f"value {bounded(common['sign_mode'])}, expected one of {SIGN_MODES}",
                             field=f"{base}/sign_mode")
        ng = self.child(e, "neurons", None, f"{base}/neurons", None, h5py.Group)
        if ng is None:
            raise self.error("missing group", field=f"{base}/neurons")
        scalars = {}
        for key, lo, hi in (("du", *DU_RANGE), ("dv", *DV_RANGE), ("vth", *VTH_RANGE), ("bias_exp", *IR_EXP_RANGE)):
            if key != "bias_exp" and self.h5(lambda: key in ng, _h5_name(ng, key), field=f"{base}/neurons/{key}"):
                arr = np.asarray(self.dataset(ng, key, None, field=f"{base}/neurons/{key}", kinds="iu"))
                if arr.ndim != 1 or (arr.size and (int(arr.min()) < lo or int(arr.max()) > hi)):
                    raise self.error(f"shape {bounded(arr.shape)}, values expected one per neuron in {lo}..{hi}",
                                     field=f"{base}/neurons/{key}")
                scalars[key] = arr.astype(np.int64)   # per neuron
            else:
                scalars[key] = self.attr_int(ng, key, f"{base}/neurons/{key}", lo, hi)
        if kind == "conv":
            conv = dict(in_shape=self.attr_ints(e, "in_shape", f"{base}/in_shape", 3, 1),
                        stride=self.attr_ints(e, "stride", f"{base}/stride", 2, 1),
                        padding=self.attr_ints(e, "padding", f"{base}/padding", 2, 0),
                        dilation=self.attr_ints(e, "dilation", f"{base}/dilation", 2, 1),
                        groups=self.attr_int(e, "groups", f"{base}/groups", 1, MAX_LAYER_ELEMENTS))
        else:
            rec_exp = self.attr_int(e, "weight_rec_exp", f"{base}/weight_rec_exp", *IR_EXP_RANGE)
            has_rec = self.h5(lambda: "weight_rec" in e, _h5_name(e, "weight_rec"), field=f"{base}/weight_rec")
            if has_rec != (kind == "dense_rec"):
                raise self.error(f"kind {kind} {'with' if has_rec else 'without'} a weight_rec dataset",
                                 field=f"{base}/weight_rec")

        def ints(group, key: str, ndim: int) -> np.ndarray:
            field = f"{base}/{key}" if group is e else f"{base}/neurons/{key}"
            arr = np.asarray(self.dataset(group, key, None, field=field, kinds="iu"))
            if arr.ndim != ndim:
                raise self.error(f"shape {bounded(arr.shape)}, expected {ndim} dimensions", field=field)
            return arr

        bias = ints(ng, "bias_mant", 1)
        nrn = Neurons(bias_mant=bias, **scalars)
        if kind == "conv":
            return ConvLayer(weight=ints(e, "weight", 4), neurons=nrn, **conv, **common), exact
        has_delay = self.h5(lambda: "delay" in e, _h5_name(e, "delay"), field=f"{base}/delay")
        return DenseLayer(weight=ints(e, "weight", 2), neurons=nrn, weight_rec=ints(e, "weight_rec", 2)
                          if kind == "dense_rec" else None, weight_rec_exp=rec_exp,
                          delay=ints(e, "delay", 2) if has_delay else None, **common), exact

    def check_same(self, network: Network, in_shape, netx_layers: list[Layer], indices: list[int],
                   exact_flags: list[bool]) -> None:
        """The extras must describe the computation the netx datasets describe (or, for layers written
        with ``exact=False``, the approximation ``write_netx`` derives from them)."""
        def mismatch(k: int, field: str, detail: str) -> NetxFormatError:
            return self.error(f"the '{EXTRA_GROUP}' group disagrees with the netx datasets ({detail}); the file "
                              f"was changed by another tool: delete the '{EXTRA_GROUP}' group to read the netx "
                              f"datasets alone", indices[k], field, netx_layers[k].kind)

        if math.prod(network.input_shape) != math.prod(in_shape):
            raise self.error(f"input shape {network.input_shape} in '{EXTRA_GROUP}' vs {in_shape} in layer 0",
                             0, "shape", "input")
        for k, (ours, theirs) in enumerate(zip(network.layers, netx_layers)):
            if ours.kind != theirs.kind or tuple(ours.out_shape) != tuple(theirs.out_shape):
                raise mismatch(k, "type", f"{ours.kind} {ours.out_shape} vs {theirs.kind} {theirs.out_shape}")
            if isinstance(ours, ConvLayer):
                for attr in ("stride", "padding", "dilation", "groups"):
                    if tuple(np.atleast_1d(getattr(ours, attr))) != tuple(np.atleast_1d(getattr(theirs, attr))):
                        raise mismatch(k, attr, f"{getattr(ours, attr)} vs {getattr(theirs, attr)}")
            if not exact_flags[k]:
                try:
                    parts, bias, vth, _ = _approx_values(k, ours)
                except NetxExportError as exc:
                    raise mismatch(k, exc.field or "weight", str(exc)) from None
                for (field, w2, e2), want in zip(_synapses(theirs), parts):
                    got = _ir_synapse(w2, e2, theirs.num_weight_bits, theirs.sign_mode)
                    if got[1] != 0 or got[0].shape != want.shape or not np.array_equal(got[0], want):
                        raise mismatch(k, field, "weights differ from the approximation of the exact ones")
                if not np.array_equal(theirs.neurons.vth, vth):
                    raise mismatch(k, "neuron/vThMant", f"vth {theirs.neurons.vth} vs {vth}")
                if not np.array_equal(_ir_bias(theirs.neurons), bias << NETX_BIAS_EXP):
                    raise mismatch(k, "bias", "biases differ from the approximation of the exact ones")
                for attr, src in (("du", "neuron/iDecay"), ("dv", "neuron/vDecay")):
                    if not np.array_equal(getattr(ours.neurons, attr), getattr(theirs.neurons, attr)):
                        raise mismatch(k, src, f"{attr} {getattr(ours.neurons, attr)} vs "
                                               f"{getattr(theirs.neurons, attr)}")
                continue
            pairs = [("weight", ours.weight, ours.weight_exp, theirs.weight, theirs.weight_exp)]
            if isinstance(ours, DenseLayer) and ours.weight_rec is not None:
                pairs.append(("weight_rec", ours.weight_rec, ours.weight_rec_exp, theirs.weight_rec,
                              theirs.weight_rec_exp))
            for field, w1, e1, w2, e2 in pairs:
                a = _ir_synapse(w1, e1, ours.num_weight_bits, ours.sign_mode)
                b = _ir_synapse(w2, e2, theirs.num_weight_bits, theirs.sign_mode)
                if a[1] != b[1] or a[0].shape != b[0].shape or not np.array_equal(a[0], b[0]):
                    raise mismatch(k, field, "different effective weights")
            n1, n2 = ours.neurons, theirs.neurons
            for attr, src in (("du", "neuron/iDecay"), ("dv", "neuron/vDecay"), ("vth", "neuron/vThMant")):
                if not np.array_equal(getattr(n1, attr), getattr(n2, attr)):
                    raise mismatch(k, src, f"{attr} {getattr(n1, attr)} vs {getattr(n2, attr)}")
            if not np.array_equal(_ir_bias(n1), _ir_bias(n2)):
                raise mismatch(k, "bias", "different effective biases")


def read_netx(path: PathLike, *, time_steps: Optional[int] = None, readout: Optional[str] = None,
              spike_exp: int = NETX_SPIKE_EXP) -> Network:
    """Read a lava-dl netx HDF5 file into a :class:`~neurodeploy.ir.Network`.

    Files written by :func:`write_netx` come back exactly (every field).
    Other netx files give the IR of what netx would run, with the input
    encoding ``spikes`` (netx's unary default), ``time_steps`` (default 1,
    netx files do not record it) and ``readout`` ``"potential"`` when the
    last layer is a PilotNet-style integrator (``du 4095, dv 0, vth 131071``)
    or a sigma-delta ``Sigma`` output, else ``"spikes"``. ``readout`` given
    here overrides what the file says.

    ``SDNN`` neurons become :class:`~neurodeploy.ir.SigmaDeltaNeurons` (Delta for
    an input layer, Sigma for ``sigma_output``, else SigmaDelta) with
    ``spike_exp``, netx's ``Network(spike_exp=...)`` argument (default 6; the
    file does not hold it), and ``state_exp`` 6.

    Any file is safe to read: it must be a regular file (a named pipe is
    refused, not waited on) holding HDF5; every declared size is checked
    against ``MAX_LAYERS``, ``MAX_LAYER_ELEMENTS``, ``MAX_TOTAL_ELEMENTS``,
    ``MAX_NDIM``, ``MAX_TIME_STEPS``, ``MAX_STRING_CHARS`` and
    ``MAX_JSON_DEPTH`` before anything is read or allocated; every value's
    dtype, integrality and range before it is cast. Any problem raises
    :class:`NetxFormatError` (one line naming the file, the layer index, the
    field, the value and what was expected); a missing or non-regular file a
    NetxFormatError too.
    """
    import h5py

    if not isinstance(spike_exp, (int, np.integer)) or isinstance(spike_exp, bool) \
            or not SPIKE_EXP_RANGE[0] <= spike_exp <= SPIKE_EXP_RANGE[1]:
        raise NetxFormatError(f"{path}: spike_exp {bounded(spike_exp)}, expected an integer "
                              f"{SPIKE_EXP_RANGE[0]}..{SPIKE_EXP_RANGE[1]} (netx's Network argument, default "
                              f"{NETX_SPIKE_EXP})", path=str(path))
    if readout is not None and (not isinstance(readout, str) or readout not in READOUTS):
        raise NetxFormatError(f"{path}: readout {bounded(readout)}, expected one of {READOUTS}", path=str(path))
    if time_steps is not None and (not isinstance(time_steps, (int, np.integer)) or isinstance(time_steps, bool)
                                   or not 1 <= time_steps <= MAX_TIME_STEPS):
        raise NetxFormatError(f"{path}: time_steps {bounded(time_steps)}, expected an integer 1..{MAX_TIME_STEPS} "
                              f"(MAX_TIME_STEPS)", path=str(path))
    path = Path(path)
    try:
        require_regular_file(path, "netx file")
    except FileAccessError as exc:
        raise NetxFormatError(str(exc), path=str(path)) from None
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise NetxFormatError(f"{path}: not an HDF5 file, or a corrupt one (h5py: {_one_line(exc)})",
                              path=str(path)) from None
    with f:
        reader = _Reader(path, f, spike_exp=int(spike_exp))
        in_shape, layers, indices = reader.netx_network()
        network = reader.extras(in_shape, layers, indices)
    if network is None:
        last = layers[-1].neurons
        if isinstance(last, SigmaDeltaNeurons):   # a Sigma output is read from its value, as lava-dl does
            kind = readout or ("potential" if last.kind == "sigma" else "spikes")
        else:
            kind = readout or ("potential" if _is_integrator(last) or _never_spikes(last) else "spikes")
        network = Network(input_shape=in_shape, layers=layers, time_steps=int(time_steps or 1),
                          input_encoding=InputEncoding(kind="spikes", bits=1, scale=1.0),
                          metadata={"source": str(path), "format": "lava-dl netx hdf5"}, readout=kind,
                          input_neurons=reader.input_neurons)
        try:
            network.validate(str(path))
        except IRError as exc:
            raise NetxFormatError(f"{exc}", path=str(path)) from None
    else:
        if time_steps is not None:
            network.time_steps = int(time_steps)
        if readout is not None:
            network.readout = readout
    return network
