"""Hostile netx HDF5 files (issue 10): whatever a file holds, read_netx either reads it or raises one
NeurodeployError, a single bounded line naming the file, the field, the value and what was expected;
never another exception, never a hang, never a large allocation driven by declared (not stored) sizes.

One test per class of problem, then a hypothesis fuzz over mutations of valid files (ours and, when the
shared lava-dl fixtures are present, lava-dl's).
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import tempfile
import threading
import time
import tracemalloc
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from neurodeploy.errors import NeurodeployError
from neurodeploy.io import NetxExportError, NetxFormatError, read_netx, write_netx
from neurodeploy.io import netx_hdf5, netx_reader
from neurodeploy.ir import ConvLayer, DenseLayer, InputEncoding, IRError, Network, Neurons

_ROOT = Path(__file__).resolve().parent.parent
_FIXTURES = next((p for p in (_ROOT.parent / "shared" / "fixtures", _ROOT / "shared" / "fixtures") if p.is_dir()),
                 _ROOT.parent / "shared" / "fixtures")
_LAVA_DL = [_FIXTURES / "lava-dl" / rel for rel in
            ("oxford/Trained/network.net", "netx/tiny.net", "netx/recurrent_example.net")]
MAX_MESSAGE = 300


# --------------------------------------------------------------------------- valid files to start from


def _network() -> Network:
    """conv (per-channel bias) -> dense_rec -> dense: every kind of entry the writer produces."""
    rng = np.random.default_rng(3)
    conv = ConvLayer(weight=2 * rng.integers(-60, 60, (4, 2, 3, 3)), in_shape=(2, 5, 7), padding=(1, 1), name="c",
                     neurons=Neurons(du=4095, dv=200, vth=60, bias_exp=6,
                                     bias_mant=np.repeat(rng.integers(-20, 20, 4), 35)))
    rec = DenseLayer(weight=2 * rng.integers(-60, 60, (5, 140)), weight_rec=2 * rng.integers(-30, 30, (5, 5)),
                     name="r", neurons=Neurons(du=1000, dv=100, vth=20, bias_mant=rng.integers(-8, 8, 5) * 64))
    out = DenseLayer(weight=2 * rng.integers(-60, 60, (3, 5)), name="o",
                     neurons=Neurons(du=4095, dv=100, vth=20, bias_mant=np.zeros(3, np.int64), bias_exp=6))
    return Network(input_shape=(2, 5, 7), layers=[conv, rec, out], time_steps=5, input_encoding=InputEncoding(),
                   profile="loihi2", metadata={"source": "hostile", "list": [1, 2]}).validate()


_OURS: list[Path] = []  # written once, copied per test


def _scratch() -> Path:
    """A temporary folder for files shared by several tests, removed when the test process exits."""
    folder = Path(tempfile.mkdtemp(prefix="hostile-netx-"))
    atexit.register(shutil.rmtree, folder, True)
    return folder


def _ours(path: Path, mutate=None, netx_only: bool = False) -> Path:
    """Our file: netx layer/0 input, 1 conv, 2 flatten, 3 dense_rec, 4 dense, plus the 'neurodeploy' group."""
    if not _OURS:
        _OURS.append(write_netx(_network(), _scratch() / "ours.h5"))
    shutil.copyfile(_OURS[0], path)
    if mutate is not None or netx_only:
        with h5py.File(path, "a") as f:
            if netx_only:
                del f["neurodeploy"]
            if mutate is not None:
                mutate(f)
    return path


def _replace(f, name: str, data=None, **kw) -> None:
    del f[name]
    f.create_dataset(name, data=data, **kw)


def _dense_file(path: Path, input_shape=(6,), out=3, weight=None, extra=None) -> Path:
    """A minimal foreign (netx-only) file: input -> dense."""
    with h5py.File(path, "w") as f:
        g = f.create_group("layer/0")
        g.create_dataset("type", data=np.array([b"input"], "S10"))
        g.create_dataset("shape", data=np.asarray(input_shape))
        g = f.create_group("layer/1")
        g.create_dataset("type", data=np.array([b"dense"], "S10"))
        g.create_dataset("shape", data=np.array([out]))
        n_in = int(np.prod(input_shape))
        if weight is None:
            g.create_dataset("weight", data=np.full((out, n_in), 2.0, np.float32))
        else:
            weight(g)
        for key, value in (("type", np.array([b"CUBA"], "S10")), ("iDecay", 4096), ("vDecay", 100),
                           ("vThMant", 10)):
            g.create_dataset(f"neuron/{key}", data=value)
        if extra is not None:
            extra(f)
    return path


def _refused(path: Path, field=None, *words: str, **kwargs) -> NeurodeployError:
    """read_netx(path) raises a NeurodeployError: one line, < MAX_MESSAGE characters, naming file and field."""
    with pytest.raises(NeurodeployError) as err:
        read_netx(path, **kwargs)
    msg = str(err.value)
    assert "\n" not in msg and len(msg) < MAX_MESSAGE, msg
    assert str(path) in msg, msg
    if field is not None:
        assert f"'{field}'" in msg or f"{field}:" in msg or f" {field} " in msg, msg
    for w in words:
        assert w in msg, msg
    return err.value


def _fast_and_small(fn, seconds: float = 2.0, mib: float = 64.0):
    """Run ``fn``; it must take < ``seconds`` and allocate < ``mib`` MiB (tracemalloc peak: numpy included)."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        result = fn()
    finally:
        elapsed = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert elapsed < seconds, f"took {elapsed:.2f} s"
    assert peak < mib * 2**20, f"allocated {peak / 2**20:.0f} MiB"
    return result


def test_valid_files_still_read(tmp_path):
    net = read_netx(_ours(tmp_path / "ours.h5"))
    assert [layer.kind for layer in net.layers] == ["conv", "dense_rec", "dense"]
    assert [layer.kind for layer in read_netx(_ours(tmp_path / "netx.h5", netx_only=True)).layers] == \
        ["conv", "dense_rec", "dense"]
    assert read_netx(_dense_file(tmp_path / "dense.h5")).layers[0].weight.shape == (3, 6)


# --------------------------------------------------------------------------- 1. regular files, HDF5 files


def test_only_regular_hdf5_files(tmp_path):
    pipe = tmp_path / "pipe.h5"
    os.mkfifo(pipe)
    box: list = []

    def read():
        try:
            read_netx(pipe)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            box.append(exc)

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(5)
    assert not t.is_alive(), "read_netx blocked on a named pipe"
    assert isinstance(box[0], NetxFormatError) and "named pipe" in str(box[0])

    folder = tmp_path / "folder.h5"
    folder.mkdir()
    _refused(folder, None, "folder")
    text = tmp_path / "text.h5"
    text.write_text("lava-dl network\n" * 10)
    _refused(text, None, "not an HDF5 file")
    (tmp_path / "empty.h5").write_bytes(b"")
    _refused(tmp_path / "empty.h5", None, "not an HDF5 file")
    data = _ours(tmp_path / "ours.h5").read_bytes()
    for cut in (len(data) // 2, 600):
        (tmp_path / "cut.h5").write_bytes(data[:cut])
        _refused(tmp_path / "cut.h5")


def test_links_and_external_storage_are_refused(tmp_path):
    """Another file's data (external links, external dataset storage) is never opened: it could be a pipe."""
    os.mkfifo(tmp_path / "fifo")

    def external_link(f):
        del f["layer/4/weight"]
        f["layer/4/weight"] = h5py.ExternalLink(str(tmp_path / "fifo"), "/w")

    def soft_link(f):
        del f["layer/4/weight"]
        f["layer/4/weight"] = h5py.SoftLink("/layer/3/weight")

    def external_storage(f):
        (tmp_path / "raw.bin").write_bytes(np.zeros(15, np.float32).tobytes())
        del f["layer/4/weight"]
        f.create_dataset("layer/4/weight", shape=(3, 5), dtype=np.float32,
                         external=[(str(tmp_path / "raw.bin"), 0, 60)])

    for mutate, words in ((external_link, "ExternalLink"), (soft_link, "SoftLink"),
                          (external_storage, "other files")):
        _refused(_ours(tmp_path / "net.h5", mutate), "weight", words)


# --------------------------------------------------------------------------- 2. declared sizes, checked first


def _chunked_empty(shape, dtype=np.float32):
    def make(g):
        g.create_dataset("weight", shape=shape, dtype=dtype, chunks=(1, 1) if len(shape) == 2 else True)
    return make


def _huge_conv(f):
    """input (1, 8000, 8000) (64 M inputs, under the limit), then a conv declaring (16, 8000, 8000) neurons
    with a per-channel bias, which a naive reader expands with np.repeat to 10**9 values."""
    g = f["layer"]
    del g["1"]
    c = g.create_group("1")
    c.create_dataset("type", data=np.array([b"conv"], "S10"))
    c.create_dataset("shape", data=np.array([16, 8000, 8000]))
    c.create_dataset("weight", data=np.ones((16, 1, 3, 3), np.float32))
    for key in ("stride", "padding", "dilation", "groups"):
        c.create_dataset(key, data=1)
    c.create_dataset("bias", data=np.ones(16, np.float32))
    for key, value in (("type", np.array([b"CUBA"], "S10")), ("iDecay", 4096), ("vDecay", 100), ("vThMant", 10)):
        c.create_dataset(f"neuron/{key}", data=value)


@pytest.mark.parametrize("case", ["input_shape", "conv_bias", "chunked_weight", "chunked_extras", "layers",
                                  "extras_layers"])
def test_declared_sizes_are_checked_before_reading(tmp_path, case):
    path = tmp_path / "big.h5"
    if case == "input_shape":  # a 2 KB file declaring 10**10 inputs
        _dense_file(path, input_shape=(1, 100000, 100000), weight=_chunked_empty((3, 10**10)))
        field, words = "shape", ("10000000000 neurons", "MAX_LAYER_ELEMENTS")
    elif case == "conv_bias":
        _dense_file(path, input_shape=(1, 8000, 8000), weight=_chunked_empty((3, 64 * 10**6)), extra=_huge_conv)
        field, words = "shape", ("1024000000 neurons", "MAX_LAYER_ELEMENTS")
    elif case == "chunked_weight":  # an empty chunked dataset reads as 10**10 fill values
        _dense_file(path, input_shape=(100000,), out=100000, weight=_chunked_empty((100000, 100000)))
        field, words = "weight", ("(100000, 100000)", "MAX_LAYER_ELEMENTS")
    elif case == "chunked_extras":
        _ours(path, lambda f: _replace(f, "neurodeploy/layers/1/weight", shape=(10**5, 10**5), dtype=np.int64,
                                       chunks=(1, 1000)))
        field, words = "neurodeploy/layers/1/weight", ("(100000, 100000)",)
    elif case == "layers":  # 1,000 layer entries
        with h5py.File(path, "w") as f:
            for i in range(1000):
                f.create_group(f"layer/{i}")
        field, words = "layer", ("1000 layer entries", "MAX_LAYERS")
    else:
        def many(f):
            for i in range(3, 1000):
                f.create_group(f"neurodeploy/layers/{i}")
        _ours(path, many)
        field, words = "neurodeploy/layers", ("MAX_LAYERS",)
    assert path.stat().st_size < 2_000_000  # small files declaring huge things
    _fast_and_small(lambda: _refused(path, field, *words))


def test_total_element_limit(tmp_path, monkeypatch):
    path = _ours(tmp_path / "net.h5")
    read_netx(path)
    monkeypatch.setattr(netx_reader, "MAX_TOTAL_ELEMENTS", 500)   # the reader holds the limits
    _refused(path, None, "MAX_TOTAL_ELEMENTS")


@pytest.mark.parametrize("value", [10**15, 10**18, 2**63 - 1, 0, -5, 1e15, float("inf"), True, "5"])
def test_time_steps_are_bounded(tmp_path, value):
    def mutate(f):
        f["neurodeploy"].attrs["time_steps"] = value
    _refused(_ours(tmp_path / "net.h5", mutate), "neurodeploy/time_steps")


@pytest.mark.parametrize("value", [10**15, 0, 2.5, True, "5"])
def test_time_steps_argument_is_bounded(tmp_path, value):
    _refused(_ours(tmp_path / "net.h5"), None, "time_steps", time_steps=value)
    assert read_netx(_ours(tmp_path / "net.h5"), time_steps=1000).time_steps == 1000


# --------------------------------------------------------------------------- 3. no raw exceptions


def _attr(name: str, key: str, value):
    def mutate(f):
        f[name].attrs[key] = value
    return mutate


def _dataset(name: str, value):
    return lambda f: _replace(f, name, value)


_DEEP = "[" * 20000 + "]" * 20000


@pytest.mark.parametrize("mutate, field, words", [
    (_dataset("layer/0/shape", np.array([2.0, np.inf, 7.0])), "shape", ("finite",)),
    (_dataset("layer/0/shape", np.array([np.nan])), "shape", ("finite",)),
    (_dataset("layer/0/shape", np.array([[2, 5, 7]])), "shape", ()),
    (_dataset("layer/0/shape", np.array([], np.int64)), "shape", ()),
    (_dataset("layer/0/shape", b"2, 5, 7"), "shape", ("dtype",)),
    (_dataset("layer/3/neuron/iDecay", b"abc"), "neuron/iDecay", ("dtype",)),
    (_dataset("layer/3/neuron/vDecay", np.array([b"100"], "S3")), "neuron/vDecay", ("dtype",)),
    (_dataset("layer/1/stride", "2"), "stride", ("dtype",)),
    (_dataset("layer/1/stride", np.array([1, 2, 3])), "stride", ("(H, W) pair",)),
    (_dataset("layer/4/weight", np.ones((3, 5, 1), np.float32)), "weight", ("expected (3, 5)",)),
    (_dataset("layer/1/weight", np.ones((4, 2, 3), np.float32)), "weight", ("kH, kW",)),
    (_dataset("layer/4/type", np.array([1.5])), "type", ("dtype",)),
    (_dataset("layer/4/type", h5py.Empty("S10")), "type", ("null",)),
    (_dataset("layer/4/neuron", np.zeros(3)), "neuron", ("expected a group",)),
    (_attr("neurodeploy/layers/0/neurons", "vth", np.nan), "neurodeploy/layers/0/neurons/vth", ("integer",)),
    (_attr("neurodeploy/layers/0/neurons", "du", np.inf), "neurodeploy/layers/0/neurons/du", ("integer",)),
    (_attr("neurodeploy", "input_shape", np.array([2.0, np.inf, 7.0])), "neurodeploy/input_shape", ("dtype",)),
    (_attr("neurodeploy", "metadata", _DEEP), "neurodeploy/metadata", ("MAX_JSON_DEPTH",)),
    (_attr("neurodeploy", "input_encoding", _DEEP), "neurodeploy/input_encoding", ("MAX_JSON_DEPTH",)),
    (_attr("neurodeploy", "metadata", "1" * 5000), "neurodeploy/metadata", ("not valid JSON",)),
    (_attr("neurodeploy", "metadata", "{"), "neurodeploy/metadata", ("not valid JSON",)),
    (_attr("neurodeploy", "metadata", "[1, 2]"), "neurodeploy/metadata", ("JSON object",)),
    (_attr("neurodeploy", "metadata", 5), "neurodeploy/metadata", ("dtype",)),
    (_attr("neurodeploy", "input_encoding", '{"kind": "graded"}'), "neurodeploy/input_encoding", ("bits",)),
    (_attr("neurodeploy", "profile", np.zeros(3)), "neurodeploy/profile", ()),
    (_attr("neurodeploy", "readout", np.array([b"\xff\xfe"])), "neurodeploy/readout", ("UTF-8",)),
    (_dataset("neurodeploy/layers/0/neurons/bias_mant", np.bytes_(b"\x01\x02")),
     "neurodeploy/layers/0/neurons/bias_mant", ("dtype",)),
    (_dataset("neurodeploy/layers/0/neurons/bias_mant", np.array([b"a"] * 140)),
     "neurodeploy/layers/0/neurons/bias_mant", ("dtype",)),
    (_dataset("neurodeploy/layers/1/weight", np.ones((5, 140, 1), np.int64)), "neurodeploy/layers/1/weight",
     ("2 dimensions",)),
    (_attr("neurodeploy/layers/0", "stride", np.array([1])), "neurodeploy/layers/0/stride", ("2 integers",)),
    (_attr("neurodeploy/layers/0", "kind", "pool"), "neurodeploy/layers/0/kind", ("pool",)),
    (lambda f: f["neurodeploy/layers"].move("2", "7"), "neurodeploy/layers/2", ("missing",)),
    (lambda f: f["neurodeploy/layers/0"].attrs.__delitem__("padding"), "neurodeploy/layers/0/padding",
     ("missing",)),
    (lambda f: f["neurodeploy"].attrs.__delitem__("format_version"), "neurodeploy/format_version", ("missing",)),
    (lambda f: f["neurodeploy"].attrs.create("format_version", data=h5py.Empty("i8")),
     "neurodeploy/format_version", ("null",)),
    (lambda f: f["neurodeploy/layers"].create_group("extra"), "neurodeploy/layers", ("4 layers",)),
])
def test_odd_values_give_one_line_errors(tmp_path, mutate, field, words):
    _refused(_ours(tmp_path / "net.h5", mutate), field, *words)


def test_corrupt_group_tables_name_the_object(tmp_path):
    """Overwritten B-tree, local-heap and symbol-table signatures: h5py's errors name the HDF5 object."""
    data = _ours(tmp_path / "net.h5").read_bytes()
    named = 0
    for sig in (b"TREE", b"HEAP", b"SNOD"):
        for m in list(re.finditer(sig, data))[:6]:
            bad = bytearray(data)
            bad[m.start():m.start() + 4] = b"XXXX"
            (tmp_path / "bad.h5").write_bytes(bytes(bad))
            try:
                read_netx(tmp_path / "bad.h5")
            except NeurodeployError as exc:
                msg = str(exc)
                assert "\n" not in msg and len(msg) < MAX_MESSAGE, msg
                named += "HDF5 object '/" in msg and "cannot be read" in msg
    assert named >= 10


# --------------------------------------------------------------------------- 4. values accepted silently before


@pytest.mark.parametrize("mutate, field, words", [
    (_dataset("layer/4/weight", np.full((3, 5), 2 + 3j, np.complex64)), "weight", ("complex",)),
    (_dataset("neurodeploy/layers/2/weight", np.full((3, 5), 2 + 1j)), "neurodeploy/layers/2/weight",
     ("complex",)),
    (_dataset("layer/4/weight", np.full((3, 5), 2**64 - 2, np.uint64)), "weight", ("2147483647",)),
    (_dataset("neurodeploy/layers/2/weight", np.full((3, 5), 2**63 + 6, np.uint64)), "weight", ("spans",)),
    (_dataset("layer/4/bias", np.full(3, 1e10)), "bias", ("overflow",)),
    (_dataset("layer/4/weight", np.full((3, 5), 2.5, np.float32)), "weight", ("2.5", "not an integer")),
    (_dataset("layer/4/neuron/iDecay", np.bool_(True)), "neuron/iDecay", ("bool",)),
    (_dataset("layer/4/neuron/vThMant", 2**25), "neuron/vThMant", ("33554432",)),
    (_attr("neurodeploy", "format_version", 1.5), "neurodeploy/format_version", ("1.5", "integer")),
    (_attr("neurodeploy", "format_version", True), "neurodeploy/format_version", ("bool",)),
    (_attr("neurodeploy", "format_version", 2), "neurodeploy/format_version", ("newer",)),
    (_attr("neurodeploy/layers/0/neurons", "vth", 2.5), "neurodeploy/layers/0/neurons/vth", ("2.5",)),
    (_attr("neurodeploy/layers/0/neurons", "vth", True), "neurodeploy/layers/0/neurons/vth", ("bool",)),
    (_attr("neurodeploy/layers/0/neurons", "vth", 2**25), "neurodeploy/layers/0/neurons/vth", ("33554432",)),
    (_attr("neurodeploy/layers/0/neurons", "du", 5000), "neurodeploy/layers/0/neurons/du", ("5000",)),
    (_attr("neurodeploy/layers/0/neurons", "bias_exp", -10**9), "neurodeploy/layers/0/neurons/bias_exp", ()),
    (_attr("neurodeploy/layers/1", "weight_exp", -10**9), "neurodeploy/layers/1/weight_exp", ()),
    (_attr("neurodeploy/layers/1", "num_weight_bits", 10), "neurodeploy/layers/1/num_weight_bits", ("10",)),
    (_attr("neurodeploy/layers/1", "sign_mode", "positive"), "neurodeploy/layers/1/sign_mode", ("positive",)),
    (_attr("neurodeploy/layers/1", "netx_exact", 7), "neurodeploy/layers/1/netx_exact", ("boolean",)),
    (_attr("neurodeploy/layers/1", "netx_exact", 0.5), "neurodeploy/layers/1/netx_exact", ("boolean",)),
    (_attr("neurodeploy/layers/1", "netx_exact", "yes"), "neurodeploy/layers/1/netx_exact", ("boolean",)),
    (_attr("neurodeploy", "profile", b"\xff"), "neurodeploy/profile", ("UTF-8",)),
    (_attr("neurodeploy", "input_encoding", '{"kind": "graded", "bits": 8, "scale": NaN}'),
     "neurodeploy/input_encoding", ("scale",)),
    (_attr("neurodeploy", "input_encoding", '{"kind": "graded", "bits": 8, "scale": Infinity}'),
     "neurodeploy/input_encoding", ("scale",)),
    (_attr("neurodeploy", "input_encoding", '{"kind": "graded", "bits": 8, "scale": 0}'),
     "neurodeploy/input_encoding", ("scale",)),
    (_attr("neurodeploy", "input_encoding", '{"kind": "graded", "bits": 8, "scale": -255.0}'),
     "neurodeploy/input_encoding", ("scale",)),
    (_attr("neurodeploy", "input_encoding", '{"kind": "graded", "bits": 8, "scale": 1%s}' % ("0" * 400)),
     "neurodeploy/input_encoding", ("scale",)),
    (_attr("neurodeploy", "time_steps", np.array([], np.int64)), "neurodeploy/time_steps", ("(0,)",)),
    (_attr("neurodeploy", "input_encoding", '{"kind": "graded", "bits": true, "scale": 255.0}'),
     "neurodeploy/input_encoding", ("bits",)),
    (_attr("neurodeploy", "input_encoding", '{"kind": "graded", "bits": 8.5, "scale": 255.0}'),
     "neurodeploy/input_encoding", ("bits",)),
    (_attr("neurodeploy", "input_encoding", '{"kind": "rate", "bits": 8, "scale": 255.0}'),
     "neurodeploy/input_encoding", ("rate",)),
])
def test_bad_values_are_refused_not_cast(tmp_path, mutate, field, words):
    _refused(_ours(tmp_path / "net.h5", mutate), field, *words)


def test_fractional_netx_thresholds_are_refused(tmp_path):
    path = _ours(tmp_path / "net.h5", _dataset("layer/4/neuron/vThMant", 2.5), netx_only=True)
    _refused(path, "neuron/vThMant", "2.5", "float")


# --------------------------------------------------------------------------- 5. the writer's own messages


@pytest.mark.parametrize("sign_mode", ["inhibitory", "excitatory", "mixed"])
def test_writer_messages_for_every_sign_mode(tmp_path, sign_mode):
    """The writer explains every network netx cannot hold: it never fails composing its own message."""
    rng = np.random.default_rng(5)
    written = 0
    for t in range(150):
        lo, hi = [(-600, 600), (-300, 0), (0, 300), (-5, 5)][t % 4]
        layer = DenseLayer(weight=rng.integers(lo, hi + 1, (3, 4)), sign_mode=sign_mode,
                           num_weight_bits=int(rng.integers(1, 9)), weight_exp=int(rng.integers(-3, 4)),
                           neurons=Neurons(du=0, dv=0, vth=10, bias_mant=np.zeros(3, np.int64)))
        net = Network(input_shape=(4,), layers=[layer], time_steps=2)
        try:
            netx_hdf5._netx_plan(net)
        except NetxExportError as exc:
            assert "\n" not in str(exc) and exc.field == "weight", str(exc)
            continue
        if written < 5:
            written += 1
            back = read_netx(write_netx(net, tmp_path / "net.h5"))
            assert back.layers[0].sign_mode == sign_mode
    # the case that crashed in _first_diff: netx would load a fraction
    layer = DenseLayer(weight=np.array([[2, 2, -2, -1], [-1, 1, 3, -4], [4, 5, 2, 2]]), sign_mode="inhibitory",
                       num_weight_bits=7, weight_exp=-1, neurons=Neurons(du=0, dv=0, vth=10,
                                                                         bias_mant=np.zeros(3, np.int64)))
    with pytest.raises(NetxExportError, match=r"weight\[1, 3\] = -2 as -3 \* 2\*\*-1 \(a fraction\)"):
        write_netx(Network(input_shape=(4,), layers=[layer], time_steps=2), tmp_path / "frac.h5")


# --------------------------------------------------------------------------- 6. ir.py validation


def _ir(**change) -> Network:
    """conv (1, 4, 4) -> (2, 2, 2), then dense 8 -> 3; ``change`` sets fields ("L0.neurons.vth": layer 0's)."""
    conv = ConvLayer(weight=np.ones((2, 1, 3, 3), np.int64), in_shape=(1, 4, 4), name="c",
                     neurons=Neurons(du=0, dv=0, vth=10, bias_mant=np.zeros(8, np.int64)))
    net = Network(input_shape=(1, 4, 4), layers=[conv, DenseLayer(
        weight=np.ones((3, 8), np.int64), neurons=Neurons(du=0, dv=0, vth=10, bias_mant=np.zeros(3, np.int64)))],
        time_steps=3)
    for key, value in change.items():
        obj = net
        *parts, last = key.split(".")
        for p in parts:
            obj = obj.layers[int(p[1:])] if p.startswith("L") else getattr(obj, p)
        setattr(obj, last, value)
    return net


@pytest.mark.parametrize("key, value, words", [
    ("L1.weight", np.array([[b"ab"] * 8] * 3), "weight has dtype |S2"),
    ("L1.weight", np.ones((3, 8), object), "weight has dtype object"),
    ("L1.weight", np.ones((3, 8), complex), "weight has dtype complex128"),
    ("L1.weight", np.ones((3, 8), bool), "weight has dtype bool"),
    ("L1.weight", np.ones((3, 8)), "weight has dtype float64"),
    ("L1.weight", [[1] * 8] * 3, "weight is a list"),
    ("L1.weight", np.full((3, 8), 2**63, np.uint64), "weight spans"),
    ("L1.weight_rec", np.ones((3, 3), complex), "weight_rec has dtype complex128"),
    ("L0.neurons.bias_mant", b"\x00" * 8, "bias_mant is a bytes"),
    ("L0.neurons.bias_mant", np.array([b"a"] * 8), "bias_mant has dtype |S1"),
    ("L0.neurons.bias_mant", np.zeros(8, complex), "bias_mant has dtype complex128"),
    ("L0.neurons.bias_mant", np.zeros(8, bool), "bias_mant has dtype bool"),
    ("L0.neurons.vth", 2.5, "neuron vth is 2.5"),
    ("L0.neurons.vth", True, "neuron vth is True"),
    ("L0.neurons.vth", 2**25, "neuron vth is 33554432"),
    ("L0.neurons.du", "3", "neuron du is '3'"),
    ("L0.neurons.bias_exp", 10**9, "neuron bias_exp is 1000000000"),
    ("L0.weight_exp", np.float64(1), "weight_exp is"),
    ("L0.num_weight_bits", 10, "num_weight_bits is 10"),
    ("L0.sign_mode", b"mixed", "sign_mode b'mixed'"),
    ("L0.sign_mode", np.array(["mixed"]), "sign_mode ['mixed']"),
    ("L0.stride", (1,), "stride is (1,)"),
    ("L0.padding", (1.0, 1.0), "padding is (1.0, 1.0)"),
    ("L0.groups", 0, "groups is 0"),
    ("L0.in_shape", "1x4x4", "in_shape is '1x4x4'"),
    ("L0.name", 5, "name is 5"),
    ("L0.neurons", None, "neurons is a NoneType"),
    ("time_steps", 3.0, "time_steps is 3.0"),
    ("time_steps", "3", "time_steps is '3'"),
    ("input_shape", (1, 4, 4.0), "input_shape is (1, 4, 4.0)"),
    ("input_encoding.scale", float("nan"), "scale is nan"),
    ("input_encoding.scale", 0.0, "scale is 0.0"),
    ("input_encoding.scale", 10**400, "scale is <integer of"),
    ("input_encoding.bits", True, "bits is True"),
    ("readout", b"spikes", "readout b'spikes'"),
    ("metadata", [1], "metadata is a list"),
])
def test_ir_validation_is_robust_to_odd_types(key, value, words):
    with pytest.raises(IRError) as err:
        _ir(**{key: value}).validate("net")
    msg = str(err.value)
    assert words in msg and "\n" not in msg and len(msg) < MAX_MESSAGE, msg
    if key.startswith("L"):
        assert f"layer {key[1]}" in msg, msg


# --------------------------------------------------------------------------- 7. fuzz


def _bases() -> list[Path]:
    folder = _scratch()
    ours = _ours(folder / "ours.h5")
    netx = _ours(folder / "netx.h5", netx_only=True)
    return [ours, netx, *(p for p in _LAVA_DL if p.is_file())]


_BASES: list[tuple[Path, tuple]] = []  # (file, its inventory), made on first use


def _inventory(path: Path) -> tuple[list[str], list[str], list[tuple[str, str]]]:
    """(datasets, groups, (object, attribute) pairs) of a file."""
    with h5py.File(path) as f:
        datasets, groups, attrs = [], ["/"], [("/", k) for k in f.attrs]

        def visit(name, obj):
            (datasets if isinstance(obj, h5py.Dataset) else groups).append(name)
            attrs.extend((name, k) for k in obj.attrs)
        f.visititems(visit)
    return datasets, groups, attrs


_SCALARS = st.one_of(
    st.integers(-2**63, 2**63 - 1), st.integers(0, 2**64 - 1).map(np.uint64),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0, 1, -1, 2**31, 2**17, 4096, 10**15]),
    st.booleans(), st.text(max_size=8), st.binary(max_size=8),
    st.sampled_from(['{"kind": "graded", "bits": 8, "scale": NaN}', "[" * 200 + "]" * 200, "{}", "1" * 5000,
                     '{"kind": "spikes", "bits": 1, "scale": 1.0}', '{"kind": "graded", "bits": 8, "scale": 1e400}',
                     '{"kind": "graded", "bits": 8, "scale": 1%s}' % ("0" * 400), '{"kind": "graded", "bits": 8}',
                     "dense", "conv", "CUBA", "potential", "mixed", "\udcff"]),
    st.just(np.array([], np.int64)), st.just(np.array([np.nan, np.inf])), st.just(np.zeros((2, 2), "S3")),
    st.complex_numbers(max_magnitude=1e6).map(np.complex64))
_DTYPES = st.sampled_from(["i1", "u1", "i4", "u8", "f2", "f4", "f8", "c8", "?", "S4"])


def _array(draw, like: np.ndarray | None):
    shape = draw(st.one_of(st.just(like.shape if like is not None else (2,)),
                           st.lists(st.integers(0, 4), max_size=4).map(tuple)))
    dtype = np.dtype(draw(_DTYPES))
    n = int(np.prod(shape))
    if dtype.kind == "S":
        return np.array([b"ab"] * n, dtype).reshape(shape)
    values = draw(st.sampled_from(["like", "zeros", "big", "nan", "negative"]))
    base = like.astype(np.float64, copy=False) if (like is not None and values == "like" and like.size == n and
                                                   like.dtype.kind in "iufb") else np.ones(n)
    base = base.reshape(shape)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if values == "zeros":
            base = np.zeros(shape)
        elif values == "big":
            base = base * 1e12
        elif values == "nan":
            base = np.where(base == base, np.nan, base)
        elif values == "negative":
            base = -base - 3
        return base.astype(dtype)


def _mutate(draw, f, datasets, groups, attrs) -> None:
    op = draw(st.sampled_from(["value", "dtype", "reshape", "delete", "delete_group", "add", "attr", "del_attr",
                               "huge", "link"]))
    if op in ("value", "dtype", "reshape", "delete", "huge", "link"):
        name = draw(st.sampled_from(datasets))
        if name not in f or not isinstance(f[name], h5py.Dataset) or (f[name].size or 0) > 10**6:
            return
        old = f[name][()]
        old = old if isinstance(old, np.ndarray) else np.asarray(old)
        del f[name]
        if op == "value":
            f.create_dataset(name, data=draw(_SCALARS) if draw(st.booleans()) else _array(draw, old))
        elif op == "dtype":
            dtype = np.dtype(draw(_DTYPES))
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                new = old.astype(dtype) if old.dtype.kind in "iufcb" and dtype.kind != "S" else \
                    np.zeros(old.shape, dtype)
            f.create_dataset(name, data=new)
        elif op == "reshape":
            f.create_dataset(name, data=draw(st.sampled_from([old.reshape(-1), old.reshape(-1)[:, None],
                                                              old.reshape(-1)[::-1], old[..., None]])))
        elif op == "huge":
            shape = draw(st.sampled_from([(10**6, 10**6), (10**4, 10**4, 10**3), (2**40,), (3, 2**27)]))
            f.create_dataset(name, shape=shape, dtype=draw(st.sampled_from(["f4", "i8", "u8"])), chunks=True)
        elif op == "link":
            f[name] = draw(st.sampled_from([h5py.SoftLink("/layer"), h5py.SoftLink("/nowhere"),
                                            h5py.ExternalLink("/nonexistent.h5", "/x")]))
    elif op == "delete_group":
        name = draw(st.sampled_from(groups))
        if name != "/" and name in f:
            del f[name]
    elif op == "add":
        name = draw(st.sampled_from(groups))
        if name not in f:
            return
        key = draw(st.sampled_from(["extra", "5", "neuron", "weight_rec", "delay", "messageBits", "bias"]))
        if key not in f[name]:
            f[name].create_dataset(key, data=draw(_SCALARS))
    elif attrs:  # attr, del_attr
        obj, key = draw(st.sampled_from(attrs))
        if obj not in f:
            return
        if op == "del_attr":
            if key in f[obj].attrs:
                del f[obj].attrs[key]
        else:
            f[obj].attrs[key] = draw(_SCALARS)


@settings(max_examples=240, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_fuzz_mutated_files_read_or_raise_one_line(data):
    if not _BASES:
        _BASES.extend((p, _inventory(p)) for p in _bases())
    base, inventory = data.draw(st.sampled_from(_BASES), label="base")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mutant.h5"
        shutil.copyfile(base, path)
        with h5py.File(path, "a") as f:
            for _ in range(data.draw(st.integers(1, 3), label="mutations")):
                try:
                    _mutate(data.draw, f, *inventory)
                except (TypeError, ValueError, OSError, KeyError, RuntimeError):
                    pass  # h5py could not store this value: the file keeps what it had
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                net = read_netx(path)
            except NeurodeployError as exc:
                msg = str(exc)
                assert "\n" not in msg and len(msg) < MAX_MESSAGE, msg
                assert str(path) in msg, msg
            else:
                net.validate("read back")

