"""Our netx export of the default model runs in lava-dl's own ``netx.hdf5.Network`` with our spikes.

lava-dl 0.6.0's netx builds real Lava 0.10 processes from the file we write
(``Loihi2SimCfg(select_tag="fixed_pt")``, a ``RingBuffer`` source into
``net.inp`` and a ``RingBuffer`` sink on ``net.out``, as lava-dl's own
``tests/lava/lib/dl/netx/test_hdf5.py`` drives it), and every output spike must
equal our emulator's and our Lava backend's on real mnist5k test samples (the
hidden layer's spikes, read from netx's blocks, equal the emulator's too).

Timing contract (explicit here): netx returns exactly the steps it is run
for. We run it for ``T + latency`` steps (latency = synaptic layers), the
input held for the first ``T`` steps and zero after, which is what our
backends simulate; then netx's output step ``n`` equals our
``output_spikes[:, n]`` for every ``n`` (our aligned window, the float
model's ``T`` steps, is ``latency .. latency + T - 1``). The call is the
one the file records: ``netx.hdf5.Network(net_config=FILE,
input_message_bits=8)`` (graded input ``round(255 x)``, in (W, H, C) order
for a conv first layer, flattened otherwise).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

from _helpers import require_module
from neurodeploy.ir import ConvLayer, Network

N_SAMPLES = 8   # Lava is slow: a handful of real test samples


def _quantized(arch: str, **over):
    """A tiny float model (digits conv, or a CUBA SRNN on vowels; graded input) quantized for loihi2 the
    way the deployment commands do it (``netx_exact=True``)."""
    import torch

    from neurodeploy.config import config_from_dict
    from neurodeploy.models import build_model
    from neurodeploy.quant import load_profile, quantize_model

    data = {"dataset": "digits", "time_steps": 4}
    model = {"arch": arch, "hidden": [6], "bias": True, "neuron": {"type": "dlif"}, **over}
    if arch == "srnn":
        data = {"dataset": "vowels", "encoder": "temporal", "time_steps": None}
        model["neuron"] = {"type": "cuba-lif", "current_leak": 0.75}
    torch.manual_seed(0)
    shape = (25, 12) if arch == "srnn" else (1, 8, 8)
    m = build_model(config_from_dict({"data": data, "model": model}), shape, 3)
    return quantize_model(m, shape, load_profile("loihi2"), time_steps=25 if arch == "srnn" else 4,
                          cuba_bias="approximate", netx_exact=True).network


def _netx_run(path: Path, net: Network, values: np.ndarray) -> list[np.ndarray]:
    """lava-dl netx on one sample's integer input (T, *input_shape): every block's spikes (T + latency, n),
    the last one netx's ``net.out``; neurons in the IR's flattened (C, H, W) order."""
    netx = require_module("lava.lib.dl.netx", reason="lava-dl is not installed (optional)")
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.sink import RingBuffer as Sink
    from lava.proc.io.source import RingBuffer as Source

    with h5py.File(path) as f:
        bits = int(f["neurodeploy"].attrs["netx_input_message_bits"])
        assert f["neurodeploy"].attrs["netx_call"] == (f"netx.hdf5.Network(net_config={path.name!r}, "
                                                       f"input_message_bits={bits})")
    steps = net.time_steps + net.latency
    data = np.zeros((steps, *net.input_shape), np.int64)
    data[:net.time_steps] = values                       # held for T steps, zero for the latency steps
    data = data.transpose(0, 3, 2, 1) if isinstance(net.layers[0], ConvLayer) else data.reshape(steps, -1)
    lava_net = netx.hdf5.Network(net_config=str(path), input_message_bits=bits)
    assert len(lava_net.layers) == len(net.layers)
    source = Source(data=np.moveaxis(data, 0, -1).astype(np.int32))
    sinks = [Sink(shape=block.out.shape, buffer=steps) for block in lava_net.layers[:-1]]
    sinks.append(Sink(shape=lava_net.out.shape, buffer=steps))
    source.s_out.connect(lava_net.inp)
    for block, sink in zip(lava_net.layers[:-1], sinks):
        block.out.connect(sink.a_in)
    lava_net.out.connect(sinks[-1].a_in)
    try:
        lava_net.run(condition=RunSteps(num_steps=steps), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        got = [sink.data.get() for sink in sinks]
    finally:
        lava_net.stop()
    out = []
    for g in got:   # (*Lava shape, steps): Lava's (W, H, C) back to the IR's (C, H, W) order
        g = np.moveaxis(g, -1, 0)
        g = g.transpose(0, 3, 2, 1) if g.ndim == 4 else g
        out.append(g.reshape(steps, -1).astype(np.uint8))
    return out


def _assert_netx_equals_our_backends(path: Path, net: Network, values: np.ndarray) -> None:
    from neurodeploy.backends import run_network

    emu_run = run_network(net, values, backend="emulator", record_spikes=True)
    emu = emu_run.output_spikes
    lava = run_network(net, values, backend="lava").output_spikes
    np.testing.assert_array_equal(lava, emu)
    assert emu.shape[1] == net.time_steps + net.latency
    for s in range(len(values)):
        layers = _netx_run(path, net, values[s])
        np.testing.assert_array_equal(layers[-1], emu[s], err_msg=f"sample {s}: output")
        for k, got in enumerate(layers):                  # and every hidden layer, every step
            np.testing.assert_array_equal(got, emu_run.layer_spikes[k][s], err_msg=f"sample {s}: layer {k}")
    assert emu.sum() > 0                                  # the comparison is not between silent networks


@pytest.fixture(scope="module")
def default_model(tmp_path_factory):
    """The default model's architecture and input encoding (models/mnist5k-mlp-dlif.yaml: 784-256-10 DLIF,
    graded 8-bit direct input, T = 8), trained 1 epoch and quantized for loihi2 as `quantize` does."""
    from neurodeploy.cli import main

    run = tmp_path_factory.mktemp("default") / "run"
    assert main(["train", "--config", "models/mnist5k-mlp-dlif.yaml", "--out", str(run), "--epochs", "1",
                 "--quiet"]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")                   # a NetxInexactWarning would fail the export
        assert main(["quantize", str(run), "--quiet"]) == 0
    return run


def test_default_model_export_is_exact_for_netx(default_model):
    from neurodeploy.io import read_netx

    path = default_model / "loihi2" / "network.net"
    with h5py.File(path) as f:
        attrs = f["neurodeploy"].attrs
        assert attrs["netx_exact"] and attrs["netx_inexact_layers"] == ""
        assert int(attrs["netx_input_message_bits"]) == 8
        assert attrs["netx_readout"].startswith("spikes: net.out over T + latency = 8 + 2 steps")
        assert [f[f"layer/{i}/type"][0] for i in range(4)] == [b"input", b"flatten", b"dense", b"dense"]
        assert "neuron" not in f["layer/0"]              # graded input straight into the first dense
        assert f["layer/2/neuron/type"][0] == b"CUBA"
        np.testing.assert_array_equal(f["layer/2/bias"][()], 0)
    net = read_netx(path)
    assert net.input_encoding.kind == "graded" and net.input_encoding.bits == 8 and net.time_steps == 8
    assert [layer.out_shape for layer in net.layers] == [(256,), (10,)]
    assert net.layers[0].weight_exp == -1                # integer effective weights (even mantissas / 2)
    assert np.all(net.layers[0].weight % 2 == 0)


def test_default_model_runs_in_lava_dl_netx_with_our_spikes(default_model):
    from neurodeploy.evaluate.deployment import load_deployment
    from neurodeploy.evaluate.inputs import encoding_generator
    from neurodeploy.data import load_dataset
    from neurodeploy.io import read_netx

    path = default_model / "loihi2" / "network.net"
    dep = load_deployment(default_model, "loihi2", log=lambda m: None)
    net = read_netx(path)
    data = load_dataset(dep.cfg.data.dataset, seed=dep.cfg.seed, data_dir=dep.cfg.data.data_dir)
    values = dep.inputs(data.x_test[:N_SAMPLES], encoding_generator(dep.cfg.seed)).values.astype(np.int64)
    assert values.shape == (N_SAMPLES, 8, 1, 28, 28) and values.max() > 1   # real graded pixels
    _assert_netx_equals_our_backends(path, net, values)


def test_graded_conv_export_names_its_inexact_first_layer(tmp_path):
    """A graded-input conv: its 3x3 kernel sums too few inputs for integer weights at the threshold scale,
    so the quantizer keeps the floored mantissas there; strict export refuses naming layer 0, the lenient one
    says which layer, why, and what netx computes, and its spiking layers after it are exact."""
    from neurodeploy.io import NetxExportError, NetxInexactWarning, write_netx

    net = _quantized("conv", channels=[3])
    assert net.input_encoding.kind == "graded" and isinstance(net.layers[0], ConvLayer)
    assert net.layers[0].weight_exp < -1 and all(layer.weight_exp >= 0 for layer in net.layers[1:])
    with pytest.raises(NetxExportError, match="layer 0: weight: weight exponent"):
        write_netx(net, tmp_path / "strict.net")
    with pytest.warns(NetxInexactWarning) as caught:
        path = write_netx(net, tmp_path / "conv.net", exact=False)
    lines = str(caught[0].message).splitlines()[1:]
    assert len(lines) == 1 and lines[0].strip().startswith("layer 0 (conv): not exact in netx (weight exponent")
    with h5py.File(path) as f:
        assert [bool(f[f"neurodeploy/layers/{i}"].attrs["netx_exact"]) for i in range(3)] == [False, True, True]


def test_srnn_export_names_its_inexact_layer(tmp_path):
    """A graded-input SRNN: netx optimizes [weight, weight_rec] jointly into one 8-bit integer matrix, but
    the recurrent weights (binary spikes) are ~255x the input weights (graded, 1/255 per level), so the
    quantizer keeps the finer floored input weights there: not exact in netx, and the export says so."""
    from neurodeploy.io import NetxExportError, NetxInexactWarning, write_netx

    net = _quantized("srnn")
    assert net.layers[0].kind == "dense_rec" and net.layers[0].weight_exp < -1
    with pytest.raises(NetxExportError, match="layer 0: weight: weight exponent"):
        write_netx(net, tmp_path / "strict.net")
    with pytest.warns(NetxInexactWarning) as caught:
        path = write_netx(net, tmp_path / "srnn.net", exact=False)
    lines = str(caught[0].message).splitlines()[1:]
    assert len(lines) == 1 and lines[0].strip().startswith("layer 0 (dense_rec): not exact in netx")
    assert "netx computes this layer rescaled by 2**" in lines[0]
    with h5py.File(path) as f:
        assert not f["neurodeploy"].attrs["netx_exact"]
        assert f["neurodeploy"].attrs["netx_inexact_layers"] == lines[0].strip()


def test_default_model_without_netx_exact_names_its_inexact_first_layer(default_model, tmp_path):
    """The library default (``netx_exact=False``) keeps the floored first layer (mantissas at a negative
    weight exponent, finer than integers): the export says that layer 0 is not exact, why, and what netx
    computes instead, one line per layer, in the warning and in the file."""
    from neurodeploy.evaluate.deployment import load_deployment
    from neurodeploy.io import NetxInexactWarning, write_netx
    from neurodeploy.quant import quantize_model

    dep = load_deployment(default_model, "loihi2", log=lambda m: None)
    net = quantize_model(dep.model, dep.input_shape, dep.profile, time_steps=dep.time_steps).network
    assert net.layers[0].weight_exp < -1 and net.layers[1].weight_exp == 0
    with pytest.warns(NetxInexactWarning) as caught:
        path = write_netx(net, tmp_path / "floored.net", exact=False)
    lines = str(caught[0].message).splitlines()[1:]
    assert len(lines) == 1
    assert lines[0].strip().startswith("layer 0 (dense): not exact in netx (weight exponent "
                                       f"{net.layers[0].weight_exp} gives fractional effective weights")
    assert "netx computes this layer rescaled by 2**" in lines[0] and "spikes can differ" in lines[0]
    with h5py.File(path) as f:
        assert not f["neurodeploy"].attrs["netx_exact"]
        assert f["neurodeploy"].attrs["netx_inexact_layers"] == lines[0].strip()
