"""Hostile checkpoints and run folders: every problem is one line naming the file, never a traceback.

Malicious pickles are refused without running them; checkpoints with missing
keys, wrong types, state dicts that do not fit their config or non-finite
weights are refused; a corrupt ``metrics.jsonl`` or an edited ``config.yaml``
stops ``--resume`` (and, for ``config.yaml``, every use of the run). A
hypothesis fuzz test mutates a valid checkpoint at random.
"""

import copy
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from neurodeploy.config import ConfigError, config_from_dict
from neurodeploy.data import load_dataset
from neurodeploy.errors import NeurodeployError
from neurodeploy.models import build_model
from neurodeploy.models.folding import BatchNormFoldError
from neurodeploy.quant import load_profile, quantize_model
from neurodeploy.quant.quantizer import QuantizationError
from neurodeploy.train import CheckpointError, RunError, load_checkpoint, load_run, train

DATA = load_dataset("digits", seed=0).subset(48, 16)
QUIET = {"progress": False, "log": lambda s: None}


def _cfg():
    return config_from_dict({
        "name": "hostile", "seed": 0, "threads": 1,
        "data": {"dataset": "digits", "time_steps": 2},
        "model": {"arch": "mlp", "hidden": [6], "bias": True, "neuron": {"type": "dlif"}},
        "training": {"mode": "clean", "epochs": 2, "batch_size": 48, "lr": 0.05},
    })


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    """A tiny run stopped after epoch 1 of 2 (so it can be resumed)."""
    run = tmp_path_factory.mktemp("base") / "run"
    train(_cfg(), run, data=DATA, stop_after=1, **QUIET)
    return run


@pytest.fixture
def run(base_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(base_run, out)
    return out


def _one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg and len(msg) < 600, msg
    assert "weights_only" not in msg
    return msg


def _rewrite(run: Path, mutate) -> Path:
    path = run / "checkpoint.pt"
    ckpt = torch.load(path, weights_only=True)
    mutate(ckpt)
    torch.save(ckpt, path)
    return path


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


# --------------------------------------------------------------------------- unsafe and unreadable files


def test_malicious_checkpoint_is_refused_and_never_runs(run, tmp_path):
    marker = tmp_path / "PWNED"
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    ckpt["model"] = _Evil(marker)
    torch.save(ckpt, run / "checkpoint.pt")
    for load in (load_checkpoint, load_run):
        with pytest.raises(CheckpointError) as err:
            load(run)
        msg = _one_line(err)
        assert "system" in msg and "NOT loaded" in msg and str(run / "checkpoint.pt") in msg
    assert not marker.exists()


def test_pipe_garbage_and_empty_files_are_one_line_errors(tmp_path):
    fifo = tmp_path / "pipe.pt"
    os.mkfifo(fifo)
    with pytest.raises(CheckpointError, match="named pipe") as err:
        load_checkpoint(fifo)                      # must not block waiting for a writer
    _one_line(err)
    for name, content in (("garbage.pt", b"this is not a checkpoint" * 50), ("empty.pt", b""),
                          ("zip.pt", b"PK\x03\x04" + bytes(100))):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(CheckpointError, match=name) as err:
            load_checkpoint(tmp_path / name)
        _one_line(err)


# --------------------------------------------------------------------------- structure


def test_missing_keys_are_named(run):
    _rewrite(run, lambda c: c.pop("input_shape"))
    with pytest.raises(CheckpointError, match="lacks input_shape") as err:
        load_run(run)
    _one_line(err)


@pytest.mark.parametrize("key, value, needle", [
    ("input_shape", ["a", 8, 8], "input_shape"),
    ("input_shape", [1, 8, 10**40], "input_shape"),
    ("n_classes", -3, "n_classes is -3"),
    ("n_classes", 10**30, "n_classes"),
    ("epoch", "1", "epoch is '1'"),
    ("model", [1, 2], "model is list"),
    ("config", "mlp", "config is str"),
])
def test_wrong_types_are_named(run, key, value, needle):
    _rewrite(run, lambda c: c.__setitem__(key, value))
    with pytest.raises(CheckpointError, match=needle) as err:
        load_run(run)
    _one_line(err)


def test_invalid_config_inside_is_the_config_error_prefixed_with_the_path(run):
    path = _rewrite(run, lambda c: c["config"]["model"]["neuron"].__setitem__("leak", 5.0))
    with pytest.raises(ConfigError, match="model.neuron.leak") as err:
        load_run(run)
    assert _one_line(err).startswith(f"{path}:config")


@pytest.mark.parametrize("mutate, needle", [
    (lambda m: m.__setitem__("body.1.weight", torch.zeros(3, 3)), r"body\.1\.weight.*\(3, 3\).*\(6, 64\)"),
    (lambda m: m.pop("body.3.bias"), r"1 missing \(first 'body\.3\.bias'\)"),
    (lambda m: m.__setitem__("body.9.weight", torch.zeros(2)), r"1 unexpected \(first 'body\.9\.weight'\)"),
    (lambda m: m.__setitem__("body.1.bias", m["body.1.bias"].double()), "dtype torch.float64"),
    (lambda m: m.__setitem__("body.1.bias", "zeros"), "expected a tensor"),
])
def test_state_dict_that_does_not_fit_the_config(run, mutate, needle):
    _rewrite(run, lambda c: mutate(c["model"]))
    with pytest.raises(CheckpointError, match=needle) as err:
        load_run(run)
    _one_line(err)


def test_non_finite_weights_are_refused_at_load(run):
    def poison(c):
        c["model"]["body.2.gain"][1] = float("nan")
    _rewrite(run, poison)
    with pytest.raises(CheckpointError, match=r"body\.2\.gain.*non-finite") as err:
        load_run(run)
    _one_line(err)


def _tiny(arch="mlp", **model):
    cfg = config_from_dict({"data": {"dataset": "digits", "time_steps": 2},
                            "model": {"arch": arch, "hidden": [4], "bias": True, **model}})
    torch.manual_seed(0)
    return build_model(cfg, (1, 8, 8), 3)


@pytest.mark.parametrize("target", ["body.1.weight", "body.1.bias", "body.2.gain", "body.3.weight"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_quantize_refuses_non_finite_weights(target, value):
    model = _tiny()
    with torch.no_grad():
        dict(model.named_parameters())[target].fill_(value)
    with pytest.raises(QuantizationError, match=target.replace(".", r"\.") + ".*NaN or infinite") as err:
        quantize_model(model, (1, 8, 8), load_profile("loihi2"), time_steps=2)
    _one_line(err)


def test_quantize_refuses_non_finite_or_negative_batchnorm_statistics():
    model = _tiny("conv", channels=[2], batchnorm=True)
    bn = model.body[1].module
    bn.running_var[0] = float("nan")
    with pytest.raises(QuantizationError, match=r"body\.1\.module\.running_var"):
        quantize_model(model, (1, 8, 8), load_profile("loihi2"), time_steps=2)
    bn.running_var[0] = -5.0
    with pytest.raises(BatchNormFoldError, match="running_var.*negative"):
        quantize_model(model, (1, 8, 8), load_profile("loihi2"), time_steps=2)


# --------------------------------------------------------------------------- run folders


@pytest.mark.parametrize("line, needle", [
    ('{"epoch": 1, "test_ac', r"line 1: not valid JSON"),                  # truncated
    ("not json at all", r"line 1: not valid JSON"),
    ('[1, 2]', r"line 1: .*not an epoch record"),
    ('{"epoch": "1", "test_acc": 0.5}', r"line 1: epoch is '1', expected 1"),
    ('{"epoch": 1, "test_acc": "high"}', r"line 1: 'test_acc' is 'high', expected a number"),
    ("", r"0 epoch record\(s\), but checkpoint.pt is at epoch 1"),
])
def test_resume_with_corrupt_metrics_names_file_and_line(run, line, needle):
    (run / "metrics.jsonl").write_text(line + ("\n" if line else ""))
    with pytest.raises(RunError, match=needle) as err:
        train(_cfg(), run, resume=True, data=DATA, **QUIET)
    assert str(run / "metrics.jsonl") in _one_line(err)


def test_resume_drops_a_crashed_epochs_truncated_line_and_writes_only_inside_the_run(run, tmp_path):
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write('{"epoch": 2, "trai')                # epoch 2 crashed before its checkpoint
    outside = tmp_path / "outside.yaml"
    outside.write_text("untouched\n")
    (run / "config.yaml").rename(tmp_path / "record.yaml")
    shutil.copy(tmp_path / "record.yaml", outside)
    (run / "config.yaml").symlink_to(outside)         # a link is replaced, never written through
    before = outside.read_text()
    train(_cfg(), run, resume=True, data=DATA, **QUIET)
    records = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert outside.read_text() == before
    assert not (run / "config.yaml").is_symlink()
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt", "config.yaml", "metrics.jsonl"]


def test_edited_config_record_is_detected(run):
    text = (run / "config.yaml").read_text()
    assert "- 6" in text
    (run / "config.yaml").write_text(text.replace("- 6", "- 60"))
    with pytest.raises(RunError, match=r"model\.hidden is \[60\] there but \[6\] in checkpoint\.pt") as err:
        load_run(run)
    assert "record" in _one_line(err)
    with pytest.raises(RunError, match="model.hidden"):
        train(_cfg(), run, resume=True, data=DATA, **QUIET)
    (run / "config.yaml").write_text("model: [unclosed")
    with pytest.raises(RunError, match="not valid YAML") as err:
        load_run(run)
    _one_line(err)
    (run / "config.yaml").unlink()                      # no record: nothing to contradict
    assert load_run(run)[0].model.hidden == [6]


def test_resume_refuses_a_damaged_optimizer_state(run):
    _rewrite(run, lambda c: c["optimizer"]["param_groups"][0].__setitem__("lr", "fast"))
    with pytest.raises(CheckpointError, match=r"optimizer param_groups\[0\]\['lr'\]") as err:
        train(_cfg(), run, resume=True, data=DATA, **QUIET)
    _one_line(err)


# --------------------------------------------------------------------------- fuzz

_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.lists(st.integers(-3, 70), max_size=4),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
    st.just(torch.zeros(2, 2)),
)


def _leaves(d, prefix=()):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _leaves(v, prefix + (k,))
        yield prefix + (k,)


def _at(d, path):
    for k in path[:-1]:
        d = d[k]
    return d


@st.composite
def _mutations(draw, base):
    ops = []
    for _ in range(draw(st.integers(1, 2))):
        # weighted towards mutations that still load, so quantization sees hostile values too
        kind = draw(st.sampled_from(["drop", "replace", "config_drop", "config_replace", "tensor_drop",
                                     "tensor_shape", "tensor_dtype", "tensor_value", "tensor_scale",
                                     "shape", "classes", "bytes"]
                                    + ["tensor_value", "tensor_scale", "reshape", "config_drop"] * 3))
        if kind in ("drop", "replace"):
            ops.append((kind, draw(st.sampled_from(sorted(base))), draw(_VALUES)))
        elif kind.startswith("config"):
            ops.append((kind, draw(st.sampled_from(sorted(_leaves(base["config"])))), draw(_VALUES)))
        elif kind.startswith("tensor"):
            key = draw(st.sampled_from(sorted(base["model"])))
            arg = {"tensor_drop": None,
                   "tensor_shape": draw(st.lists(st.integers(0, 9), max_size=3)),
                   "tensor_dtype": draw(st.sampled_from([torch.float64, torch.float16, torch.int64, torch.bool,
                                                         torch.complex64, torch.uint8])),
                   "tensor_value": draw(st.sampled_from([float("nan"), float("inf"), -float("inf"), 3e38, -3e38,
                                                         1e-45, 0.0])),
                   "tensor_scale": draw(st.sampled_from([0.0, -1.0, 1e-30, 1e-45, 1e30, 1e38]))}[kind]
            ops.append((kind, key, arg))
        elif kind == "shape":
            ops.append((kind, None, draw(st.lists(st.integers(-1, 80), max_size=5))))
        elif kind == "reshape":    # the same number of inputs: still fits the weights
            ops.append(("shape", None, draw(st.sampled_from([[64], [8, 8], [2, 4, 8], [1, 1, 8, 8], [4, 16]]))))
        elif kind == "classes":
            ops.append((kind, None, draw(st.integers(-2, 12))))
        else:
            ops.append((kind, draw(st.integers(0, 10**6)), draw(st.integers(0, 255))))
    return ops


def _apply(ckpt, ops):
    byte_ops = []
    for kind, key, arg in ops:
        model = ckpt.get("model") if isinstance(ckpt.get("model"), dict) else {}
        config = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else None
        if kind == "drop":
            ckpt.pop(key, None)
        elif kind == "replace":
            ckpt[key] = arg
        elif kind.startswith("config") and config is not None:
            try:
                parent = _at(config, key)
            except (KeyError, TypeError):
                continue
            if not isinstance(parent, dict):
                continue
            if kind == "config_drop":
                parent.pop(key[-1], None)
            else:
                parent[key[-1]] = arg
        elif kind.startswith("tensor") and isinstance(model.get(key), torch.Tensor):
            t = model[key]
            if kind == "tensor_drop":
                model.pop(key)
            elif kind == "tensor_shape":
                model[key] = torch.zeros(arg)
            elif kind == "tensor_dtype":
                model[key] = t.to(arg)
            elif kind == "tensor_value" and t.numel() and t.is_floating_point():
                t = t.clone()
                t.view(-1)[0] = arg
                model[key] = t
            elif kind == "tensor_scale" and t.is_floating_point():
                model[key] = t * arg
        elif kind == "shape":
            ckpt["input_shape"] = arg
        elif kind == "classes":
            ckpt["n_classes"] = arg
        elif kind == "bytes":
            byte_ops.append((key, arg))
    return byte_ops


@pytest.fixture(scope="module")
def fuzz_folder(base_run, tmp_path_factory):
    base = torch.load(base_run / "checkpoint.pt", weights_only=True)
    return base, tmp_path_factory.mktemp("fuzz")


def test_fuzzed_checkpoints_load_and_quantize_or_fail_in_one_line(fuzz_folder):
    base, folder = fuzz_folder
    profile = load_profile("loihi2")

    @settings(max_examples=150, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(ops=_mutations(base))
    def check(ops):
        ckpt = copy.deepcopy(base)
        byte_ops = _apply(ckpt, ops)
        run = Path(tempfile.mkdtemp(dir=folder))
        path = run / "checkpoint.pt"
        torch.save(ckpt, path)
        if byte_ops:
            data = bytearray(path.read_bytes())
            for pos, value in byte_ops[:1]:
                if value == 0:
                    del data[pos % len(data):]          # truncate
                else:
                    data[pos % len(data)] = value       # overwrite one byte
            path.write_bytes(bytes(data))
        try:
            cfg, model, loaded = load_run(run)
            shape = tuple(loaded["input_shape"])
            quantize_model(model, shape, profile, time_steps=cfg.data.time_steps or shape[0])
        except NeurodeployError as exc:
            msg = str(exc)
            assert "\n" not in msg and len(msg) < 1000, msg
            assert "weights_only" not in msg
        finally:
            shutil.rmtree(run)

    check()
