"""Write the fixed-point IR as a lava-dl netx HDF5 file (:func:`write_netx`).

``write_netx(network, path)`` writes the layout that lava-dl 0.6.0's
``lava.lib.dl.netx.hdf5.Network`` loads, with values chosen so that the Lava
processes netx builds compute exactly what our :class:`~neurodeploy.ir.Network`
describes (the mapping and its limits: :mod:`neurodeploy.io.netx_semantics`).

Round trip
----------
Besides the netx datasets the writer stores the exact IR (mantissas,
exponents, bit widths, sign modes, names, time steps, input encoding,
profile, metadata) under a root group ``neurodeploy`` that netx never looks
at (it reads only ``layer``). The reader returns that IR after checking that
it still describes the same computation as the netx datasets (a file edited
by another tool raises :class:`NetxFormatError`). Files without the group are
read from the netx datasets alone, with ``bias_exp = 6`` and the simplest
exact weight representation (``weight_exp 0``, 8 bits, when that is exact,
otherwise netx's own scaled representation).

Contract for lava-dl users
--------------------------
``netx.hdf5.Network(net_config=FILE, input_message_bits=B)`` with ``B`` the
graded input's bits (0 for spike input; :func:`netx_call`, stored as the
attribute ``neurodeploy/netx_call``). Feed ``net.inp`` the encoded input
(``round(255 x)`` for graded input) on each of the T steps and zeros on
``latency`` more steps, run ``T + latency`` steps: netx returns exactly those
steps and its step ``n`` equals our backends' ``output_spikes[:, n]``; how to
read the class is ``neurodeploy/netx_readout`` (:func:`netx_readout`).

Where netx cannot hold a layer exactly (netx computes ``W x`` with integer
effective ``W`` and fixes ``bias_exp = 6``: a fraction from a negative
``weight_exp``, effective weights beyond 8 bits, a bias below ``2**6``),
``write_netx`` raises :class:`NetxExportError`; ``write_netx(...,
exact=False)`` writes such layers rescaled for lava-dl (weights, threshold and
bias times ``2**k``, rounded) with a :class:`NetxInexactWarning` holding one
line per layer (which layer, why, what netx computes instead;
:func:`inexact_layer_lines`, also the attribute
``neurodeploy/netx_inexact_layers``), while the ``neurodeploy`` group keeps the
exact IR for :func:`read_netx`. The deployment commands quantize with
``netx_exact=True`` (:func:`neurodeploy.quant.quantize_model`), so the default
model's file needs no rescaling.


Writing is atomic: a temporary file next to the target, renamed over it.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any, Union

import numpy as np

from ..fileio import atomic_path
from ..ir import ConvLayer, DenseLayer, Network, is_sigma_delta
from .netx_semantics import (
    EXTRA_GROUP,
    FORMAT_VERSION,
    NetxExportError,
    NetxInexactWarning,
    _approx_values,
    _exact_values,
    neuron_datasets,
)

__all__ = ["write_netx", "netx_call", "netx_input_message_bits", "netx_readout", "inexact_layer_lines"]

PathLike = Union[str, os.PathLike]


def _netx_plan(network: Network, exact: bool = True) -> tuple[list[tuple[str, dict[str, Any]]], list[dict]]:
    """The netx ``layer/<i>`` entries (type, {dataset path: value}) in order, and the approximated layers."""
    plan: list[tuple[str, dict[str, Any]]] = [("input", {"shape": np.asarray(network.input_shape, dtype=np.int64)})]
    approximated: list[dict] = []
    prev_conv = len(network.input_shape) > 1
    for i, layer in enumerate(network.layers):
        try:
            parts, bias, vth = _exact_values(i, layer)
        except NetxExportError as exc:
            if exact:
                raise
            parts, bias, vth, info = _approx_values(i, layer)
            info["why"] = _reason(exc)
            info["kind"] = layer.kind
            approximated.append(info)
        entry: dict[str, Any] = {"shape": np.asarray(layer.out_shape, dtype=np.int64)}
        if isinstance(layer, DenseLayer):
            if prev_conv:
                plan.append(("flatten", {"shape": np.asarray([layer.in_size], dtype=np.int64)}))
            entry["inFeatures"] = np.int64(layer.in_size)
            entry["outFeatures"] = np.int64(layer.out_shape[0])
            entry["weight"] = parts[0].astype(np.float32)
            if layer.weight_rec is not None:
                entry["weight_rec"] = parts[1].astype(np.float32)
            if layer.delay is not None:
                entry["delay"] = _netx_delay(i, layer.delay)
            entry["bias"] = bias.astype(np.float32)
            prev_conv = False
        else:
            c, h, w = layer.out_shape
            entry["inChannels"] = np.int64(layer.in_shape[0])
            entry["outChannels"] = np.int64(c)
            entry["kernelSize"] = np.asarray(layer.weight.shape[2:], dtype=np.int64)
            entry["stride"] = np.asarray(layer.stride, dtype=np.int64)
            entry["padding"] = np.asarray(layer.padding, dtype=np.int64)
            entry["dilation"] = np.asarray(layer.dilation, dtype=np.int64)
            entry["groups"] = np.int64(layer.groups)
            entry["weight"] = parts[0].astype(np.float32)
            b = bias.reshape(c, h, w)
            if np.all(b == b[:, :1, :1]):
                entry["bias"] = b[:, 0, 0].astype(np.float32)  # per channel, as slayer writes it
            else:
                entry["bias"] = b.transpose(2, 1, 0).astype(np.float32)  # per neuron, Lava's (W, H, C)
            prev_conv = True
        for key, value in neuron_datasets(layer.neurons, vth).items():
            if isinstance(layer, ConvLayer) and key != "type" and np.ndim(value) == 1:   # per neuron -> per channel
                c = layer.out_shape[0]
                per_c = value.reshape(c, -1)
                if not np.all(per_c == per_c[:, :1]):
                    raise NetxExportError(f"layer {i}: neuron/{key}: values differ within a channel; netx's "
                                          f"conv LIF takes one value per channel (a per-neuron array does not "
                                          f"broadcast against Lava's (W, H, C) state)", layer=i,
                                          field=f"neuron/{key}")
                value = per_c[:, 0].copy()
            entry[f"neuron/{key}"] = value
        plan.append((layer.kind, entry))
    return plan, approximated


def _netx_delay(i: int, delay: np.ndarray) -> np.ndarray:
    """A layer's (out, in) delays in a form netx reads: a scalar, one per output neuron or one per input."""
    d = np.asarray(delay).astype(np.int64)
    if np.all(d == d.flat[0]):
        return np.float32(d.flat[0])
    if np.all(d == d[:, :1]):
        return d[:, 0].astype(np.float32)
    if np.all(d == d[:1, :]):
        return d[0].astype(np.float32)
    raise NetxExportError(f"layer {i}: delay: the delays vary per synapse; netx reads one per output neuron or "
                          f"one per input, so this layer cannot be written for netx", layer=i, field="delay")


def _reason(exc: NetxExportError) -> str:
    """The cause in a NetxExportError's message, without its ``layer i: field:`` prefix."""
    text = str(exc)
    for _ in range(2):
        head, sep, rest = text.partition(": ")
        if sep and (head.startswith("layer ") or head in ("weight", "weight_rec", "bias")):
            text = rest
    return text.split(";")[0]


def inexact_layer_lines(approximated: list[dict]) -> list[str]:
    """One line per layer lava-dl netx runs only approximately: which layer, why, what netx computes."""
    lines = []
    for a in approximated:
        k = a["shift"]
        lines.append(
            f"layer {a['layer']} ({a['kind']}): not exact in netx ({a['why']}); netx computes this layer "
            f"rescaled by 2**{k}: integer weights round(w_eff * 2**{k}) (off by up to "
            f"{a['weight_error']:.1%} of the largest weight), vThMant {a['threshold'][0]} -> "
            f"{a['threshold'][1]}, bias * 2**{k}; u and v run 2**{k} times larger, so its spikes can differ "
            f"from ours")
    return lines


def netx_call(network: Network, path: str = "network.net") -> str:
    """The lava-dl call that builds the file's network as we run it (graded input needs its message bits)."""
    return (f"netx.hdf5.Network(net_config={str(path)!r}, "
            f"input_message_bits={netx_input_message_bits(network)})")


def netx_input_message_bits(network: Network) -> int:
    """netx's ``input_message_bits`` for ``network``: the graded input's bits, 0 (binary) for spike input."""
    return int(network.input_encoding.bits) if network.input_encoding.kind == "graded" else 0


def netx_readout(network: Network) -> str:
    """How a lava-dl user reads the class from the netx network (the file's ``neurodeploy/netx_readout``)."""
    steps = f"T + latency = {network.time_steps} + {network.latency} steps"
    if network.readout == "potential":
        return (f"potential: the last block's neuron.v after {steps} (class = argmax; the layer never "
                f"spikes)")
    return f"spikes: net.out over {steps} (class = argmax of the counts; step n = our output_spikes[:, n])"


def _metadata_json(network: Network) -> str:
    try:
        return json.dumps(network.metadata)
    except (TypeError, ValueError) as exc:
        raise NetxExportError(f"network metadata is not JSON-serialisable: {exc}", field="metadata") from None


def _write_extras(f, network: Network, meta: str, approximated: list[dict], path_name: str) -> None:
    g = f.create_group(EXTRA_GROUP)
    a = g.attrs
    a["format_version"] = FORMAT_VERSION
    a["netx_exact"] = not approximated
    shifts = {info["layer"]: info["shift"] for info in approximated}
    a["time_steps"] = int(network.time_steps)
    a["input_shape"] = np.asarray(network.input_shape, dtype=np.int64)
    a["profile"] = network.profile
    a["input_encoding"] = json.dumps({"kind": network.input_encoding.kind, "bits": network.input_encoding.bits,
                                      "scale": network.input_encoding.scale})
    a["metadata"] = meta
    a["netx_input_message_bits"] = netx_input_message_bits(network)
    a["netx_call"] = netx_call(network, path_name)
    a["netx_inexact_layers"] = "\n".join(inexact_layer_lines(approximated))
    a["netx_readout"] = netx_readout(network)
    a["readout"] = network.readout
    layers = g.create_group("layers")
    for i, layer in enumerate(network.layers):
        lg = layers.create_group(str(i))
        la = lg.attrs
        la["kind"] = layer.kind
        la["name"] = layer.name
        la["netx_exact"] = i not in shifts
        la["netx_shift"] = int(shifts.get(i, 0))
        la["weight_exp"] = int(layer.weight_exp)
        la["num_weight_bits"] = int(layer.num_weight_bits)
        la["sign_mode"] = layer.sign_mode
        lg.create_dataset("weight", data=np.asarray(layer.weight))
        if isinstance(layer, DenseLayer):
            la["weight_rec_exp"] = int(layer.weight_rec_exp)
            if layer.weight_rec is not None:
                lg.create_dataset("weight_rec", data=np.asarray(layer.weight_rec))
            if layer.delay is not None:
                lg.create_dataset("delay", data=np.asarray(layer.delay).astype(np.int64))
        else:
            la["in_shape"] = np.asarray(layer.in_shape, dtype=np.int64)
            la["stride"] = np.asarray(layer.stride, dtype=np.int64)
            la["padding"] = np.asarray(layer.padding, dtype=np.int64)
            la["dilation"] = np.asarray(layer.dilation, dtype=np.int64)
            la["groups"] = int(layer.groups)
        nrn = layer.neurons
        ng = lg.create_group("neurons")
        for key in ("du", "dv", "vth", "bias_exp"):
            value = getattr(nrn, key)
            if isinstance(value, np.ndarray):   # one per neuron
                ng.create_dataset(key, data=value.astype(np.int64))
            else:
                ng.attrs[key] = int(value)
        ng.create_dataset("bias_mant", data=np.asarray(nrn.bias_mant))


def write_netx(network: Network, path: PathLike, *, exact: bool = True) -> Path:
    """Write ``network`` as a lava-dl netx HDF5 file at ``path`` (atomically); return the path.

    A lava-dl user loads it with ``netx.hdf5.Network(path)`` (pass
    ``input_message_bits=network.input_encoding.bits`` for graded input) and
    gets Lava processes that compute exactly this network. Raises
    :class:`~neurodeploy.ir.IRError` for an inconsistent network and
    :class:`NetxExportError` (naming layer and field) for one that netx cannot
    represent exactly; nothing is written then.

    ``exact=False`` writes such networks anyway: each layer netx cannot hold
    exactly is rescaled to netx's plain 8-bit weights (weights, threshold and
    bias times ``2**k``, rounded; see ``_approx_values``) and a
    :class:`NetxInexactWarning` says which layers and how far. The exact IR is
    still stored in the ``neurodeploy`` group, so :func:`read_netx` returns it
    unchanged; only lava-dl users get the approximation (the file says so:
    attribute ``neurodeploy.netx_exact`` and per layer ``netx_exact`` /
    ``netx_shift``).
    """
    import h5py

    path = Path(path)
    network.validate(str(path))
    if is_sigma_delta(network):
        raise NetxExportError(f"{path}: a sigma-delta (SDNN) network: neurodeploy reads and runs SDNN netx files but "
                              f"does not write them; expected CUBA neurons")
    plan, approximated = _netx_plan(network, exact)  # every check happens before the file is touched
    meta = _metadata_json(network)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            layers = f.create_group("layer")
            for i, (kind, entry) in enumerate(plan):
                g = layers.create_group(str(i))
                g.create_dataset("type", (1,), "S10", [kind.encode("ascii")])
                for key, value in entry.items():
                    g.create_dataset(key, data=value)
            _write_extras(f, network, meta, approximated, path.name)
    if approximated:
        lines = "\n".join(f"  {line}" for line in inexact_layer_lines(approximated))
        warnings.warn(f"{path}: lava-dl netx runs {len(approximated)} layer(s) only approximately (netx holds "
                      f"plain integer weights, bias_exp 6); read_netx and our backends run the exact network:\n"
                      f"{lines}", NetxInexactWarning, stacklevel=2)
    return path
