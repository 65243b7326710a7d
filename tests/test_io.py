"""Serialization: netx HDF5 (round trip, foreign files, malformed files), NIR and ONNX exports."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from neurodeploy.config import config_from_dict
from neurodeploy.io import NetxExportError, NetxFormatError, read_netx, write_netx
from neurodeploy.io.netx_hdf5 import _ir_bias, _ir_synapse, _lava_sign_mode
from neurodeploy.ir import ConvLayer, DenseLayer, InputEncoding, Network, Neurons
from neurodeploy.models.builders import build_model
from _helpers import require_module

# --------------------------------------------------------------------------- IR networks by hand


def _even(rng, shape, lo=-128, hi=127):
    return 2 * rng.integers(lo // 2, hi // 2, size=shape)


def _conv_net(seed: int = 0) -> Network:
    """conv (per-channel bias) -> strided, asymmetric conv (per-neuron bias) -> dense; non-square input."""
    rng = np.random.default_rng(seed)
    c1 = ConvLayer(weight=_even(rng, (4, 2, 3, 3)), in_shape=(2, 5, 7), padding=(1, 1), name="c1",
                   neurons=Neurons(du=4095, dv=200, vth=60, bias_exp=0,
                                   bias_mant=np.repeat(rng.integers(-20, 20, 4), 35) * 64))
    c2 = ConvLayer(weight=_even(rng, (3, 4, 3, 3)), in_shape=(4, 5, 7), stride=(2, 1), padding=(1, 0), name="c2",
                   neurons=Neurons(du=1000, dv=40, vth=40, bias_mant=rng.integers(-5, 5, 45), bias_exp=6))
    d = DenseLayer(weight=_even(rng, (5, 45)), name="d",
                   neurons=Neurons(du=4095, dv=100, vth=20, bias_mant=rng.integers(-8, 8, 5), bias_exp=7))
    return Network(input_shape=(2, 5, 7), layers=[c1, c2, d], time_steps=5, input_encoding=InputEncoding(),
                   profile="loihi2", metadata={"source": "test", "scale": [1.5, 2]}).validate()


def _rec_net(seed: int = 1) -> Network:
    """A recurrent layer with positive weight exponents, then a dense readout."""
    rng = np.random.default_rng(seed)
    d1 = DenseLayer(weight=rng.integers(-60, 60, (8, 6)), weight_exp=1, name="rec",
                    neurons=Neurons(du=4095, dv=100, vth=40, bias_mant=np.zeros(8, np.int64)),
                    weight_rec=rng.integers(-30, 30, (8, 8)), weight_rec_exp=2)
    d2 = DenseLayer(weight=_even(rng, (3, 8)), name="out",
                    neurons=Neurons(du=10, dv=100, vth=30, bias_mant=np.zeros(3, np.int32)))
    return Network(input_shape=(6,), layers=[d1, d2], time_steps=7,
                   input_encoding=InputEncoding(kind="spikes", bits=1, scale=1.0)).validate()


def _mlp_net() -> Network:
    """Dense directly on an image input, negative exponent with divisible mantissas."""
    rng = np.random.default_rng(2)
    d1 = DenseLayer(weight=8 * rng.integers(-30, 30, (10, 12)), weight_exp=-3, name="h",
                    neurons=Neurons(du=4095, dv=0, vth=17, bias_mant=rng.integers(-3, 3, 10) * 128, bias_exp=-1))
    d2 = DenseLayer(weight=rng.integers(0, 100, (4, 10)), name="o", sign_mode="excitatory",
                    neurons=Neurons(du=4095, dv=4095, vth=5, bias_mant=np.zeros(4, np.int64)))
    return Network(input_shape=(1, 3, 4), layers=[d1, d2], time_steps=3).validate()


def _assert_same_network(a: Network, b: Network) -> None:
    assert type(a.input_shape) is tuple and a.input_shape == b.input_shape
    assert a.time_steps == b.time_steps and a.profile == b.profile and a.metadata == b.metadata
    assert a.input_encoding == b.input_encoding
    assert len(a.layers) == len(b.layers)
    for la, lb in zip(a.layers, b.layers):
        assert type(la) is type(lb)
        for name in la.__dataclass_fields__:
            va, vb = getattr(la, name), getattr(lb, name)
            if name == "neurons":
                for key in ("du", "dv", "vth", "bias_exp"):
                    assert getattr(va, key) == getattr(vb, key) and type(getattr(vb, key)) is int, key
                assert va.bias_mant.dtype == vb.bias_mant.dtype
                np.testing.assert_array_equal(va.bias_mant, vb.bias_mant)
            elif isinstance(va, np.ndarray) or isinstance(vb, np.ndarray):
                assert va.dtype == vb.dtype and va.shape == vb.shape, name
                np.testing.assert_array_equal(va, vb)
            else:
                assert va == vb and type(va) is type(vb), name


# --------------------------------------------------------------------------- netx: writing and round trip


@pytest.mark.parametrize("make", [_conv_net, _rec_net, _mlp_net])
def test_netx_round_trip_is_exact(tmp_path, make):
    net = make()
    path = write_netx(net, tmp_path / "net.h5")
    _assert_same_network(net, read_netx(path))
    assert [p.name for p in tmp_path.iterdir()] == ["net.h5"]  # no temporary file left


def test_netx_layout_follows_lava_dl_conventions(tmp_path):
    net = _conv_net()
    path = write_netx(net, tmp_path / "net.h5")
    with h5py.File(path) as f:
        layer = f["layer"]
        assert sorted(layer.keys(), key=int) == ["0", "1", "2", "3", "4"]
        types = [layer[str(i)]["type"][0].decode() for i in range(5)]
        assert types == ["input", "conv", "conv", "flatten", "dense"]
        assert layer["0/shape"][()].tolist() == [2, 5, 7]  # (C, H, W); netx reverses it
        c2 = layer["2"]
        assert c2["shape"][()].tolist() == [3, 3, 5]
        assert c2["stride"][()].tolist() == [2, 1] and c2["padding"][()].tolist() == [1, 0]  # (H, W)
        assert c2["weight"].dtype == np.float32 and c2["weight"].shape == (3, 4, 3, 3)
        np.testing.assert_array_equal(c2["weight"][()], net.layers[1].weight)
        assert c2["bias"].shape == (5, 3, 3)  # per neuron, Lava's (W, H, C)
        assert layer["1/bias"].shape == (4,)  # constant per channel: slayer's per-channel form
        np.testing.assert_array_equal(layer["1/bias"][()], net.layers[0].neurons.bias_mant[::35] // 64)
        np.testing.assert_array_equal(c2["bias"][()].transpose(2, 1, 0).reshape(-1), net.layers[1].neurons.bias_mant)
        dense = layer["4"]
        np.testing.assert_array_equal(dense["bias"][()], net.layers[2].neurons.bias_mant * 2)  # (b << 7) >> 6
        for i, ir in ((1, net.layers[0]), (2, net.layers[1]), (4, net.layers[2])):
            n = layer[f"{i}/neuron"]
            assert n["type"][0] == b"CUBA"
            assert n["iDecay"][()] == ir.neurons.du + 1 and n["vDecay"][()] == ir.neurons.dv
            assert n["vThMant"][()] == ir.neurons.vth
    rec = _rec_net()
    with h5py.File(write_netx(rec, tmp_path / "rec.h5")) as f:
        g = f["layer/1"]
        assert g["type"][0] == b"dense_rec"
        # Lava's mixed 8-bit Dense drops the mantissas' lowest bit, then the exponent scales the sum
        np.testing.assert_array_equal(g["weight"][()], (rec.layers[0].weight >> 1 << 1) * 2)  # weight_exp 1
        np.testing.assert_array_equal(g["weight_rec"][()], (rec.layers[0].weight_rec >> 1 << 1) * 4)  # exp 2
        assert f["neurodeploy"].attrs["netx_input_message_bits"] == 0


@pytest.mark.parametrize("change, field, words", [
    (lambda n: setattr(n.layers[0], "weight_exp", -2), "weight", "weight exponent -2"),
    (lambda n: setattr(n.layers[1], "weight_exp", 3), "weight", "netx would load"),
    (lambda n: setattr(n.layers[0].neurons, "bias_exp", 3), "bias", "multiple of 2**6"),
    (lambda n: n.layers[1].weight.fill(0), "weight", "all-zero"),
])
def test_netx_write_rejects_what_netx_cannot_represent(tmp_path, change, field, words):
    net = _rec_net()
    net.layers[0].neurons.bias_mant[:] = 3
    if field != "bias":
        net.layers[0].neurons.bias_mant[:] = 64
    change(net)
    target = tmp_path / "net.h5"
    target.write_bytes(b"previous contents")
    with pytest.raises(NetxExportError) as err:
        write_netx(net, target)
    assert err.value.field == field and field in str(err.value) and words in str(err.value)
    assert target.read_bytes() == b"previous contents"  # untouched: checks run before writing
    assert [p.name for p in tmp_path.iterdir()] == ["net.h5"]


def test_netx_inexact_mode_rescales_for_lava_dl_and_keeps_the_exact_ir(tmp_path):
    from neurodeploy.io import NetxInexactWarning
    net = _rec_net()
    net.layers[0].weight_exp = 3  # effective weights up to 58 * 8 = 464: beyond netx's 8 bits
    net.layers[1].weight_exp = -2  # fractional effective weights (even mantissas / 4)
    net.layers[1].neurons.vth = 300
    with pytest.raises(NetxExportError):
        write_netx(net, tmp_path / "strict.h5")
    with pytest.warns(NetxInexactWarning) as caught:
        path = write_netx(net, tmp_path / "net.h5", exact=False)
    lines = str(caught[0].message).splitlines()[1:]   # one line per layer: which, why, what netx computes
    assert len(lines) == 2
    assert lines[0].strip().startswith("layer 0 (dense_rec): not exact in netx") and "2**-1" in lines[0]
    assert lines[1].strip().startswith("layer 1 (dense): not exact in netx") and "2**2" in lines[1]
    assert "weight exponent -2 gives fractional effective weights" in lines[1]
    _assert_same_network(net, read_netx(path))  # our reader: the exact network
    w0 = (net.layers[0].weight >> 1 << 1) * 8  # Lava's 8-bit mixed truncation, then 2**3
    wr = (net.layers[0].weight_rec >> 1 << 1) * 4
    w1 = net.layers[1].weight >> 1 << 1  # / 4 * 2**2 (the largest, -128 / 4, fits 254 at 2**2)
    with h5py.File(path, "a") as f:
        assert not f["neurodeploy"].attrs["netx_exact"]
        assert [int(f[f"neurodeploy/layers/{i}"].attrs["netx_shift"]) for i in range(2)] == [-1, 2]
        np.testing.assert_array_equal(f["layer/1/weight"][()], w0 // 2)
        np.testing.assert_array_equal(f["layer/1/weight_rec"][()], wr // 2)
        assert f["layer/1/neuron/vThMant"][()] == 20  # 40 / 2
        np.testing.assert_array_equal(f["layer/2/weight"][()], w1)
        assert f["layer/2/neuron/vThMant"][()] == 1200  # 300 * 4
        f["layer/2/weight"][0, 0] += 2
    with pytest.raises(NetxFormatError, match="approximation"):
        read_netx(path)


# --------------------------------------------------------------------------- netx: files we did not write


def _s(text: str) -> np.ndarray:
    return np.array([text.encode()], dtype="S10")


def _neuron(g, i_decay=4096, v_decay=128, vth=80, typ="CUBA"):
    g.create_dataset("neuron/type", data=_s(typ))
    for key, value in (("iDecay", i_decay), ("vDecay", v_decay), ("vThMant", vth), ("refDelay", 1),
                       ("gradedSpike", False)):
        g.create_dataset(f"neuron/{key}", data=value)


def _foreign_file(path: Path, mutate=None) -> None:
    """A slayer-style netx file: input (2, 5, 4) -> conv -> flatten -> dense_rec (odd weights) -> dense."""
    rng = np.random.default_rng(7)
    with h5py.File(path, "w") as f:
        layer = f.create_group("layer")
        g = layer.create_group("0")
        g.create_dataset("type", data=_s("input"))
        g.create_dataset("shape", data=np.array([2, 5, 4]))
        g = layer.create_group("1")
        g.create_dataset("type", data=_s("conv"))
        g.create_dataset("shape", data=np.array([3, 3, 4]))
        g.create_dataset("weight", data=(2 * rng.integers(-60, 60, (3, 2, 3, 3, 1))).astype(np.float32))
        g.create_dataset("stride", data=np.array([2, 1]))
        g.create_dataset("padding", data=1)
        g.create_dataset("dilation", data=1)
        g.create_dataset("groups", data=1)
        g.create_dataset("bias", data=np.array([3.0, -2.0, 5.0], np.float32))
        _neuron(g, 4096, 300, 40)
        g = layer.create_group("2")
        g.create_dataset("type", data=_s("flatten"))
        g.create_dataset("shape", data=np.array([36]))
        g = layer.create_group("3")
        g.create_dataset("type", data=_s("dense_rec"))
        g.create_dataset("shape", data=np.array([7]))
        g.create_dataset("weight", data=rng.integers(-9, 9, (7, 36)).astype(np.float32))
        g.create_dataset("weight_rec", data=rng.integers(-5, 5, (7, 7)).astype(np.float32))
        _neuron(g, 1500, 200, 4)
        g = layer.create_group("4")
        g.create_dataset("type", data=_s("dense"))
        g.create_dataset("shape", data=np.array([3]))
        g.create_dataset("weight", data=(2 * rng.integers(0, 50, (3, 7))).astype(np.float32))
        g.create_dataset("bias", data=np.array([1.0, 0.0, -1.0], np.float32))
        _neuron(g, 4096, 0, 3)
        if mutate is not None:
            mutate(f)


def test_read_foreign_netx_file(tmp_path):
    path = tmp_path / "foreign.h5"
    _foreign_file(path)
    with h5py.File(path) as f:
        conv_w = f["layer/1/weight"][()][..., 0].astype(np.int64)
        w_ff, w_rec = f["layer/3/weight"][()].astype(np.int64), f["layer/3/weight_rec"][()].astype(np.int64)
        w_out = f["layer/4/weight"][()].astype(np.int64)
    net = read_netx(path, time_steps=9)
    assert net.input_shape == (2, 5, 4) and net.time_steps == 9
    assert net.input_encoding.kind == "spikes"  # netx's unary default
    assert [layer.kind for layer in net.layers] == ["conv", "dense_rec", "dense"]
    conv, rec, out = net.layers
    # conv: torch layout as stored (netx flips + transposes, Lava flips back), (H, W) pairs
    assert conv.in_shape == (2, 5, 4) and conv.out_shape == (3, 3, 4)
    assert conv.stride == (2, 1) and conv.padding == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1
    np.testing.assert_array_equal(conv.weight, conv_w)
    assert (conv.weight_exp, conv.num_weight_bits, conv.sign_mode) == (0, 8, "mixed")
    assert (conv.neurons.du, conv.neurons.dv, conv.neurons.vth, conv.neurons.bias_exp) == (4095, 300, 40, 6)
    np.testing.assert_array_equal(conv.neurons.bias_mant, np.repeat([3, -2, 5], 12))  # per channel
    # dense_rec with odd weights: netx's own scaling (w << 5, exponent -5), same effective weights
    assert rec.weight_rec is not None and rec.weight_exp == rec.weight_rec_exp < 0
    for w_ir, e, w_file in ((rec.weight, rec.weight_exp, w_ff), (rec.weight_rec, rec.weight_rec_exp, w_rec)):
        eff, exp = _ir_synapse(w_ir, e, rec.num_weight_bits, rec.sign_mode)
        assert exp == 0
        np.testing.assert_array_equal(eff, w_file)
    assert (rec.neurons.du, rec.neurons.dv, rec.neurons.vth) == (1499, 200, 4)  # du = iDecay - 1
    np.testing.assert_array_equal(out.weight, w_out)
    assert (out.weight_exp, out.num_weight_bits, out.sign_mode) == (0, 8, "excitatory")
    np.testing.assert_array_equal(out.neurons.bias_mant, [1, 0, -1])
    # and it writes back to an equivalent file
    again = read_netx(write_netx(net, tmp_path / "again.h5"))
    _assert_same_network(net, again)


def _set(path: str, value):
    def mutate(f):
        del f[path]
        f.create_dataset(path, data=value)
    return mutate


def _delete(path: str):
    def mutate(f):
        del f[path]
    return mutate


def _type_as_attribute(f):
    del f["layer/4/type"]
    f["layer/4"].attrs["type"] = "dense"


def _flatten_after_dense(f):
    f["layer"].move("2", "tmp")
    f["layer"].move("3", "2")
    f["layer"].move("tmp", "3")


@pytest.mark.parametrize("mutate, layer, field, words", [
    (_delete("layer/1/neuron"), 1, "neuron", "missing"),  # dense without one: netx's integrator
    (_set("layer/3/weight", np.zeros((7, 35), np.float32)), 3, "weight", "expected (7, 36)"),
    (_set("layer/4/weight", np.full((3, 7), np.nan, np.float32)), 4, "weight", "not finite"),
    (_set("layer/1/weight", np.full((3, 2, 3, 3), np.inf, np.float32)), 1, "weight", "not finite"),
    (_set("layer/4/type", _s("dense_x")), 4, "type", "unknown layer type"),
    (_set("layer/2/type", _s("pool")), 2, "type", "NotImplementedError"),
    (_set("layer/4/type", _s("average")), 4, "type", "NotImplementedError"),
    (_set("layer/3/neuron/type", _s("SDNN")), 3, "neuron/type", "'SDNN'"),
    (_set("layer/3/neuron/iDecay", -1), 3, "neuron/iDecay", "value -1"),
    (_set("layer/3/neuron/vDecay", 4097), 3, "neuron/vDecay", "value 4097"),
    (_set("layer/1/bias", np.ones(5, np.float32)), 1, "bias", "shape (5,)"),
    (_set("layer/1/shape", np.array([3, 4, 4])), 1, "shape", "gives [3, 3, 4]"),
    (_delete("layer/2"), None, "layer", "consecutive"),
    (_type_as_attribute, 4, "type", "attribute"),
    (_flatten_after_dense, 2, "type", "needs a 'flatten'"),
])
def test_malformed_netx_files_raise_clear_errors(tmp_path, mutate, layer, field, words):
    path = tmp_path / "bad.h5"
    _foreign_file(path, mutate)
    with pytest.raises(NetxFormatError) as err:
        read_netx(path)
    msg = str(err.value)
    assert str(path) in msg and words in msg, msg
    assert err.value.field == field and err.value.layer == layer, msg
    if layer is not None:
        assert f"layer {layer}" in msg and f"'{field}'" in msg


def test_not_hdf5_and_missing_files(tmp_path):
    bogus = tmp_path / "model.h5"
    bogus.write_text("this is not HDF5")
    with pytest.raises(NetxFormatError, match="not an HDF5 file"):
        read_netx(bogus)
    with pytest.raises(NetxFormatError, match="netx file not found"):
        read_netx(tmp_path / "missing.h5")
    empty = tmp_path / "empty.h5"
    h5py.File(empty, "w").close()
    with pytest.raises(NetxFormatError, match="missing 'layer' group"):
        read_netx(empty)


def test_extras_that_disagree_with_netx_datasets_are_detected(tmp_path):
    path = write_netx(_rec_net(), tmp_path / "net.h5")
    with h5py.File(path, "a") as f:
        w = f["layer/2/weight"][()]
        w[0, 0] += 2
        f["layer/2/weight"][...] = w
    with pytest.raises(NetxFormatError, match="disagrees with the netx datasets") as err:
        read_netx(path)
    assert err.value.layer == 2 and err.value.field == "weight"
    with h5py.File(path, "a") as f:
        del f["neurodeploy"]
    net = read_netx(path)  # the netx part alone still reads
    assert net.layers[1].weight[0, 0] == _rec_net().layers[1].weight[0, 0] + 2


def test_lava_dl_netx_loads_our_file_with_our_parameters(tmp_path):
    netx = require_module("lava.lib.dl.netx", reason="lava-dl is not installed (optional)")
    for net in (_conv_net(), _rec_net()):
        path = write_netx(net, tmp_path / "net.h5")
        bits = net.input_encoding.bits if net.input_encoding.kind == "graded" else 0
        lava_net = netx.hdf5.Network(net_config=str(path), input_message_bits=bits)
        assert len(lava_net.layers) == len(net.layers)
        for block, ir in zip(lava_net.layers, net.layers):
            nrn = block.neuron
            assert (int(nrn.du.init), int(nrn.dv.init), int(nrn.vth.init)) == (ir.neurons.du, ir.neurons.dv,
                                                                               ir.neurons.vth)
            bias = np.asarray(nrn.bias_mant.init).astype(np.int64) << int(np.asarray(nrn.bias_exp.init).max())
            if isinstance(ir, ConvLayer):
                bias = bias.transpose(2, 1, 0)
                w = np.asarray(block.synapse.weight.init)[:, ::-1, ::-1, :].transpose(0, 3, 2, 1)
                np.testing.assert_array_equal(w, _ir_synapse(ir.weight, ir.weight_exp, ir.num_weight_bits,
                                                             ir.sign_mode)[0])
                assert tuple(block.synapse.stride.init[::-1]) == ir.stride
                assert tuple(block.synapse.padding.init[::-1]) == ir.padding
            else:
                syn = block.synapse
                pp = syn.proc_params
                synapses = [(syn, ir.weight, ir.weight_exp)]
                if ir.weight_rec is not None:
                    synapses.append((block.synapse_rec, ir.weight_rec, ir.weight_rec_exp))
                for s, w_ir, e_ir in synapses:
                    w_lava = np.asarray(s.weights.init)
                    got = _ir_synapse(w_lava, pp["weight_exp"], pp["num_weight_bits"], _lava_sign_mode(w_lava))
                    want = _ir_synapse(w_ir, e_ir, ir.num_weight_bits, ir.sign_mode)
                    assert got[1] == want[1] == 0
                    np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_array_equal(bias.reshape(-1), _ir_bias(ir.neurons))


@pytest.mark.parametrize("make", [_conv_net, _rec_net])
def test_lava_dl_netx_runs_our_file_like_the_emulator(tmp_path, make):
    """End to end: netx builds Lava processes from our file; fixed_pt Lava == our emulator, spike for spike."""
    netx = require_module("lava.lib.dl.netx", reason="lava-dl is not installed (optional)")
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.sink import RingBuffer as Sink
    from lava.proc.io.source import RingBuffer as Source

    from neurodeploy.backends.emulator import run_emulator
    net = make()
    rng = np.random.default_rng(3)
    hi = 255 if net.input_encoding.kind == "graded" else 1
    x = rng.integers(0, hi + 1, (1, net.time_steps, *net.input_shape))
    expected = run_emulator(net, x).output_spikes[0]  # (T + latency, n_out)
    steps = expected.shape[0]
    assert expected.sum() > 0
    data = np.zeros((steps, *net.input_shape), np.int64)
    data[:net.time_steps] = x[0]
    data = data.transpose(0, 3, 2, 1) if isinstance(net.layers[0], ConvLayer) else data.reshape(steps, -1)
    lava_net = netx.hdf5.Network(net_config=str(write_netx(net, tmp_path / "net.h5")),
                                 input_message_bits=net.input_encoding.bits if hi > 1 else 0)
    source = Source(data=np.moveaxis(data, 0, -1).astype(np.int32))
    sink = Sink(shape=lava_net.out.shape, buffer=steps)
    source.s_out.connect(lava_net.inp)
    lava_net.out.connect(sink.a_in)
    try:
        lava_net.run(condition=RunSteps(num_steps=steps), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        got = sink.data.get()
    finally:
        lava_net.stop()
    np.testing.assert_array_equal(np.moveaxis(got, -1, 0).reshape(steps, -1), expected)


# --------------------------------------------------------------------------- float models for NIR / ONNX


def _model(arch: str, neuron: str, shape: tuple, *, readout: str = "spikes", gain=None, **model_kw):
    data = {"encoder": "temporal" if arch == "srnn" else "direct", "time_steps": None if arch == "srnn" else 6}
    cfg = config_from_dict({"data": data, "model": {
        "arch": arch, "readout": readout, **model_kw,
        "neuron": {"type": neuron, "leak": 0.9, "threshold": 1.0, "current_leak": 0.6}}})
    torch.manual_seed(0)
    model = build_model(cfg, shape, 4).eval()
    with torch.no_grad():
        for m in model.modules():  # livelier than torch's init: spikes in every layer
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
                m.weight.mul_(3.0)
            if gain is not None and getattr(m, "gain", None) is not None:
                m.gain.copy_(gain(m.gain.shape[0]))
    return model


def _sequences(model, shape, batch=5, seed=1):
    from neurodeploy.io import encode_input
    x = torch.rand(batch, *shape, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return encode_input(model, x), model.output_sequence(x)


# --------------------------------------------------------------------------- NIR


def _run_steps(module, seq: torch.Tensor) -> torch.Tensor:
    state, outs = None, []
    for t in range(seq.shape[0]):
        out, state = module(seq[t], state)
        outs.append(out)
    return torch.stack(outs)


def _run_norse(module, seq: torch.Tensor, batched: bool) -> torch.Tensor:
    if batched:
        return _run_steps(module, seq)
    return torch.stack([_run_steps(module, seq[:, b]) for b in range(seq.shape[1])], 1)


@pytest.mark.parametrize("arch, neuron, shape, kw", [
    ("mlp", "lif", (20,), {"hidden": [16]}),
    ("mlp", "cuba-lif", (20,), {"hidden": [16]}),
    ("srnn", "dlif", (6, 5), {"hidden": [12]}),
    ("srnn", "cuba-lif", (6, 5), {"hidden": [12]}),
    ("conv", "lif", (1, 7, 6), {"channels": [4], "strides": [2], "hidden": [8]}),
    ("mlp", "dlif", (20,), {"hidden": [16], "readout": "linear"}),
])
@pytest.mark.filterwarnings("ignore:nirtorch.load is being deprecated:DeprecationWarning")
def test_nir_export_reads_back_and_imports_into_norse(tmp_path, arch, neuron, shape, kw):
    import nir
    from norse.torch import from_nir

    model = _model(arch, neuron, shape, **kw)
    path = tmp_path / "model.nir"
    from neurodeploy.io import export_nir
    export_nir(model, path, input_shape=shape, time_steps=6)
    graph = nir.read(str(path), type_check=True)
    assert graph.metadata["time_steps"] == 6
    kinds = {type(n).__name__ for n in graph.nodes.values()}
    assert {"Input", "Output"} <= kinds
    assert ("NIRGraph" in kinds) == (arch == "srnn")
    assert ("Conv2d" in kinds and "Flatten" in kinds) == (arch == "conv")
    lif = [n for n in graph.nodes.values() if isinstance(n, (nir.LIF, nir.CubaLIF))]
    assert lif and all(np.asarray(p).ndim >= 1 for n in lif for p in (n.v_threshold, n.v_leak))  # no 0-d params
    module = from_nir(graph, dt=1.0)
    seq, ref = _sequences(model, shape)
    with torch.no_grad():
        out = _run_norse(module, seq, batched=arch != "conv")  # conv graphs are per sample (no batch axis)
    assert ref.abs().sum() > 0
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)  # spikes: exactly equal


def test_nir_parameters_and_dlif_gain_metadata(tmp_path):
    import nir

    from neurodeploy.io.nir_export import build_nir_graph
    model = _model("mlp", "dlif", (20,), hidden=[16], gain=lambda n: torch.linspace(0.5, 1.5, n))
    graph = build_nir_graph(model, input_shape=(20,), time_steps=6)
    lif = graph.nodes["lif0"]
    np.testing.assert_allclose(lif.tau, 10.0, rtol=1e-6)  # 1 / (1 - leak), not times dt
    np.testing.assert_array_equal(lif.r, 1.0)  # folded into the synapse
    np.testing.assert_array_equal(lif.v_leak, 0.0)
    assert lif.metadata["gain_folded"] == pytest.approx(1.0)
    assert lif.metadata["gain_spread"] == pytest.approx(0.5)
    assert lif.metadata["gain_per_step"].shape == (6,)
    fc = graph.nodes["fc0"]
    np.testing.assert_allclose(fc.weight, model.body[1].weight.detach().numpy() * 10.0, rtol=1e-5)
    raw = build_nir_graph(model, input_shape=(20,), time_steps=6, fold_r=False)
    np.testing.assert_allclose(raw.nodes["lif0"].r, 10.0, rtol=1e-6)
    np.testing.assert_allclose(raw.nodes["fc0"].weight, model.body[1].weight.detach().numpy(), rtol=1e-6)
    nir.write(str(tmp_path / "g.nir"), graph)
    back = nir.read(str(tmp_path / "g.nir"))
    np.testing.assert_allclose(back.nodes["lif0"].metadata["gain_per_step"], np.linspace(0.5, 1.5, 6), rtol=1e-6)
    cuba = build_nir_graph(_model("mlp", "cuba-lif", (20,), hidden=[16]), input_shape=(20,), time_steps=6)
    node = cuba.nodes["cuba0"]
    np.testing.assert_allclose(node.tau_syn, 2.5, rtol=1e-6)  # 1 / (1 - 0.6)
    np.testing.assert_allclose(node.w_in, node.tau_syn)
    np.testing.assert_allclose(node.r, node.tau_mem)


def test_nir_folds_input_normalisation(tmp_path):
    from neurodeploy.io.nir_export import NIRExportError, build_nir_graph
    shape = (2, 3, 4)
    model = _model("mlp", "lif", shape, hidden=[8], normalize_mean=[0.5, 0.4], normalize_std=[0.3, 0.2])
    graph = build_nir_graph(model, input_shape=shape, time_steps=6, fold_r=False)
    x = torch.rand(3, *shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model.body[1](model.normalize(x.unsqueeze(0))[0].flatten(1))
    fc = graph.nodes["fc0"]
    got = x.flatten(1).numpy() @ fc.weight.T + fc.bias
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-5)
    # before a zero-padded conv the normalisation stays a per-channel map: a 1x1 conv in front (exact)
    conv = _model("conv", "lif", (2, 6, 6), channels=[2], hidden=[4], normalize_mean=[0.5, 0.4],
                  normalize_std=[0.3, 0.2])
    graph = build_nir_graph(conv, input_shape=(2, 6, 6), time_steps=6, fold_r=False)
    pre, first = graph.nodes["conv0"], graph.nodes["conv1"]
    assert pre.weight.shape == (2, 2, 1, 1) and first.weight.shape == conv.body[0].module.weight.shape
    x = torch.rand(3, 2, 6, 6, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = conv.body[0].module(conv.normalize(x.unsqueeze(0))[0])
        got = torch.nn.functional.conv2d(torch.nn.functional.conv2d(x, torch.tensor(pre.weight),
                                                                    torch.tensor(pre.bias)),
                                         torch.tensor(first.weight), torch.tensor(first.bias),
                                         padding=tuple(first.padding))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    with pytest.raises(NIRExportError, match="time_steps"):
        build_nir_graph(conv, input_shape=(2, 6, 6), time_steps=0)


# --------------------------------------------------------------------------- ONNX


@pytest.mark.parametrize("arch, neuron, shape, kw", [
    ("mlp", "dlif", (2, 3, 4), {"hidden": [16]}),
    ("mlp", "cuba-dlif", (20,), {"hidden": [16], "readout": "linear"}),
    ("conv", "dlif", (2, 9, 7), {"channels": [4, 6], "strides": [1, 2], "hidden": [8],
                                 "normalize_mean": [0.5, 0.4], "normalize_std": [0.3, 0.2]}),
    ("srnn", "dlif", (6, 5), {"hidden": [12]}),
    ("srnn", "cuba-lif", (6, 5), {"hidden": [12, 8]}),
])
def test_onnx_step_matches_torch(tmp_path, arch, neuron, shape, kw):
    import onnx

    from neurodeploy.io import export_onnx, run_onnx, step_interface
    model = _model(arch, neuron, shape, gain=lambda n: torch.linspace(0.8, 1.6, n), **kw)
    path = export_onnx(model, tmp_path / "step.onnx", input_shape=shape)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    spec = step_interface(path)
    assert [i.name for i in proto.graph.input] == ["x", "t", *[s["name"] for s in spec["state"]]]
    seq, ref = _sequences(model, shape)
    out = run_onnx(path, seq.numpy())
    assert ref.abs().sum() > 0
    np.testing.assert_allclose(out, ref.numpy(), rtol=0, atol=1e-5)


def test_onnx_interface_and_errors(tmp_path):
    from neurodeploy.io import export_onnx, step_interface
    from neurodeploy.io.onnx_export import ONNXExportError
    lif = _model("mlp", "lif", (20,), hidden=[16])
    spec = step_interface(export_onnx(lif, tmp_path / "lif.onnx"))  # input shape from the first Linear
    assert spec["inputs"] == {"x": [20], "t": []} and spec["time_steps"] == 6
    assert [s["name"] for s in spec["state"]] == ["v2", "v4"]
    conv = _model("conv", "lif", (1, 6, 6), channels=[2], hidden=[4])
    with pytest.raises(ONNXExportError, match="input_shape is required"):
        export_onnx(conv, tmp_path / "conv.onnx")
    assert not (tmp_path / "conv.onnx").exists()
