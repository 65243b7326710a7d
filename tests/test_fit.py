"""The chip fit report: networks just inside and just outside every limit, the tables, the errors, the profile
keys that hold the limits (with their sources), and PilotNet LIF against the Lava compiler's 74 cores."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml
from rich.console import Console

from neurodeploy.cli import main
from neurodeploy.ir import ConvLayer, DenseLayer, Network, Neurons
from neurodeploy.quant import QuantizationError, check_resources
from neurodeploy.quant.fit import FitError, check_fit, fit_markdown, fit_network, mean_fan_out, print_fit
from neurodeploy.quant.profile import ProfileError, load_profile, profile_from_dict

ROOT = Path(__file__).resolve().parents[1]
PILOTNET = ROOT.parent / "shared" / "fixtures" / "lava-dl" / "netx" / "gts" / "pilotnet_lif" / "network.net"


def _profile(**resources):
    """loihi2 with its resources replaced by ``resources`` (others: no limit, one chip)."""
    data = yaml.safe_load((ROOT / "hw_profiles" / "loihi2.yaml").read_text())
    data.pop("noise", None)
    base = {"neurons_per_core": 1000, "synapses_per_core": 10**6, "cores_per_chip": 1000, "max_fan_in": 10**6,
            "synapse_encodings": ["dense"]}
    base.update(resources)
    data["resources"] = base
    return profile_from_dict(data, "test.yaml")


def _neurons(n):
    return Neurons(du=4095, dv=0, vth=10, bias_mant=np.zeros(n, np.int64))


def _mlp(*sizes, weight=None):
    """Dense layers sizes[0] -> sizes[1] -> ... with all-ones weights (or ``weight`` for the first layer)."""
    layers = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        w = np.full((b, a), 2, np.int64) if (i or weight is None) else weight   # 2: on the mixed 8-bit grid
        layers.append(DenseLayer(weight=w, neurons=_neurons(b), name=f"d{i}"))
    return Network(input_shape=(sizes[0],), layers=layers, time_steps=2).validate()


# --------------------------------------------------------------------------- neurons per core, cores per chip

def test_neurons_per_core_just_inside_and_outside():
    p = _profile(neurons_per_core=4)
    inside = fit_network(_mlp(3, 4), p)
    assert inside.fits and inside.layers[0].cores == 1 and inside.cores[0].neurons == 4
    outside = fit_network(_mlp(3, 5), p)
    assert outside.fits and outside.layers[0].cores == 2 and outside.layers[0].limited_by == "neurons"
    assert max(c.neurons for c in outside.cores) <= 4


def test_cores_per_chip_just_inside_and_outside():
    p = _profile(neurons_per_core=4, cores_per_chip=2)
    assert fit_network(_mlp(3, 8), p).fits                      # 2 cores
    report = fit_network(_mlp(3, 9), p)                         # 3 cores
    assert not report.fits and report.total_cores == 3
    assert "needs 3 cores > 2 cores per chip" in report.limiting
    with pytest.raises(FitError) as err:
        check_fit(_mlp(3, 9), p)
    assert "\n" not in str(err.value) and "3 cores > 2 cores per chip" in str(err.value)


def test_chips_just_inside_and_outside():
    p = _profile(neurons_per_core=4, cores_per_chip=2, chips=2)
    inside = fit_network(_mlp(3, 16), p)                        # 4 cores on 2 chips
    assert inside.fits and inside.chips_needed == 2 and [c.chip for c in inside.cores] == [0, 0, 1, 1]
    outside = fit_network(_mlp(3, 17), p)
    assert not outside.fits and "needs 3 chips > 2 chips" in outside.limiting


def test_neurons_per_chip_just_inside_and_outside():
    p = _profile(neurons_per_core=4, neurons_per_chip=8)
    assert fit_network(_mlp(3, 8), p).fits
    report = fit_network(_mlp(3, 9), p)
    assert not report.fits and "needs 9 neurons > 8 neurons per chip" in report.limiting


def test_synapses_per_chip_just_inside_and_outside():
    p = _profile(synapses_per_chip=24)          # dense: 3 inputs x 8 neurons = 24 stored synapses
    assert fit_network(_mlp(3, 8), p).fits
    report = fit_network(_mlp(3, 9), p)
    assert not report.fits and "needs 27 synapses > 24 synapses per chip" in report.limiting


# --------------------------------------------------------------------------- synaptic memory and its encodings

def test_synaptic_memory_just_inside_and_outside():
    """dense 8-bit weights: one neuron with 8 inputs needs 64 bits."""
    p = _profile(synaptic_memory_bits_per_core=64)
    inside = fit_network(_mlp(8, 1), p)
    assert inside.fits and inside.cores[0].memory_bits == 64 and inside.cores[0].encoding == "dense"
    report = fit_network(_mlp(9, 1), p)
    assert not report.fits
    assert "synaptic memory bits per core needs 72 > 64" in report.limiting and "d0" in report.limiting
    # two such neurons: split onto two cores, limited by memory
    two = fit_network(_mlp(8, 2), p)
    assert two.fits and two.layers[0].cores == 2 and two.layers[0].limited_by == "memory_bits"


def test_sparse_encoding_counts_only_nonzero_weights_with_their_index():
    w = np.zeros((4, 16), np.int64)
    w[:, 0] = 1                                          # 4 synapses among 64 possible
    net = _mlp(16, 4, weight=w)
    dense = fit_network(net, _profile(neurons_per_core=4, synapse_encodings=["dense"]))
    sparse = fit_network(net, _profile(neurons_per_core=4, synapse_encodings=["dense", "sparse"]))
    # dense: 1 input axon (the one source with synapses) x 4 neurons x 8 bits; sparse: 4 x (8 + 2 index bits)
    assert dense.cores[0].memory_bits == 32 and dense.cores[0].axons_in == 1
    assert sparse.cores[0].memory_bits == 32      # equal cost: the first declared (dense) wins
    w[:, :] = 0
    w[np.arange(4), np.arange(4)] = 1                 # diagonal: 4 axons, 4 synapses
    diag = _mlp(16, 4, weight=w)
    assert fit_network(diag, _profile(neurons_per_core=4, synapse_encodings=["dense"])).cores[0].memory_bits == 128
    sp = fit_network(diag, _profile(neurons_per_core=4, synapse_encodings=["dense", "sparse"]))
    assert sp.cores[0].memory_bits == 4 * (8 + 2) and sp.cores[0].encoding == "sparse"


def _conv_net(c_out=2, hw=6):
    w = np.ones((c_out, 1, 3, 3), np.int64)
    layer = ConvLayer(weight=w, neurons=_neurons(c_out * (hw - 2) ** 2), in_shape=(1, hw, hw), name="conv")
    return Network(input_shape=(1, hw, hw), layers=[layer], time_steps=2).validate()


def test_conv_shared_stores_the_kernel_once_per_channel():
    net = _conv_net()
    shared = fit_network(net, _profile(synapse_encodings=["sparse", "conv_shared"]))
    assert shared.cores[0].encoding == "conv_shared" and shared.cores[0].memory_bits == 2 * 9 * 8
    assert shared.layers[0].synapses == 2 * 16 * 9          # connections are still every (output, tap) pair
    plain = fit_network(net, _profile(synapse_encodings=["sparse"]))
    assert plain.cores[0].encoding == "sparse" and plain.cores[0].memory_bits == 2 * 16 * 9 * (8 + 10)


# --------------------------------------------------------------------------- fan-in, fan-out

def test_fan_in_axons_just_inside_and_outside():
    p = _profile(fan_in_axons_per_core=8)
    inside = fit_network(_mlp(8, 3), p)
    assert inside.fits and inside.cores[0].axons_in == 8
    report = fit_network(_mlp(9, 3), p)
    assert not report.fits and "fan-in axons per core needs 9 > 8" in report.limiting


def test_max_fan_in_per_neuron_just_inside_and_outside():
    p = _profile(max_fan_in=8)
    assert fit_network(_mlp(8, 2), p).fits
    report = fit_network(_mlp(9, 2), p)
    assert not report.fits and "needs 9 synapses > max_fan_in 8" in report.limiting


def test_fan_out_axons_just_inside_and_outside():
    """Layer d0 (2 neurons) drives layer d1, split one neuron per core: each d0 neuron needs an output axon
    per d1 core."""
    p = _profile(neurons_per_core=1, fan_out_axons_per_core=3)
    inside = fit_network(_mlp(1, 2, 3), p)
    assert inside.fits and max(c.axons_out for c in inside.cores if c.population == "d0") == 3
    report = fit_network(_mlp(1, 2, 4), p)
    assert not report.fits and "d0: fan-out axons per core needs 4 > 3" in report.limiting


def test_fan_out_splits_the_source_layer_when_that_helps():
    """Two d0 neurons on one core need 2 x 2 output axons; with a limit of 3 the mapper splits d0."""
    p = _profile(neurons_per_core=2, fan_out_axons_per_core=3)
    net = _mlp(1, 2, 4)                           # d1: 4 neurons on 2 cores
    report = fit_network(net, p)
    assert report.fits
    d0 = report.layers[0]
    assert d0.cores == 2 and d0.limited_by == "axons_out"


def test_recurrent_synapses_count_as_fan_in_and_fan_out():
    net = _mlp(2, 3)
    net.layers[0].weight_rec = np.ones((3, 3), np.int64)
    report = fit_network(net, _profile())
    assert report.layers[0].max_fan_in == 2 + 3 and report.cores[0].axons_in == 5
    assert report.cores[0].axons_out == 3                # each neuron to its own (single) core
    assert mean_fan_out(net) == [3.0, 3.0]


# --------------------------------------------------------------------------- tables, utilisation, reconciliation

def test_tables_fit_80_columns_and_name_the_tightest_resource():
    p = _profile(neurons_per_core=4, fan_in_axons_per_core=10)
    report = fit_network(_mlp(9, 6, 3), p)
    console = Console(record=True, width=80)
    print_fit(report, console=console)
    text = console.export_text()
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "d0" in text and "d1" in text and "per core" in text
    # fan-in 9 of 10 on d0's cores is the tightest (90%): named with where it is, in yellow
    assert report.tightest["resource"] == "fan-in axons per core" and report.tightest["used"] == 9
    assert "tightest: fan-in axons per core 9 of 10 (90%)" in text
    md = fit_markdown(report)
    assert "| d0 | dense |" in md and "Tightest resource: fan-in axons per core" in md


def test_check_resources_is_the_fit_report():
    """The quantizer's check (one source of truth) raises QuantizationError naming the same resource."""
    p = _profile(neurons_per_core=4, cores_per_chip=2)
    ok = check_resources(_mlp(3, 8), p)
    assert ok["cores"] == 2 and ok["cores_available"] == 2 and ok["fit"]["fits"]
    with pytest.raises(QuantizationError, match="needs 3 cores > 2 cores per chip"):
        check_resources(_mlp(3, 9), p)


# --------------------------------------------------------------------------- profile keys

def _data():
    return yaml.safe_load((ROOT / "hw_profiles" / "loihi2.yaml").read_text())


def _set(data, dotted, value):
    node = data
    *parents, leaf = dotted.split(".")
    for k in parents:
        node = node[k]
    node[leaf] = value
    return data


@pytest.mark.parametrize("dotted, value, needle", [
    ("resources.fan_out_axons_per_core", 0, "expected 1.."),
    ("resources.synaptic_memory_bits_per_core", "1M", "expected an integer"),
    ("resources.chips", -1, "expected 1.."),
    ("resources.neurons_per_chip", True, "expected an integer"),
    ("resources.synapse_encodings", ["dense", "zip"], "expected one of dense, sparse, conv_shared"),
    ("resources.synapse_encodings", [], "non-empty list"),
    ("resources.sources", {"neurons_per_core": ""}, "non-empty string"),
    ("resources.sources", {"colour": "x"}, "resources.sources.colour"),
    ("resources.axons", 5, "resources.axons"),
    ("energy.synaptic_op_pj", 23.6, "expected [low, high]"),
    ("energy.synaptic_op_pj", [47.2, 23.6], "low <= high"),
    ("energy.static_power_w", [0, float("inf")], "expected [low, high]"),
    ("energy.speedup", [0, 10], "low <= high"),
    ("energy.joules", [1, 2], "energy.joules"),
    ("energy", [1, 2], "expected a mapping"),
])
def test_bad_fit_and_energy_keys_are_one_line(dotted, value, needle):
    data = _set(_data(), dotted, value)
    with pytest.raises(ProfileError) as err:
        profile_from_dict(data, "hw.yaml")
    msg = str(err.value)
    assert "\n" not in msg and "hw.yaml" in msg and needle in msg
    assert dotted.split(".")[0] in msg


def test_missing_energy_key_is_named():
    data = _data()
    del data["energy"]["barrier_ns"]
    with pytest.raises(ProfileError, match="energy.barrier_ns"):
        profile_from_dict(data, "hw.yaml")


def test_optional_limits_default_to_none_and_one_chip():
    data = _data()
    for k in ("synaptic_memory_bits_per_core", "fan_in_axons_per_core", "fan_out_axons_per_core",
              "neurons_per_chip", "synapses_per_chip", "chips", "synapse_encodings", "sources"):
        del data["resources"][k]
    del data["energy"]
    p = profile_from_dict(data, "hw.yaml")
    assert p.resources.chips == 1 and p.resources.fan_out_axons_per_core is None and p.energy is None
    assert p.resources.synapse_encodings == ("dense", "sparse")


@pytest.mark.parametrize("name", ["loihi1", "loihi2", "noisy-edge"])
def test_bundled_profiles_state_a_source_for_every_limit(name):
    p = load_profile(name)
    r = p.resources
    declared = [k for k in vars(r) if k != "sources" and getattr(r, k) is not None]
    assert sorted(r.sources) == sorted(declared)
    assert all(len(v) > 10 for v in r.sources.values())
    assert sorted(p.energy.sources) == sorted(k for k in vars(p.energy) if k != "sources")
    assert all(lo <= hi for lo, hi in (getattr(p.energy, k) for k in vars(p.energy) if k != "sources"))


def test_published_limits_are_the_profiles():
    l1, l2 = load_profile("loihi1").resources, load_profile("loihi2").resources
    assert (l2.cores_per_chip, l2.neurons_per_core, l2.neurons_per_chip, l2.synapses_per_chip) == \
        (128, 8192, 2**20, 120_000_000)
    assert (l1.cores_per_chip, l1.neurons_per_core, l1.synaptic_memory_bits_per_core, l1.fan_in_axons_per_core,
            l1.fan_out_axons_per_core, l1.neurons_per_chip, l1.synapses_per_chip) == \
        (128, 1024, 128 * 1024 * 8, 4096, 4096, 131_072, 130_000_000)


def test_roundtrip_of_a_profile_dict_keeps_new_keys():
    p = load_profile("loihi2")
    data = {"name": "x", "weights": dict(vars(p.weights)), "neuron": dict(vars(p.neuron)),
            "input": dict(vars(p.input)), "resources": copy.deepcopy(dict(vars(p.resources)))}
    back = profile_from_dict(data, "x.yaml")
    assert back.resources == p.resources and back.resources.sources == p.resources.sources


# --------------------------------------------------------------------------- a real network: PilotNet LIF

def _pilotnet():
    if not PILOTNET.exists():
        pytest.skip("shared fixtures not available")
    from neurodeploy.io import read_netx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_netx(PILOTNET, time_steps=16)


def test_pilotnet_lif_cores_against_the_lava_compiler():
    """Lava's Loihi 2 compiler maps PilotNet LIF onto 74 cores (lava-dl pilotnet_snn/benchmark.ipynb); our
    model of a compiler gets within 10% of that, and says Loihi 1 would need 3 chips."""
    net = _pilotnet()
    l2 = fit_network(net, load_profile("loihi2"))
    assert l2.fits and abs(l2.total_cores - 74) / 74 <= 0.10, l2.total_cores
    assert [x.kind for x in l2.layers] == ["input"] + ["conv"] * 5 + ["dense"] * 4
    assert all(x.encoding == "conv_shared" for x in l2.layers if x.kind == "conv")
    l1 = fit_network(net, load_profile("loihi1"))
    assert not l1.fits and l1.chips_needed == 3 and "cores per chip" in l1.limiting


def test_fit_command_prints_tables_and_exits_2_when_it_does_not_fit(tmp_path, capsys):
    net = _pilotnet()
    from neurodeploy.io import write_netx

    path = tmp_path / "small.net"
    small = _mlp(8, 6, 3)
    write_netx(small, path)
    assert main(["fit", str(path), "--json", str(tmp_path / "fit.json")]) == 0
    out = capsys.readouterr().out
    assert "fit on loihi2: 2 cores" in out and "per core" in out
    assert (tmp_path / "fit.json").exists()
    del net
    assert main(["fit", str(PILOTNET), "--profile", "loihi1", "--layers-only"]) == 2
    cap = capsys.readouterr()
    assert "does not fit" in cap.out and cap.err.count("\n") == 1 and "cores per chip" in cap.err
