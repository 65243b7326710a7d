"""The emulator's accumulation paths (backends/accumulate.py): every path gives the same bits.

The reference is the emulator's general int64 path (``FAST_A_LIMIT = 0`` and
int64 sums), which ``test_backends_sweep.py`` checks against Lava; each path is
forced on the sweep's random networks (dense, recurrent, conv; graded and spike
inputs; extreme ranges that overflow and wrap), and a few run against Lava too.
"""

from __future__ import annotations

import numpy as np
import pytest

from neurodeploy.backends import accumulate, emulator, run_network
from neurodeploy.backends.accumulate import DenseAccumulator
from neurodeploy.backends.emulator import Emulator
from neurodeploy.ir import DenseLayer, InputEncoding, Network, Neurons
from test_backends import assert_same, random_inputs, random_network

pytest.importorskip("onnxruntime", reason="the int8 path runs on onnxruntime")


def _reference(net, x, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(emulator, "FAST_A_LIMIT", 0)
        m.setattr(accumulate, "FORCE_PATH", "blas")
        return run_network(net, x, record_state=True)


@pytest.mark.parametrize("path", accumulate.PATHS)
@pytest.mark.parametrize("kind", ["dense", "rec", "conv"])
def test_forced_path_equals_reference_on_random_networks(path, kind, monkeypatch):
    """Every fifth sweep network of ``kind`` (seeds as in test_backends_sweep) with all sums on ``path``."""
    ran_int8 = 0
    for i in range(0, 40, 5):
        seed = 1000 * (["dense", "rec", "conv"].index(kind) + 1) + i
        rng = np.random.default_rng(seed)
        net = random_network(rng, kind, max_layers=4, max_width=20, extreme=i % 5 == 4 or i % 10 == 5, max_hw=9)
        x = random_inputs(rng, net, int(rng.integers(1, 4)))
        ref = _reference(net, x, monkeypatch)
        with monkeypatch.context() as m:
            m.setattr(accumulate, "FORCE_PATH", path)
            emu = Emulator(net)
            got = emu.run(x, record_state=True)
            m.setattr(emulator, "FAST_A_LIMIT", 0)
            got_general = run_network(net, x, record_state=True)
        assert_same(got, ref, f"{kind} seed {seed} path {path}")
        assert_same(got_general, ref, f"{kind} seed {seed} path {path} (general LIF)")
        ran_int8 += sum(ff.paths.get("int8") or 0 for ff, _, _ in emu.layers)
    if path == "int8":
        assert ran_int8 > 0, "no sum took the int8 path"


def _accumulator(rng, k, n, max_in, lo=-256, hi=255, step=1):
    w = rng.integers(lo // step, hi // step + 1, (n, k)) * step
    bound = int(np.abs(w).sum(axis=1).max()) * max_in
    return w, DenseAccumulator(w, max_in, bound, np.ascontiguousarray(w.T.astype(np.float64)))


@pytest.mark.parametrize("max_in,step", [(1, 2), (1, 1), (255, 2), (255, 1), (15, 4)])
def test_int8_sums_are_exact_at_the_extremes(max_in, step, monkeypatch):
    """Worst-case values (all inputs max_in, all weights at the int8 ends) equal int64 sums; the 4-bit split
    runs when pairs of products could pass int16 (graded 8-bit inputs), and weights with a common factor
    (mixed 8-bit: 2) reach int8 after dividing by it."""
    rng = np.random.default_rng(max_in * 10 + step)
    k, n = 300, 40
    w, acc = _accumulator(rng, k, n, max_in, lo=-128 * step, hi=127 * step, step=step)
    w[0] = -128 * step
    w[1] = 127 * step
    acc = DenseAccumulator(w, max_in, int(np.abs(w).sum(axis=1).max()) * max_in,
                           np.ascontiguousarray(w.T.astype(np.float64)))
    assert acc.int8_possible and acc.factor == step
    assert acc.split_nibbles == (2 * max_in * 128 > 32767)
    x = rng.integers(0, max_in + 1, (64, k))
    x[:8] = max_in
    want = x @ w.T
    monkeypatch.setattr(accumulate, "FORCE_PATH", "int8")
    got = acc(x.astype(np.uint8))
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, want)
    monkeypatch.setattr(accumulate, "FORCE_PATH", "event")
    np.testing.assert_array_equal(acc(x), want)


def test_int8_refused_where_it_would_not_be_exact():
    """No int8 path for inputs past uint8, weights past int8 after the common factor, or sums past int32."""
    rng = np.random.default_rng(3)
    _, acc = _accumulator(rng, 8, 4, 256)
    assert not acc.int8_possible
    w = np.array([[255, 1, -3]])                 # factor 1, 255 does not fit int8
    assert not DenseAccumulator(w, 1, 259, w.T.astype(np.float32)).int8_possible
    w = np.array([[100, 2]])
    assert not DenseAccumulator(w, 255, 1 << 31, w.T.astype(np.float64)).int8_possible


def test_cost_model_picks_int8_for_the_default_shape_and_blas_for_tiny_sums(monkeypatch):
    rng = np.random.default_rng(4)
    _, acc = _accumulator(rng, 784, 256, 1, step=2)
    monkeypatch.setattr(accumulate, "FORCE_PATH", None)
    assert acc.choose(2048, 0.2) == "int8"
    assert acc.choose(2, 0.2) == "blas"                 # below INT8_MIN_MACS
    accumulate.set_int8_enabled(False)
    try:
        assert acc.choose(2048, 0.2) == "blas"
        assert acc.choose(2048, 0.0005) == "event"      # very sparse input, no int8
    finally:
        accumulate.set_int8_enabled(True)


def _wide_network(encoding: InputEncoding) -> Network:
    rng = np.random.default_rng(7)
    w0 = rng.integers(-128, 128, (96, 200)) * 2
    w1 = rng.integers(-128, 128, (10, 96)) * 2
    nrn = lambda n, vth: Neurons(du=4095, dv=40, vth=vth, bias_mant=np.zeros(n, np.int64), bias_exp=0)  # noqa: E731
    return Network(input_shape=(200,), time_steps=6, input_encoding=encoding, layers=[
        DenseLayer(weight=w0, neurons=nrn(96, 2000 if encoding.kind == "graded" else 30), weight_exp=0,
                   num_weight_bits=8, sign_mode="mixed"),
        DenseLayer(weight=w1, neurons=nrn(10, 20), weight_exp=0, num_weight_bits=8, sign_mode="mixed")])


@pytest.mark.parametrize("kind", ["spikes", "graded"])
def test_lava_matches_emulator_on_the_int8_path(kind, monkeypatch):
    """Mixed 8-bit weights (factor 2), spikes and graded 8-bit inputs (the 4-bit split) on int8: equal to Lava."""
    net = _wide_network(InputEncoding(kind, bits=8) if kind == "graded" else InputEncoding("spikes"))
    rng = np.random.default_rng(8)
    hi = 1 if kind == "spikes" else 255
    x = rng.integers(0, hi + 1, (3, 6, 200)) * (rng.random((3, 6, 200)) < 0.3)
    emu = Emulator(net)
    with monkeypatch.context() as m:
        m.setattr(accumulate, "FORCE_PATH", "int8")
        got = emu.run(x, record_state=True)
    assert emu.layers[0][0].paths["int8"] > 0 and emu.layers[0][0].acc.split_nibbles == (kind == "graded")
    lav = run_network(net, x, backend="lava", record_state=True)
    assert_same(got, lav, f"{kind} int8 network")
    assert lav.spike_counts[:, 0].sum() > 0


def test_forced_int8_with_threads_and_batches_changes_nothing(monkeypatch):
    net = _wide_network(InputEncoding("spikes"))
    rng = np.random.default_rng(9)
    x = (rng.random((40, 6, 200)) < 0.2).astype(np.uint8)
    ref = _reference(net, x, monkeypatch)
    monkeypatch.setattr(accumulate, "FORCE_PATH", "int8")
    for threads, batch in ((1, 256), (2, 7), (None, 3)):
        assert_same(run_network(net, x, record_state=True, threads=threads, batch_size=batch), ref,
                    f"threads {threads} batch {batch}")


# --------------------------------------------------------------------------- simulate's streamed I/O
def _cli_network(tmp_path):
    from neurodeploy.io import write_netx

    net = _wide_network(InputEncoding("spikes"))
    write_netx(net, tmp_path / "w.net")
    return net


def test_simulate_streams_chunks_equal_to_one_api_run(tmp_path, monkeypatch):
    """Chunks of 256 samples (STREAM_BYTES shrunk) give the API's result; uncompressed unless --compress."""
    import zipfile

    from neurodeploy import cli

    net = _cli_network(tmp_path)
    rng = np.random.default_rng(12)
    x = (rng.random((700, 6, 200)) < 0.2).astype(np.uint8)
    np.save(tmp_path / "x.npy", x)
    monkeypatch.setattr(cli, "STREAM_BYTES", 1)
    args = ["simulate", str(tmp_path / "w.net"), "--input", str(tmp_path / "x.npy"), "--quiet"]
    assert cli.main(args + ["--out", str(tmp_path / "o.npz")]) == 0
    assert cli.main(args + ["--out", str(tmp_path / "c.npz"), "--compress"]) == 0
    want = run_network(net, x)
    for name in ("o.npz", "c.npz"):
        z = np.load(tmp_path / name)
        np.testing.assert_array_equal(z["output_spikes"], want.output_spikes[:, :6])   # netx's time base: T steps
        np.testing.assert_array_equal(z["spike_counts"], want.spike_counts)
        np.testing.assert_array_equal(z["predictions"], want.predictions())
        assert int(z["time_steps"]) == 6 and int(z["latency"]) == want.latency
    kinds = {n: {i.compress_type for i in zipfile.ZipFile(tmp_path / n).infolist()} for n in ("o.npz", "c.npz")}
    assert kinds == {"o.npz": {zipfile.ZIP_STORED}, "c.npz": {zipfile.ZIP_DEFLATED}}
    assert want.spike_counts.sum() > 0


def test_simulate_bad_value_in_a_later_chunk_names_it_and_writes_nothing(tmp_path, monkeypatch, capsys):
    from neurodeploy import cli

    _cli_network(tmp_path)
    x = np.zeros((600, 6, 200), np.int16)
    x[555, 3, 17] = 2
    np.save(tmp_path / "x.npy", x)
    monkeypatch.setattr(cli, "STREAM_BYTES", 1)
    assert cli.main(["simulate", str(tmp_path / "w.net"), "--input", str(tmp_path / "x.npy"), "--quiet",
                     "--out", str(tmp_path / "o.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "(555, 3, 17)" in err and "--input" in err and "value 2" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.net", "x.npy"]


def test_simulate_verbose_reports_the_paths(tmp_path, capsys):
    from neurodeploy import cli

    _cli_network(tmp_path)
    np.save(tmp_path / "x.npy", (np.random.default_rng(1).random((300, 6, 200)) < 0.2).astype(np.uint8))
    assert cli.main(["simulate", str(tmp_path / "w.net"), "--input", str(tmp_path / "x.npy"), "--quiet",
                     "--verbose", "--out", str(tmp_path / "o.npz")]) == 0
    out = capsys.readouterr().out
    assert "samples/s" in out and "emulator layer 0 (96 neurons): ff dense 200->96" in out
    assert "int8 1,800 rows" in out            # 300 samples x 6 steps: the cost model picks int8 here


# --------------------------------------------------------------------------- the compiled kernels
kernels = pytest.importorskip("neurodeploy.backends.kernels")


def _numpy_reference(net, x, monkeypatch, **kw):
    with monkeypatch.context() as m:
        m.setattr(emulator, "COMPILED", False)
        m.setattr(emulator, "FAST_A_LIMIT", 0)
        return run_network(net, x, record_state=True, **kw)


@pytest.mark.skipif(not kernels.AVAILABLE, reason="numba is not installed")
@pytest.mark.parametrize("kind", ["dense", "rec", "conv"])
def test_compiled_kernels_equal_the_numpy_reference_on_random_networks(kind, monkeypatch):
    """The fused LIF kernels (backends/kernels.py) give every spike, count and final u and v of the
    numpy int64 path on the sweep's random networks, extreme ranges (u wraps, v clips) included, and
    they did run (the kernel's rows are counted on the accumulator)."""
    ran = 0
    for i in range(40):
        seed = 1000 * (["dense", "rec", "conv"].index(kind) + 1) + i
        rng = np.random.default_rng(seed)
        net = random_network(rng, kind, max_layers=4, max_width=20, extreme=i % 5 == 4 or i % 10 == 5, max_hw=9)
        x = random_inputs(rng, net, int(rng.integers(1, 6)))
        ref = _numpy_reference(net, x, monkeypatch, record_spikes=True)
        emu = Emulator(net)
        assert emu._compiled_ok(None, None, None) == all(isinstance(ff, emulator._Synapse) for ff, _, _ in emu.layers)
        got = emu.run(x, record_state=True, record_spikes=True)
        assert_same(got, ref, f"{kind} seed {seed} (compiled)")
        for a, b in zip(got.layer_spikes, ref.layer_spikes):
            np.testing.assert_array_equal(a, b, err_msg=f"{kind} seed {seed}: layer spikes")
        ran += emu._compiled_ok(None, None, None)
    assert ran >= 30, f"only {ran} of 40 networks ran on the compiled kernels"


@pytest.mark.skipif(not kernels.AVAILABLE, reason="numba is not installed")
def test_compiled_kernels_follow_the_reset_schedule_and_thread_split(monkeypatch):
    """netx's staggered LIFReset schedule runs in the kernels too, and the result does not depend on the
    batch size or the number of threads."""
    rng = np.random.default_rng(7)
    net = random_network(rng, "rec", max_layers=3, max_width=16, extreme=False, max_hw=9)
    net.reset_interval, net.reset_offset = 4, 1
    x = random_inputs(rng, net, 9)
    ref = _numpy_reference(net, x, monkeypatch)
    for batch, threads in ((1, 1), (4, 2), (256, None)):
        got = Emulator(net).run(x, record_state=True, batch_size=batch, threads=threads)
        assert_same(got, ref, f"batch {batch} threads {threads}")


@pytest.mark.skipif(not kernels.AVAILABLE, reason="numba is not installed")
def test_compiled_path_refuses_bad_values_as_the_numpy_path_does(monkeypatch):
    rng = np.random.default_rng(3)
    net = random_network(rng, "dense", max_layers=2, max_width=8, extreme=False, max_hw=9)
    x = random_inputs(rng, net, 3).astype(np.int64)
    x[2, -1, 0] = emulator.input_max(net) + 1
    with pytest.raises(emulator.BackendError) as compiled:
        Emulator(net).run(x)
    monkeypatch.setattr(emulator, "COMPILED", False)
    with pytest.raises(emulator.BackendError) as plain:
        Emulator(net).run(x)
    assert str(compiled.value) == str(plain.value)
