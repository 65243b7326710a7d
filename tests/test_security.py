"""Untrusted files never run code, and no name read from a file leads a write out of the folder the user named."""

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from neurodeploy.cli import main
from neurodeploy.data import DataError, load_dataset
from neurodeploy.data.datasets import _read_cifar_batch
from neurodeploy.errors import NeurodeployError
from neurodeploy.fileio import FileAccessError, inside

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- CIFAR-10 pickles

class _System:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Eval:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').close()",))


def _cifar_dir(root: Path, n: int = 3) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"batch_label": name.encode(), b"labels": [int(v) for v in rng.integers(0, 10, n)],
                 b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"filenames": [b"x.png"] * n}
        with open(folder / name, "wb") as fh:
            pickle.dump(batch, fh)
    return folder


@pytest.mark.parametrize("payload", [_System, _Eval])
def test_malicious_cifar_pickle_is_refused_without_running(tmp_path, payload, capsys):
    marker = tmp_path / "marker"
    folder = _cifar_dir(tmp_path / "data")
    bad = folder / "data_batch_1"
    with open(bad, "wb") as fh:
        pickle.dump({b"data": payload(marker), b"labels": []}, fh)
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", data_dir=tmp_path / "data")
    message = str(err.value)
    assert str(bad) in message and "refused" in message and "\n" not in message
    assert ("system" in message) if payload is _System else ("eval" in message)
    assert not marker.exists()
    # the datasets command reads the same files: one line, no code run
    assert main(["datasets", "--data-dir", str(tmp_path / "data")]) == 0
    out = capsys.readouterr().out
    assert "cifar10" in out and "refused" in out
    assert not marker.exists()


def test_legitimate_cifar_batches_load_in_every_pickle_protocol(tmp_path):
    x = np.arange(2 * 3072, dtype=np.int64).astype(np.uint8).reshape(2, 3072)
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        path = tmp_path / f"batch{protocol}"
        with open(path, "wb") as fh:
            pickle.dump({b"batch_label": b"b", b"labels": [3, 7], b"data": x, b"filenames": [b"a", b"b"]}, fh,
                        protocol=protocol)
        data, labels = _read_cifar_batch(path)
        assert np.array_equal(data.reshape(2, 3072), x) and labels.tolist() == [3, 7]
    d = load_dataset("cifar10", data_dir=_cifar_dir(tmp_path / "ok").parent)
    assert (d.n_train, d.n_test, d.input_shape) == (15, 3, (3, 32, 32))


def test_cifar_pickle_array_tricks_are_refused(tmp_path):
    from numpy.core import multiarray

    class Huge:  # numpy's own reconstruct function, asked for a 1e12-element array
        def __reduce__(self):
            return (multiarray._reconstruct, (np.ndarray, (10**12,), b"b"))

    path = tmp_path / "b"
    with open(path, "wb") as fh:
        pickle.dump({b"data": Huge(), b"labels": []}, fh)
    with pytest.raises(DataError, match="_reconstruct") as err:
        _read_cifar_batch(path)
    assert str(path) in str(err.value)


# --------------------------------------------------------------------------- inside()

@pytest.mark.parametrize("name", ["/abs/path", "../..", "..", "a/../..", "", ".", "a/..", " x", "x\x00y"])
def test_inside_refuses_names_that_leave_the_folder(tmp_path, name):
    with pytest.raises(FileAccessError) as err:
        inside(tmp_path / "run", name, what="profile p.yaml: name")
    assert "profile p.yaml: name" in str(err.value) and "\n" not in str(err.value)


def test_inside_accepts_plain_names_and_refuses_escaping_symlinks(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    assert inside(run, "loihi2") == run / "loihi2"
    assert inside(run, "a/b") == run / "a" / "b"
    (run / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(FileAccessError):
        inside(run, "link")


@pytest.mark.parametrize("name", ["/abs/path", "../..", "../escaped"])
def test_deploy_folder_stays_inside_the_run(tmp_path, name):
    """Defense in depth: even a profile object whose name was never validated cannot lead outside."""
    import copy

    from neurodeploy.evaluate.deployment import deploy_folder
    from neurodeploy.quant import load_profile

    bad = copy.copy(load_profile("loihi2"))
    object.__setattr__(bad, "name", name)     # bypasses any validation of the profile loader
    with pytest.raises(FileAccessError):
        deploy_folder(tmp_path / "run", bad)


def _listing(root: Path) -> set:
    return {p.relative_to(root) for p in root.rglob("*")}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from neurodeploy.config import load_config
    from neurodeploy.train import train

    out = tmp_path_factory.mktemp("sec") / "runs" / "tiny"
    cfg = load_config(REPO / "models" / "mnist5k-mlp-dlif.yaml",
                      {"training.epochs": 1, "model.hidden": [6], "threads": 1, "data.dataset": "digits",
                       "data.time_steps": 4})
    train(cfg, out, progress=False, data=load_dataset("digits", seed=0).subset(48, 16), log=lambda s: None)
    return out


@pytest.mark.parametrize("name", ["/abs/path", "../..", "../../escaped"])
def test_profile_name_cannot_lead_quantize_out_of_the_run(tiny_run, tmp_path, name, capsys):
    text = (REPO / "hw_profiles" / "loihi2.yaml").read_text()
    lines = [f"name: {name!r}" if line.startswith("name:") else line for line in text.splitlines()]
    profile = tmp_path / "evil.yaml"
    profile.write_text("\n".join(lines) + "\n")
    root = tiny_run.parents[1]
    before = _listing(root)
    assert main(["quantize", str(tiny_run), "--profile", str(profile), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert _listing(root) == before                  # nothing written anywhere, in or out of the run
    assert not Path("/abs/path").exists()


@pytest.mark.parametrize("name", ["/abs/path", "../..", "../escaped"])
def test_config_name_cannot_lead_train_out_of_runs(tmp_path, monkeypatch, name, capsys):
    text = (REPO / "models" / "mnist5k-mlp-dlif.yaml").read_text()
    lines = [f"name: {name!r}" if line.startswith("name:") else line for line in text.splitlines()]
    config = tmp_path / "evil.yaml"
    config.write_text("\n".join(lines) + "\n")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert main(["train", "--config", str(config), "--epochs", "1", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert _listing(tmp_path) == {Path("evil.yaml"), Path("work")}
    assert not Path("/abs/path").exists()


def test_errors_of_exporters_are_user_errors():
    from neurodeploy.io.nir_export import NIRExportError
    from neurodeploy.io.onnx_export import ONNXExportError

    assert issubclass(NIRExportError, NeurodeployError) and issubclass(ONNXExportError, NeurodeployError)
