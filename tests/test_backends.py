"""Backends: the numpy emulator and real Lava 0.10 (fixed_pt), bit for bit.

Fast subset: hand-computed networks on both backends, Lava-vs-emulator
differential runs on a few seeded networks (every output spike, spike counts,
final u and v of every layer), overflow corners, sign modes, state reset
between samples, validation before Lava starts, and process cleanup.
The large random sweep is in test_backends_sweep.py (``-m slow``).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from neurodeploy.backends import BackendError, RunResult, run_network
from neurodeploy.backends.base import effective_weights
from neurodeploy.ir import ConvLayer, DenseLayer, InputEncoding, IRError, Network, Neurons

U_LIM = 2**23


# --------------------------------------------------------------------------- helpers
def child_pids() -> set:
    """PIDs whose parent is this process (from /proc), minus Python's own
    multiprocessing resource tracker (a per-interpreter singleton, not Lava's)."""
    me = str(os.getpid())
    out = set()
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = f.read().rsplit(")", 1)[1].split()[1]
            if ppid != me:
                continue
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if b"resource_tracker" not in cmd:
            out.add(int(d))
    return out


def assert_same(a: RunResult, b: RunResult, what: str = "") -> None:
    np.testing.assert_array_equal(a.output_spikes, b.output_spikes, err_msg=f"{what} output spikes")
    np.testing.assert_array_equal(a.spike_counts, b.spike_counts, err_msg=f"{what} spike counts")
    for name in ("final_u", "final_v"):
        la, lb = getattr(a, name), getattr(b, name)
        assert (la is None) == (lb is None)
        if la is None:
            continue
        assert len(la) == len(lb)
        for i, (x, y) in enumerate(zip(la, lb)):
            np.testing.assert_array_equal(x, y, err_msg=f"{what} {name} layer {i}")


def both(network, x, **kw):
    emu = run_network(network, x, backend="emulator", record_state=True, **kw)
    lav = run_network(network, x, backend="lava", record_state=True)
    return emu, lav


def _neurons(rng, n, max_a, foreign=False):
    du = int(rng.choice([0, 1, 410, 2047, 3000, 4095, int(rng.integers(0, 4096))]))
    dv = int(rng.choice([0, 1, 410, 2048, 3500, 4095, int(rng.integers(0, 4096))]))
    vth = int(np.exp(rng.uniform(0, np.log(max(2, min(131071, max_a // 8))))))
    if foreign:  # what foreign netx files hold: du -1 (iDecay 0), dv 4096, per-neuron arrays, unreachable vth
        du = int(rng.choice([-1, -1, du]))
        dv = int(rng.choice([4096, 4096, dv]))
        r = rng.random()
        if r < 0.15:
            vth = int(rng.choice([131072, 262143, 1 << 20]))
        if rng.random() < 0.5:
            du = rng.integers(-1, 4096, n).astype(np.int64)
            du[rng.random(n) < 0.3] = -1
        if rng.random() < 0.5:
            dv = rng.integers(0, 4097, n).astype(np.int64)
            dv[rng.random(n) < 0.3] = 4096
        if rng.random() < 0.3:
            vth = np.maximum(1, (vth * rng.uniform(0.25, 2.0, n)).astype(np.int64))
    bmag = 2 ** int(rng.integers(0, 13))
    bias = rng.integers(-bmag, bmag + 1, n)
    if rng.random() < 0.3:
        bias[:] = 0
    return Neurons(du=du, dv=dv, vth=vth, bias_mant=bias.astype(np.int64),
                   bias_exp=int(rng.integers(-4, 7)))


def _synapse_kw(rng, extreme=False, foreign=False):
    lo, hi = (-10, 9) if extreme else (-4, 4)
    kw = dict(weight_exp=int(rng.integers(lo, hi)), num_weight_bits=int(rng.integers(1, 9)),
              sign_mode=str(rng.choice(["mixed", "mixed", "excitatory", "inhibitory"])))
    if foreign and rng.random() < 0.5:  # netx's 9-bit mixed-sign weights: odd values, nothing truncated
        kw.update(num_weight_bits=9, sign_mode="mixed")
    return kw


def random_network(rng, kind: str = "dense", max_layers: int = 3, max_width: int = 12,
                   extreme: bool = False, max_hw: int = 7, foreign: bool = False) -> Network:
    """A seeded random network: ``kind`` in dense / rec / conv. ``extreme`` widens
    graded inputs (up to 24 bit) and weight exponents so sums overflow and u wraps.
    ``foreign`` adds what foreign netx files hold: du = -1 (iDecay 0), dv = 4096, per-neuron
    du / dv / vth arrays, thresholds v never reaches, 9-bit mixed-sign weights."""
    if rng.random() < 0.5:
        enc = InputEncoding("graded", bits=int(rng.integers(1, 25 if extreme else 11)))
        max_in = 2**enc.bits - 1
    else:
        enc = InputEncoding("spikes")
        max_in = 1
    layers = []
    T = int(rng.integers(1, 6))
    if kind == "conv":
        c, h, w = int(rng.integers(1, 4)), int(rng.integers(3, max_hw + 1)), int(rng.integers(3, max_hw + 1))
        in_shape = (c, h, w)
        shape = in_shape
        for _ in range(int(rng.integers(1, 3))):
            groups = int(rng.choice([g for g in (1, 2, 3) if shape[0] % g == 0]))
            c_out = groups * int(rng.integers(1, 4))
            kh, kw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
            stride = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
            dilation = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
            padding = (int(rng.integers(0, 2)), int(rng.integers(0, 2)))
            weight = rng.integers(-300, 301, (c_out, shape[0] // groups, kh, kw))
            probe = ConvLayer(weight=weight, neurons=None, in_shape=shape, stride=stride,
                              padding=padding, dilation=dilation, groups=groups)
            out = probe.out_shape
            if min(out) < 1:
                break
            fan_in = shape[0] // groups * kh * kw
            m = max_in if not layers else 1
            layers.append(ConvLayer(weight=weight, neurons=_neurons(rng, int(np.prod(out)), 100 * fan_in * m, foreign),
                                    in_shape=shape, stride=stride, padding=padding, dilation=dilation,
                                    groups=groups, **_synapse_kw(rng, extreme, foreign)))
            shape = out
        n_prev = int(np.prod(shape))
        if not layers or rng.random() < 0.7:
            n = int(rng.integers(1, max_width + 1))
            m = max_in if not layers else 1
            layers.append(DenseLayer(weight=rng.integers(-300, 301, (n, n_prev)),
                                     neurons=_neurons(rng, n, 100 * n_prev * m, foreign), **_synapse_kw(rng, extreme, foreign)))
    else:
        n_in = int(rng.integers(1, max_width + 1))
        in_shape = (n_in,)
        n_prev = n_in
        for li in range(int(rng.integers(1, max_layers + 1))):
            n = int(rng.integers(1, max_width + 1))
            m = max_in if li == 0 else 1
            rec = None
            if kind == "rec" and (li == 0 or rng.random() < 0.6):
                rec = rng.integers(-300, 301, (n, n))
            layers.append(DenseLayer(weight=rng.integers(-300, 301, (n, n_prev)),
                                     neurons=_neurons(rng, n, 100 * n_prev * m, foreign), weight_rec=rec,
                                     weight_rec_exp=int(rng.integers(-3, 3)), **_synapse_kw(rng, extreme, foreign)))
            n_prev = n
    return Network(input_shape=in_shape, layers=layers, time_steps=T, input_encoding=enc)


def random_inputs(rng, network: Network, samples: int) -> np.ndarray:
    enc = network.input_encoding
    hi = 1 if enc.kind == "spikes" else 2**enc.bits - 1
    shape = (samples, network.time_steps, *network.input_shape)
    x = rng.integers(0, hi + 1, shape)
    x[rng.random(shape) < rng.uniform(0.0, 0.7)] = 0        # some sparsity
    return np.concatenate([x, x[:1]])                          # last sample repeats the first


# --------------------------------------------------------------------------- hand-made networks
def hand_network() -> Network:
    """3 spike inputs -> 2 -> 2, T=4. See test_hand_network for the derivation."""
    l1 = DenseLayer(weight=np.array([[10, 20, 0], [0, 30, -40]]),
                    neurons=Neurons(du=4095, dv=0, vth=25, bias_mant=np.zeros(2, dtype=np.int64)))
    l2 = DenseLayer(weight=np.array([[50, 0], [-20, 40]]),
                    neurons=Neurons(du=2047, dv=2048, vth=30, bias_mant=np.array([0, 8]), bias_exp=3))
    return Network(input_shape=(3,), layers=[l1, l2], time_steps=4, input_encoding=InputEncoding("spikes"))


HAND_X = np.array([[[1, 0, 0], [1, 1, 0], [0, 1, 1], [1, 1, 1]]])


@pytest.mark.parametrize("backend", ["emulator", "lava"])
def test_hand_network(backend):
    # Steps s = 0..5 (T=4 + latency 2). Mixed 8-bit weights keep even values, all
    # weights here are even. Layer l receives at step s its input of step s-1.
    # Layer 1 (du=4095: u = 0 + a<<6, i.e. no memory; dv=0: v never decays;
    # threshold 25<<6 = 1600; work in units of 64):
    #   a(s) = W1 @ x(s-1): n0: s1 10, s2 30, s3 20, s4 30, s5 0
    #                       n1: s1 0,  s2 30, s3 -10, s4 -10, s5 0
    #   n0 v: 10, 40>25 spike->0, 20, 50 spike->0, 0      -> spikes at s2, s4
    #   n1 v: 0, 30 spike->0, -10, -20, -20               -> spike at s2
    #   final: u = (0, 0), v = (0, -20*64 = -1280)
    # Layer 2 (du=2047: u = trunc(u/2) + a<<6; dv=2048: v = trunc(v/2) + u + b;
    # b = (0, 8<<3 = 64); threshold 30<<6 = 1920):
    #   a(s) = W2 @ s1(s-1): s3: (50, -20+40=20), s5: (50, -20), else 0
    #   n0: s3 u=3200 v=3200 spike->0; s4 u=1600 v=1600; s5 u=800+3200=4000,
    #       v=800+4000=4800 spike->0        -> spikes s3, s5; final u=4000, v=0
    #   n1: v s0..s2 = 64, 32+64=96, 48+64=112; s3 u=1280 v=56+1280+64=1400;
    #       s4 u=640 v=700+640+64=1404; s5 u=320-1280=-960 v=702-960+64=-194
    #       no spikes; final u=-960, v=-194
    res = run_network(hand_network(), HAND_X, backend=backend, record_state=True)
    expected_out = np.array([[[0, 0], [0, 0], [0, 0], [1, 0], [0, 0], [1, 0]]], dtype=np.uint8)
    np.testing.assert_array_equal(res.output_spikes, expected_out)
    np.testing.assert_array_equal(res.spike_counts, [[3, 2]])
    np.testing.assert_array_equal(res.final_u[0], [[0, 0]])
    np.testing.assert_array_equal(res.final_v[0], [[0, -1280]])
    np.testing.assert_array_equal(res.final_u[1], [[4000, -960]])
    np.testing.assert_array_equal(res.final_v[1], [[0, -194]])
    assert res.latency == 2 and res.time_steps == 4 and res.total_steps == 6
    # the float model's T steps are steps latency .. latency+T-1 = 2..5
    np.testing.assert_array_equal(res.aligned_output(), expected_out[:, 2:6])
    np.testing.assert_array_equal(res.predictions(), [0])


def hand_recurrent_network() -> Network:
    nrn = dict(du=4095, dv=4095, vth=30)
    l1 = DenseLayer(weight=np.array([[40]]), weight_rec=np.array([[36]]),
                    neurons=Neurons(bias_mant=np.zeros(1, dtype=np.int64), **nrn))
    l2 = DenseLayer(weight=np.array([[40]]), neurons=Neurons(bias_mant=np.zeros(1, dtype=np.int64), **nrn))
    return Network(input_shape=(1,), layers=[l1, l2], time_steps=2, input_encoding=InputEncoding("spikes"))


@pytest.mark.parametrize("backend", ["emulator", "lava"])
def test_hand_recurrent(backend):
    # x = (1, 0); steps 0..3. du=4095: u = a<<6; dv=4095: v = trunc(v/4096) + u;
    # threshold 30<<6 = 1920. Layer 1 (recurrent weight 36 onto itself):
    #   s1: a = 40 (input of s0) -> u = v = 2560 > 1920: spike
    #   s2: a = 0 + 36 (own spike of s1) -> 2304: spike;  s3: same: spike
    #   (without recurrence it would spike at s1 only)
    # Layer 2: a(s) = 40 * spike1(s-1): spikes at s2, s3 (u = 2560, v reset to 0).
    res = run_network(hand_recurrent_network(), np.array([[[1], [0]]]), backend=backend, record_state=True)
    np.testing.assert_array_equal(res.output_spikes[0, :, 0], [0, 0, 1, 1])
    np.testing.assert_array_equal(res.spike_counts, [[3, 2]])
    np.testing.assert_array_equal(res.final_u[0], [[2304]])
    np.testing.assert_array_equal(res.final_u[1], [[2560]])
    np.testing.assert_array_equal(res.final_v[0], [[0]])
    np.testing.assert_array_equal(res.final_v[1], [[0]])


# --------------------------------------------------------------------------- pure (no Lava runtime)
def test_effective_weights_match_lava_weightutils():
    from lava.utils.weightutils import SignMode, clip_weights, truncate_weights

    rng = np.random.default_rng(0)
    w = rng.integers(-600, 600, (40, 50))
    for mode in ("mixed", "excitatory", "inhibitory"):
        for bits in range(1, 9):
            sm = SignMode[mode.upper()]
            ref = truncate_weights(clip_weights(w, sm, num_bits=8), sm, bits)
            np.testing.assert_array_equal(effective_weights(w, mode, bits), ref, err_msg=f"{mode} {bits}")
    # the corners the doc mentions, and inhibitory truncating toward zero
    assert effective_weights(np.array([3, -3, 300, -300]), "mixed", 8).tolist() == [2, -4, 254, -256]
    assert effective_weights(np.array([-3, 3, -300]), "inhibitory", 7).tolist() == [-2, 0, -254]


def test_emulator_conv_matches_torch():
    import torch

    from neurodeploy.backends.emulator import _Synapse

    rng = np.random.default_rng(1)
    for _ in range(10):
        groups = int(rng.choice([1, 2]))
        c_in, c_out = 2 * int(rng.integers(1, 3)), 2 * int(rng.integers(1, 3))
        k = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        layer = ConvLayer(weight=rng.integers(-256, 255, (c_out, c_in // groups, *k)), neurons=None,
                          in_shape=(c_in, 7, 6), stride=(int(rng.integers(1, 3)), int(rng.integers(1, 3))),
                          padding=(int(rng.integers(0, 3)), int(rng.integers(0, 3))),
                          dilation=(int(rng.integers(1, 3)), int(rng.integers(1, 3))), groups=groups)
        if min(layer.out_shape) < 1:
            continue
        x = rng.integers(0, 256, (5, c_in * 42))
        syn = _Synapse.build(layer.weight, "mixed", 8, 0, True, 255, conv=layer)
        got = syn.apply(x)
        ref = torch.nn.functional.conv2d(torch.tensor(x.reshape(5, c_in, 7, 6), dtype=torch.float64),
                                         torch.tensor(syn.weight, dtype=torch.float64),
                                         stride=layer.stride, padding=layer.padding,
                                         dilation=layer.dilation, groups=groups)
        np.testing.assert_array_equal(got, ref.numpy().reshape(5, -1).astype(np.int64))


def test_run_result_alignment_and_predictions():
    out = np.zeros((2, 5, 3), dtype=np.uint8)
    out[0, 0, 2] = 1            # before the window (latency 2): ignored
    out[0, 2:4, 1] = 1
    out[1, 2, 0] = out[1, 3, 2] = 1   # tie -> lowest index
    res = RunResult(out, np.zeros((2, 2), dtype=np.int64), None, None, latency=2, time_steps=3)
    assert res.aligned_output().shape == (2, 3, 3)
    np.testing.assert_array_equal(res.predictions(), [1, 0])


def test_emulator_batching_is_invariant():
    rng = np.random.default_rng(5)
    net = random_network(rng, "rec")
    x = random_inputs(rng, net, 9)
    a = run_network(net, x, record_state=True, batch_size=1)
    b = run_network(net, x, record_state=True, batch_size=4)
    c = run_network(net, x, record_state=True)
    assert_same(a, b)
    assert_same(a, c)


@pytest.mark.parametrize("kind", ["dense", "rec", "conv"])
def test_emulator_fast_path_equals_general_path(kind, monkeypatch):
    from neurodeploy.backends import emulator

    for seed in range(8):
        rng = np.random.default_rng(100 + seed)
        net = random_network(rng, kind, extreme=seed % 2 == 1)
        x = random_inputs(rng, net, 4)
        fast = run_network(net, x, record_state=True)
        with monkeypatch.context() as m:
            m.setattr(emulator, "FAST_A_LIMIT", 0)
            general = run_network(net, x, record_state=True)
        assert_same(fast, general, f"{kind} seed {100 + seed}")


def test_unknown_backend():
    with pytest.raises(BackendError, match="unknown backend"):
        run_network(hand_network(), HAND_X, backend="loihi")


# --------------------------------------------------------------------------- validation
def _bad_networks():
    base = hand_network

    def bias_shape():
        n = base()
        n.layers[0].neurons.bias_mant = np.zeros(3, dtype=np.int64)
        return n

    def float_weight():
        n = base()
        n.layers[1].weight = n.layers[1].weight.astype(np.float32)
        return n

    def float_bias():
        n = base()
        n.layers[1].neurons.bias_mant = np.array([0.5, 1.0])
        return n

    def vth_too_big():
        n = base()
        n.layers[0].neurons.vth = 2**25   # beyond (2**31 - 1) >> 6: vth << 6 leaves int32
        return n

    def du_range():
        n = base()
        n.layers[1].neurons.du = 4096
        return n

    def bias_int16():
        n = base()
        n.layers[1].neurons.bias_mant = np.array([0, 40000])
        return n

    def weight_bits():
        n = base()
        n.layers[0].num_weight_bits = 0
        return n

    def sign_mode():
        n = base()
        n.layers[0].sign_mode = "positive"
        return n

    return [bias_shape, float_weight, float_bias, vth_too_big, du_range, bias_int16, weight_bits, sign_mode]


@pytest.mark.parametrize("make", _bad_networks(), ids=lambda f: f.__name__)
@pytest.mark.parametrize("backend", ["emulator", "lava"])
def test_malformed_network_rejected_before_lava(make, backend, monkeypatch):
    import neurodeploy.backends.lava as lava_backend

    def no_lava(*args, **kwargs):
        raise AssertionError("a Lava process graph was built for a malformed network")

    monkeypatch.setattr(lava_backend, "_Graph", no_lava)
    before = child_pids()
    with pytest.raises((BackendError, IRError)):
        run_network(make(), HAND_X, backend=backend)
    assert child_pids() == before


@pytest.mark.parametrize("backend", ["emulator", "lava"])
@pytest.mark.parametrize("case", ["shape", "time", "float", "range", "graded_range"])
def test_bad_inputs(case, backend, monkeypatch):
    import neurodeploy.backends.lava as lava_backend

    monkeypatch.setattr(lava_backend, "_Graph", None)   # must not be reached
    net = hand_network()
    x = HAND_X
    if case == "shape":
        x, match = x[:, :, :2], r"expected \(samples, 4, 3\)"
    elif case == "time":
        x, match = x[:, :3], r"expected \(samples, 4, 3\)"
    elif case == "float":
        x, match = x * 0.5, "integer values"
    elif case == "range":
        x, match = x * 2, r"expected 0\.\.1"
    else:
        net.input_encoding = InputEncoding("graded", bits=4)
        x, match = x * 16, r"expected 0\.\.15"
    with pytest.raises(BackendError, match=match):
        run_network(net, x, backend=backend)


# --------------------------------------------------------------------------- differential, Lava vs emulator
@pytest.mark.parametrize("kind,seed", [("dense", 11), ("rec", 21), ("rec", 27), ("conv", 13), ("conv", 3)])
def test_lava_matches_emulator(kind, seed):
    rng = np.random.default_rng(seed)
    net = random_network(rng, kind)
    x = random_inputs(rng, net, 3)
    emu, lav = both(net, x)
    # silent networks agree trivially: every layer must spike (seeds chosen so)
    assert (lav.spike_counts.sum(0) > 0).all(), f"{kind} seed {seed}: a silent layer {lav.spike_counts.sum(0)}"
    assert_same(emu, lav, f"{kind} seed {seed}")
    assert_same(run_network(net, x[:1], record_state=True),
                RunResult(lav.output_spikes[-1:], lav.spike_counts[-1:], [u[-1:] for u in lav.final_u],
                          [v[-1:] for v in lav.final_v], lav.latency, lav.time_steps), "repeat")


def test_conv_mappings_both_exercised():
    """The conv seeds above cover both Lava mappings (Conv and unrolled Sparse)."""
    from neurodeploy.backends.lava import plan_network

    kinds = set()
    for seed in (13, 3):
        kinds |= {lp.kind for lp in plan_network(random_network(np.random.default_rng(seed), "conv")).layers}
    assert {"conv", "sparse"} <= kinds


@pytest.mark.parametrize("var_set_max", [128, 0], ids=["var-set", "reset-process"])
def test_state_reset_between_samples(var_set_max, monkeypatch):
    import neurodeploy.backends.lava as lava_backend

    monkeypatch.setattr(lava_backend, "VAR_SET_MAX", var_set_max)
    rng = np.random.default_rng(21)
    n_in, hid, n_out = 6, 8, 4
    l1 = DenseLayer(weight=rng.integers(0, 200, (hid, n_in)), weight_rec=rng.integers(-100, 60, (hid, hid)),
                    weight_exp=-4, neurons=Neurons(du=200, dv=100, vth=2000, bias_mant=rng.integers(-4, 3, hid)))
    l2 = DenseLayer(weight=rng.integers(-100, 200, (n_out, hid)),
                    neurons=Neurons(du=3000, dv=50, vth=60, bias_mant=np.zeros(n_out, dtype=np.int64)))
    net = Network(input_shape=(n_in,), layers=[l1, l2], time_steps=3, input_encoding=InputEncoding("graded", 8))
    weak = np.zeros((1, 3, n_in), dtype=np.int64)
    weak[0, 0, :2] = 60                        # 11 spikes in all, vs 44 for the strong one
    strong = np.full((1, 3, n_in), 255)
    x = np.concatenate([weak, strong, strong, weak])
    lav = run_network(net, x, backend="lava", record_state=True)
    emu = run_network(net, x, record_state=True)
    assert_same(emu, lav)
    assert 0 < lav.spike_counts[0].sum() and lav.spike_counts[1].sum() > 3 * lav.spike_counts[0].sum()
    # the strong sample state (u, v, synapse buffers) does not leak into the next one
    for a, b in ((0, 3), (1, 2)):
        np.testing.assert_array_equal(lav.output_spikes[a], lav.output_spikes[b])
        np.testing.assert_array_equal(lav.spike_counts[a], lav.spike_counts[b])
        for u in lav.final_u + lav.final_v:
            np.testing.assert_array_equal(u[a], u[b])


def test_wrap_and_clip_corners():
    # Layer 0: one neuron per input (diagonal weights), du=4095 so u = a << 6 on the
    # step the input arrives. Graded 24-bit inputs. Lava's u "wrap" is one-shot and
    # asymmetric: u > 2**23 -> u - 2**24, u <= -2**23 -> u + 2**24, so exactly 2**23
    # stays and -2**23 becomes +2**23. a << 6 and the graded int32 dot wrap at 32 bit.
    big = 2**24 - 1
    diag = np.diag([2, -2, 2, 254, 0, 0]).astype(np.int64)
    diag[4, 4] = 2          # accumulating neuron (du = 0 layer below)
    diag[5, 5] = -2
    x = np.zeros((1, 1, 6), dtype=np.int64)
    x[0, 0] = [65536, 65536, 65537, big, 0, 0]
    l0 = DenseLayer(weight=diag[:4, :], neurons=Neurons(du=4095, dv=4095, vth=131071,
                                                        bias_mant=np.zeros(4, dtype=np.int64)))
    net = Network(input_shape=(6,), layers=[l0], time_steps=1, input_encoding=InputEncoding("graded", bits=24))
    emu, lav = both(net, x)
    assert_same(emu, lav, "wrap corners")
    a3 = np.int64(254 * big)                                   # the int32 dot wraps ...
    a3 = ((a3 + 2**31) % 2**32) - 2**31
    a3 = ((a3 * 64 + 2**31) % 2**32) - 2**31                   # ... and so does a << 6
    a3 = a3 - 2**24 if a3 > U_LIM else (a3 + 2**24 if a3 <= -U_LIM else a3)
    np.testing.assert_array_equal(emu.final_u[0][0], [U_LIM, U_LIM, -U_LIM + 128, a3])

    # Layer with du=0: u accumulates (x4095/4096 per step, +2.56e6 per step here)
    # until, on the last step, it passes 2**23 and wraps negative; a negative drive
    # plus bias (-4096 << 9 per step) clips v at -(2**23 - 1).
    l1 = DenseLayer(weight=diag[4:, :], neurons=Neurons(du=0, dv=0, vth=131071,
                                                        bias_mant=np.array([0, -4096]), bias_exp=9))
    net2 = Network(input_shape=(6,), layers=[l1], time_steps=4, input_encoding=InputEncoding("graded", bits=24))
    x2 = np.zeros((2, 4, 6), dtype=np.int64)
    x2[0, :, 4] = 20000
    x2[0, :, 5] = 3000
    x2[1, :3, 4] = 7000
    emu2, lav2 = both(net2, x2)
    assert_same(emu2, lav2, "accumulating wrap / clip")
    assert emu2.final_u[0][0, 0] < 0                          # positive drive, wrapped u
    assert emu2.final_v[0][0, 1] == -(2**23 - 1)              # clipped v


def test_sign_modes_and_weight_bits():
    rng = np.random.default_rng(7)
    layers, n_prev = [], 7
    for mode, bits, exp in (("excitatory", 5, -1), ("inhibitory", 3, 1), ("mixed", 4, 0), ("mixed", 1, 2)):
        n = 6
        w = rng.integers(-300, 300, (n, n_prev))
        layers.append(DenseLayer(weight=w, sign_mode=mode, num_weight_bits=bits, weight_exp=exp,
                                 weight_rec=rng.integers(-300, 300, (n, n)) if mode == "inhibitory" else None,
                                 neurons=Neurons(du=int(rng.integers(0, 4096)), dv=int(rng.integers(0, 4096)),
                                                 vth=int(rng.integers(1, 200)),
                                                 bias_mant=rng.integers(-50, 100, n), bias_exp=2)))
        n_prev = n
    net = Network(input_shape=(7,), layers=layers, time_steps=5, input_encoding=InputEncoding("graded", 6))
    x = rng.integers(0, 64, (3, 5, 7))
    emu, lav = both(net, x)
    assert_same(emu, lav, "sign modes")
    assert emu.spike_counts.sum() > 0


# --------------------------------------------------------------------------- process hygiene
@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()], ids=["error", "interrupt"])
def test_no_child_processes_after_error(exc, monkeypatch):
    import neurodeploy.backends.lava as lava_backend

    original = lava_backend._read_sample
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise exc
        return original(*args, **kwargs)

    monkeypatch.setattr(lava_backend, "_read_sample", failing)
    before = child_pids()
    x = np.concatenate([HAND_X] * 3)
    with pytest.raises(type(exc)) as info:
        run_network(hand_network(), x, backend="lava")
    assert not isinstance(info.value, BackendError)   # a bug of ours is not disguised as a user error
    assert len(calls) == 2
    assert child_pids() == before
