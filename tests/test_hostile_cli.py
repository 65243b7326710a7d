"""Hostile arguments and inputs: each is one line on stderr, exit 2, before any long work, no output left behind."""

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from neurodeploy.cli import main
from neurodeploy.errors import NeurodeployError
from neurodeploy.io import npy_input as inputs_mod
from neurodeploy.io.npy_input import InputFileError, load_input_npy
from test_cli_deploy import HAND_X, _hand_netx

REPO = Path(__file__).resolve().parents[1]


def _one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err and "error" in err
    for needle in needles:
        assert needle.lower() in err.lower(), (needle, err)
    return err


def _no_leftovers(folder: Path, allowed: set) -> None:
    assert {p.name for p in folder.iterdir()} <= allowed, sorted(p.name for p in folder.iterdir())


@pytest.fixture
def net(tmp_path):
    _hand_netx(tmp_path / "hand.net")
    np.save(tmp_path / "x.npy", HAND_X)
    return tmp_path


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from neurodeploy.config import load_config
    from neurodeploy.data import load_dataset
    from neurodeploy.train import train

    out = tmp_path_factory.mktemp("hostile") / "tiny"
    cfg = load_config(REPO / "models" / "mnist5k-mlp-dlif.yaml",
                      {"training.epochs": 1, "model.hidden": [6], "threads": 1, "data.dataset": "digits",
                       "data.time_steps": 4})
    train(cfg, out, progress=False, data=load_dataset("digits", seed=0).subset(48, 16), log=lambda s: None)
    return out


# --------------------------------------------------------------------------- simulate --input

def _big_header(path: Path) -> None:
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "<i8", "fortran_order": False, "shape": (10**12, 4, 3)})
        fh.write(b"\0" * 96)


def _zip_named_npy(path: Path) -> None:
    np.savez(path.with_suffix(".npz"), a=HAND_X)
    path.with_suffix(".npz").rename(path)


INPUTS = [
    ("x.npz", lambda p: np.savez(p, a=HAND_X), "zip"),
    ("zip.npy", _zip_named_npy, "zip"),
    ("empty.npy", lambda p: np.save(p, np.zeros((0, 4, 3), np.int64)), "no samples"),
    ("flat-empty.npy", lambda p: np.save(p, np.zeros(0)), "shape"),
    ("zero-bytes.npy", lambda p: p.write_bytes(b""), "not a .npy"),
    ("text.npy", lambda p: p.write_text("1,0,1\n"), "not a .npy"),
    ("big.npy", _big_header, "1000000000000"),
    ("object.npy", lambda p: np.save(p, np.zeros((1, 4, 3), object)), "dtype object"),
    ("td.npy", lambda p: np.save(p, np.zeros((1, 4, 3), "m8[s]")), "dtype timedelta64"),
    ("dt.npy", lambda p: np.save(p, np.zeros((1, 4, 3), "M8[s]")), "dtype datetime64"),
    ("complex.npy", lambda p: np.save(p, np.zeros((1, 4, 3), complex)), "dtype complex128"),
    ("str.npy", lambda p: np.save(p, np.zeros((1, 4, 3), "U2")), "dtype <U2"),
    ("struct.npy", lambda p: np.save(p, np.zeros((1, 4, 3), [("a", "i4")])), "dtype"),
    ("nan.npy", lambda p: np.save(p, np.where(HAND_X > 0, np.nan, 0.0)), "nan"),
    ("inf.npy", lambda p: np.save(p, np.where(HAND_X > 0, np.inf, 0.0)), "inf"),
    ("half.npy", lambda p: np.save(p, HAND_X * 0.5), "0.5"),
    ("neg.npy", lambda p: np.save(p, -HAND_X), "-1"),
    ("huge.npy", lambda p: np.save(p, HAND_X.astype(np.uint64) * np.uint64(2**63)), "9223372036854775808"),
    ("shape.npy", lambda p: np.save(p, np.zeros((1, 4, 5), np.int64)), "expected (samples, steps, 3)"),
    ("rank.npy", lambda p: np.save(p, np.zeros((4, 3), np.int64)), "shape (4, 3)"),
    ("steps.npy", lambda p: np.save(p, np.zeros((1, 0, 3), np.int64)), "steps"),
]


@pytest.mark.parametrize("name, make, needle", INPUTS, ids=[i[0] for i in INPUTS])
def test_simulate_refuses_bad_input_files(net, capsys, name, make, needle):
    make(net / name)
    assert main(["simulate", str(net / "hand.net"), "--input", str(net / name), "--out", str(net / "o.npz"),
                 "--quiet"]) == 2
    _one_line_error(capsys, "--input", name, needle)
    _no_leftovers(net, {"hand.net", "x.npy", name})


def test_simulate_input_larger_than_memory_is_refused_before_loading(net, capsys, monkeypatch):
    monkeypatch.setattr(inputs_mod, "memory_available", lambda: 64)
    assert main(["simulate", str(net / "hand.net"), "--input", str(net / "x.npy"), "--out", str(net / "o.npz")]) == 2
    _one_line_error(capsys, "memory", "GiB")
    _no_leftovers(net, {"hand.net", "x.npy"})


def test_simulate_named_pipes_are_refused_without_blocking(net, capsys):
    os.mkfifo(net / "fifo")
    assert main(["simulate", str(net / "hand.net"), "--input", str(net / "fifo"), "--out", str(net / "o.npz")]) == 2
    _one_line_error(capsys, "named pipe", "--input")
    assert main(["simulate", str(net / "fifo"), "--input", str(net / "x.npy"), "--out", str(net / "o.npz")]) == 2
    _one_line_error(capsys, "named pipe", "netx")


# --------------------------------------------------------------------------- --out

def _outs(tmp: Path):
    (tmp / "file").write_text("x")
    return [(str(tmp), "is a folder"), ("", "empty"), (str(tmp) + "/sub/", "separator"),
            (str(tmp / "file" / "o.npz"), "not a folder"), ("/proc/neurodeploy-test/o.npz", "cannot write")]


def test_simulate_out_checked_before_running(net, capsys):
    for out, needle in _outs(net):
        assert main(["simulate", str(net / "hand.net"), "--input", str(net / "x.npy"), "--out", out]) == 2, out
        _one_line_error(capsys, needle)
    _no_leftovers(net, {"hand.net", "x.npy", "file"})


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_simulate_out_in_read_only_folder(net, capsys):
    ro = net / "ro"
    ro.mkdir(mode=0o500)
    assert main(["simulate", str(net / "hand.net"), "--input", str(net / "x.npy"), "--out", str(ro / "o.npz")]) == 2
    _one_line_error(capsys, "cannot write")


def test_export_quantize_out_checked_before_work(tiny_run, tmp_path, capsys):
    for cmd in (["export", str(tiny_run), "--format", "nir"], ["export", str(tiny_run), "--format", "onnx"],
                ["export", str(tiny_run), "--format", "hdf5"], ["quantize", str(tiny_run)]):
        for out, needle in _outs(tmp_path):
            assert main([*cmd, "--out", out, "--quiet"]) == 2, (cmd, out)
            _one_line_error(capsys, needle)
    _no_leftovers(tmp_path, {"file"})
    assert not (tiny_run / "loihi2").exists()        # refused before quantizing


def test_folder_outputs_checked_before_work(tiny_run, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    cfg = str(REPO / "models" / "mnist5k-mlp-dlif.yaml")
    for cmd in (["pipeline", "--config", cfg, "--out"], ["train", "--config", cfg, "--out"],
                ["evaluate", str(tiny_run), "--report"]):
        assert main([*cmd, str(tmp_path / "file")]) == 2
        _one_line_error(capsys, "not a folder")
        assert main([*cmd, str(tmp_path / "file" / "sub")]) == 2
        _one_line_error(capsys, "not a folder")
    _no_leftovers(tmp_path, {"file"})


# --------------------------------------------------------------------------- option values

BAD_OPTIONS = [
    (["simulate", "N", "--data", "digits", "--steps", "-1"], "--steps"),
    (["simulate", "N", "--data", "digits", "--steps", "0"], "--steps"),
    (["simulate", "N", "--data", "digits", "--steps", "1000000000"], "--steps"),
    (["simulate", "N", "--data", "digits", "--seed", "-1"], "--seed"),
    (["simulate", "N", "--data", "digits", "--seed", str(2**32)], "--seed"),
    (["simulate", "N", "--data", "digits", "--samples", "0"], "--samples"),
    (["simulate", "N", "--data", "digits", "--samples", "-3"], "--samples"),
    (["simulate", "N", "--data", "digits", "--samples", "1e3"], "not an integer"),
    (["simulate", "N", "--data", "digits", "--samples", "9" * 5000], "out of range"),
    (["simulate", "N", "--data", "digits", "--samples", "-" + "9" * 5000], "out of range"),
    (["evaluate", "R", "--samples", "0"], "--samples"),
    (["evaluate", "R", "--samples", "-3"], "--samples"),
    (["evaluate", "R", "--lava-samples", "-1"], "--lava-samples"),
    (["evaluate", "R", "--repeats", "0"], "--repeats"),
    (["evaluate", "R", "--seed", "-1"], "--seed"),
    (["pipeline", "--config", "C", "--lava-samples", "-1"], "--lava-samples"),
    (["pipeline", "--config", "C", "--samples", "0"], "--samples"),
    (["pipeline", "--config", "C", "--epochs", "0"], "--epochs"),
    (["pipeline", "--config", "C", "--finetune", "-1"], "--finetune"),
    (["pipeline", "--config", "C", "--seed", str(2**32)], "--seed"),
    (["train", "--config", "C", "--epochs", "-5"], "--epochs"),
    (["quantize", "R", "--finetune", "-1"], "--finetune"),
    (["export", "R", "--format", "onnx", "--out", ""], "empty"),
]


@pytest.mark.parametrize("argv, needle", BAD_OPTIONS, ids=[" ".join(a[:1] + a[2:])[:40] for a, _ in BAD_OPTIONS])
def test_bad_option_values_are_usage_errors(net, capsys, argv, needle):
    subs = {"N": str(net / "hand.net"), "R": str(net), "C": str(REPO / "models" / "mnist5k-mlp-dlif.yaml")}
    argv = [subs.get(a, a) for a in argv]
    if argv[0] == "simulate":
        argv += ["--out", str(net / "o.npz")]
    assert main(argv) == 2
    err = _one_line_error(capsys, needle)
    assert len(err) < 300          # a 5000-digit value is not echoed whole
    _no_leftovers(net, {"hand.net", "x.npy"})


def test_step_bound_is_shared():
    from neurodeploy import cli

    assert cli.MAX_STEPS == inputs_mod.MAX_STEPS


def test_simulate_data_shape_and_option_conflicts(net, capsys):
    base = ["simulate", str(net / "hand.net"), "--out", str(net / "o.npz"), "--quiet"]
    assert main([*base, "--data", "digits"]) == 2
    _one_line_error(capsys, "--data digits", "(1, 8, 8)", "(3,)")
    assert main([*base, "--data", "digits", "--input", str(net / "x.npy")]) == 2
    _one_line_error(capsys, "either --input")
    assert main([*base, "--input", str(net / "x.npy"), "--steps", "3"]) == 2
    _one_line_error(capsys, "--steps")
    assert main(base) == 2
    _one_line_error(capsys, "--input")
    _no_leftovers(net, {"hand.net", "x.npy"})


def test_runs_and_configs_checked_first(net, tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "nope")]) == 2
    _one_line_error(capsys, "run folder not found")
    assert main(["evaluate", str(net)]) == 2
    _one_line_error(capsys, "checkpoint.pt")
    assert main(["quantize", str(net)]) == 2
    _one_line_error(capsys, "checkpoint.pt")
    assert main(["pipeline", "--config", str(net)]) == 2
    _one_line_error(capsys, "--config", "folder")
    run = tmp_path / "run"
    assert main(["pipeline", "--config", str(REPO / "models" / "mnist5k-mlp-dlif.yaml"), "--out", str(run),
                 "--profile", "no-such-profile"]) == 2
    _one_line_error(capsys, "no-such-profile")
    assert not run.exists()                           # refused before training


# --------------------------------------------------------------------------- exporters, quantize, evaluate

def test_unsupported_nir_export_is_one_line_and_missing_folders_are_made(tmp_path, capsys):
    from neurodeploy.config import load_config
    from neurodeploy.data import load_dataset
    from neurodeploy.train import train

    run = tmp_path / "conv"
    cfg = load_config(REPO / "models" / "mnist5k-conv-dlif.yaml",
                      {"training.epochs": 1, "model.channels": [2], "model.strides": [2], "model.hidden": [4],
                       "threads": 1, "data.dataset": "digits", "data.time_steps": 2,
                       "model.normalize_mean": [0.5], "model.normalize_std": [0.5]})
    train(cfg, run, progress=False, data=load_dataset("digits", seed=0).subset(16, 8), log=lambda s: None)
    # input normalisation in front of a padded conv is exported exactly (a 1x1 conv), into new folders
    assert main(["export", str(run), "--format", "nir", "--out", str(tmp_path / "a" / "m.nir")]) == 0
    assert (tmp_path / "a" / "m.nir").is_file()
    # what NIR cannot hold is one line naming the run: a CUBA current that never decays has no tau_syn
    cuba = tmp_path / "cuba"
    cfg2 = load_config(REPO / "models" / "mnist5k-mlp-dlif.yaml",
                       {"training.epochs": 1, "model.hidden": [4], "threads": 1, "data.dataset": "digits",
                        "data.time_steps": 2, "model.neuron.type": "cuba-lif", "model.neuron.current_leak": 1.0})
    train(cfg2, cuba, progress=False, data=load_dataset("digits", seed=0).subset(16, 8), log=lambda s: None)
    assert main(["export", str(cuba), "--format", "nir", "--out", str(tmp_path / "e" / "m.nir")]) == 2
    _one_line_error(capsys, str(cuba), "nir")
    assert not (tmp_path / "e" / "m.nir").exists()
    # a conv model exports to ONNX (input shape from the run), into folders that do not exist yet
    assert main(["export", str(run), "--format", "onnx", "--out", str(tmp_path / "b" / "c" / "m.onnx")]) == 0
    assert (tmp_path / "b" / "c" / "m.onnx").is_file()


def test_quantize_out_writes_network_and_report_beside_it(tiny_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    out = tmp_path / "new" / "q.net"
    assert main(["quantize", str(tiny_run), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "…" not in printed and "w err" in printed          # the compact terminal table fits 80 columns
    assert {p.name for p in out.parent.iterdir()} == {"q.net", "q.quantization.json", "q.quantization.md"}
    assert "gain spread %" in (out.parent / "q.quantization.md").read_text()   # the full table
    deploy = tiny_run / "loihi2"
    assert {p.name for p in deploy.iterdir()} == {"deployment.json"}        # only the deployment record
    # every exporter makes the folders of its --out
    for fmt in ("hdf5", "nir", "onnx"):
        target = tmp_path / "missing" / fmt / f"m.{fmt}"
        assert main(["export", str(tiny_run), "--format", fmt, "--out", str(target), "--quiet"]) == 0
        assert target.is_file()


def test_evaluate_huge_level_is_refused_or_plotted(tiny_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    rep = tmp_path / "rep"
    rc = main(["evaluate", str(tiny_run), "--noise", "gaussian:1e308", "--samples", "8", "--report", str(rep),
               "--quiet"])
    if rc == 2:     # the noise-spec parser bounds levels: a one-line error, nothing written
        _one_line_error(capsys, "1e308")
        assert not rep.exists()
    else:
        assert rc == 0 and (rep / "robustness.png").stat().st_size > 0
    # the largest legal level sweeps and plots; the terminal table fits 80 columns
    assert main(["evaluate", str(tiny_run), "--noise", "gaussian:0,10", "--noise", "spike-drop:0,1", "--backends",
                 "float,emulator", "--samples", "8", "--report", str(rep), "--quiet"]) == 0
    assert "…" not in capsys.readouterr().out
    assert (rep / "robustness.png").stat().st_size > 0
    assert {p.name for p in rep.iterdir()} == {"robustness.json", "robustness.md", "robustness.png"}


@pytest.mark.parametrize("levels", [[1e308], [0.0, 1.7976931348623157e308], [0.0, 1e307, 1e308], [0.0, 5e-324],
                                    [0.3], [0.0, 0.1, 0.2]])
def test_sweep_plot_has_finite_axes_for_any_levels(tmp_path, levels):
    from neurodeploy.evaluate.robustness import _plot, summarize

    rows = [{"backend": b, "noise": "gaussian", "level": lv, "repeat": 0, "accuracy": 0.5, "samples": 10,
             "spikes_per_sample": 1.0,
             **({"emulator_accuracy_on_subset": 0.5, "emulator_identical_spikes": 1.0, "first_difference": None,
                 "float_accuracy_on_subset": 0.4} if b == "lava" else {})}
            for b in ("float", "lava") for lv in levels]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)       # no overflow in matplotlib's tick maths
        _plot({"runs": [{"name": "a", "samples": 10, "summary": summarize(rows)}], "errors": []},
              tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 0


# --------------------------------------------------------------------------- terminal tables at 80 columns

def _render(fn, *args) -> str:
    from rich.console import Console

    console = Console(width=80, record=True, file=open(os.devnull, "w"))
    fn(*args, console)
    return console.export_text()


def test_terminal_tables_fit_80_columns():
    from _helpers import small_quantized_model
    from neurodeploy.evaluate.pipeline import print_ladder
    from neurodeploy.evaluate.robustness import print_summary, summarize
    from neurodeploy.quant.report import print_report

    for arch in ("mlp", "srnn"):
        _, res, _ = small_quantized_model(arch, hidden=(300, 200))
        text = _render(print_report, res)
        assert "…" not in text and "vth err" in text, text

    rows = [{"backend": b, "noise": n, "level": lv, "repeat": r, "accuracy": 0.98765, "samples": 10000,
             "spikes_per_sample": 123456.7, "synops_per_sample": 1.5e7,
             **({"emulator_accuracy_on_subset": 0.5, "emulator_identical_spikes": 1.0, "first_difference": None,
                 "float_accuracy_on_subset": 0.4} if b == "lava" else {})}
            for b in ("float", "emulator", "lava") for n in ("membrane-noise", "salt-pepper", "apgd-ce")
            for lv in (0.0, 0.0313725, 1e308) for r in range(2)]
    results = {"repeats": 2, "errors": ["emulator and Lava disagree at sample 3, layer 1, step 4"],
               "runs": [{"name": "mnist5k-conv-dlif (a-rather-long-run-folder-name)", "samples": 10000,
                         "summary": summarize(rows)}]}
    text = _render(print_summary, results)
    assert "…" not in text and "membrane-noise" in text, text

    rung = {"accuracy": 0.98765, "ci95": [0.97, 0.99], "agreement_with_previous": 0.9999}
    ladder = [{"rung": "trained float", "backend": "float", **rung, "agreement_with_previous": None},
              {"rung": "deployable float", "backend": "float", **rung},
              {"rung": "fixed point", "backend": "emulator", **rung}]
    report = {"test_samples": 10000, "ladder": ladder, "error": None,
              "lava_subset": {"samples": 200, "ladder": ladder + [{"rung": "Lava", "backend": "lava", **rung}]}}
    text = _render(print_ladder, report)
    assert "…" not in text and "deployable float" in text, text


# --------------------------------------------------------------------------- fuzz: simulate's input loader

DTYPES = ["bool", "i1", "u1", "<i2", ">i4", "<i8", "<u8", ">u2", "<f2", "<f4", ">f8", "<c8", "<M8[s]", "<m8[ms]",
          "<U3", "S2", "O", "V4"]
SPECIALS = [0, 1, 2, -1, 0.5, np.nan, np.inf, -np.inf, 1e300, -1e300, 2**63 - 1, 255, 1e-300]


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def _fuzz_npy(draw, folder: Path) -> Path:
    """A .npy file of a random dtype, shape and values, sometimes truncated or with a flipped byte."""
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    if draw(st.booleans()):
        shape = (draw(st.integers(0, 3)), draw(st.integers(0, 5)), 3)          # the network's rank
    else:
        shape = tuple(draw(st.lists(st.integers(0, 4), max_size=4)))
    arr = np.zeros(shape, dtype)
    if arr.size and dtype.kind in "biuf":
        arr = (np.arange(arr.size) % 2).astype(dtype).reshape(shape) if draw(st.booleans()) else arr
        for _ in range(draw(st.integers(0, 3))):
            value = draw(st.sampled_from(SPECIALS))
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    arr.flat[draw(st.integers(0, arr.size - 1))] = value
                except (ValueError, OverflowError, TypeError):
                    pass
    if draw(st.booleans()):
        arr = np.asfortranarray(arr)
    path = folder / "fuzz.npy"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.save(path, arr, allow_pickle=True)
    data = path.read_bytes()
    cut = draw(st.sampled_from([None, None, None, "truncate", "flip"]))
    if cut == "truncate":
        data = data[:draw(st.integers(0, len(data)))]
    elif cut == "flip":
        i = draw(st.integers(0, len(data) - 1))
        data = data[:i] + bytes([data[i] ^ draw(st.integers(1, 255))]) + data[i + 1:]
    path.write_bytes(data)
    return path


@settings(max_examples=200, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_fuzz_simulate_input_loader(fuzz_dir, data):
    path = _fuzz_npy(data.draw, fuzz_dir)
    try:
        arr = load_input_npy(path, (3,), 1)
    except NeurodeployError as exc:
        text = str(exc)
        assert isinstance(exc, (InputFileError, OSError)) and "\n" not in text and len(text) < 400, text
        return
    assert arr.ndim == 3 and arr.shape[0] >= 1 and arr.shape[1] >= 1 and arr.shape[2] == 3
    assert arr.dtype.kind in "biuf" and np.all(np.isfinite(arr)) and arr.min() >= 0 and arr.max() <= 1


def test_fuzz_like_inputs_through_the_cli(net, capsys):
    cases = [(np.where(HAND_X > 0, np.nan, 0.0), 2), (HAND_X.astype(np.float32), 0), (HAND_X.astype(bool), 0),
             (HAND_X[0], 2), (np.asfortranarray(np.repeat(HAND_X, 3, 0)).astype(">i2"), 0)]
    for i, (arr, rc) in enumerate(cases):
        np.save(net / f"in{i}.npy", arr)
        out = net / f"out{i}.npz"
        assert main(["simulate", str(net / "hand.net"), "--input", str(net / f"in{i}.npy"), "--out", str(out),
                     "--quiet"]) == rc, i
        assert out.exists() == (rc == 0)
        if rc:
            _one_line_error(capsys, f"in{i}.npy")
