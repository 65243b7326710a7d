"""The training loop: outputs, resume, regularizer effect, reproducibility."""

import json

import pytest
import torch

from neurodeploy.cli import main
from neurodeploy.config import config_from_dict, load_config
from neurodeploy.data import load_dataset
from neurodeploy.train import RunError, load_checkpoint, load_run, train

SMALL = load_dataset("mnist5k", seed=0).subset(256, 100)


def _cfg(**over):
    base = {
        "name": "tiny", "seed": 3, "threads": 1,
        "data": {"dataset": "mnist5k", "encoder": "direct", "time_steps": 4},
        "model": {"arch": "mlp", "hidden": [32], "neuron": {"type": "dlif"}},
        "training": {"mode": "gaussian", "epochs": 2, "batch_size": 64, "lr": 0.1},
        "regularizer": {"mppd": {"rho": 1.0}},
    }
    for dotted, value in over.items():
        node = base
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return config_from_dict(base)


def _state(run_dir):
    return load_checkpoint(run_dir)["model"]


def test_train_writes_run_folder(tmp_path):
    out = tmp_path / "run"
    result = train(_cfg(), out, progress=False, data=SMALL, log=lambda s: None)
    assert (out / "config.yaml").is_file()
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2
    rec = json.loads(lines[-1])
    assert rec["epoch"] == 2 and 0 <= rec["test_acc"] <= 1 and rec["train_mppd"] > 0
    # weights_only loading (no code execution) works on our checkpoints
    raw = torch.load(out / "checkpoint.pt", weights_only=True)
    assert raw["epoch"] == 2
    cfg, model, _ = load_run(out)
    assert cfg.name == "tiny"
    x = torch.as_tensor(SMALL.x_test[:8])
    assert torch.equal(model(x), result.model(x))


def test_resume_matches_uninterrupted_run(tmp_path):
    cfg = _cfg(**{"training.epochs": 3, "data.encoder": "poisson"})
    train(cfg, tmp_path / "full", progress=False, data=SMALL, log=lambda s: None)
    # the same run, interrupted after its first epoch, then resumed
    train(cfg, tmp_path / "one", progress=False, data=SMALL, log=lambda s: None, stop_after=1)
    assert load_checkpoint(tmp_path / "one")["epoch"] == 1
    train(cfg, tmp_path / "one", resume=True, progress=False, data=SMALL, log=lambda s: None)
    full, resumed = _state(tmp_path / "full"), _state(tmp_path / "one")
    assert full.keys() == resumed.keys()
    for k in full:
        assert torch.equal(full[k], resumed[k]), k
    lines = (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]


def test_run_folder_protection(tmp_path):
    train(_cfg(**{"training.epochs": 1}), tmp_path / "r", progress=False, data=SMALL, log=lambda s: None)
    with pytest.raises(RunError, match="--resume"):
        train(_cfg(), tmp_path / "r", progress=False, data=SMALL)
    with pytest.raises(RunError, match="nothing to resume"):
        train(_cfg(), tmp_path / "empty", resume=True, progress=False, data=SMALL)


def test_same_seed_same_result_different_seed_differs(tmp_path):
    a = train(_cfg(**{"training.epochs": 1}), tmp_path / "a", progress=False, data=SMALL, log=lambda s: None)
    b = train(_cfg(**{"training.epochs": 1}), tmp_path / "b", progress=False, data=SMALL, log=lambda s: None)
    c = train(_cfg(**{"training.epochs": 1, "seed": 4}), tmp_path / "c", progress=False, data=SMALL,
              log=lambda s: None)
    sa, sb, sc = (r.model.state_dict() for r in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_result_independent_of_thread_count(tmp_path):
    one = train(_cfg(**{"training.epochs": 1}), tmp_path / "t1", progress=False, data=SMALL, log=lambda s: None)
    torch.set_num_threads(2)
    two = train(_cfg(**{"training.epochs": 1, "threads": 1}), tmp_path / "t2", progress=False, data=SMALL,
                log=lambda s: None)
    s1, s2 = one.model.state_dict(), two.model.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)


def test_mppd_regularizer_is_active_and_lowers_the_term(tmp_path):
    # strong input noise (sigma 0.3) so the term matters next to the cross-entropy
    common = {"training.epochs": 4, "training.sigma": 0.3, "training.lr": 0.02}
    reg = train(_cfg(**common, **{"regularizer.mppd.rho": 5.0}), tmp_path / "m", progress=False,
                data=SMALL, log=lambda s: None)
    v = [m["train_mppd"] for m in reg.metrics]
    assert all(x > 0 for x in v)
    plain = train(_cfg(**common, **{"regularizer.mppd.rho": 0.0}), tmp_path / "p", progress=False,
                  data=SMALL, log=lambda s: None)
    # without the regularizer the term is only measured; it grows more and ends clearly higher
    assert plain.metrics[-1]["train_mppd"] > 1.2 * v[-1]
    sr, sp = reg.model.state_dict(), plain.model.state_dict()
    assert not all(torch.equal(sr[k], sp[k]) for k in sr)  # the term changed training


@pytest.mark.parametrize("over", [
    {"training.mode": "fgsm"},
    {"training.mode": "clean", "regularizer.mppd.rho": 0.0, "regularizer.rat_beta": 5e-4},
    {"model.neuron.type": "cuba-dlif"},
    {"model.readout": "linear", "regularizer.mppd.layers": "all", "model.hidden": [16, 16]},
    {"model.arch": "conv", "model.channels": [4, 8], "model.strides": [2, 2], "model.hidden": [16]},
], ids=["fgsm", "clean-rat", "cuba", "linear-readout", "conv"])
def test_training_variants_run(tmp_path, over):
    over = {"training.epochs": 1, **over}
    r = train(_cfg(**over), tmp_path / "v", progress=False, data=SMALL.subset(128, 50), log=lambda s: None)
    assert r.metrics[0]["train_loss"] > 0


def test_srnn_with_bound_penalty(tmp_path):
    cfg = load_config("models/vowels-srnn-dlif.yaml", {"training.epochs": 2, "threads": 1})
    data = load_dataset("vowels", seed=0).subset(96, 60)
    r = train(cfg, tmp_path / "s", progress=False, data=data, log=lambda s: None)
    assert r.metrics[-1]["train_bound"] > 0 and r.metrics[-1]["train_mppd"] > 0


def test_cli_train_end_to_end(tmp_path, capsys):
    out = tmp_path / "cli"
    untrained = ["--set", "training.epochs=0"]     # --epochs takes 1 and up
    rc = main(["train", "--config", "models/mnist5k-mlp-lif.yaml", "--out", str(out), *untrained, "--quiet"])
    assert rc == 0 and (out / "checkpoint.pt").is_file()
    assert main(["train", "--config", "models/mnist5k-mlp-lif.yaml", "--out", str(out), *untrained]) == 2
    assert "--resume" in capsys.readouterr().err


def test_missing_data_leaves_no_run_folder(tmp_path, capsys):
    out = tmp_path / "fm"
    rc = main(["train", "--config", "models/mnist5k-mlp-lif.yaml", "--out", str(out), "--set",
               "data.dataset=fashion-mnist", "--data-dir", str(tmp_path / "nowhere")])
    assert rc == 2
    assert "FashionMNIST/raw" in capsys.readouterr().err
    assert not out.exists()


def test_noise_aware_training_with_chip_noise(tmp_path):
    over = {"training.epochs": 1, "training.hardware_noise": "weight-mismatch", "training.hardware_noise_level": 0.2}
    a = train(_cfg(**over), tmp_path / "a", progress=False, data=SMALL, log=lambda s: None)
    b = train(_cfg(**over), tmp_path / "b", progress=False, data=SMALL, log=lambda s: None)
    plain = train(_cfg(**{"training.epochs": 1}), tmp_path / "c", progress=False, data=SMALL, log=lambda s: None)
    sa, sb, sp = a.model.state_dict(), b.model.state_dict(), plain.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)  # same seed, same chip instances
    assert not all(torch.equal(sa[k], sp[k]) for k in sa)  # the noise changed training
    assert a.metrics[0]["train_loss"] > 0


@pytest.mark.parametrize("value, needle", [("gaussian", "chip-instance noise"), ("wobble", "wobble")])
def test_noise_aware_training_rejects_bad_noise(value, needle):
    from neurodeploy.config import ConfigError

    with pytest.raises(ConfigError, match=needle):
        _cfg(**{"training.hardware_noise": value, "training.hardware_noise_level": 0.1})
