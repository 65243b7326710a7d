"""Model configs: the shipped ones load and build; bad ones name the key."""

from pathlib import Path

import pytest
import torch

from neurodeploy.cli import main
from neurodeploy.config import ConfigError, load_config
from neurodeploy.data import load_dataset
from neurodeploy.models import build_model
from neurodeploy.neurons import RecurrentSpikingNeurons

MODELS = sorted((Path(__file__).parent.parent / "models").glob("*.yaml"))
REQUIRED = {"mnist5k-mlp-dlif", "mnist5k-mlp-lif", "mnist5k-conv-dlif", "vowels-srnn-dlif"}


def test_required_models_are_shipped():
    assert REQUIRED <= {p.stem for p in MODELS}


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.stem)
def test_shipped_model_builds_and_runs(path):
    cfg = load_config(path)
    data = load_dataset(cfg.data.dataset, seed=cfg.seed)
    model = build_model(cfg, data.input_shape, data.n_classes)
    logits = model(torch.as_tensor(data.x_test[:3]))
    assert logits.shape == (3, data.n_classes)
    assert torch.isfinite(logits).all()
    if cfg.model.arch == "srnn":
        assert any(isinstance(m, RecurrentSpikingNeurons) for m in model.modules())


def _write(tmp_path, text, model=False):
    """``text`` as bad.yaml; ``model`` adds an (all-defaults) model section, which every config needs."""
    p = tmp_path / "bad.yaml"
    p.write_text(("model: {}\n" if model else "") + text)
    return p


@pytest.mark.parametrize("text, needle", [
    ("training:\n  lr_sched: cosine\n", "unknown key 'training.lr_sched'"),
    ("modle:\n  arch: mlp\n", "unknown key 'modle'"),
    ("model:\n  neuron:\n    leek: 0.9\n", "unknown key 'model.neuron.leek'"),
    ("training:\n  epochs: ten\n", "training.epochs: expected int, got str 'ten'"),
    ("model:\n  hidden: 256\n", "model.hidden: expected list of int"),
    ("training:\n  epochs: 2.5\n", "training.epochs: expected int"),
    ("model:\n  neuron:\n    type: izhikevich\n", "model.neuron.type: 'izhikevich' is not one of"),
    ("model:\n  neuron:\n    leak: 1.5\n", "model.neuron.leak: 1.5 is outside"),
    ("training:\n  mode: clean\nregularizer:\n  mppd:\n    rho: 1.0\n", "training.mode"),
    ("model:\n  arch: conv\n", "model.channels"),
    ("- just\n- a list\n", "expected a mapping"),
    ("training: [unclosed\n", "not valid YAML"),
])
def test_bad_config_names_key(tmp_path, text, needle):
    path = _write(tmp_path, text, model=not text.startswith(("model:", "- ")))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert needle in str(err.value)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("text, needle", [
    ("training:\n  epochs: 3\n", "missing section 'model'"),
    ("# only a comment\n", "empty"),
    ("", "empty"),
])
def test_config_needs_a_model_section(tmp_path, text, needle):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError, match=needle):
        load_config(path)


def test_cli_reports_bad_config_without_traceback(tmp_path, capsys):
    path = _write(tmp_path, "training:\n  epochs: ten\n")
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "training.epochs" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()  # nothing half-written


def test_cli_set_override_is_validated(tmp_path, capsys):
    cfg = MODELS[0]
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "r"), "--set", "training.bogus=1"]) == 2
    assert "training.bogus" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["mnist5k-mlp-dlif", "mnist5k-conv-dlif"])
def test_direct_encoding_shortcut_matches_full_time_loop(name):
    cfg = load_config(f"models/{name}.yaml")
    data = load_dataset("mnist5k", seed=0)
    torch.manual_seed(0)
    model = build_model(cfg, data.input_shape, data.n_classes)
    x = torch.as_tensor(data.x_test[:4])
    fast = model.output_sequence(x)
    slow, _ = model.body(model.encoder(x))  # every layer at every step
    assert fast.shape == slow.shape == (cfg.data.time_steps, 4, data.n_classes)
    assert torch.allclose(fast, slow, atol=1e-6)
