"""pyrnn_fast.dask on a local ``distributed`` cluster (2 worker processes, 1 thread each) and
on Dask's local schedulers: results equal the in-process call on the whole batch for every cell
and option, with uneven chunks; state, lengths and dropout as in-process; the weights are one
graph key; a worker killed in the middle of a job; threads per task; errors."""

import copy
import importlib
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

import pyrnn_fast as prf

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")
cloudpickle = pytest.importorskip("cloudpickle")
prfd = pytest.importorskip("pyrnn_fast.dask")

# The workers cannot import this test module: its functions (loss_fn, the worker killer) travel
# by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

N, T, D, H = 37, 5, 3, 4
CHUNKS = (5, 20, 11, 1)  # uneven, with a trailing short chunk
CPUS = len(os.sched_getaffinity(0))

CASES = [
    ("RNN", {}),
    ("RNN", dict(num_layers=2, bidirectional=True)),
    ("RNN", dict(time_major=True, activation="relu")),
    ("LSTM", {}),
    ("LSTM", dict(num_layers=2, bidirectional=True)),
    ("LSTM", dict(time_major=True, bias=False)),
    ("GRU", {}),
    ("GRU", dict(num_layers=2, bidirectional=True)),
    ("GRU", dict(time_major=True)),
]


@pytest.fixture(scope="module")
def client():
    # Set up before the per-test environment_left_as_found (conftest.py): restore here what
    # the nanny sets in os.environ when it starts the workers.
    environ = dict(os.environ)
    with (
        distributed.LocalCluster(
            processes=True, n_workers=2, threads_per_worker=1, dashboard_address=":0", silence_logs=40
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        c.wait_for_workers(2, timeout=120)  # LocalCluster returns before both have registered
        yield c
    os.environ.clear()
    os.environ.update(environ)


def make_layer(cell, options, dtype=np.float64, seed=0, **more):
    return getattr(prf, cell)(D, H, dtype=dtype, seed=seed, **options, **more)


def as_float64(layer):
    """The same layer (weights, options) computing in float64: the exact reference of a float32 run."""
    twin = copy.deepcopy(layer)
    twin.dtype = np.dtype(np.float64)
    twin.params = {k: v.astype(np.float64) for k, v in layer.params.items()}
    twin.grads = {k: np.zeros_like(v) for k, v in twin.params.items()}
    return twin


def data(layer, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, N, D) if layer.time_major else (N, T, D))
    out_shape = (T, N, layer.num_directions * H) if layer.time_major else (N, T, layer.num_directions * H)
    y = rng.standard_normal(out_shape)
    lengths = rng.integers(0, T + 1, N)
    return x, y, lengths


def chunked(layer, a, axis=None, chunks=CHUNKS):
    """a as a Dask array split along the batch axis; its other axes split too (they are rechunked)."""
    axis = (1 if layer.time_major else 0) if axis is None else axis
    spec = [max(1, s // 2) for s in a.shape]
    spec[axis] = chunks
    return da.from_array(a, chunks=tuple(spec))


def squared_error(out, y):
    d = out - y
    return 0.5 * float(np.sum(d.astype(np.float64) ** 2)), d


def in_process(layer, x, y, lengths, state=None):
    out, final = layer(x, state, lengths)
    loss, dout = squared_error(out, y)
    layer.backward(dout)
    return out, final, loss, {k: v.copy() for k, v in layer.grads.items()}


def assert_as_accurate(got, in_proc, exact, slack=0.0):
    """`got` (float32, chunked) is as accurate as the in-process float32 result: its distance to
    the float64 result is at most twice the in-process one, plus `slack` (rounding of a
    re-associated sum)."""
    err_got = np.abs(got.astype(np.float64) - exact).max(initial=0)
    err_in = np.abs(in_proc.astype(np.float64) - exact).max(initial=0)
    assert err_got <= 2 * err_in + np.max(slack, initial=0) + np.finfo(np.float32).tiny, (err_got, err_in)


@pytest.mark.parametrize("use_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("cell,options", CASES, ids=[f"{c}-{'-'.join(o) or 'plain'}" for c, o in CASES])
def test_predict_and_grad_equal_in_process_float64(client, cell, options, use_lengths):
    layer = make_layer(cell, options)
    x, y, lengths = data(layer)
    lengths = lengths if use_lengths else None
    out = prfd.predict(layer, chunked(layer, x), lengths=lengths)
    assert out.chunks[1 if layer.time_major else 0] == CHUNKS
    yd = chunked(layer, y, chunks=10)  # other chunks than x's: aligned by the call
    loss, grads = prfd.value_and_grad(layer, chunked(layer, x), yd, squared_error, lengths=lengths)
    untouched = {k: v.copy() for k, v in layer.grads.items()}  # before the in-process backward
    out_ref, _, loss_ref, grads_ref = in_process(layer, x, y, lengths)
    np.testing.assert_allclose(out.compute(), out_ref, rtol=1e-12, atol=1e-12)
    assert loss == pytest.approx(loss_ref, rel=1e-12)
    assert grads.keys() == grads_ref.keys()
    assert not any(g.any() for g in untouched.values()), "value_and_grad wrote layer.grads"
    for k in grads:
        scale = np.abs(grads_ref[k]).max()
        np.testing.assert_allclose(grads[k], grads_ref[k], rtol=1e-12, atol=1e-12 * scale, err_msg=k)


@pytest.mark.parametrize("cell,options", CASES, ids=[f"{c}-{'-'.join(o) or 'plain'}" for c, o in CASES])
def test_predict_and_grad_float32_as_accurate_as_in_process(client, cell, options):
    layer = make_layer(cell, options, np.float32)
    exact = as_float64(layer)
    x, y, lengths = data(layer)
    out = prfd.predict(layer, chunked(layer, x), lengths=lengths).compute()
    loss, grads = prfd.value_and_grad(layer, chunked(layer, x), chunked(layer, y), squared_error, lengths=lengths)
    out_in, _, loss_in, grads_in = in_process(layer, x, y, lengths)
    out_ex, _, loss_ex, grads_ex = in_process(exact, x, y, lengths)
    assert out.dtype == np.float32
    assert_as_accurate(out, out_in, out_ex)
    # The chunks' gradients are added in another order than the in-process reductions: the
    # rounding of that sum is at most (chunks - 1)·eps·Σ|chunk gradient| per entry.
    parts = [in_process(exact, *chunk, None)[3] for chunk in _chunks_of(layer, x, y, lengths)]
    eps = np.finfo(np.float32).eps
    for k in grads:
        slack = (len(CHUNKS) - 1) * eps * sum(np.abs(p[k]) for p in parts)
        assert grads[k].dtype == np.float32
        assert_as_accurate(grads[k], grads_in[k], grads_ex[k], slack)
    assert loss == pytest.approx(loss_ex, rel=1e-5)


def _chunks_of(layer, x, y, lengths):
    axis, start = (1 if layer.time_major else 0), 0
    for n in CHUNKS:
        rows = slice(start, start + n)
        index = (slice(None), rows) if axis else (rows,)
        yield x[index], y[index], lengths[rows]
        start += n


def test_stateful_layer_carries_each_samples_state_across_calls(client):
    for cell in ("RNN", "LSTM", "GRU"):
        layer = make_layer(cell, dict(num_layers=2), stateful=True)
        twin = copy.deepcopy(layer)
        for call in range(2):
            x, y, lengths = data(layer, seed=10 + call)
            out = prfd.predict(layer, chunked(layer, x), lengths=lengths).compute()
            out_ref, _ = twin(x, None, lengths)
            np.testing.assert_allclose(out, out_ref, rtol=1e-12, atol=1e-12)
            for got, ref in zip(layer._state_parts(), twin._state_parts()):
                np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)
        # value_and_grad carries the state too, and starts from the carried one.
        x, y, lengths = data(layer, seed=20)
        loss, grads = prfd.value_and_grad(layer, chunked(layer, x), y, squared_error, lengths=lengths)
        _, _, loss_ref, grads_ref = in_process(twin, x, y, lengths)
        assert loss == pytest.approx(loss_ref, rel=1e-12)
        np.testing.assert_allclose(grads["Wh_l1"], grads_ref["Wh_l1"], rtol=1e-12, atol=1e-14)
        for got, ref in zip(layer._state_parts(), twin._state_parts()):
            np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)
        bigger = np.zeros((N + 1, T, D))
        with pytest.raises(ValueError, match="batch size 37.*reset_state"):
            prfd.predict(layer, bigger)


def test_explicit_state_in_and_out(client):
    layer = make_layer("LSTM", dict(num_layers=2, bidirectional=True))
    x, y, lengths = data(layer)
    rng = np.random.default_rng(5)
    h0, c0 = rng.standard_normal((2, 4, N, H))
    state = (da.from_array(h0, chunks=(4, 9, H)), c0)  # Dask and NumPy
    dask_lengths = da.from_array(lengths, chunks=7)  # Dask, chunked unlike x
    out, (h_n, c_n) = prfd.predict(layer, chunked(layer, x), state=state, lengths=dask_lengths, return_state=True)
    out_ref, (h_ref, c_ref) = layer(x, (h0, c0), lengths)
    assert h_n.chunks[1] == CHUNKS
    for got, ref in ((out, out_ref), (h_n, h_ref), (c_n, c_ref)):
        np.testing.assert_allclose(got.compute(), ref, rtol=1e-12, atol=1e-12)
    gru = make_layer("GRU", {})
    out, h_n = prfd.predict(gru, chunked(gru, x), state=h0[:1], return_state=True)
    np.testing.assert_allclose(h_n.compute(), gru(x, h0[:1])[1], rtol=1e-12, atol=1e-12)
    # A part given as None is zeros, as in the layer's own call (it was "c0: expected an array").
    for part in (0, 1):
        given = (None, c0) if part == 0 else (h0, None)
        out, (h_n, c_n) = prfd.predict(layer, chunked(layer, x), state=given, return_state=True)
        out_ref, (h_ref, c_ref) = layer(x, given)
        for got, ref in ((out, out_ref), (h_n, h_ref), (c_n, c_ref)):
            np.testing.assert_allclose(got.compute(), ref, rtol=1e-12, atol=1e-12)


def test_dropout_is_applied_per_chunk_and_reproducible(client):
    def run(dropout, training=True, seed=0):
        layer = make_layer("GRU", dict(num_layers=2), dropout=dropout, seed=seed).train(training)
        x, y, _ = data(layer)
        return layer, x, y, prfd.value_and_grad(layer, chunked(layer, x), y, squared_error)

    # dropout=1 zeroes every input of layer 2: deterministic, so equal to the in-process call.
    layer, x, y, (loss, grads) = run(1.0)
    _, _, loss_ref, grads_ref = in_process(make_layer("GRU", dict(num_layers=2), dropout=1.0), x, y, None)
    assert loss == pytest.approx(loss_ref, rel=1e-12) and not grads["Wx_l1"].any()
    np.testing.assert_allclose(grads["Wh_l0"], grads_ref["Wh_l0"], rtol=1e-12, atol=1e-14)
    # dropout=0.5: the same seed gives the same masks; the next call of a layer new ones;
    # eval mode none (the in-process result).
    layer, x, y, (loss_a, _) = run(0.5)
    assert run(0.5)[3][0] == loss_a
    assert prfd.value_and_grad(layer, chunked(layer, x), y, squared_error)[0] != loss_a
    loss_eval = run(0.5, training=False)[3][0]
    assert loss_eval == pytest.approx(in_process(make_layer("GRU", dict(num_layers=2)), x, y, None)[2], rel=1e-12)
    assert loss_a != pytest.approx(loss_eval, rel=1e-3)


def test_weights_are_one_graph_key_that_every_chunk_task_reads():
    layer = make_layer("RNN", {})
    x, _, _ = data(layer)
    out = prfd.predict(layer, chunked(layer, x))
    graph = out.__dask_graph__()
    dependencies = graph.get_all_dependencies()
    weights = [k for k in graph if "weights" in str(k)]
    assert len(weights) == 1
    readers = [k for k, deps in dependencies.items() if weights[0] in deps]
    assert len(readers) == len(CHUNKS)


def test_the_graph_has_as_many_layers_whatever_the_number_of_chunks(monkeypatch):
    # dask.delayed made a graph layer per chunk's task: Dask's culling of such a graph is
    # quadratic in the number of chunks (4,000 chunks: 3 s before the first task ran).
    computed = []
    compute = dask.compute

    def recording_compute(*args, **kwargs):
        computed.append(len(set().union(*(a.__dask_graph__().layers for a in args))))
        return compute(*args, **kwargs)

    monkeypatch.setattr(dask, "compute", recording_compute)

    def layers(chunks):
        computed.clear()
        layer = make_layer("LSTM", {})
        x, y, lengths = data(layer)
        x, y = chunked(layer, x, chunks=chunks), chunked(layer, y, chunks=chunks)
        out, (h_n, c_n) = prfd.predict(layer, x, lengths=lengths, return_state=True)  # lazy
        layer.stateful = True  # its final states: one more task
        with dask.config.set(scheduler="sync"):
            prfd.value_and_grad(layer, x, y, squared_error, split_every=2)
        return len(out.__dask_graph__().layers), len(h_n.__dask_graph__().layers), *computed

    few, many = layers((20, 17)), layers((1,) * N)
    assert len(few) == 3 and few == many


def test_the_reduction_receives_no_states_and_the_concatenation_no_gradients(monkeypatch):
    # The chunks' results were (loss, grads, final state), read whole by both: every chunk's
    # final states travelled to the workers that add (N·H per layer and direction, more than
    # the gradients for large chunks), and for a stateful layer every chunk's gradients to the
    # one that concatenates, all of them held until the last chunk had run.
    received: dict[str, list] = {"_add": [], "_concatenate_states": []}
    originals = {name: getattr(prfd, name) for name in received}
    for name in received:

        def recording(*args, _name=name):
            received[_name].append(args)
            return originals[_name](*args)

        monkeypatch.setattr(prfd, name, recording)

    def shapes(obj):  # of the arrays in a task's argument
        if isinstance(obj, np.ndarray):
            return [obj.shape]
        if isinstance(obj, dict):
            obj = list(obj.values())
        return [s for o in obj for s in shapes(o)] if isinstance(obj, (tuple, list)) else []

    for stateful in (False, True):
        for calls in received.values():
            calls.clear()
        layer = make_layer("LSTM", dict(num_layers=2), stateful=stateful)
        x, y, _ = data(layer)
        with dask.config.set(scheduler="sync"):
            prfd.value_and_grad(layer, chunked(layer, x), y, squared_error)
        grads = sorted(v.shape for v in layer.params.values())
        assert received["_add"] and all(sorted(shapes(p)) == grads for args in received["_add"] for p in args)
        assert len(received["_concatenate_states"]) == int(stateful)
        for args in received["_concatenate_states"]:
            assert shapes(args) == [(2, n, H) for n in CHUNKS for _ in range(2)]


def test_the_backend_the_caller_resolves_runs_in_every_task(monkeypatch):
    # backend=None was resolved in each task: a worker without the compiled backend (or with
    # another PYRNN_FAST_BACKEND) fell back in silence, its chunks differing in the last bits.
    from pyrnn_fast import _api_gated, _backends

    asked = []
    get_backend = _backends.get_backend

    def recording_get_backend(name):
        asked.append(name)
        return get_backend(name)

    layer = make_layer("GRU", dict(num_layers=2))
    x, y, _ = data(layer)
    monkeypatch.setenv("PYRNN_FAST_BACKEND", "numpy")
    out = prfd.predict(layer, chunked(layer, x))  # lazy: resolved here, run below
    monkeypatch.delenv("PYRNN_FAST_BACKEND")
    # (the layers resolve it through _backends, the functional calls through their own import)
    monkeypatch.setattr(_backends, "get_backend", recording_get_backend)
    monkeypatch.setattr(_api_gated, "get_backend", recording_get_backend)
    with dask.config.set(scheduler="sync"):
        out.compute()
    assert asked and set(asked) == {"numpy"}


QUERY_PLANNING_CHILD = """
import numpy as np, dask, dask.array as da
import pyrnn_fast as prf, pyrnn_fast.dask as prfd
if not getattr(da, "array_expr_enabled", lambda: False)():
    print("no array expressions in this Dask")
    raise SystemExit
layer = prf.LSTM(3, 4, seed=0, dtype=np.float64)
x = np.random.default_rng(0).standard_normal((10, 5, 3))
xd = da.from_array(x, chunks=(3, 5, 3))
out, (h_n, c_n) = layer(x)
with dask.config.set(scheduler="sync"):
    assert np.array_equal(prfd.predict(layer, xd).compute(), out)
    got, (got_h, got_c) = dask.compute(*prfd.predict(layer, xd, return_state=True))
    assert np.array_equal(got, out) and np.array_equal(got_h, h_n) and np.array_equal(got_c, c_n)
    loss, grads = prfd.value_and_grad(layer, xd, None, lambda o, y: (float((o**2).sum() / 2), o))
assert abs(loss - float((out**2).sum() / 2)) <= 1e-12 * loss
print("ok")
"""


def test_with_dasks_array_query_planning():
    # Dask's array expressions (array.query-planning, to become its default) make arrays from
    # a graph through from_graph: da.Array(graph, name, chunks, meta=...) raised TypeError.
    env = dict(os.environ, DASK_ARRAY__QUERY_PLANNING="True")
    run = subprocess.run([sys.executable, "-c", QUERY_PLANNING_CHILD], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    if run.stdout.strip() != "ok":
        pytest.skip(run.stdout.strip())


class KillingLSTM(prf.LSTM):
    """An LSTM whose second layer's call kills the worker process that runs it, once (the marker
    file says it happened): a worker dies in the middle of a chunk's layer call."""

    marker = ""

    def _run(self, x, W, state, keep=True, options=None, active=None):
        if W[0] is self.params["Wx_l1"]:
            try:
                os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                pass
            else:
                os.kill(os.getpid(), signal.SIGKILL)
        return super()._run(x, W, state, keep, options, active)


def test_a_worker_killed_in_the_middle_of_a_job(client, tmp_path):
    layer = make_layer("LSTM", dict(num_layers=2))
    x, y, lengths = data(layer)
    out_ref, _, loss_ref, grads_ref = in_process(layer, x, y, lengths)
    for job in ("predict", "value_and_grad"):
        killer = KillingLSTM(D, H, num_layers=2, dtype=np.float64)
        killer.params = {k: v.copy() for k, v in layer.params.items()}
        killer.marker = str(tmp_path / f"killed-{job}")
        if job == "predict":
            out = client.compute(prfd.predict(killer, chunked(layer, x), lengths=lengths)).result(timeout=120)
            np.testing.assert_allclose(out, out_ref, rtol=1e-12, atol=1e-12)
        else:
            loss, grads = prfd.value_and_grad(killer, chunked(layer, x), y, squared_error, lengths=lengths)
            assert loss == pytest.approx(loss_ref, rel=1e-12)
            np.testing.assert_allclose(grads["Wx_l0"], grads_ref["Wx_l0"], rtol=1e-12, atol=1e-14)
        assert os.path.exists(killer.marker), "no worker was killed: the test proved nothing"


def threads_in_task(out, y):
    """A loss whose value is the thread count the task's kernels were given."""
    return float(prf.get_num_threads()), np.zeros_like(out)


def test_threads_per_task(client):
    layer = make_layer("RNN", {})
    x, _, _ = data(layer)
    xd = chunked(layer, x)
    before = prf.get_num_threads()
    # (Both workers, for the oversubscription below: a worker re-registering after a restart
    # left one in CI once, and the check did not raise.)
    client.wait_for_workers(2, timeout=120)
    # On the cluster: Dask's nanny's OMP_NUM_THREADS=1; 2 workers x 1 thread share the host.
    assert prfd.value_and_grad(layer, xd, None, threads_in_task)[0] == len(CHUNKS)
    if CPUS >= 2:
        assert prfd.value_and_grad(layer, xd, None, threads_in_task, threads=CPUS // 2)[0] == len(CHUNKS) * (CPUS // 2)
    with pytest.raises(ValueError, match="oversubscribe the host of Dask worker .* 2 tasks at once"):
        prfd.value_and_grad(layer, xd, None, threads_in_task, threads=max(1, CPUS // 2) + 1)
    # Dask's local schedulers: the synchronous one runs one task at a time (all CPUs), the
    # threaded one num_workers at once.
    with dask.config.set(scheduler="sync"):
        assert prfd.value_and_grad(layer, xd, None, threads_in_task)[0] == len(CHUNKS) * CPUS
        assert prfd.value_and_grad(layer, xd, None, threads_in_task, threads=1)[0] == len(CHUNKS)
    with dask.config.set(scheduler="threads", num_workers=2):
        expected = max(1, CPUS // 2)
        assert prfd.value_and_grad(layer, xd, None, threads_in_task)[0] == len(CHUNKS) * expected
        with pytest.raises(ValueError, match="oversubscribe Dask's local scheduler, which runs 2 tasks"):
            prfd.value_and_grad(layer, xd, None, threads_in_task, threads=expected + 1)
        # One chunk is one task at a time: it may use every CPU.
        one = da.from_array(x, chunks=-1)
        assert prfd.value_and_grad(layer, one, None, threads_in_task)[0] == CPUS
    assert prf.get_num_threads() == before  # the limit was the tasks' threads' own


def test_local_scheduler_and_numpy_input():
    layer = make_layer("GRU", dict(bidirectional=True))
    x, y, lengths = data(layer)
    with dask.config.set(scheduler="threads"):
        out = prfd.predict(layer, x, lengths=lengths)  # a NumPy x is wrapped
        assert isinstance(out, da.Array)
        np.testing.assert_allclose(out.compute(), layer(x, None, lengths)[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [(0, T, D), (N, 0, D)])
def test_empty_batch_or_sequence(shape):
    layer = make_layer("LSTM", {})
    x = np.zeros(shape)
    with dask.config.set(scheduler="sync"):
        out = prfd.predict(layer, da.from_array(x)).compute()
        assert out.shape == shape[:2] + (H,)
        loss, grads = prfd.value_and_grad(layer, da.from_array(x), np.zeros(out.shape), squared_error)
    assert loss == 0.0 and not any(g.any() for g in grads.values())


def test_bad_arguments_are_clear_errors():
    layer = make_layer("RNN", {})
    x, y, lengths = data(layer)
    xd = chunked(layer, x)
    with pytest.raises(TypeError, match="layer: expected a pyrnn_fast RNN, LSTM or GRU"):
        prfd.predict(prf.TimeRNN(np.zeros((D, H)), np.zeros((H, H)), np.zeros(H)), xd)
    with pytest.raises(ValueError, match=r"x: expected a 3-D array \(N, T, D\) with D = input_size = 3"):
        prfd.predict(layer, xd[..., :2])
    with pytest.raises(TypeError, match="x: expected a real numeric array"):
        prfd.predict(layer, da.from_array(x.astype(complex)))
    with pytest.raises(ValueError, match="compute_chunk_sizes"):
        prfd.predict(layer, xd[da.from_array(lengths) > 2])
    unknown = da.from_array(lengths, chunks=8)
    unknown = unknown[unknown >= 0]  # every value, in chunks of unknown size
    with pytest.raises(ValueError, match=r"^lengths: its chunk sizes are unknown; call lengths.compute_chunk_sizes"):
        prfd.predict(layer, xd, lengths=unknown)  # was NumPy's TypeError about a float
    with pytest.raises(ValueError, match=r"^y: its chunk sizes are unknown"):
        prfd.value_and_grad(layer, xd, unknown.astype(float), squared_error)
    with pytest.raises(ValueError, match=r"lengths: expected shape \(N,\) = \(37,\)"):
        prfd.predict(layer, xd, lengths=lengths[:5])
    with pytest.raises(ValueError, match="lengths: expected 0 <= lengths <= T"):
        prfd.predict(layer, xd, lengths=lengths + T)
    with pytest.raises(TypeError, match="lengths: expected an integer array"):
        prfd.predict(layer, xd, lengths=da.from_array(lengths.astype(float)))
    with pytest.raises(ValueError, match=r"h0: expected shape .* = \(1, 37, 4\)"):
        prfd.predict(layer, xd, state=np.zeros((1, 36, H)))
    with pytest.raises(TypeError, match=r"state: expected None or a pair \(h0, c0\)"):
        prfd.predict(make_layer("LSTM", {}), xd, state=np.zeros((1, N, H)))
    with pytest.raises(ValueError, match="y: expected N = 37 along its axis 0"):
        prfd.value_and_grad(layer, xd, y[:3], squared_error)
    with pytest.raises(ValueError, match="y_axis"):
        prfd.value_and_grad(layer, xd, y, squared_error, y_axis=3)
    for bad in ("0", 0.0, True):
        with pytest.raises(TypeError, match=r"y_axis: expected an int or None, got"):
            prfd.value_and_grad(layer, xd, y, squared_error, y_axis=bad)
    with pytest.raises(ValueError, match="y: expected an array with a batch axis"):
        prfd.value_and_grad(layer, xd, 1.0, squared_error)
    tm = make_layer("RNN", dict(time_major=True))
    with pytest.raises(ValueError, match=r"y: expected N = 37 along its axis 1, got shape \(37,\); pass y_axis=0"):
        prfd.value_and_grad(tm, x.transpose(1, 0, 2), np.zeros(N), squared_error)
    with pytest.raises(TypeError, match="loss_fn: expected a callable"):
        prfd.value_and_grad(layer, xd, y, "mse")
    with pytest.raises(ValueError, match="threads: expected an int >= 1"):
        prfd.predict(layer, xd, threads=0)
    with pytest.raises(TypeError, match="threads: expected an int >= 1, got str"):
        prfd.predict(layer, xd, threads="2")
    with pytest.raises(TypeError, match="^return_state: expected a bool, got str$"):
        prfd.predict(layer, xd, return_state="False")
    with pytest.raises(ValueError, match="split_every"):
        prfd.value_and_grad(layer, xd, y, squared_error, split_every=1)
    with dask.config.set(scheduler="sync"):
        with pytest.raises(TypeError, match=r"loss_fn: expected it to return \(loss, dout\)"):
            prfd.value_and_grad(layer, xd, y, lambda out, y: 0.0)
        with pytest.raises(ValueError, match="dout: expected the shape of out"):
            prfd.value_and_grad(layer, xd, y, lambda out, y: (0.0, out[:, :1]))


def test_without_dask_the_import_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "dask", None)  # what `import dask` sees when it is not installed
    monkeypatch.delitem(sys.modules, "pyrnn_fast.dask")
    with pytest.raises(ImportError, match=r'pip install "pyrnn_fast\[dask\]"'):
        importlib.import_module("pyrnn_fast.dask")


def last_step_error(out, y):
    """A time-major layer's last outputs against per-sequence targets y (N, H)."""
    d = out[-1] - y
    dout = np.zeros_like(out)
    dout[-1] = d
    return 0.5 * float(np.sum(d * d)), dout


def test_per_sequence_targets_of_a_time_major_layer(client):
    layer = make_layer("GRU", dict(time_major=True))
    x, _, _ = data(layer)
    y = np.random.default_rng(7).standard_normal((N, H))
    loss, grads = prfd.value_and_grad(layer, chunked(layer, x), da.from_array(y, chunks=8), last_step_error, y_axis=0)
    out, _ = layer(x)
    loss_ref, dout = last_step_error(out, y)
    layer.backward(dout)
    assert loss == pytest.approx(loss_ref, rel=1e-12)
    np.testing.assert_allclose(grads["Wh_l0"], layer.grads["Wh_l0"], rtol=1e-12, atol=1e-14)


def test_parameters_rebound_to_other_dtypes_or_lists():
    """Parameters may be rebound to any real arrays: the tasks made their gradients with
    zeros_like(param), so integer parameters had their gradients truncated (75 % off) and
    float16 ones rounded; a list failed ('list' object has no attribute 'copy')."""
    with dask.config.set(scheduler="sync"):
        for convert in (lambda v: np.round(v * 4).astype(np.int64), lambda v: v.astype(np.float16), np.ndarray.tolist):
            layer = make_layer("RNN", {})
            layer.params = {k: convert(v) for k, v in layer.params.items()}
            x, y, lengths = data(layer)
            loss, grads = prfd.value_and_grad(layer, chunked(layer, x), y, squared_error, lengths=lengths)
            _, _, loss_ref, grads_ref = in_process(layer, x, y, lengths)
            assert loss == pytest.approx(loss_ref, rel=1e-12)
            for k, g in grads_ref.items():
                assert grads[k].dtype == layer.dtype
                np.testing.assert_allclose(grads[k], g, rtol=1e-10, atol=1e-12, err_msg=k)
        layer = make_layer("RNN", {})
        layer.params = list(layer.params.values())
        with pytest.raises(TypeError, match="params: expected a dict"):
            prfd.predict(layer, chunked(layer, data(layer)[0]))


def test_y_axis_counted_from_the_end():
    layer = make_layer("GRU", {})
    x, y, _ = data(layer)
    with dask.config.set(scheduler="sync"):
        got = prfd.value_and_grad(layer, chunked(layer, x), y, squared_error, y_axis=-3)
        assert got[0] == prfd.value_and_grad(layer, chunked(layer, x), y, squared_error, y_axis=0)[0]
