"""The torch emulator (backends/emulator_torch.py) against the numpy emulator: the same bits everywhere.

The numpy emulator is checked against Lava by test_backends*.py; here the torch
one runs the same random networks (the sweep's generator: dense, recurrent,
conv, graded and spike inputs, extreme ranges that overflow and wrap), netx's
input population and reset schedule (lava-dl's tiny.net and its ground truth),
spike-drop / current / membrane injections and a potential readout. CUDA tests
skip where torch finds no GPU (none was lent to this task).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from neurodeploy.backends import BackendError, run_network  # noqa: E402
from neurodeploy.backends.emulator_torch import TorchEmulator, run_emulator_torch  # noqa: E402
from neurodeploy.ir import ConvLayer, DenseLayer, InputEncoding, Network, Neurons  # noqa: E402
from neurodeploy.noise.step import StepNoise  # noqa: E402
from test_backends import assert_same, random_inputs, random_network  # noqa: E402

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
_TINY = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "lava-dl" / "netx" / "tiny.net"


def _sweep_case(kind: str, i: int):
    seed = 1000 * (["dense", "rec", "conv"].index(kind) + 1) + i
    rng = np.random.default_rng(seed)
    net = random_network(rng, kind, max_layers=4, max_width=20, extreme=i % 5 == 4, max_hw=9)
    return seed, net, random_inputs(rng, net, int(rng.integers(1, 4)))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["dense", "rec", "conv"])
def test_torch_equals_numpy_on_the_sweep_networks(kind, device):
    """Every other sweep network of ``kind``: every output spike, spike count, final u and v, layer spike."""
    ran = refused = 0
    for i in range(0, 40, 2):
        seed, net, x = _sweep_case(kind, i)
        want = run_network(net, x, record_state=True, record_spikes=True)
        try:
            got = run_emulator_torch(net, x, device=device, record_state=True, record_spikes=True, batch_size=2)
        except BackendError as exc:               # only int64 sums on CUDA / int64 conv are refused
            assert "int64" in str(exc) and "\n" not in str(exc)
            refused += 1
            continue
        assert_same(got, want, f"{kind} seed {seed} on {device}")
        for a, b in zip(got.layer_spikes, want.layer_spikes):
            np.testing.assert_array_equal(a, b)
        ran += 1
    assert ran >= 15, (ran, refused)


@pytest.mark.parametrize("noise", [StepNoise("spike-drop", 0.2, 3), StepNoise("current-noise", 0.3, 4),
                                   StepNoise("membrane-noise", 0.3, 5)], ids=lambda n: n.name)
def test_torch_equals_numpy_with_injections(noise):
    for kind in ("dense", "rec"):
        for i in (1, 3, 6):
            seed, net, x = _sweep_case(kind, i)
            ids = np.arange(len(x)) + 7
            want = run_network(net, x, record_state=True, step_noise=noise, sample_ids=ids)
            got = run_emulator_torch(net, x, record_state=True, step_noise=noise, sample_ids=ids, batch_size=3)
            assert_same(got, want, f"{kind} seed {seed} {noise.name}")


def test_torch_potential_readout_and_wide_int8_network():
    rng = np.random.default_rng(11)
    nrn = lambda n, vth: Neurons(du=100, dv=40, vth=vth, bias_mant=rng.integers(-5, 5, n), bias_exp=2)  # noqa: E731
    net = Network(input_shape=(1, 12, 12), time_steps=5, input_encoding=InputEncoding("graded", bits=8),
                  readout="potential", layers=[
                      ConvLayer(weight=rng.integers(-128, 128, (4, 1, 3, 3)) * 2, neurons=nrn(4 * 10 * 10, 900),
                                in_shape=(1, 12, 12), sign_mode="mixed", num_weight_bits=8, weight_exp=-1),
                      DenseLayer(weight=rng.integers(-128, 128, (300, 400)) * 2, neurons=nrn(300, 40),
                                 sign_mode="mixed", num_weight_bits=8, weight_exp=0),
                      DenseLayer(weight=rng.integers(-128, 128, (5, 300)) * 2, neurons=nrn(5, 30),
                                 sign_mode="mixed", num_weight_bits=8, weight_exp=0)])
    x = rng.integers(0, 256, (40, 5, 1, 12, 12)) * (rng.random((40, 5, 1, 12, 12)) < 0.4)
    want = run_network(net, x, record_state=True)
    got = run_emulator_torch(net, x, record_state=True)
    assert_same(got, want, "potential readout")
    np.testing.assert_array_equal(got.output_v, want.output_v)
    np.testing.assert_array_equal(got.predictions(), want.predictions())
    assert want.spike_counts[:, 1].sum() > 0


def test_torch_runs_tinynet_to_its_ground_truth():
    """netx's input population (bias image) and reset schedule: lava-dl's test_tinynet, exactly, as numpy."""
    if not _TINY.is_file():
        pytest.skip(f"{_TINY} not present")
    from neurodeploy.io import read_netx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = read_netx(_TINY, time_steps=17)
    gts = _TINY.parent / "gts" / "tinynet"
    bias = np.load(gts / "input_bias.npy").transpose(2, 1, 0)[None].astype(np.int64)
    gt = np.load(gts / "output.npy")[0].transpose(2, 1, 0, 3)[..., 1:].reshape(36, 15)
    x = np.zeros((1, 17, 3, 16, 16), np.int64)
    net.reset_interval = 17
    got = TorchEmulator(net).run(x, bias=bias, record_state=True)
    np.testing.assert_array_equal(got.output_spikes[0][2:17].T, gt)
    assert_same(got, run_network(net, x, bias=bias, record_state=True), "tiny.net")


def test_torch_refusals_are_one_line():
    rng = np.random.default_rng(2)
    net = random_network(rng, "dense")
    with pytest.raises(BackendError, match="expected 'cpu' or 'cuda'"):
        TorchEmulator(net, device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(BackendError, match="no CUDA device"):
            TorchEmulator(net, device="cuda")
    # the exact sum type follows the bound: float32 below 2**24 (CPU), float64 below 2**53 (24-bit inputs)
    wide = Network(input_shape=(4,), time_steps=2, input_encoding=InputEncoding("graded", bits=24),
                   layers=[DenseLayer(weight=np.full((1, 4), 255), sign_mode="excitatory",
                                      neurons=Neurons(du=0, dv=0, vth=10, bias_mant=np.zeros(1, np.int64)))])
    assert TorchEmulator(wide).layers[0][0].dtype == torch.float64
    assert TorchEmulator(net).layers[0][0].dtype == torch.float32
    x = rng.integers(0, 2, (2, net.time_steps, *net.input_shape)) + 5
    with pytest.raises(BackendError):
        TorchEmulator(net).run(x)


def test_simulate_cli_device_cpu_equals_numpy(tmp_path, capsys):
    """``simulate --backend emulator --device cpu --verbose`` writes what the numpy emulator writes."""
    from neurodeploy.cli import main
    from neurodeploy.io import write_netx

    rng = np.random.default_rng(21)
    net = Network(input_shape=(30,), time_steps=4, input_encoding=InputEncoding("spikes"), layers=[
        DenseLayer(weight=rng.integers(-100, 100, (20, 30)),
                   neurons=Neurons(du=4095, dv=100, vth=20, bias_mant=np.zeros(20, np.int64))),
        DenseLayer(weight=rng.integers(-100, 100, (3, 20)),
                   neurons=Neurons(du=4095, dv=100, vth=10, bias_mant=np.zeros(3, np.int64)))])
    write_netx(net, tmp_path / "n.net")
    np.save(tmp_path / "x.npy", (rng.random((50, 4, 30)) < 0.3).astype(np.uint8))
    base = ["simulate", str(tmp_path / "n.net"), "--input", str(tmp_path / "x.npy"), "--quiet"]
    assert main(base + ["--out", str(tmp_path / "a.npz")]) == 0
    assert main(base + ["--out", str(tmp_path / "b.npz"), "--device", "cpu", "--verbose"]) == 0
    assert "torch emulator on cpu" in capsys.readouterr().out
    a, b = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
    assert a.files == b.files
    for k in a.files:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert a["spike_counts"].sum() > 0
    assert main(base + ["--out", str(tmp_path / "c.npz"), "--device", "cpu", "--backend", "lava"]) == 2


def test_torch_emulator_refuses_delays_and_sigma_delta_on_one_line():
    """What the torch emulator does not run is refused before it starts, naming the layer."""
    from neurodeploy.backends import BackendError
    from neurodeploy.backends.emulator_torch import TorchEmulator
    from neurodeploy.ir import DenseLayer, InputEncoding, Network, Neurons

    layer = DenseLayer(weight=np.ones((2, 3), np.int64), delay=np.ones((2, 3), np.int64),
                       neurons=Neurons(du=4095, dv=0, vth=10, bias_mant=np.zeros(2, np.int64)))
    net = Network(input_shape=(3,), layers=[layer], time_steps=4, input_encoding=InputEncoding("spikes"))
    with pytest.raises(BackendError, match="layer 0 has synaptic delays") as exc:
        TorchEmulator(net)
    assert "\n" not in str(exc.value)
