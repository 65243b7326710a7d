"""Hostile input (issue 10): configs, profiles, noise specs and --set values fail fast with one bounded line.

Every failure must be a :class:`NeurodeployError` whose message is one line,
names the file (or option), the field and the value, and stays short (the
file path aside, which is the user's own input); never a hang, a traceback,
a RecursionError or a 42-line PyYAML dump. The fuzz tests mutate the shipped
configs and profiles and accept only "loads" or "one-line NeurodeployError".
"""

from __future__ import annotations

import copy
import math
import os
import threading
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from neurodeploy.config import (
    DATASET_INFO,
    ConfigError,
    config_from_dict,
    load_config,
    parse_set_items,
)
from neurodeploy.errors import NeurodeployError
from neurodeploy.noise.specs import NOISES, NoiseProfileError, NoiseSpecError, parse_noise_spec
from neurodeploy.quant.profile import ProfileError, load_profile, profile_from_dict
from neurodeploy.yamlio import YamlError, load_yaml, parse_scalar, parse_yaml

ROOT = Path(__file__).resolve().parent.parent
MODELS = sorted((ROOT / "models").glob("*.yaml"))
PROFILES = sorted((ROOT / "hw_profiles").glob("*.yaml"))
BASE = ROOT / "models" / "mnist5k-mlp-dlif.yaml"

ALIAS_BOMB = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8))


def assert_one_line(exc: BaseException, *needles: str, path: object = None) -> str:
    """The message is one line, mentions every needle and is short (the file path aside)."""
    assert isinstance(exc, NeurodeployError), f"{type(exc).__name__}: {exc}"
    msg = str(exc)
    assert "\n" not in msg and "\r" not in msg, msg
    assert len(msg.replace(str(path), "<path>") if path is not None else msg) < 300, msg
    for needle in needles:
        assert needle in msg, f"{needle!r} not in {msg!r}"
    return msg


def _write(tmp_path: Path, text, name: str = "bad.yaml") -> Path:
    p = tmp_path / name
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text, encoding="utf-8")
    return p


def _base_dict() -> dict:
    return yaml.safe_load(BASE.read_text())


def _set(data: dict, dotted: str, value) -> dict:
    node = data
    *parents, leaf = dotted.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value
    return data


def _profile_dict(name: str = "loihi2") -> dict:
    return yaml.safe_load((ROOT / "hw_profiles" / f"{name}.yaml").read_text())


# --------------------------------------------------------------------------- the YAML layer

@pytest.mark.parametrize("loader, error", [(load_config, ConfigError), (load_profile, ProfileError)])
def test_alias_bomb_fails_fast(tmp_path, loader, error):
    path = _write(tmp_path, ALIAS_BOMB)
    assert len(ALIAS_BOMB) < 1200
    start = time.perf_counter()
    with pytest.raises(error) as err:
        loader(path)
    assert time.perf_counter() - start < 1.0
    assert_one_line(err.value, str(path), "anchors", "line 1", path=path)


def test_alias_alone_is_refused():
    with pytest.raises(ConfigError) as err:
        parse_yaml("a: 1\nb: *x\n", "f.yaml", error=ConfigError)
    assert_one_line(err.value, "f.yaml", "aliases", "line 2")


def test_non_utf8_file(tmp_path):
    path = _write(tmp_path, b"model:\n  arch: mlp\nname: caf\xe9\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert_one_line(err.value, str(path), "not UTF-8", "0xe9", "line 3", path=path)


def test_deep_nesting_is_an_error_not_recursion(tmp_path):
    path = _write(tmp_path, "model: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert_one_line(err.value, str(path), "nesting deeper than", path=path)


def test_5000_digit_integer(tmp_path):
    path = _write(tmp_path, "model: {}\nseed: " + "9" * 5000 + "\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert_one_line(err.value, str(path), "integer of 5000 characters", "line 2", path=path)
    # and given directly (a checkpoint, a dict): bounded in the message, never repr'd whole
    with pytest.raises(ConfigError) as err:
        config_from_dict({**_base_dict(), "seed": 10**5000})
    assert_one_line(err.value, "seed", "bits>")
    with pytest.raises(ConfigError) as err:
        config_from_dict(_set(_base_dict(), "training.lr", 10**400))
    assert_one_line(err.value, "training.lr", "too large")


def _in_thread(fn, timeout: float = 5.0):
    box: dict = {}

    def run():
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            box["exc"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    return t.is_alive(), box.get("exc")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this platform")
@pytest.mark.parametrize("loader, error", [(load_config, ConfigError), (load_profile, ProfileError)])
def test_named_pipe_is_refused_not_blocking(tmp_path, loader, error):
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    alive, exc = _in_thread(lambda: loader(fifo))
    if alive:  # unblock the reader before failing
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        pytest.fail(f"{loader.__name__} blocked on a named pipe")
    assert isinstance(exc, error), repr(exc)
    assert_one_line(exc, str(fifo), "named pipe", path=fifo)


def test_size_cap(tmp_path):
    path = _write(tmp_path, "model: {}\n" + "# padding\n" * 120_000)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert_one_line(err.value, str(path), "larger than", path=path)


@pytest.mark.parametrize("text, needle", [
    ("model: {}\ntraining: [unclosed\n", "line 3"),
    ("model:\n\tarch: mlp\n", "line 2"),
    ("model: {}\nmodel: {}\n", "duplicate key 'model'"),
    ("model: !!python/object:os.system {}\n", "constructor"),
    ("model: {}\nseed: !!int abc\n", "'abc' is not an integer"),
    ("model: {}\nseed: 0x_\n", "not an integer"),
    ("model: {}\nname: !!bool maybe\n", "not a boolean"),
    ("model: {}\nname: \x01\n", "unacceptable character"),
    ("model: {}\n---\nmodel: {}\n", "single document"),
])
def test_yaml_errors_are_one_line(tmp_path, text, needle):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert_one_line(err.value, str(path), "not valid YAML", needle, path=path)


def test_yaml_scalars_that_used_to_crash_are_handled():
    assert parse_yaml("d: 2024-13-45\nlr: 1e-3\n", "f") == {"d": "2024-13-45", "lr": 0.001}
    assert load_yaml(BASE) == yaml.safe_load(BASE.read_text())


@pytest.mark.parametrize("text", ["", "# only a comment\n", "\n\n"])
def test_empty_config_is_an_error(tmp_path, text):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert_one_line(err.value, str(path), "empty", path=path)


def test_missing_model_section(tmp_path):
    path = _write(tmp_path, "training:\n  epochs: 2\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert_one_line(err.value, str(path), "missing section 'model'", path=path)


# --------------------------------------------------------------------------- --set

@pytest.mark.parametrize("items, needle", [
    (["model.hidden=["], "--set model.hidden"),
    (["model.hidden=[1, *a]"], "--set model.hidden"),
    (["training.lr"], "expected KEY=VALUE"),
    (["=3"], "not a dotted key"),
    (["a..b=1"], "not a dotted key"),
    (["seed=" + "9" * 5000], "integer of 5000 characters"),
    (["seed=" + "[" * 5000], "nesting deeper"),
])
def test_parse_set_items_rejects(items, needle):
    with pytest.raises(ConfigError) as err:
        parse_set_items(items)
    assert_one_line(err.value, needle)


def test_parse_set_items_values():
    assert parse_set_items(["training.lr=0.05", "model.hidden=[64, 32]", "training.grad_clip=null",
                            " seed = 3", "name=a=b"]) == {
        "training.lr": 0.05, "model.hidden": [64, 32], "training.grad_clip": None, "seed": 3, "name": "a=b"}
    assert parse_scalar("1e-4", "--set x") == 1e-4
    with pytest.raises(YamlError):
        parse_scalar("[", "--set x")


@pytest.mark.parametrize("overrides, needle", [
    ({"seed.x": 1}, "seed is a value"),
    ({"training.lr.x": 1}, "training.lr is a value"),
    ({"training.bogus": 1}, "unknown key 'training.bogus'"),
    ({"bogus.x": 1}, "unknown key 'bogus'"),
    ({"model.neuron.leek": 0.9}, "did you mean 'leak'"),
])
def test_overrides_follow_the_schema(overrides, needle):
    with pytest.raises(ConfigError) as err:
        load_config(BASE, overrides)
    assert_one_line(err.value, needle, str(BASE), path=BASE)


def test_override_of_a_scalar_in_the_file(tmp_path):
    path = _write(tmp_path, "model: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, {"model.hidden": [4]})
    assert_one_line(err.value, "model", "not a section", path=path)


# --------------------------------------------------------------------------- config values

INF, NAN = float("inf"), float("nan")

BAD_VALUES = [
    ("training.lr", INF, "inf"), ("training.lr", NAN, "nan"), ("training.lr", 0, "0"),
    ("model.neuron.threshold", INF, "inf"), ("model.neuron.gamma", NAN, "nan"),
    ("training.sigma", INF, "inf"), ("training.weight_decay", NAN, "nan"),
    ("model.init_current_std", INF, "inf"), ("training.fgsm_init_std", -1, "-1"),
    ("training.momentum", 1.0, "1.0"), ("training.momentum", -0.1, "-0.1"),
    ("training.grad_clip", 0, "0"), ("training.grad_clip", -1.0, "-1.0"),
    ("model.readout_scale", 0, "0"), ("model.readout_scale", NAN, "nan"),
    ("training.batch_size", 10**6, "1000000"), ("training.batch_size", 0, "0"),
    ("data.time_steps", 10**6, "1000000"), ("data.time_steps", 0, "0"),
    ("model.hidden", [2_000_000], "2000000"), ("model.hidden", [0], "0"),
    ("training.augment_shift", 10**9, "1000000000"), ("training.augment_shift", 28, "28"),
    ("training.epochs", 10**7, "10000000"), ("training.epochs", -1, "-1"),
    ("seed", -1, "-1"), ("seed", 2**32, "4294967296"), ("threads", 0, "0"),
    ("model.kernel_size", 0, "0"),
    ("regularizer.bound.power_iterations", 0, "0"), ("regularizer.bound.gain_target", 0, "0"),
    ("regularizer.bound.window", 0, "0"), ("regularizer.rat_beta", INF, "inf"),
    ("regularizer.mppd.rho", NAN, "nan"),
    ("regularizer.mppd.layers", [], "[]"), ("regularizer.mppd.layers", [2], "2"),
    ("regularizer.mppd.layers", [-3], "-3"), ("regularizer.mppd.layers", [0, -2], "-2"),
    ("regularizer.mppd.layers", "first", "'first'"),
    ("data.encoder", "temporal", "'temporal'"), ("data.dataset", "imagenet", "'imagenet'"),
    ("model.arch", "srnn", "'srnn'"), ("model.hidden", [], "mode"),
    ("training.hardware_noise_level", 0.1, "0.1"),
    ("model.input_bits", 64, "64"),
    ("model.normalize_mean", [0.5, 0.5], "2"),
    ("data.data_dir", "a\0b", "a\\x00b"),
]


@pytest.mark.parametrize("dotted, value, shown", BAD_VALUES, ids=lambda v: str(v)[:30])
def test_bad_value_names_field_and_value(dotted, value, shown):
    data = _set(_base_dict(), dotted, value)
    if dotted == "model.normalize_mean":
        data["model"]["normalize_std"] = [0.2, 0.2]
    with pytest.raises(ConfigError) as err:
        config_from_dict(data, "cfg.yaml")
    field = dotted.split(".")[-1] if dotted != "model.hidden" or value else "training.mode"
    assert_one_line(err.value, "cfg.yaml", field, shown)


@pytest.mark.parametrize("dotted, value, needle", [
    ("model.channels", [0], "model.channels[0]"),
    ("model.strides", [0, 2], "model.strides[0]"),
    ("model.channels", [8] * 65, "at most 64"),
    ("model.kernel_size", 99, "model.kernel_size"),
])
def test_bad_conv_values(dotted, value, needle):
    data = _set(yaml.safe_load((ROOT / "models" / "mnist5k-conv-dlif.yaml").read_text()), dotted, value)
    if dotted == "model.strides":
        data["model"]["channels"] = [8, 16]
    with pytest.raises(ConfigError) as err:
        config_from_dict(data, "conv.yaml")
    assert_one_line(err.value, "conv.yaml", needle)


@pytest.mark.parametrize("model, data, needle", [
    ({"arch": "conv", "channels": [4], "hidden": [8]}, {"dataset": "vowels", "encoder": "temporal",
                                                        "time_steps": None}, "model.arch: 'conv'"),
    ({"arch": "srnn", "hidden": [8]}, {"dataset": "vowels", "encoder": "poisson", "time_steps": 8},
     "data.encoder: 'poisson'"),
    ({"arch": "srnn", "hidden": [8]}, {"dataset": "vowels", "encoder": "direct", "time_steps": 8},
     "data.encoder: 'direct'"),
    ({"arch": "srnn", "hidden": [8]}, {"dataset": "vowels", "encoder": "temporal", "time_steps": 30},
     "data.time_steps: 30"),
    ({"arch": "mlp", "hidden": [8]}, {"dataset": "vowels", "encoder": "temporal", "time_steps": None},
     "model.arch: 'mlp'"),
    ({"arch": "srnn", "hidden": [8]}, {"dataset": "digits", "encoder": "temporal", "time_steps": None},
     "data.encoder: 'temporal'"),
    ({"arch": "mlp", "hidden": [8]}, {"dataset": "digits", "time_steps": 4}, "training.augment_shift: 8"),
])
def test_encoder_and_arch_must_fit_the_data_set(model, data, needle):
    cfg = {"data": data, "model": model}
    if "augment_shift" in needle:
        cfg["training"] = {"augment_shift": 8}
    with pytest.raises(ConfigError) as err:
        config_from_dict(cfg, "fit.yaml")
    assert_one_line(err.value, "fit.yaml", needle)


def test_dataset_table_matches_the_data_module():
    from neurodeploy.data.datasets import DATASETS

    assert set(DATASET_INFO) == set(DATASETS)


@pytest.mark.parametrize("name", ["/abs/path", "../..", "..", ".", "a/b", "", "-x", "a" * 101, "a\0b", 5])
def test_config_name_must_be_a_plain_name(tmp_path, name):
    with pytest.raises(ConfigError) as err:
        config_from_dict({**_base_dict(), "name": name}, "cfg.yaml")
    assert_one_line(err.value, "cfg.yaml", "name")
    path = _write(tmp_path, f"name: {name!r}\nmodel: {{}}\n" if isinstance(name, str) and "\0" not in name
                  else "name: 5\nmodel: {}\n")
    with pytest.raises(ConfigError):
        load_config(path)


def test_default_name_from_an_odd_file_name(tmp_path):
    path = _write(tmp_path, "model: {}\n", name="my model (v2).yaml")
    assert load_config(path).name == "my-model-v2-"


# --------------------------------------------------------------------------- profiles

BAD_PROFILE = [
    ("neuron.activation_shift", 7, "expected 6"), ("neuron.state_bits", 16, "expected 24"),
    ("neuron.state_bits", 32, "expected 24"), ("neuron.vth_shift", 0, "expected 6"),
    ("neuron.bias_exp_bits", 30, "1..4"), ("neuron.bias_mant_bits", 64, "1..16"),
    ("input.graded_bits", 64, "1..24"), ("input.graded_bits", 0, "1..24"),
    ("weights.bits", 9, "1..8"), ("neuron.du_bits", 13, "1..12"), ("neuron.dv_bits", 0, "1..12"),
    ("neuron.vth_bits", 18, "1..17"), ("weights.exp_min", -100, "-16..16"),
    ("weights.exp_max", 10**30, "-16..16"), ("resources.cores_per_chip", 0, "1.."),
    ("resources.max_fan_in", 10**100, "1.."), ("weights.sign_mode", "both", "mixed"),
    ("weights.bits", "eight", "integer"), ("weights.bits", True, "integer"),
    ("name", "/abs/path", "name"), ("name", "../..", "name"), ("name", 5, "name"),
    ("noise", {"gaussian": [1e308]}, "noise.gaussian"), ("noise", {"bit-flip": 2}, "noise.bit-flip"),
    ("noise", [1, 2], "noise"),
]


@pytest.mark.parametrize("dotted, value, needle", BAD_PROFILE, ids=lambda v: str(v)[:30])
def test_bad_profile_value(dotted, value, needle):
    data = _set(_profile_dict(), dotted, value)
    with pytest.raises(ProfileError) as err:
        profile_from_dict(data, "hw.yaml")
    field = dotted if dotted != "noise" or not isinstance(value, dict) else needle
    assert_one_line(err.value, "hw.yaml", field, needle)
    if not isinstance(value, (dict, list)) and not (isinstance(value, int) and value > 10**20):
        assert repr(value) in str(err.value)


def test_profile_file_errors(tmp_path):
    path = _write(tmp_path, "# nothing\n")
    with pytest.raises(ProfileError) as err:
        load_profile(path)
    assert_one_line(err.value, str(path), "empty", path=path)
    # the noise section is checked at load time, not when a sweep reads it
    text = (ROOT / "hw_profiles" / "loihi2.yaml").read_text() + "noise:\n  gaussian: [0, 1e308]\n"
    path = _write(tmp_path, text, "noisy.yaml")
    with pytest.raises(NoiseProfileError) as err:
        load_profile(path)
    assert_one_line(err.value, str(path), "noise.gaussian", "1e+308", path=path)
    with pytest.raises(ProfileError) as err:
        load_profile("x" * 5000)
    assert_one_line(err.value, "no such hardware profile")


def test_shipped_profiles_and_configs_load():
    for p in PROFILES:
        assert load_profile(p).name == p.stem
    for p in MODELS:
        assert load_config(p).name == p.stem


# --------------------------------------------------------------------------- noise levels

@pytest.mark.parametrize("spec, needle", [
    ("gaussian:1e308", "above 10"), ("gaussian:0,11", "above 10"), ("uniform:nan", "not finite"),
    ("weight-mismatch:1e9", "above 10"), ("threshold-mismatch:inf", "not finite"),
    ("current-noise:100", "above 10"), ("membrane-noise:-1", "negative"),
    ("salt-pepper:1.5", "above 1"), ("spike-drop:2", "above 1"), ("fgsm:2", "above 1"),
    ("pgd:1/0", "not a number"), ("gaussian:" + "9" * 5000, "not a number"),
    ("gaussian:" + ",".join(["0"] * 2000), "at most"), ("x" * 500 + ":1", "unknown noise"),
])
def test_noise_levels_are_bounded_at_parse_time(spec, needle):
    with pytest.raises(NoiseSpecError) as err:
        parse_noise_spec(spec)
    assert_one_line(err.value, "--noise", needle)


def test_every_noise_has_a_finite_range():
    for t in NOISES.values():
        assert math.isfinite(t.upper) and 0 < t.upper <= 10
    assert parse_noise_spec("weight-mismatch:0,1.5").levels == (0.0, 1.5)


# --------------------------------------------------------------------------- fuzz

_LEAF = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70), st.sampled_from([0, 1, -1, 2**32, 10**400, 2**31]),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
    st.sampled_from(["last", "all", "mlp", "conv", "srnn", "temporal", "poisson", "direct", "vowels", "digits",
                     "weight-mismatch", "gaussian", "spikes", "linear", "adam", "../..", "/abs"]),
)
_VALUE = st.recursive(_LEAF, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                     st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=8)


def _paths(node, prefix=()):
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, prefix + (k,))
    return out


@st.composite
def _mutated(draw, docs):
    data = copy.deepcopy(draw(st.sampled_from(docs)))
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(data)
        path = draw(st.sampled_from(paths)) if paths else ()
        parent = data
        for k in path[:-1]:
            parent = parent[k]
        op = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if not path:
            op = "add"
        if op == "replace":
            parent[path[-1]] = draw(_VALUE)
        elif op == "delete":
            del parent[path[-1]]
        else:
            target = parent[path[-1]] if path and isinstance(parent[path[-1]], dict) else data
            target[draw(st.one_of(st.text(max_size=10), st.integers()))] = draw(_VALUE)
    return data


_CONFIGS = [yaml.safe_load(p.read_text()) for p in MODELS]
_PROFILE_DOCS = [yaml.safe_load(p.read_text()) for p in PROFILES]
_FUZZ = settings(derandomize=True, deadline=None, database=None, print_blob=False,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _only_user_errors(fn, *args):
    try:
        fn(*args)
    except NeurodeployError as exc:
        assert_one_line(exc)


@settings(_FUZZ, max_examples=160)
@given(_mutated(_CONFIGS))
def test_fuzz_configs(data):
    _only_user_errors(config_from_dict, data, "fuzz.yaml")


@settings(_FUZZ, max_examples=100)
@given(_mutated(_PROFILE_DOCS))
def test_fuzz_profiles(data):
    _only_user_errors(profile_from_dict, data, "fuzz.yaml")


_TEXTS = [p.read_text() for p in MODELS]


@settings(_FUZZ, max_examples=80)
@given(st.sampled_from(_TEXTS), st.lists(st.tuples(st.integers(0, 2000), st.sampled_from(
    list("&*[]{}:,-?!|>'\"#%@\t\n ") + ["\x00", "\xe9", "!!int ", "!!timestamp ", "<<: ", "1e9", ".nan",
                                          "9" * 60])), min_size=1, max_size=4))
def test_fuzz_yaml_text(text, edits):
    for pos, chunk in edits:
        pos = pos % (len(text) + 1)
        text = text[:pos] + chunk + text[pos:]

    def load():
        data = parse_yaml(text, "fuzz.yaml", error=ConfigError)
        if isinstance(data, dict):
            config_from_dict(data, "fuzz.yaml")

    _only_user_errors(load)
