"""The deployable non-spiking readout (``model.readout: linear``) end to end.

Quantizer (an integrator output layer with a proven bound on v), the IR's
readout kind, emulator and Lava reading the output layer's final v (bit for
bit, on random networks and on a quantized model), netx export/import (also
as lava-dl writes PilotNet's last layer, and lava-dl's netx loading ours), the
agreement check on v, and a tiny pipeline run.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml

from test_backends import assert_same, random_inputs, random_network

from neurodeploy.backends import BackendError, RunResult, run_network
from neurodeploy.config import config_from_dict
from neurodeploy.evaluate.agreement import describe_difference, first_difference
from neurodeploy.io import NetxFormatError, NetxInexactWarning, read_netx, write_netx
from neurodeploy.ir import DenseLayer, InputEncoding, IRError, Network, Neurons
from neurodeploy.models import build_model
from neurodeploy.quant import load_profile, quantize_model
from _helpers import require_module

# the shared fixtures sit beside the checkout (../shared) or inside it (shared/), found from this file
_ROOT = Path(__file__).resolve().parent.parent
_FIXTURES = next((p for p in (_ROOT.parent / "shared" / "fixtures", _ROOT / "shared" / "fixtures") if p.is_dir()),
                 _ROOT.parent / "shared" / "fixtures")
PILOTNET = _FIXTURES / "lava-dl/netx/gts/pilotnet_lif/network.net"
V_LIMIT = 131071 << 6


def _both(net, x):
    emu = run_network(net, x, backend="emulator", record_state=True)
    lav = run_network(net, x, backend="lava", record_state=True)
    return emu, lav


def _assert_same_readout(emu: RunResult, lav: RunResult, what: str = "") -> None:
    assert_same(emu, lav, what)
    assert emu.readout == lav.readout == "potential"
    np.testing.assert_array_equal(emu.output_v, lav.output_v, err_msg=f"{what} output v")
    np.testing.assert_array_equal(emu.output_v, emu.final_v[-1], err_msg=f"{what} output v vs final v")
    np.testing.assert_array_equal(emu.predictions(), lav.predictions(), err_msg=f"{what} predictions")


# --------------------------------------------------------------------------- IR and RunResult
def test_ir_validates_the_readout_kind():
    net = Network(input_shape=(2,), layers=[DenseLayer(weight=np.array([[2, 4]]),
                                                       neurons=Neurons(4095, 0, 131071, np.zeros(1, np.int64)))],
                  time_steps=1, readout="membrane")
    with pytest.raises(IRError, match=r"readout 'membrane', expected one of \('spikes', 'potential'\)"):
        net.validate()
    net.readout = "potential"
    net.validate()


def test_predictions_read_the_output_v():
    out = np.zeros((3, 4, 2), dtype=np.uint8)
    out[:, 2:, 1] = 1                                   # spikes say class 1 everywhere
    v = np.array([[5, -3], [-7, -7], [-1, 2]])          # v says 0, 0 (tie -> lowest), 1
    res = RunResult(out, np.zeros((3, 1), np.int64), None, None, latency=1, time_steps=3, readout="potential",
                    output_v=v)
    np.testing.assert_array_equal(res.predictions(), [0, 0, 1])
    res.readout = "spikes"
    np.testing.assert_array_equal(res.predictions(), [1, 1, 1])
    res.readout, res.output_v = "potential", None
    with pytest.raises(BackendError, match="output_v"):
        res.predictions()


def _hand_integrator() -> Network:
    # 2 spike inputs -> 2 integrators (du 4095: u = a << 6; dv 0: v sums; vth max: never spikes)
    layer = DenseLayer(weight=np.array([[10, 20], [30, -4]]),
                       neurons=Neurons(du=4095, dv=0, vth=131071, bias_mant=np.array([1, -1]), bias_exp=6))
    return Network(input_shape=(2,), layers=[layer], time_steps=3, input_encoding=InputEncoding("spikes"),
                   readout="potential")


@pytest.mark.parametrize("backend", ["emulator", "lava"])
def test_hand_integrator_readout(backend):
    # T=3, latency 1: steps 0..3. a(s) = W x(s-1): s1 (10, 30), s2 (30, 26), s3 (20, -4).
    # v(3) = 64 * (60, 52) + 4 steps * bias (64, -64) = (4096, 3072): class 0 (spike counts tie at 0)
    x = np.array([[[1, 0], [1, 1], [0, 1]]])
    res = run_network(_hand_integrator(), x, backend=backend)
    np.testing.assert_array_equal(res.output_v, [[4096, 3072]])
    assert res.spike_counts.sum() == 0
    np.testing.assert_array_equal(res.predictions(), [0])
    flipped = run_network(_hand_integrator(), x[:, :, ::-1].copy(), backend=backend)
    # a(s): s1 (20, -4), s2 (30, 26), s3 (10, 30) -> same sums: the order of the steps does not matter
    np.testing.assert_array_equal(flipped.output_v, [[4096, 3072]])


# --------------------------------------------------------------------------- emulator vs Lava, random networks
@pytest.mark.parametrize("kind,seed", [("dense", 31), ("rec", 32), ("conv", 33)])
def test_random_potential_networks_lava_matches_emulator(kind, seed):
    rng = np.random.default_rng(seed)
    net = random_network(rng, kind)
    net.readout = "potential"
    if seed % 2:   # half of them with a PilotNet-style integrator output, the others with any neurons
        nrn = net.layers[-1].neurons
        nrn.du, nrn.dv, nrn.vth = 4095, 0, 131071
    x = random_inputs(rng, net, 3)
    emu, lav = _both(net, x)
    _assert_same_readout(emu, lav, f"{kind} seed {seed}")
    assert np.any(emu.output_v != 0)
    # without record_state the output v still comes back (the readout needs it)
    lean = run_network(net, x)
    assert lean.final_v is None
    np.testing.assert_array_equal(lean.output_v, emu.output_v)


def test_emulator_fast_and_general_paths_agree_on_output_v(monkeypatch):
    from neurodeploy.backends import emulator

    for seed in range(6):
        rng = np.random.default_rng(300 + seed)
        net = random_network(rng, ("dense", "rec", "conv")[seed % 3], extreme=seed % 2 == 1)
        net.readout = "potential"
        x = random_inputs(rng, net, 4)
        fast = run_network(net, x, batch_size=3)
        with monkeypatch.context() as m:
            m.setattr(emulator, "FAST_A_LIMIT", 0)
            general = run_network(net, x)
        np.testing.assert_array_equal(fast.output_v, general.output_v, err_msg=f"seed {300 + seed}")


# --------------------------------------------------------------------------- quantizer
def _linear_model(hidden, *, T=4, bias=True, seed=0, shape=(1, 8, 8), gain=3.0):
    cfg = config_from_dict({"data": {"dataset": "digits", "time_steps": T},
                            "model": {"arch": "mlp", "hidden": list(hidden), "bias": bias, "readout": "linear",
                                      "neuron": {"type": "dlif"}}})
    torch.manual_seed(seed)
    model = build_model(cfg, shape, 3).eval()
    with torch.no_grad():
        for m in model.modules():     # livelier than torch's init: spikes in every layer
            if isinstance(m, torch.nn.Linear):
                m.weight.mul_(gain)
    return model


def test_quantizer_maps_the_linear_readout_to_an_integrator():
    model = _linear_model([12, 10])
    T = 4
    res = quantize_model(model, (1, 8, 8), load_profile("loihi2"), time_steps=T)
    net = res.network
    assert net.readout == "potential" and len(net.layers) == 3
    out = net.layers[-1]
    assert (out.neurons.du, out.neurons.dv, out.neurons.vth) == (4095, 0, 131071)
    rep = res.layers[-1]
    assert rep.readout == "potential" and rep.v_limit == V_LIMIT and 0 < rep.v_bound <= rep.v_limit
    assert any("worst-case |v|" in n for n in rep.notes)
    # the per-step bias is S * b * T / (T + L): the run's T + L biases add up to the float model's T
    b = model.body[-1].bias.detach().double().numpy()
    P = T + net.latency
    eff = out.neurons.bias_mant << out.neurons.bias_exp
    np.testing.assert_allclose(eff * P, rep.scale * b * T, atol=P * (1 << out.neurons.bias_exp))
    assert np.any(eff != 0)
    # the spiking layers are quantized as before (the readout's presence changes nothing there)
    assert all(layer.neurons.vth < 131071 for layer in net.layers[:-1])


@pytest.mark.parametrize("T", [4, 60])
def test_readout_bound_is_the_true_worst_case(T):
    """No hidden layer: the readout reads the graded pixels; with all weights and biases positive and every
    pixel at 255 on every step, v reaches the reported worst case exactly, and stays below the threshold."""
    model = _linear_model([], T=T)
    with torch.no_grad():
        model.body[-1].weight.abs_()
        model.body[-1].bias.abs_().add_(0.2)
    res = quantize_model(model, (1, 8, 8), load_profile("loihi2"), time_steps=T)
    net, rep = res.network, res.layers[-1]
    x = np.full((1, T, 1, 8, 8), 255)
    emu = run_network(net, x)
    assert int(emu.output_v.max()) == rep.v_bound <= V_LIMIT
    assert emu.spike_counts.sum() == 0
    if T == 60:   # the bound binds: the scale is set by it, close to the limit, not by the weight range
        assert rep.v_bound > 0.9 * V_LIMIT


def test_fixed_point_readout_estimates_the_float_logits():
    """No spiking layer in between, so only rounding differs: v / (S * T) is the float model's logits
    (the bias included: scaled by T / (T + L) per step, it adds up to T biases)."""
    T = 5
    model = _linear_model([], T=T, seed=2)
    with torch.no_grad():
        model.body[-1].bias.copy_(torch.tensor([0.6, -0.4, 0.1]))
    res = quantize_model(model, (1, 8, 8), load_profile("loihi2"), time_steps=T)
    x = torch.rand(20, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    ints = res.network.input_encoding.encode(x.numpy())
    lin = model.body[-1]
    # the float model's logits on its 8-bit input (computed here: a model without spiking layers
    # cannot run through SNNClassifier.run_encoded's repeat path)
    with torch.no_grad():
        logits = lin(torch.as_tensor(ints.reshape(20, -1) / 255.0, dtype=torch.float32)).double().numpy()
    emu = run_network(res.network, np.broadcast_to(ints[:, None], (20, T, 1, 8, 8)))
    est = emu.output_v / (res.layers[-1].scale * T)
    spread = float(np.abs(logits).max())
    np.testing.assert_allclose(est, logits, atol=0.02 * spread)
    np.testing.assert_array_equal(emu.predictions(), logits.argmax(1))


def test_quantized_linear_readout_model_lava_matches_emulator():
    from neurodeploy.data import load_dataset

    T = 4
    model = _linear_model([16, 12], T=T, seed=1)
    res = quantize_model(model, (1, 8, 8), load_profile("loihi2"), time_steps=T)
    data = load_dataset("digits", seed=0)
    ints = res.network.input_encoding.encode(data.x_test[:4])
    x = np.broadcast_to(ints[:, None], (4, T, *ints.shape[1:]))
    emu, lav = _both(res.network, x)
    _assert_same_readout(emu, lav, "quantized model")
    assert emu.spike_counts[:, :-1].sum() > 0 and emu.spike_counts[:, -1].sum() == 0
    assert first_difference(res.network, x, emu, lav) is None


@pytest.mark.parametrize("name", ["spike-drop", "current-noise", "membrane-noise"])
def test_potential_readout_under_step_noise_lava_matches_emulator(name):
    from neurodeploy.noise.hardware import StepNoise

    T = 4
    net = quantize_model(_linear_model([10], T=T, seed=5), (1, 8, 8), load_profile("loihi2"), time_steps=T).network
    x = np.random.default_rng(6).integers(0, 256, (3, T, 1, 8, 8))
    noise = StepNoise(name, {"spike-drop": 0.3, "current-noise": 0.4, "membrane-noise": 0.4}[name], 9)
    emu = run_network(net, x, record_state=True, step_noise=noise, sample_ids=[4, 1, 8])
    lav = run_network(net, x, backend="lava", record_state=True, step_noise=noise, sample_ids=[4, 1, 8])
    _assert_same_readout(emu, lav, name)
    assert not np.array_equal(emu.output_v, run_network(net, x).output_v), "the noise must change v"


# --------------------------------------------------------------------------- agreement on v
def test_first_difference_compares_the_output_v():
    net = _hand_integrator()
    x = np.array([[[1, 0], [1, 1], [0, 1]], [[0, 1], [0, 0], [1, 1]]])
    a, b = run_network(net, x), run_network(net, x)
    assert first_difference(net, x, a, b) is None
    b.output_v = b.output_v.copy()
    b.output_v[1, 1] += 64                 # same spikes (none), other v: still a disagreement
    d = first_difference(net, x, a, b)
    assert d["sample"] == 1 and d["samples_differing"] == 1
    assert d["output_v"] == {"neurons": [1], "emulator": [int(a.output_v[1, 1])], "lava": [int(b.output_v[1, 1])]}
    assert "output layer's final v (neurons [1]" in describe_difference(d)
    b.output_v = None
    d = first_difference(net, x, a, b)
    assert d["sample"] == 0 and d["output_v"] == {"missing": ["Lava"]}
    net.readout = "spikes"                 # a spike readout ignores v
    assert first_difference(net, x, a, b) is None


# --------------------------------------------------------------------------- netx
def test_netx_writes_the_readout_as_pilotnet_does_and_reads_it_back(tmp_path):
    res = quantize_model(_linear_model([12]), (1, 8, 8), load_profile("loihi2"), time_steps=4)
    net = res.network
    with pytest.warns(NetxInexactWarning, match="1 layer"):   # the graded first layer, not the readout
        path = write_netx(net, tmp_path / "net.h5", exact=False)
    with h5py.File(path) as f:
        last = f[f"layer/{len(f['layer']) - 1}"]
        assert last["type"][0] == b"dense"
        assert [int(last[f"neuron/{k}"][()]) for k in ("iDecay", "vDecay", "vThMant")] == [4096, 0, 131071]
        assert f["neurodeploy"].attrs["readout"] == "potential"
        assert f[f"neurodeploy/layers/{len(net.layers) - 1}"].attrs["netx_exact"]
    back = read_netx(path)
    assert back.readout == "potential"
    np.testing.assert_array_equal(back.layers[-1].weight, net.layers[-1].weight)
    assert read_netx(path, readout="spikes").readout == "spikes"
    # without our group (a file of another tool) the integrator output is recognised
    with h5py.File(path, "a") as f:
        del f["neurodeploy"]
    assert read_netx(path).readout == "potential"
    with pytest.raises(NetxFormatError, match=r"readout 'voltage', expected one of"):
        read_netx(path, readout="voltage")


def test_netx_spiking_network_reads_as_spikes_and_bad_readout_attribute(tmp_path):
    net = _hand_integrator()
    net.layers[0].neurons.vth = 100          # an ordinary spiking output
    net.readout = "spikes"
    path = write_netx(net, tmp_path / "spk.h5")
    assert read_netx(path).readout == "spikes"
    with h5py.File(path, "a") as f:
        del f["neurodeploy"]
    assert read_netx(path).readout == "spikes"
    path = write_netx(_hand_integrator(), tmp_path / "bad.h5")
    with h5py.File(path, "a") as f:
        f["neurodeploy"].attrs["readout"] = "volts"
    with pytest.raises(NetxFormatError, match=r"bad.h5: field 'neurodeploy/readout': readout 'volts', expected"):
        read_netx(path)


def test_read_pilotnet_style_integrator_output(tmp_path):
    """PilotNet's dense tail as lava-dl wrote it (LOIHI neurons, 1-D output weight, scalar bias,
    integrator last layer): read as a potential readout with du 4095, dv 0, vth 131071."""
    if not PILOTNET.is_file():
        pytest.skip(f"the shared lava-dl fixtures are not beside this checkout ({PILOTNET})")
    path = tmp_path / "tail.net"
    with h5py.File(PILOTNET) as src, h5py.File(path, "w") as dst:
        g = dst.create_group("layer")
        inp = g.create_group("0")
        inp.create_dataset("type", (1,), "S10", [b"input"])
        inp.create_dataset("shape", data=np.array([100]))
        for k, i in enumerate((8, 9, 10), start=1):
            src.copy(src[f"layer/{i}"], g, name=str(k))
    net = read_netx(path, time_steps=3)
    assert net.readout == "potential" and [layer.out_shape for layer in net.layers] == [(50,), (10,), (1,)]
    nrn = net.layers[-1].neurons
    assert (nrn.du, nrn.dv, nrn.vth) == (4095, 0, 131071)
    x = np.random.default_rng(0).integers(0, 2, (2, 3, 100))
    res = run_network(net, x)
    assert res.output_v.shape == (2, 1) and res.spike_counts[:, -1].sum() == 0


def test_lava_dl_netx_loads_and_runs_our_readout_like_the_emulator(tmp_path):
    """lava-dl's netx builds the Lava processes from our file; its output population's v after
    T + latency steps is our emulator's output v."""
    netx = require_module("lava.lib.dl.netx", reason="lava-dl is not installed (optional)")
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.source import RingBuffer as Source

    T = 5
    rng = np.random.default_rng(4)
    # netx holds plain 8-bit weights and bias_exp 6: a network it represents exactly
    hidden = DenseLayer(weight=2 * rng.integers(-60, 100, (12, 20)),
                        neurons=Neurons(du=4095, dv=300, vth=150, bias_mant=rng.integers(-2, 3, 12), bias_exp=6))
    readout = DenseLayer(weight=2 * rng.integers(-128, 128, (3, 12)),
                         neurons=Neurons(du=4095, dv=0, vth=131071, bias_mant=rng.integers(-20, 20, 3), bias_exp=6))
    net = Network(input_shape=(20,), layers=[hidden, readout], time_steps=T, input_encoding=InputEncoding("spikes"),
                  readout="potential")
    lava_net = netx.hdf5.Network(net_config=str(write_netx(net, tmp_path / "net.h5")))
    out = lava_net.layers[-1].neuron
    assert (int(out.du.init), int(out.dv.init), int(out.vth.init)) == (4095, 0, 131071)
    x = rng.integers(0, 2, (1, T, 20))
    res = run_network(net, x)
    expected = res.output_v[0]
    assert np.any(expected != 0) and res.spike_counts[0, 0] > 0
    steps = T + net.latency
    data = np.zeros((steps, 20), np.int64)
    data[:T] = x[0]
    source = Source(data=np.moveaxis(data, 0, -1).astype(np.int32))
    source.s_out.connect(lava_net.inp)
    try:
        lava_net.run(condition=RunSteps(num_steps=steps), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        v = np.rint(out.v.get()).astype(np.int64).reshape(-1)
    finally:
        lava_net.stop()
    np.testing.assert_array_equal(v, expected)


# --------------------------------------------------------------------------- the pipeline
def _linear_config(tmp: Path) -> Path:
    cfg = yaml.safe_load(Path("models/mnist5k-mlp-dlif.yaml").read_text())
    cfg["name"] = "tiny-linear"
    cfg["data"].update({"dataset": "digits", "time_steps": 6})
    cfg["model"].update({"hidden": [24, 24], "readout": "linear", "readout_gamma": None})
    cfg["training"].update({"epochs": 1, "augment_shift": 0})
    path = tmp / "tiny-linear.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_pipeline_with_a_linear_readout(tmp_path):
    from neurodeploy.evaluate.pipeline import run_pipeline

    report = run_pipeline(_linear_config(tmp_path), run_dir=tmp_path / "run", lava_samples=4, finetune=1,
                          test_samples=120, progress=False, log=lambda s: None)
    assert report["error"] is None
    assert report["emulator_vs_lava"]["identical"] is True
    assert report["lava"]["emulator_agreement_predictions"] == 1.0
    q = report["quantization"]["layers"][-1]
    assert q["readout"] == "potential" and q["v_bound"] <= q["v_limit"]
    fixed, deploy = report["fixed_point"]["accuracy"], report["float"]["accuracy"]
    assert deploy > 0.2                                  # above chance (0.1) after one epoch
    assert abs(fixed - deploy) <= 0.05, (fixed, deploy)
    assert report["agreement"]["prediction_float_vs_fixed"] >= 0.9
    saved = json.loads((tmp_path / "run" / "loihi2" / "report.json").read_text())
    assert saved["emulator_vs_lava"]["identical"] is True
    assert read_netx(tmp_path / "run" / "loihi2" / "network.net").readout == "potential"
