"""RNN.load checks a file before reading it: anything that is not a layer saved by RNN.save
raises a ValueError naming the file, quickly, without reading big members, unpickling or
allocating what the file declares (issue 9, finding 9)."""

import json
import os
import threading
import time
import zipfile

import numpy as np
import pytest

import pyrnn_fast as prf

QUICK = 10.0  # seconds; every bad file here is rejected in milliseconds on a quiet machine


def within(seconds, fn):
    """fn() run in a daemon thread: its exception or result, or a test failure after `seconds`
    (so that code which would run for minutes fails instead of hanging the suite)."""
    box = {}

    def target():
        try:
            box["result"] = fn()
        except BaseException as e:  # anything, KeyboardInterrupt included, is handed to the test
            box["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"still running after {seconds} s"
    if "error" in box:
        raise box["error"]
    return box["result"]


def rejected(path):
    """RNN.load(path) raises a ValueError naming path, quickly."""
    start = time.perf_counter()
    with pytest.raises(ValueError, match=os.path.basename(str(path))) as info:
        within(QUICK, lambda: prf.RNN.load(path))
    assert time.perf_counter() - start < QUICK
    return str(info.value)


def write_npz(path, members):
    """A zip of .npy members: arrays (written with np.lib.format) or raw bytes."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, value in members.items():
            with zf.open(name + ".npy", "w", force_zip64=True) as f:
                if isinstance(value, bytes):
                    f.write(value)
                else:
                    np.lib.format.write_array(f, np.asanyarray(value), allow_pickle=True)
    return path


@pytest.fixture
def saved(tmp_path):
    """(path, layer, config, members) of a small saved layer."""
    layer = prf.RNN(3, 4, num_layers=2, bidirectional=True, dtype=np.float64, seed=0)
    path = tmp_path / "good.npz"
    layer.save(path)
    with np.load(path) as f:
        members = {k: f[k] for k in f.files}
    config = json.loads(str(members.pop("__config__")))
    return path, layer, config, members


def with_config(tmp_path, members, config, name="bad.npz"):
    return write_npz(tmp_path / name, {"__config__": np.array(json.dumps(config)), **members})


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bias,bidirectional", [(True, False), (False, True)])
def test_round_trip_is_bitwise(tmp_path, dtype, bias, bidirectional):
    layer = prf.RNN(
        5,
        7,
        num_layers=3,
        bias=bias,
        bidirectional=bidirectional,
        dropout=0.25,
        time_major=True,
        stateful=True,
        activation="relu",
        dtype=dtype,
        seed=3,
    )
    layer.params["Wx_l1"] = np.asfortranarray(layer.params["Wx_l1"])  # saved in Fortran order
    layer.save(tmp_path / "rnn.npz")
    loaded = prf.RNN.load(tmp_path / "rnn.npz")
    assert loaded._config() == layer._config() and loaded.seed == layer.seed
    assert list(loaded.params) == list(layer.params)
    for k, v in layer.params.items():
        assert loaded.params[k].dtype == dtype and loaded.params[k].flags.c_contiguous
        np.testing.assert_array_equal(loaded.params[k], v, err_msg=k)
    x = np.random.default_rng(0).standard_normal((4, 2, 5)).astype(dtype)
    for a, b in zip(layer.eval()(x), loaded.eval()(x)):
        np.testing.assert_array_equal(a, b)


def test_truncated_files(saved, tmp_path):
    path, *_ = saved
    data = path.read_bytes()
    for cut in (0, 1, 30, 100, 600, len(data) // 2, len(data) - 100, len(data) - 22, len(data) - 1):
        bad = tmp_path / f"cut{cut}.npz"
        bad.write_bytes(data[:cut])
        rejected(bad)


def test_corrupted_bytes(saved, tmp_path):
    path, *_ = saved
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(0)
    for i in range(20):  # a burst of random bytes somewhere in the file
        bad = bytearray(data)
        at = int(rng.integers(0, len(data) - 16))
        bad[at : at + 16] = rng.integers(0, 256, 16, dtype=np.uint8).tobytes()
        p = tmp_path / f"corrupt{i}.npz"
        p.write_bytes(bytes(bad))
        try:
            layer = within(QUICK, lambda: prf.RNN.load(p))  # noqa: B023 - called (and joined) in this iteration
        except ValueError as e:
            assert str(p.name) in str(e)
        else:  # the burst hit padding of a header: what was loaded is still a valid layer
            assert layer.num_params() == saved[1].num_params()


def test_random_bytes_and_foreign_files(tmp_path):
    (tmp_path / "random.npz").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes())
    rejected(tmp_path / "random.npz")
    with zipfile.ZipFile(tmp_path / "foreign.zip", "w") as zf:
        zf.writestr("hello.txt", "hello")
    rejected(tmp_path / "foreign.zip")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    assert "__config__" in rejected(tmp_path / "other.npz")
    np.save(tmp_path / "plain.npy", np.zeros(3))
    rejected(tmp_path / "plain.npy")


def test_a_zip_bomb_is_not_read(saved, tmp_path, monkeypatch):
    """A 1.2 MB file declaring 256 MiB of zeros: rejected from its name or header alone."""
    path, layer, config, members = saved
    zeros = bytes(1 << 24)
    for name in ("extra", "Wx_l0"):  # an unknown member; a known one whose data is not a .npy
        bomb = tmp_path / f"bomb_{name}.npz"
        with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
            zf.writestr("__config__.npy", path_member(path, "__config__.npy"))
            for k in members:
                if k != name:
                    zf.writestr(k + ".npy", path_member(path, k + ".npy"))
            with zf.open(name + ".npy", "w", force_zip64=True) as f:
                for _ in range(16):
                    f.write(zeros)
        assert bomb.stat().st_size < 8 << 20
        read = [0]
        original = zipfile.ZipExtFile.read

        def counting_read(self, n=-1):  # patched in and undone within this iteration
            out = original(self, n)  # noqa: B023
            read[0] += len(out)  # noqa: B023
            return out

        monkeypatch.setattr(zipfile.ZipExtFile, "read", counting_read)
        rejected(bomb)
        monkeypatch.undo()
        assert read[0] < 1 << 20, f"{read[0]} bytes decompressed"


def path_member(path, name):
    with zipfile.ZipFile(path) as zf:
        return zf.read(name)


@pytest.mark.parametrize(
    "key,value",
    [
        ("hidden_size", 12000),
        ("input_size", 10**9),
        ("num_layers", 10**7),
        ("hidden_size", 10**30),
        ("num_layers", 0),
        ("hidden_size", -1),
        ("hidden_size", "4"),
        ("hidden_size", 4.0),
        ("bias", 1),
        ("bidirectional", False),
        ("activation", "gelu"),
        ("dropout", 2.0),
        ("dtype", "object"),
        ("dtype", "garbage"),
        ("dtype", "float32"),
        ("format_version", 2),
        ("seed", "x"),
    ],
)
def test_bad_or_inconsistent_config(saved, tmp_path, key, value):
    """Checked before any weight is made: hidden_size 12000 or num_layers 10**7 used to build
    (and randomly initialise) the layer first, for minutes."""
    _, _, config, members = saved
    rejected(with_config(tmp_path, members, dict(config, **{key: value})))


@pytest.mark.parametrize(
    "change", ["missing key", "extra key", "not a dict", "not json", "not a string", "no config", "huge config"]
)
def test_bad_config_member(saved, tmp_path, change):
    _, _, config, members = saved
    if change == "missing key":
        config = {k: v for k, v in config.items() if k != "stateful"}
    elif change == "extra key":
        config = dict(config, extra=1)
    elif change == "not a dict":
        config = [config]
    if change == "not json":
        blob = np.array("{not json")
    elif change == "not a string":
        blob = np.zeros(3)
    elif change == "huge config":
        blob = np.array(json.dumps(dict(config, pad="x" * (1 << 20))))
    else:
        blob = np.array(json.dumps(config))
    files = dict(members) if change == "no config" else {"__config__": blob, **members}
    rejected(write_npz(tmp_path / "bad.npz", files))


def test_bad_members(saved, tmp_path):
    _, layer, config, members = saved
    cases = {
        "missing": {k: v for k, v in members.items() if k != "b_l1"},
        "extra": dict(members, b_l2=np.zeros(4)),
        "renamed": {("W_l0" if k == "Wx_l0" else k): v for k, v in members.items()},
        "wrong shape": dict(members, Wh_l0=np.zeros((4, 5))),
        "transposed": dict(members, Wx_l1=members["Wx_l1"].T.copy()),
        "wrong dtype": dict(members, Wh_l0=members["Wh_l0"].astype(np.float32)),
        "integer": dict(members, b_l0=np.zeros(4, np.int64)),
        "huge header, no data": dict(members, Wh_l0=huge_header((4, 4))),
        "huge declared shape": dict(members, Wh_l0=huge_header((10**6, 10**6))),
        "short data": dict(members, Wh_l0=npy_bytes(members["Wh_l0"])[:-8]),
        "long data": dict(members, Wh_l0=npy_bytes(members["Wh_l0"]) + bytes(8)),
        "not npy": dict(members, Wh_l0=b"hello"),
    }
    for what, files in cases.items():
        message = rejected(with_config(tmp_path, files, config, what.replace(" ", "_") + ".npz"))
        assert "not a pyrnn_fast RNN file" in message, what


def huge_header(shape):
    """A .npy header declaring `shape` of float64 with no data after it (a 10**12-element
    declaration must not be allocated)."""
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, dict(descr="<f8", fortran_order=False, shape=shape))
    return buf.getvalue()


def npy_bytes(a):
    import io

    buf = io.BytesIO()
    np.lib.format.write_array(buf, a)
    return buf.getvalue()


sprung = []


class Trap:
    """Unpickling a Trap records it: load must never unpickle."""

    def __reduce__(self):
        return (sprung.append, ("unpickled",))


def test_pickled_members_are_never_loaded(saved, tmp_path):
    _, _, config, members = saved
    obj = np.empty((4, 4), object)
    obj[...] = Trap()
    rejected(with_config(tmp_path, dict(members, Wh_l0=obj), config))
    blob = np.empty((), object)
    blob[()] = Trap()
    rejected(write_npz(tmp_path / "pickled_config.npz", {"__config__": blob, **members}))
    assert not sprung


def test_path_argument(tmp_path):
    with pytest.raises(TypeError, match="path"):
        prf.RNN.load(None)
    with pytest.raises(TypeError, match="path"):
        prf.RNN.load(3)
    with pytest.raises(FileNotFoundError):
        prf.RNN.load(tmp_path / "missing.npz")


def test_a_compressed_copy_loads(saved, tmp_path):
    """Deflated members (as np.savez_compressed writes) are read the same way."""
    path, layer, _, _ = saved
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp_path / "z.npz", "w", zipfile.ZIP_DEFLATED) as dst:
        for name in src.namelist():
            dst.writestr(name, src.read(name))
    loaded = prf.RNN.load(tmp_path / "z.npz")
    for k, v in layer.params.items():
        np.testing.assert_array_equal(loaded.params[k], v)


def test_load_does_not_initialise_weights(saved, monkeypatch):
    """A valid file loads in the time it takes to read it: no random (orthogonal: O(H³))
    initialisation that the file's weights then overwrite."""
    from pyrnn_fast.layers import _base

    path, layer, _, _ = saved

    def no_init(*args):
        raise AssertionError("load initialised weights")

    monkeypatch.setattr(_base, "_orthogonal", no_init)
    loaded = prf.RNN.load(path)
    for k, v in layer.params.items():
        np.testing.assert_array_equal(loaded.params[k], v)


def test_a_zip_directory_declaring_more_than_the_file_holds(tmp_path):
    """A ~2 KB file whose zip64 directory declares Wx as 16 TiB, its .npy header agreeing with
    the config (input_size 2**40): rejected as a bad file from the directory's sizes against the
    file's, not a MemoryError of allocating what it declares (found by a review)."""
    import io
    import struct
    import zlib

    D, H = 2**40, 4
    config = dict(
        input_size=D, hidden_size=H, num_layers=1, activation="tanh", bias=True, bidirectional=False,
        dropout=0.0, time_major=False, stateful=False, dtype="float32", format_version=1, seed=0,
    )  # fmt: skip
    members = []
    for name, shape in (("__config__", None), ("Wx_l0", (D, H)), ("Wh_l0", (H, H)), ("b_l0", (H,))):
        b = io.BytesIO()
        if shape is None:
            np.save(b, np.array(json.dumps(config)))
            members.append((name, b.getvalue(), None))
            continue
        np.lib.format.write_array_header_1_0(b, {"descr": "<f4", "fortran_order": False, "shape": shape})
        nbytes = int(np.prod(shape, dtype=object)) * 4
        declared = None if nbytes < 4096 else len(b.getvalue()) + nbytes  # the data itself left out
        members.append((name, b.getvalue() + bytes(min(nbytes, 64)), declared))
    out, central = bytearray(), bytearray()
    for name, data, declared in members:
        offset, crc, n = len(out), zlib.crc32(data), (name + ".npy").encode()
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0, 0, 0, 0, crc, len(data), len(data), len(n), 0) + n + data
        sizes, extra = (len(data), len(data)), b""
        if declared is not None:
            sizes, extra = (0xFFFFFFFF, 0xFFFFFFFF), struct.pack("<HHQQ", 1, 16, declared, declared)
        head = struct.pack("<IHHHHHHI", 0x02014B50, 45, 45, 0, 0, 0, 0, crc)
        central += head + struct.pack("<IIHHHHHII", *sizes, len(n), len(extra), 0, 0, 0, 0, offset) + n + extra
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(central), len(out), 0)
    path = tmp_path / "declares_tib.npz"
    path.write_bytes(bytes(out + central + end))
    with zipfile.ZipFile(path) as zf:  # the directory says what the test means it to
        assert zf.getinfo("Wx_l0.npy").file_size > 2**44
    assert "the zip directory declares" in rejected(path)
