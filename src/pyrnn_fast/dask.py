"""``pyrnn_fast.dask``: a layer's inference and data-parallel gradients over a Dask array of
sequences, on a ``distributed`` cluster or Dask's default scheduler (``pip install
"pyrnn_fast[dask]"``)::

    import pyrnn_fast.dask as prfd
    out = prfd.predict(layer, x)                              # lazy, like layer(x)[0]
    loss, grads = prfd.value_and_grad(layer, x, y, loss_fn)   # computed: float, {name: array}

x is split along its batch axis only (each chunk there is one task, one call of the layer);
every other axis is made one chunk. The layer's weights are one key of the graph, so they
travel to a worker once per call whatever the number of chunks, and the chunks' gradients are
summed by a tree reduction on the cluster. The README's "Dask" section says how to size
threads and workers.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import functools
import math
import numbers
import os
import uuid
from typing import Any, Callable

import numpy as np

try:
    import dask
    import dask.array as da
    from dask.core import flatten
    from dask.delayed import Delayed
    from dask.highlevelgraph import HighLevelGraph, MaterializedLayer
    from dask.system import CPU_COUNT
except ImportError as e:  # pragma: no cover - the [dask] extra is not installed
    raise ImportError('pyrnn_fast.dask needs Dask: pip install "pyrnn_fast[dask]"') from e

from . import _backends
from ._orchestration import _check_flag, aligned_copy, release_buffers
from .layers._base import _RecurrentLayer
from .layers._checks import _check_int, _check_real
from .layers._stack import _initial_state

__all__ = ["predict", "value_and_grad"]


def predict(
    layer: _RecurrentLayer,
    x: Any,
    *,
    state: Any = None,
    lengths: Any = None,
    return_state: bool = False,
    threads: int | None = None,
) -> Any:
    """``layer(x, state, lengths)`` on a Dask array of sequences: returns ``out``, a lazy
    dask.array chunked like x along the batch axis (``(out, h_n)`` or ``(out, (h_n, c_n))``
    with ``return_state``, the final states chunked along their axis 1).

    layer : an ``RNN``, ``LSTM`` or ``GRU``, in its current mode (dropout in training mode:
        each chunk draws its masks from a seed taken from the layer's generator).
    x : dask.array (N, T, D), or (T, N, D) for a time-major layer (NumPy arrays are wrapped
        with ``da.asarray``). Chunks of any sizes along the batch axis.
    state : as the layer's call takes it (h0, or (h0, c0) for an LSTM), NumPy or Dask arrays
        (num_layers·dirs, N, H); None: a stateful layer's carried state, else zeros.
    lengths : (N,) ints, NumPy or Dask, as for the layer's call.
    threads : how many threads one task's kernels may use (see ``value_and_grad``).

    The weights are those of the layer at the time of the call. A stateful layer carries its
    final state into its next call, as in-process: it must then know that state when predict
    returns, so the job runs at once (``dask.persist``: ``out`` is backed by computed chunks,
    kept on the cluster with ``distributed``) and ``layer.state`` is set.
    """
    return_state = _check_flag("return_state", return_state)
    job = _Job(layer, x, None, state, lengths, threads)
    with_state = return_state or layer.stateful
    task = functools.partial(_predict_chunk, with_state=with_state, threads=job.threads, slots=job.slots)
    H = layer.num_directions * layer.hidden_size
    out_chunks = ((job.T,), job.sizes, (H,)) if job.axis else (job.sizes, (job.T,), (H,))
    meta = np.empty((0, 0, 0), layer.dtype)
    token = uuid.uuid4().hex
    out_name = f"pyrnn_fast-predict-{token}"

    def out_key(i):
        return (out_name, 0, i, 0) if job.axis else (out_name, i, 0, 0)

    # Without the final states, a chunk is one task that returns its outputs: on a cluster
    # each task costs ~1-4 ms of scheduling (README, "Dask"), a getitem task as much.
    if not with_state:
        tasks = {out_key(i): (task, *job.task_args(i)) for i in range(job.chunks)}
        return _array(job.graph((out_name, tasks)), out_name, out_chunks, meta)
    chunk_name = f"pyrnn_fast-predict-chunk-{token}"
    layers: list[tuple[str, dict[Any, Any]]] = [
        (chunk_name, {(chunk_name, i): (task, *job.task_args(i)) for i in range(job.chunks)})
    ]
    layers.append((out_name, {out_key(i): (_select, (chunk_name, i), 0) for i in range(job.chunks)}))
    state_names = [f"pyrnn_fast-predict-{name}_n-{token}" for name in layer._state_names]
    for k, name in enumerate(state_names):
        layers.append((name, {(name, 0, i, 0): (_select, (chunk_name, i), 1, k) for i in range(job.chunks)}))
    graph = job.graph(*layers)
    out = _array(graph, out_name, out_chunks, meta)
    state_chunks = ((job.LD,), job.sizes, (layer.hidden_size,))
    parts = tuple(_array(graph, name, state_chunks, meta) for name in state_names)
    if layer.stateful:
        out, parts = dask.persist(out, parts)
        layer._set_state_parts(tuple(np.asarray(p) for p in dask.compute(*parts)))
    if not return_state:
        return out
    return out, (parts[0] if len(parts) == 1 else parts)


def value_and_grad(
    layer: _RecurrentLayer,
    x: Any,
    y: Any,
    loss_fn: Callable[[np.ndarray, Any], tuple[float, np.ndarray]],
    *,
    state: Any = None,
    lengths: Any = None,
    threads: int | None = None,
    y_axis: int | None = None,
    split_every: int = 8,
) -> tuple[float, dict[str, np.ndarray]]:
    """The loss of the layer's outputs and its gradient w.r.t. the parameters, summed over the
    chunks of a Dask array of sequences: returns ``(loss, grads)``, computed (a float and a
    dict with the keys and shapes of ``layer.grads``; ``layer.grads`` is left as it is).

    loss_fn(out_chunk, y_chunk) -> (loss_sum, dout_chunk), both NumPy: the loss summed over
        the chunk's samples and its gradient w.r.t. ``out_chunk`` (so that the chunks' sums
        add up to the whole batch's). It runs in the tasks: it must be picklable.
    y : Dask or NumPy array split like x along ``y_axis`` (default: x's batch axis, 1 for a
        time-major layer; negative counts from the end), or None (``loss_fn`` then gets None).
    x, state, lengths : as for ``predict``; a stateful layer's state is carried (``layer.state``
        is the final state of every sample afterwards, as after an in-process call).
    threads : how many threads one task's kernels may use. None: on a ``distributed`` worker
        OpenMP's setting there (1 under Dask's nanny, which sets OMP_NUM_THREADS=1 as Dask runs
        one task per core), with Dask's local schedulers the CPUs shared among the tasks that
        run at once (at most one per chunk; the scheduler configured when this is called, not
        one passed to a later ``.compute``). At most a host's CPUs divided by the tasks its
        workers run at once (their ``nthreads``, summed): more is a ValueError, never an
        oversubscribed host, raised by the tasks (for ``predict``'s lazy result: when it is
        computed).
    split_every : how many partial sums one task of the tree reduction adds.
    """
    if not callable(loss_fn):
        raise TypeError(f"loss_fn: expected a callable (out, y) -> (loss, dout), got {type(loss_fn).__name__}")
    split_every = _check_int("split_every", split_every, 2)
    job = _Job(layer, x, (y, y_axis), state, lengths, threads)
    with_state = layer.stateful
    task = functools.partial(_grad_chunk, loss_fn=loss_fn, with_state=with_state, threads=job.threads, slots=job.slots)
    # One graph layer (see _Job.graph): the chunks' tasks (level 0), each returning (loss,
    # grads), or ((loss, grads), final state) for a stateful layer, split on the chunk's worker
    # (levels -2 and -3: the reduction's tasks then receive no states, nor the concatenation
    # of the final states (level -1) every chunk's gradients); the tree reduction's levels.
    name = f"pyrnn_fast-value-and-grad-{uuid.uuid4().hex}"
    tasks = {(name, 0, i): (task, job.y_block(i), *job.task_args(i)) for i in range(job.chunks)}
    partials, level = [(name, 0, i) for i in range(job.chunks)], 0
    if with_state:
        tasks.update({(name, -2, i): (_select, (name, 0, i), 0) for i in range(job.chunks)})
        tasks.update({(name, -3, i): (_select, (name, 0, i), 1) for i in range(job.chunks)})
        partials = [(name, -2, i) for i in range(job.chunks)]
    while len(partials) > 1:  # the tree reduction: each task adds up to split_every partial sums
        groups = [partials[i : i + split_every] for i in range(0, len(partials), split_every)]
        level += 1
        partials = [(name, level, j) for j in range(len(groups))]
        tasks.update({key: (_add, *group) for key, group in zip(partials, groups)})
    wanted = [partials[0]]
    if with_state:
        tasks[(name, -1, 0)] = (_concatenate_states, *[(name, -3, i) for i in range(job.chunks)])
        wanted.append((name, -1, 0))
    graph = job.graph((name, tasks))
    results = dask.compute(*[Delayed(key, graph, layer=name) for key in wanted])
    if with_state:
        layer._set_state_parts(results[1])
    loss, grads = results[0]
    return float(loss), grads


# --- the job: its arguments checked and split along the batch axis ---------------------------


class _Job:
    """What the tasks of one call read: the layer's weights as one graph key, x (and y, lengths,
    the initial state) as the keys of their blocks along the batch axis, and the per-chunk
    dropout seeds."""

    def __init__(self, layer, x, y_spec, state, lengths, threads):
        if not isinstance(layer, _RecurrentLayer):
            raise TypeError(f"layer: expected a pyrnn_fast RNN, LSTM or GRU, got {type(layer).__name__}")
        self.layer = layer
        self.axis = 1 if layer.time_major else 0
        layout = "(T, N, D)" if layer.time_major else "(N, T, D)"
        x = _as_dask("x", x)
        if x.ndim != 3 or x.shape[2] != layer.input_size:
            raise ValueError(
                f"x: expected a 3-D array {layout} with D = input_size = {layer.input_size}, got shape {x.shape}"
            )
        if any(math.isnan(c) for c in x.chunks[self.axis]):
            raise ValueError("x: its chunk sizes along the batch axis are unknown; call x.compute_chunk_sizes() first")
        self.sizes = x.chunks[self.axis]  # at least one chunk, of size 0 when N = 0
        self.chunks = len(self.sizes)
        self.N, self.T = x.shape[self.axis], x.shape[1 - self.axis]
        self.LD = layer.num_layers * layer.num_directions
        self.threads = None if threads is None else _check_int("threads", threads, 1)
        self.slots = min(_local_slots(), self.chunks), _host_slots()
        self.deps: list[Any] = []  # the collections whose blocks (keys) the tasks read
        layer._check_params()  # as the layer's call would (not an AttributeError in _shippable)
        self.x_blocks = self._split(x, self.axis)
        self.lengths = self._lengths(lengths)
        self.state = self._state(state)
        self.y = None if y_spec is None else self._y(*y_spec)
        self.seeds: list[int | None] = [None] * self.chunks
        if layer.training and layer.dropout > 0 and layer.num_layers > 1:  # the generator advances, as in-process
            self.seeds = [int(s) for s in layer._dropout_rng.integers(2**63, size=self.chunks)]
        # One key for the weights: the tasks depend on it, so that a worker receives it once.
        self.weights = dask.delayed(_shippable(layer), name=f"pyrnn_fast-weights-{uuid.uuid4().hex}", traverse=False)
        self.deps.append(self.weights)

    def graph(self, *layers):
        """The graph of the task layers (name, {key: task}) over the blocks the tasks read, each
        layer reading the first. Each layer holds the tasks of all the chunks: dask.delayed made a
        graph layer per task, and Dask's culling of such a graph is quadratic in the number of
        chunks (4,000 chunks: 3 s)."""
        first, first_tasks = layers[0]
        graph = HighLevelGraph.from_collections(first, first_tasks, dependencies=self.deps)
        for name, tasks in layers[1:]:
            graph = HighLevelGraph(
                {**graph.layers, name: MaterializedLayer(tasks)}, {**graph.dependencies, name: {first}}
            )
        return graph

    def _split(self, a, axis):
        """The keys of the blocks of `a` (Dask) along `axis`, x's batch chunks there and one chunk
        elsewhere."""
        a = a.rechunk({**dict.fromkeys(range(a.ndim), -1), axis: self.sizes})
        self.deps.append(a)
        return list(flatten(a.__dask_keys__()))  # one block on every other axis: in order along `axis`

    def _lengths(self, lengths):
        if lengths is None:
            return None
        if isinstance(lengths, da.Array):  # the layer's checks of dtype and shape; values in the tasks
            lengths = _as_dask("lengths", lengths)
            # (its messages; not on np.zeros(lengths.shape): N values allocated on the client)
            self.layer._check_lengths(np.zeros(0, lengths.dtype), 0, self.T)
            if lengths.shape != (self.N,):
                raise ValueError(f"lengths: expected shape (N,) = ({self.N},), got {lengths.shape}")
        else:  # NumPy: every check now
            lengths = da.from_array(self.layer._check_lengths(lengths, self.N, self.T), chunks=-1)
        return self._split(lengths, 0)

    def _state(self, state):
        layer = self.layer
        names = layer._state_names
        if state is None:
            if not (layer.stateful and layer.state is not None):
                return None
            parts = _initial_state(layer, dict.fromkeys(names), self.N)  # the carried state, checked
        elif len(names) == 1:
            parts = (state,)
        elif isinstance(state, (tuple, list)) and len(state) == len(names):
            parts = tuple(state)
        else:
            raise TypeError(f"state: expected None or a pair (h0, c0), got {type(state).__name__}")
        shape = (self.LD, self.N, layer.hidden_size)
        blocks = []
        for name, part in zip(names, parts):
            if part is None and state is not None and len(names) > 1:  # (h0, None): zeros, as layer(x, state)
                part = da.zeros(shape, dtype=layer.dtype, chunks=((self.LD,), self.sizes, (layer.hidden_size,)))
            part = _as_dask(f"{name}0" if state is not None else "state", part)
            if part.shape != shape:
                raise ValueError(f"{name}0: expected shape (num_layers*dirs, N, H) = {shape}, got {part.shape}")
            blocks.append(self._split(part, 1))
        return list(zip(*blocks))

    def _y(self, y, y_axis):
        if y is None:
            return None
        y = _as_dask("y", y)
        if y.ndim == 0:
            raise ValueError("y: expected an array with a batch axis of N, got a scalar")
        if y_axis is not None and (isinstance(y_axis, bool) or not isinstance(y_axis, numbers.Integral)):
            raise TypeError(f"y_axis: expected an int or None, got {type(y_axis).__name__} {y_axis!r}")
        axis = self.axis if y_axis is None else int(y_axis)
        if y_axis is not None and -y.ndim <= axis < 0:  # from the end, as NumPy counts
            axis += y.ndim
        if not 0 <= axis < y.ndim:
            if y_axis is None:  # a time-major layer's default axis 1, y (N,)
                raise ValueError(f"y: expected N = {self.N} along its axis 1, got shape {y.shape}; pass y_axis=0")
            raise ValueError(f"y_axis: expected an axis of y (ndim {y.ndim}), got {axis!r}")
        axis = int(axis)
        if y.shape[axis] != self.N:
            hint = "; for targets (N, ...) of a time-major layer pass y_axis=0" if y_axis is None and self.axis else ""
            raise ValueError(f"y: expected N = {self.N} along its axis {axis} (y_axis), got shape {y.shape}{hint}")
        return self._split(y, axis)

    def y_block(self, i):
        return None if self.y is None else self.y[i]

    def task_args(self, i):
        """Chunk i's task arguments: the weights, x, lengths, the initial state's parts (keys,
        which Dask replaces with their values, or None) and its dropout seed."""
        return (
            self.weights.key,
            self.x_blocks[i],
            None if self.lengths is None else self.lengths[i],
            None if self.state is None else list(self.state[i]),
            self.seeds[i],
        )


def _array(graph, name, chunks, meta):
    """The dask.array whose blocks are the keys (name, i, j, k) of `graph`. With Dask's array
    query planning (``array.query-planning``) arrays are expressions, made from a graph by
    ``from_graph`` (which renames the keys)."""
    if getattr(da, "array_expr_enabled", lambda: False)():
        from dask.array._array_expr._collection import from_graph

        keys = [(name, *index) for index in np.ndindex(*[len(c) for c in chunks])]
        return from_graph(dict(graph), meta, chunks, keys, name)
    return da.Array(graph, name, chunks, meta=meta)


def _as_dask(name, a):
    """A Dask array of real numbers (NumPy and array-likes wrapped), checked as the layers check."""
    if not isinstance(a, da.Array):
        return da.asarray(_check_real(name, a))
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{name}: expected a real numeric array, got dtype {a.dtype}")
    if any(math.isnan(n) for n in a.shape):  # a shape check would read "got (nan, ...)"
        raise ValueError(f"{name}: its chunk sizes are unknown; call {name}.compute_chunk_sizes() first")
    return a


def _local_slots():
    """How many tasks Dask's local scheduler runs at once in this process (1: synchronous)."""
    scheduler = dask.config.get("scheduler", None) or dask.config.get("get", None)
    if scheduler in ("sync", "synchronous", "single-threaded"):
        return 1
    return dask.config.get("num_workers", None) or CPU_COUNT


def _host_slots():
    """{worker address: how many tasks the workers of its host run at once}, from the active
    ``distributed`` client; None without one."""
    try:
        from distributed import default_client

        client = default_client()
    except (ImportError, ValueError):
        return None
    try:
        workers = client.scheduler_info(n_workers=-1)["workers"]  # some versions list 5 by default
    except TypeError:  # versions without n_workers list them all
        workers = client.scheduler_info()["workers"]
    per_host: collections.Counter[str] = collections.Counter()
    for w in workers.values():
        per_host[w["host"]] += w["nthreads"]
    return {address: per_host[w["host"]] for address, w in workers.items()}


def _shippable(layer):
    """The layer without its state, caches and gradients, with a copy of its weights: what the
    tasks need, taken at the time of the call. Its backend is the one this process resolves
    (``backend=None``: ``$PYRNN_FAST_BACKEND`` or the best available here): every task runs
    the same, and a worker without it raises instead of falling back to another in silence."""
    shipped = copy.copy(layer)
    shipped.__dict__.update(
        params={k: _param_copy(v) for k, v in layer.params.items()},
        grads={},
        state=None,
        _cache=None,
        _stepper=None,
        dh0=None,
    )
    shipped.__dict__.pop("dc0", None)
    shipped.backend = layer.backend or _backends.get_backend(None).name
    shipped.stateful = False  # the tasks get the initial state as an argument
    return shipped


def _param_copy(v):
    """A copy of a parameter to ship (a list or tuple too, as the layer's call takes them),
    aligned as the layer's own (so that no task copies it again)."""
    a = np.asarray(v)
    return aligned_copy(a) if a.dtype.kind in "biuf" else a.copy()


# --- the tasks --------------------------------------------------------------------------------


def _task_threads(requested, slots):
    """The thread count of this task's kernels (see value_and_grad's `threads`): `slots` is
    (tasks the local scheduler runs at once, {worker address: tasks its host runs at once})."""
    local_slots, host_slots = slots
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):  # not on a distributed worker
        at_once, where, default = local_slots, "Dask's local scheduler, which runs", None
    else:  # a worker (re)started since the call is not in host_slots: it counts its own threads
        at_once = (host_slots or {}).get(worker.address, worker.state.nthreads)
        where = f"the host of Dask worker {worker.address}, whose workers run"
        default = _backends.get_num_threads()  # OMP_NUM_THREADS=1 under Dask's nanny
    most = max(1, cpus // at_once)
    if requested is None:
        return min(default, most) if default else most
    if requested > most:
        raise ValueError(
            f"threads: {requested} per task would oversubscribe {where} {at_once} tasks at once "
            f"on {cpus} CPUs: at most {most}"
        )
    return requested


def _task_layer(shipped, seed):
    """This task's own copy: the tasks of one worker share the object they receive."""
    layer = copy.copy(shipped)
    # The layer's dtype, as its own grads (zeros_like(params) took the dtype of params rebound
    # to other arrays: int parameters had their gradients truncated).
    layer.grads = {k: np.zeros(np.shape(v), shipped.dtype) for k, v in shipped.params.items()}
    if seed is not None:
        layer._dropout_rng = np.random.default_rng(seed)
    return layer


def _call(layer, x, lengths, state_parts, record=True):
    state = None if state_parts is None else (state_parts[0] if len(state_parts) == 1 else tuple(state_parts))
    out, final = layer(x, state, lengths, record=record)
    return out, (final,) if len(layer._state_names) == 1 else tuple(final)


@contextlib.contextmanager
def _task(shipped, seed, threads, slots):
    """A chunk task's own layer, its kernels limited to the task's threads. On exit the
    thread's pool of large buffers (_orchestration._empty) is released: a worker's memory is
    Dask's to count, and the task's results are copies."""
    layer = _task_layer(shipped, seed)
    try:
        with _backends.calling_thread_limit(_task_threads(threads, slots)):
            yield layer
    finally:
        release_buffers()


def _predict_chunk(shipped, x, lengths, state_parts, seed, *, with_state, threads, slots):
    with _task(shipped, seed, threads, slots) as layer:
        out, final = _call(layer, x, lengths, state_parts, record=False)  # no backward follows
    return (out, final) if with_state else out


def _grad_chunk(y, shipped, x, lengths, state_parts, seed, *, loss_fn, with_state, threads, slots):
    with _task(shipped, seed, threads, slots) as layer:
        out, final = _call(layer, x, lengths, state_parts)
        result = loss_fn(out, y)
        if not (isinstance(result, tuple) and len(result) == 2):
            raise TypeError(f"loss_fn: expected it to return (loss, dout), got {type(result).__name__}")
        loss, dout = result
        if np.ndim(loss) != 0 or np.asarray(loss).dtype.kind not in "biuf":
            raise TypeError(f"loss_fn: expected a real scalar loss, got {type(loss).__name__}")
        layer.backward(dout)
    # The final state only when it is used: the reduction's tasks would receive it for nothing
    # (N·H per layer and direction, more than the gradients for large chunks).
    return ((float(loss), layer.grads), final) if with_state else (float(loss), layer.grads)


def _select(result, *index):
    """An item of a chunk task's result: result[0] (predict's outputs, value_and_grad's (loss,
    grads)), result[1] (the final state) or result[1][k] (its part k)."""
    for i in index:
        result = result[i]
    return result


def _add(*partials):
    """One node of the tree reduction: the (loss, grads) partial sums added."""
    loss = sum(p[0] for p in partials)
    grads = {k: sum((p[1][k] for p in partials[1:]), partials[0][1][k]) for k in partials[0][1]}
    return loss, grads


def _concatenate_states(*finals):
    """The chunks' final states joined along the batch axis."""
    return tuple(np.concatenate([f[k] for f in finals], axis=1) for k in range(len(finals[0])))
