"""Sigma-delta (SDNN) netx networks, bit-exact: our reader + emulator and our reader + Lava backend.

What is checked (issue 12, sigma-delta part; semantics in docs/netx-semantics.md 1.3, 2.5, 3):

* lava-dl's own ground truths (``tests/lava/lib/dl/netx/test_hdf5.py``):
  ``test_pilotnet_sdnn`` (``gts/pilotnet_sdnn/network.net``: the 1-frame ``input.npy``
  through a RingBuffer, which repeats it, into ``net.in_layer.neuron.a_in``; 9 steps;
  ``output.npy`` exactly) and ``test_pilotnet_sdnn_spike_exp`` (``spike_exp=0``; exact
  against Lava's own output, and lava-dl's loose criterion against ``output.npy / 64``),
  on the emulator and on the Lava backend, and through ``neurodeploy simulate``;
  the fixture's intermediate states (``act0``: the Delta input's messages,
  ``sigma1``/``sigma2``: blocks 1 and 2's sigma) at all 20 steps on the emulator;
  ``square_network.net``'s Loihi-recorded ``sigma{1..4}_square`` (lava-dl's hardware
  test) at all 20 steps on the emulator, and Lava == emulator on it;
* micro SDNN files run by lava-dl's ``netx.hdf5.Network`` in Lava against ours;
* hand-built random sigma-delta IR networks (Delta input or none, dense and conv,
  Sigma or SigmaDelta outputs, int32 wraps): Lava backend == emulator, every message;
* what netx cannot run exactly (an activation other than ReLU, vThMant arrays, a
  bias on a ``sigma_output`` layer, ...) refused on one line (CLI exit 2).

Time base: netx returns T steps for T input steps; ours ``T + latency``, inputs at
steps ``0..T-1``, zeros after (the first T equal netx's for the same input).
"""

from __future__ import annotations

import warnings

import h5py
import numpy as np
import pytest

from neurodeploy.backends import BackendError, run_network
from neurodeploy.io.netx_hdf5 import NetxFormatError, read_netx
from neurodeploy.ir import ConvLayer, DenseLayer, InputEncoding, IRError, Network, Neurons, SigmaDeltaNeurons
from test_netx_foreign import _FIXTURES, _need, _write

_SDNN = _FIXTURES / "lava-dl" / "netx" / "gts" / "pilotnet_sdnn"
# Lava's pilotnet_sdnn output with spike_exp 0 (docs/netx-semantics.md 1.3; lava-dl's test only bounds its error)
LAVA_SPIKE_EXP0 = [0, -60, 70, 5594, 7048, 5328, -4946, -4946, -76]
STEPS = 9   # lava-dl's test: len(net.layers) steps


def _pilotnet(spike_exp: int = 6, steps: int = STEPS):
    """(network, inputs (1, steps, 3, 33, 100)): the fixture's frame in every step, as lava-dl's 1-column
    RingBuffer plays it."""
    net = read_netx(_need(_SDNN / "network.net"), spike_exp=spike_exp, time_steps=steps)
    frame = np.load(_SDNN / "input.npy")[..., 0].transpose(2, 1, 0)     # (W, H, C) -> (C, H, W)
    return net, np.repeat(frame[None, None], steps, axis=1).astype(np.int64)


# --------------------------------------------------------------------------- lava-dl's ground truths
def test_pilotnet_sdnn_reads_as_netx_builds_it():
    net, _ = _pilotnet()
    assert isinstance(net.input_neurons, SigmaDeltaNeurons) and net.input_neurons.kind == "delta"
    assert [lay.neurons.kind for lay in net.layers] == ["sigma_delta"] * 7 + ["sigma"]
    assert [lay.neurons.vth for lay in net.layers[:7]] == [13, 0, 0, 0, 23, 1, 6]
    assert net.latency == 8 and net.readout == "potential"
    assert all(lay.neurons.spike_exp == 6 and lay.neurons.state_exp == 6 for lay in net.layers)
    assert read_netx(_SDNN / "network.net", spike_exp=0).layers[0].neurons.scale == 64


@pytest.mark.parametrize("spike_exp", [6, 0])
def test_pilotnet_sdnn_ground_truth_on_the_emulator(spike_exp):
    """lava-dl's test_pilotnet_sdnn (exact) and test_pilotnet_sdnn_spike_exp (spike_exp 0: exact against Lava's
    output, and lava-dl's own criterion against the ground truth / 64)."""
    net, x = _pilotnet(spike_exp)
    out = run_network(net, x).output_spikes[0, :STEPS, 0]
    gt = np.load(_SDNN / "output.npy")[0]
    assert np.abs(gt).sum() > 0
    if spike_exp == 6:
        np.testing.assert_array_equal(out, gt)
    else:
        np.testing.assert_array_equal(out, LAVA_SPIKE_EXP0)
        assert np.abs(out - gt / (1 << 6)).mean() < 2 * 64
        assert not np.array_equal(out, gt // 64)          # coarser messages, a different result


def test_pilotnet_sdnn_intermediate_states_on_the_emulator():
    """act0 (the Delta input's messages) and sigma1 / sigma2 (blocks 1 and 2's sigma) at every one of 20 steps."""
    net, x = _pilotnet(steps=20)
    res = run_network(net, x, record_state=True, record_spikes=True)
    act0 = np.load(_SDNN / "act0.npy")
    np.testing.assert_array_equal(res.input_messages[0, :20].reshape(20, 3, 33, 100).transpose(3, 2, 1, 0), act0)
    for li, name in ((0, "sigma1"), (1, "sigma2")):
        gt = np.load(_SDNN / f"{name}.npy")
        c, h, w = net.layers[li].out_shape
        ours = res.layer_sigma[li][0, :20].reshape(20, c, h, w).transpose(3, 2, 1, 0)
        assert np.abs(gt).sum() > 0
        np.testing.assert_array_equal(ours, gt, err_msg=name)


@pytest.mark.parametrize("spike_exp", [6, 0])
def test_pilotnet_sdnn_ground_truth_on_lava(spike_exp):
    """The same ground truth on the Lava backend (Lava's Delta / SigmaDelta / Sigma, Conv and Dense), every
    layer's messages at every step equal to the emulator's."""
    net, x = _pilotnet(spike_exp)
    lav = run_network(net, x, backend="lava", record_spikes=True)
    want = np.load(_SDNN / "output.npy")[0] if spike_exp == 6 else LAVA_SPIKE_EXP0
    np.testing.assert_array_equal(lav.output_spikes[0, :STEPS, 0], want)
    emu = run_network(net, x, record_spikes=True)
    np.testing.assert_array_equal(lav.input_messages, emu.input_messages)
    for li, (a, b) in enumerate(zip(lav.layer_spikes, emu.layer_spikes)):
        np.testing.assert_array_equal(a, b, err_msg=f"layer {li}")
    np.testing.assert_array_equal(lav.spike_counts, emu.spike_counts)
    np.testing.assert_array_equal(lav.output_v, emu.output_v)


@pytest.mark.parametrize("backend,spike_exp", [("emulator", None), ("lava", 0)])
def test_simulate_cli_runs_pilotnet_sdnn(tmp_path, capsys, backend, spike_exp):
    """``simulate network.net --input X.npy [--spike-exp 0]``: X (1, 9, 3, 33, 100) into the Delta's a_in."""
    from neurodeploy.cli import main

    _, x = _pilotnet()
    np.save(tmp_path / "x.npy", x)
    args = ["simulate", str(_SDNN / "network.net"), "--input", str(tmp_path / "x.npy"), "--backend", backend,
            "--out", str(tmp_path / "o.npz"), "--quiet"] + ([] if spike_exp is None else ["--spike-exp", "0"])
    assert main(args + (["--record-state"] if backend == "emulator" else [])) == 0
    z = np.load(tmp_path / "o.npz")
    assert z["output_spikes"].shape == (1, STEPS, 1) and int(z["latency"]) == 8     # netx's time base: T steps
    want = np.load(_SDNN / "output.npy")[0] if spike_exp is None else LAVA_SPIKE_EXP0
    np.testing.assert_array_equal(z["output_spikes"][0, :, 0], want)
    np.testing.assert_array_equal(z["output_v"][0, :, 0], want)        # a Sigma output's value is its state
    if backend == "emulator":                 # --record-state: u_k is layer k's sigma per step
        sigma1 = np.load(_SDNN / "sigma1.npy")[..., :STEPS]
        np.testing.assert_array_equal(z["u_0"][0].reshape(STEPS, 24, 16, 49).transpose(3, 2, 1, 0), sigma1)


# --------------------------------------------------------------------------- micro files against lava-dl's netx
NI = 10


def _sdnn(**kw) -> dict:
    d = dict(type="SDNN", activation="relu", vThMant=2)
    d.update(kw)
    return d


def _micro(with_input: bool, wrap: bool = True) -> list[dict]:
    rng = np.random.default_rng(3)
    layers = [dict(type="input", shape=np.array([NI]), neuron=_sdnn(vThMant=1))] if with_input else []
    bias = rng.integers(-40, 60, 12).astype(np.float64)
    if wrap:
        bias[0] = 600_000   # 600000 * 4096 wraps int32 in Lava's SigmaDelta (spike_exp 6)
    layers += [dict(type="dense", shape=np.array([12]), weight=rng.integers(-90, 90, (12, NI)).astype(np.float32),
                    bias=bias, neuron=_sdnn(vThMant=3)),
               dict(type="dense", shape=np.array([7]), weight=rng.integers(-60, 40, (7, 12)).astype(np.float32),
                    bias=rng.integers(-20, 20, 7).astype(np.float64), neuron=_sdnn(vThMant=0)),
               dict(type="dense", shape=np.array([3]), weight=(rng.integers(-15, 15, (3, 7)) * 4).astype(np.float32),
                    neuron=_sdnn(vThMant=5, sigma_output=True))]
    return layers


def _netx_sdnn(path, x: np.ndarray, spike_exp: int, into_neuron: bool) -> np.ndarray:
    """lava-dl's netx on ``path`` in Lava: ``x`` (T, n) into the input neuron's a_in (lava-dl's SDNN tests) or
    ``net.inp``; the output messages (T, n_out)."""
    from lava.lib.dl import netx
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc import io

    steps = x.shape[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = netx.hdf5.Network(net_config=str(path), spike_exp=spike_exp)
    src = io.source.RingBuffer(data=np.ascontiguousarray(x.T))
    sink = io.sink.RingBuffer(shape=net.out.shape, buffer=steps)
    src.s_out.connect(net.in_layer.neuron.a_in if into_neuron else net.inp)
    net.out.connect(sink.a_in)
    try:
        net.run(condition=RunSteps(num_steps=steps), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        out = np.asarray(sink.data.get())
    finally:
        net.stop()
    return out.T.astype(np.int64)


@pytest.mark.parametrize("with_input,spike_exp", [(True, 6), (True, 3), (False, 6)],
                         ids=["delta_input", "delta_input_spike_exp3", "binary_input"])
def test_micro_sdnn_file_matches_lava_dl_netx(tmp_path, with_input, spike_exp):
    """Delta input (signed values changing every step) or binary input into a SigmaDelta stack with a Sigma output;
    one bias wraps int32 when Lava scales it: lava-dl's netx in Lava and our reader + emulator / Lava agree."""
    path = _write(tmp_path / "m.net", _micro(with_input))
    rng = np.random.default_rng(4)
    T = 12
    x = rng.integers(-50, 50, (T, NI)) if with_input else (rng.random((T, NI)) < 0.4).astype(np.int64)
    want = _netx_sdnn(path, x, spike_exp, with_input)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        net = read_netx(path, spike_exp=spike_exp, time_steps=T)
    if spike_exp == 6:
        assert any("wraps" in str(w.message) for w in caught)
    assert np.abs(want).sum() > 0
    emu = run_network(net, x[None], record_spikes=True, record_state=True)
    lav = run_network(net, x[None], backend="lava", record_spikes=True, record_state=True)
    np.testing.assert_array_equal(emu.output_spikes[0, :T], want)
    np.testing.assert_array_equal(lav.output_spikes[0, :T], want)
    for name in ("final_u", "final_v", "layer_spikes"):
        for li, (a, b) in enumerate(zip(getattr(emu, name), getattr(lav, name))):
            np.testing.assert_array_equal(a, b, err_msg=f"{name} layer {li}")


# --------------------------------------------------------------------------- random IR networks: Lava == emulator
def _sd(rng, kind: str, n: int, spike_exp: int, big: bool = False) -> SigmaDeltaNeurons:
    if kind == "sigma":
        return SigmaDeltaNeurons("sigma", 0, np.zeros(n, np.int64), spike_exp)
    hi = 2**31 // (1 << (spike_exp + 6)) - 1 if big else 200
    bias = rng.integers(-hi // 4 if big else -30, hi // 4 if big else 40, n).astype(np.int64)
    return SigmaDeltaNeurons(kind, int(rng.integers(0, 8)), bias if kind == "sigma_delta" else np.zeros(n, np.int64),
                             spike_exp)


def _dense_w(rng, o: int, i: int) -> tuple[np.ndarray, int, int, str]:
    exp, nbits, sm = [(0, 8, "mixed"), (-2, 6, "mixed"), (-3, 7, "mixed"), (1, 8, "excitatory")][int(rng.integers(4))]
    w = rng.integers(-120, 120, (o, i))
    if sm == "excitatory":
        w = np.abs(w)
    return w, exp, nbits, sm


def random_sigma_delta_network(rng, kind: str) -> tuple[Network, np.ndarray]:
    """A sigma-delta IR network and its inputs (2 samples); hidden dense layers are sometimes Sigma (they send
    their value). ``dense``: a Delta input fed values up to 2**20 (its
    ``a_in << 12`` and the sums after it wrap int32); ``graded``: no input population, graded input; ``conv``: a
    Delta input of (2, 7, 6) into a strided, padded, grouped conv, then dense."""
    spike_exp = int(rng.choice([6, 6, 2, 0]))
    T = int(rng.integers(3, 7))
    layers: list = []
    if kind == "conv":
        shape = (2, 7, 6)
        conv = ConvLayer(weight=rng.integers(-30, 36, (4, 1, 3, 2)), neurons=None, in_shape=shape, stride=(2, 1),
                         padding=(1, 0), groups=2, name="conv")
        conv.neurons = _sd(rng, "sigma_delta", int(np.prod(conv.out_shape)), spike_exp)
        layers.append(conv)
        n = int(np.prod(conv.out_shape))
    else:
        shape = (int(rng.integers(3, 9)),)
        n = shape[0]
    for k in range(int(rng.integers(1, 3))):
        o = int(rng.integers(2, 9))
        w, exp, nbits, sm = _dense_w(rng, o, n)
        hidden = "sigma" if rng.random() < 0.3 else "sigma_delta"     # netx: a hidden sigma_output layer
        layers.append(DenseLayer(weight=w, neurons=_sd(rng, hidden, o, spike_exp, big=kind == "dense"),
                                 weight_exp=exp, num_weight_bits=nbits, sign_mode=sm, name=f"d{k}"))
        n = o
    last = "sigma" if rng.random() < 0.5 else "sigma_delta"
    w, exp, nbits, sm = _dense_w(rng, 3, n)
    layers.append(DenseLayer(weight=w, neurons=_sd(rng, last, 3, spike_exp), weight_exp=exp, num_weight_bits=nbits,
                             sign_mode=sm, name="out"))
    pop = None if kind == "graded" else SigmaDeltaNeurons("delta", int(rng.integers(0, 3)),
                                                          np.zeros(int(np.prod(shape)), np.int64), spike_exp)
    net = Network(input_shape=shape, layers=layers, time_steps=T, input_neurons=pop,
                  input_encoding=InputEncoding("graded", 8, 255.0),
                  readout="potential" if last == "sigma" else "spikes").validate()
    if kind == "graded":
        x = rng.integers(0, 256, (2, T, *shape))
    elif kind == "dense":
        x = rng.integers(-(2**20), 2**20, (2, T, *shape))
    else:
        x = rng.integers(-64, 65, (2, T, *shape))
    return net, x


@pytest.mark.parametrize("kind,seed", [(k, s) for k in ("dense", "graded", "conv") for s in (0, 1)])
def test_random_sigma_delta_networks_lava_matches_emulator(kind, seed):
    net, x = random_sigma_delta_network(np.random.default_rng(100 * seed + len(kind)), kind)
    traces = [0, len(net.layers) - 1] if seed else True      # sigma and act per step (Lava: its Monitors)
    emu = run_network(net, x, record_state=True, record_spikes=True, record_traces=traces)
    lav = run_network(net, x, backend="lava", record_state=True, record_spikes=True, record_traces=traces)
    assert emu.output_spikes.dtype == np.int64 and emu.output_spikes.shape == (2, net.time_steps + net.latency, 3)
    assert any(np.any(s) for s in emu.layer_spikes), "a silent network checks nothing"
    for name in ("output_spikes", "spike_counts", "input_messages", "output_v"):
        a, b = getattr(emu, name), getattr(lav, name)
        assert (a is None) == (b is None), name
        if a is not None:
            np.testing.assert_array_equal(a, b, err_msg=f"{kind} seed {seed}: {name}")
    for name in ("final_u", "final_v", "layer_spikes", "layer_u", "layer_v"):
        for li, (a, b) in enumerate(zip(getattr(emu, name), getattr(lav, name))):
            assert (a is None) == (b is None), f"{name} layer {li}"
            np.testing.assert_array_equal(a, b, err_msg=f"{kind} seed {seed}: {name} layer {li}")
    assert all((u is None) == (li not in ([0, len(net.layers) - 1] if seed else range(len(net.layers))))
               for li, u in enumerate(emu.layer_u))
    np.testing.assert_array_equal(emu.layer_u[-1][:, -1], emu.final_u[-1])


def test_emulator_sigma_delta_wraps_int32_as_lava_does():
    """The Delta's ``a_in << 12`` wraps at 32 bits (2**20 << 12 == -2**31): numpy int32 arithmetic, as Lava's."""
    pop = SigmaDeltaNeurons("delta", 0, np.zeros(1, np.int64))
    net = Network(input_shape=(1,), layers=[DenseLayer(weight=np.ones((1, 1), np.int64),
                                                       neurons=SigmaDeltaNeurons("sigma", 0, np.zeros(1, np.int64)))],
                  time_steps=2, input_neurons=pop, readout="potential").validate()
    res = run_network(net, np.array([[[2**19 + 1], [0]]]), record_spikes=True)
    # step 0: (2**19 + 1) << 12 = 2**31 + 4096 wraps to -2**31 + 4096, sent >> 6; step 1: delta = 2**31 - 4096
    assert res.input_messages[0, :2, 0].tolist() == [-(2**25) + 64, 2**25 - 64]


# --------------------------------------------------------------------------- refusals
def _one_line(err, path, layer, field, *words) -> None:
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and f"layer {layer}" in msg and f"'{field}'" in msg, msg
    for w in words:
        assert w in msg, msg
    assert (err.value.layer, err.value.field) == (layer, field), msg


def _refusal_cases() -> dict:
    w = np.ones((4, NI), np.float32)
    inp = dict(type="input", shape=np.array([NI]), neuron=_sdnn(vThMant=1))
    return {
        "activation_identity": ([inp, dict(type="dense", shape=np.array([4]), weight=w,
                                           neuron=_sdnn(activation="identity"))], 1, "neuron/activation",
                                ("'identity'", "ReLU")),
        "vth_array": ([inp, dict(type="dense", shape=np.array([4]), weight=w, neuron=_sdnn(vThMant=np.arange(4)))],
                      1, "neuron/vThMant", ("shape (4,)", "(1,)")),
        "input_vth_array": ([dict(type="input", shape=np.array([NI]), neuron=_sdnn(vThMant=np.arange(NI))),
                             dict(type="dense", shape=np.array([4]), weight=w, neuron=_sdnn())], 0,
                            "neuron/vThMant", ("Delta",)),
        "sigma_bias": ([inp, dict(type="dense", shape=np.array([4]), weight=w, bias=np.ones(4),
                                  neuron=_sdnn(sigma_output=True))], 1, "bias", ("Sigma", "no bias")),
        "sigma_false": ([inp, dict(type="dense", shape=np.array([4]), weight=w,
                                   neuron=_sdnn(sigma_output=False))], 1, "neuron/sigma_output", ("false",)),
        "vth_big": ([inp, dict(type="dense", shape=np.array([4]), weight=w, neuron=_sdnn(vThMant=2**19))], 1,
                    "neuron/vThMant", ("524288", "0..524287")),
        "vth_fraction": ([inp, dict(type="dense", shape=np.array([4]), weight=w, neuron=_sdnn(vThMant=1.5))], 1,
                         "neuron/vThMant", ("not an integer",)),
        "message_bits": ([inp, dict(type="dense", shape=np.array([4]), weight=w, neuron=_sdnn(messageBits=16))], 1,
                         "neuron/messageBits", ("NetDict",)),
        "dense_rec": ([inp, dict(type="dense_rec", shape=np.array([4]), weight=w, weight_rec=np.ones((4, 4)),
                                 neuron=_sdnn())], 1, "neuron/type", ("dense_rec",)),
        "delay": ([inp, dict(type="dense", shape=np.array([4]), weight=w, delay=np.float32(3), neuron=_sdnn())], 1,
                  "delay", ("sigma-delta", "max 3")),
        "mixed_cuba_after_sdnn": ([inp, dict(type="dense", shape=np.array([4]), weight=w,
                                             neuron=dict(type="CUBA", iDecay=1024, vDecay=256, vThMant=40))], 1,
                                  "neuron/type", ("CUBA", "not supported")),
        "mixed_sdnn_after_cuba": ([dict(type="dense", shape=np.array([4]), weight=w,
                                        neuron=dict(type="CUBA", iDecay=1024, vDecay=256, vThMant=40)),
                                   dict(type="dense", shape=np.array([3]), weight=np.ones((3, 4)), neuron=_sdnn())], 1,
                                  "neuron/type", ("'SDNN'", "not supported")),
    }


REFUSALS = _refusal_cases()


@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_what_netx_cannot_run_exactly_is_refused_on_one_line(tmp_path, name):
    layers, layer, field, words = REFUSALS[name]
    path = _write(tmp_path / f"{name}.net", layers)
    with pytest.raises(NetxFormatError) as err:
        read_netx(path)
    _one_line(err, path, layer, field, *words)


def test_read_netx_refuses_a_spike_exp_out_of_range(tmp_path):
    path = _write(tmp_path / "ok.net", _micro(True))
    for bad in (-1, 25, 6.0, True):
        with pytest.raises(NetxFormatError, match=r"spike_exp .*expected an integer 0\.\.24"):
            read_netx(path, spike_exp=bad)


@pytest.mark.parametrize("case", ["activation", "spike_exp_cuba", "spike_exp_range", "reset", "fraction", "int32",
                                  "bias"])
def test_simulate_refuses_bad_sdnn_input_on_one_line(tmp_path, capsys, case):
    """Exit 2 and one line naming what is wrong; no output file."""
    from neurodeploy.cli import main

    net_path = _write(tmp_path / "m.net", _micro(True, wrap=False))
    x = np.zeros((1, 4, NI), np.int64)
    extra: list = []
    if case == "activation":
        net_path = _write(tmp_path / "bad.net", REFUSALS["activation_identity"][0])
    elif case == "spike_exp_cuba":
        net_path = _write(tmp_path / "cuba.net", [dict(type="dense", shape=np.array([4]), weight=np.ones((4, NI)),
                                                       neuron=dict(type="CUBA", iDecay=1, vDecay=1, vThMant=4))])
        extra = ["--spike-exp", "3"]
    elif case == "spike_exp_range":
        extra = ["--spike-exp", "25"]
    elif case == "reset":
        extra = ["--reset-interval", "5"]
    elif case == "fraction":
        x = np.full((1, 4, NI), 0.5)
    elif case == "int32":
        x = np.full((1, 4, NI), 2**31)
    else:
        np.save(tmp_path / "b.npy", np.zeros((1, NI), np.int64))
        extra = ["--bias", str(tmp_path / "b.npy")]
    np.save(tmp_path / "x.npy", x)
    capsys.readouterr()
    code = main(["simulate", str(net_path), "--input", str(tmp_path / "x.npy"), "--out", str(tmp_path / "o.npz"),
                 "--quiet", *extra])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and err.strip().count("\n") == 0, err
    words = {"activation": "neuron/activation", "spike_exp_cuba": "--spike-exp", "spike_exp_range": "--spike-exp",
             "reset": "reset_interval", "fraction": "--input", "int32": "--input", "bias": "bias"}[case]
    assert words in err, err
    assert not (tmp_path / "o.npz").exists()


def test_sigma_delta_ir_is_validated_on_one_line():
    def net(pop=None, nrn=None, **kw):
        nrn = nrn if nrn is not None else SigmaDeltaNeurons("sigma_delta", 1, np.zeros(3, np.int64))
        return Network(input_shape=(4,), layers=[DenseLayer(weight=np.ones((3, 4), np.int64), neurons=nrn)],
                       time_steps=2, input_neurons=pop, **kw)

    z = np.zeros(3, np.int64)
    cases = [
        (net(nrn=SigmaDeltaNeurons("relu", 1, z)), "sigma-delta kind 'relu'"),
        (net(nrn=SigmaDeltaNeurons("delta", 1, z)), "'delta' is only an input population"),
        (net(pop=SigmaDeltaNeurons("sigma_delta", 1, np.zeros(4, np.int64))), "an input population is a Delta"),
        (net(nrn=SigmaDeltaNeurons("sigma_delta", np.arange(3), z)), "expected one integer"),
        (net(nrn=SigmaDeltaNeurons("sigma", 0, np.ones(3, np.int64))), "takes no bias"),
        (net(nrn=SigmaDeltaNeurons("sigma", 2, z)), "no threshold"),
        (net(nrn=SigmaDeltaNeurons("sigma_delta", 1, z, spike_exp=25)), "spike_exp + state_exp is 31"),
        (net(nrn=SigmaDeltaNeurons("sigma_delta", 2**19, z)), "vth is 524288, expected 0..524287"),
        (net(nrn=SigmaDeltaNeurons("sigma_delta", 1, np.zeros(2, np.int64))), "bias has shape (2,)"),
        (net(pop=Neurons(du=0, dv=0, vth=1, bias_mant=np.zeros(4, np.int64))), "CUBA neurons in a sigma-delta"),
        (net(reset_interval=4), "reset_interval 4 on a sigma-delta network"),
    ]
    for network, words in cases:
        with pytest.raises(IRError) as err:
            network.validate("net")
        assert words in str(err.value) and "\n" not in str(err.value), str(err.value)
    mixed = Network(input_shape=(4,), layers=[
        DenseLayer(weight=np.ones((3, 4), np.int64), neurons=Neurons(du=0, dv=0, vth=1, bias_mant=z)),
        DenseLayer(weight=np.ones((3, 3), np.int64), neurons=SigmaDeltaNeurons("sigma", 0, z))], time_steps=2)
    with pytest.raises(IRError, match="layer 0: neurons is a Neurons in a sigma-delta network"):
        mixed.validate("net")


def test_backends_refuse_cuba_options_on_sigma_delta_networks():
    net, x = random_sigma_delta_network(np.random.default_rng(0), "dense")
    for backend in ("emulator", "lava"):
        with pytest.raises(BackendError, match="sigma-delta"):
            run_network(net, x, backend=backend, bias=np.zeros((2, *net.input_shape), np.int64))
    from neurodeploy.backends.emulator import Emulator

    with pytest.raises(BackendError, match="SigmaDeltaEmulator"):
        Emulator(net)


def test_square_network_reads_conv_only(tmp_path):
    """square_network.net (input [3, 33, 33], four SDNN conv layers, padding [1, 1]) reads: thresholds and the raw
    conv kernels (netx hands Lava's Conv the file's weights) as h5py sees them."""
    path = _need(_SDNN / "square_network.net")
    net = read_netx(path)
    assert [lay.out_shape for lay in net.layers] == [(24, 16, 16), (36, 7, 7), (64, 4, 4), (64, 2, 2)]
    with h5py.File(path) as f:
        for i, lay in enumerate(net.layers, start=1):
            assert lay.neurons.vth == int(f[f"layer/{i}/neuron/vThMant"][()])
            assert lay.weight_exp == 0
            np.testing.assert_array_equal(lay.weight, f[f"layer/{i}/weight"][()].astype(np.int64))
    assert net.readout == "spikes"


def test_writing_a_sigma_delta_network_is_refused(tmp_path):
    from neurodeploy.io.netx_hdf5 import NetxExportError, write_netx

    net, _ = random_sigma_delta_network(np.random.default_rng(2), "dense")
    with pytest.raises(NetxExportError, match="sigma-delta .* does not write them"):
        write_netx(net, tmp_path / "sd.net")
    assert not (tmp_path / "sd.net").exists()


def _square(steps: int):
    """square_network.net as lava-dl's hardware test runs it (``skip_layers=1``: ``act0[:33, :33]``, the Delta
    messages, straight into the first conv's s_in): here a Delta input with spike_exp 0 and threshold 0 fed the
    running sum of act0 sends exactly act0 (its messages are the differences); the layers keep spike_exp 6."""
    net = read_netx(_need(_SDNN / "square_network.net"), time_steps=steps)
    act0 = np.load(_SDNN / "act0.npy")[:33, :33, :, :steps].transpose(3, 2, 1, 0)      # (T, C, H, W)
    net.input_neurons = SigmaDeltaNeurons("delta", 0, np.zeros(act0[0].size, np.int64), spike_exp=0)
    return net, act0, np.cumsum(act0, axis=0)[None].astype(np.int64)


def test_square_network_hardware_sigmas_on_the_emulator():
    """lava-dl's test_hdf5_nx::test_pilotnet_sdnn_square ground truth (recorded on Loihi): every conv layer's sigma
    equals ``sigma{i}_square.npy`` at every one of its 20 steps (the hardware test checks step 4)."""
    net, act0, x = _square(20)
    res = run_network(net, x, record_state=True, record_spikes=True)
    np.testing.assert_array_equal(res.input_messages[0, :20].reshape(act0.shape), act0)
    for li in range(4):
        gt = np.load(_SDNN / f"sigma{li + 1}_square.npy")
        c, h, w = net.layers[li].out_shape
        ours = res.layer_sigma[li][0, :20].reshape(20, c, h, w).transpose(3, 2, 1, 0)
        assert np.abs(gt).sum() > 0
        np.testing.assert_array_equal(ours, gt, err_msg=f"sigma{li + 1}_square")


def test_square_network_on_lava_matches_the_emulator():
    net, _, x = _square(5)
    lav = run_network(net, x, backend="lava", record_spikes=True)
    emu = run_network(net, x, record_spikes=True)
    for li, (a, b) in enumerate(zip(lav.layer_spikes, emu.layer_spikes)):
        assert np.any(b), li
        np.testing.assert_array_equal(a, b, err_msg=f"layer {li}")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["dense", "graded", "conv"])
def test_random_sigma_delta_networks_sweep_large(kind):
    for seed in range(2, 22):
        test_random_sigma_delta_networks_lava_matches_emulator(kind, seed)
