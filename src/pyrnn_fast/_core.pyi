"""Type stub for the compiled extension pyrnn_fast._core (csrc/bindings.cpp's PYBIND11_MODULE).

Checked against the built module in CI: python -m mypy.stubtest pyrnn_fast._core. Array
arguments are taken without conversion (py::arg(...).noconvert()): they must already be
float32/float64 arrays in a layout the kernels can address (pyrnn_fast._orchestration makes
them so). The bindings check each array's dtype, shape, strides and alignment, not whether two
of them share memory: an output that overlaps another argument gives wrong results (never an
access out of bounds), except where pyrnn_fast itself passes one array twice, in place:
forward's xw and out, lstm_forward's xw and gates. The public API allocates its
outputs, so only a direct call can do that.
"""

from collections.abc import Callable

import numpy as np

openmp: bool

def forward(
    xw: np.ndarray,
    wh: np.ndarray,
    h0: np.ndarray | None,
    out: np.ndarray,
    activation: str,
    threads: int,
    *,
    active: np.ndarray | None = None,
) -> None: ...
def backward(
    dh: np.ndarray,
    h: np.ndarray,
    wh: np.ndarray,
    dh_last: np.ndarray | None,
    da: np.ndarray,
    dh0: np.ndarray,
    activation: str,
    threads: int,
    *,
    active: np.ndarray | None = None,
) -> None: ...
def lstm_forward(
    xw: np.ndarray,
    wh: np.ndarray,
    h0: np.ndarray | None,
    c0: np.ndarray | None,
    hs: np.ndarray,
    cs: np.ndarray,
    gates: np.ndarray,
    threads: int,
    *,
    active: np.ndarray | None = None,
) -> None: ...
def lstm_backward(
    dhs: np.ndarray,
    gates: np.ndarray,
    cs: np.ndarray,
    c0: np.ndarray | None,
    wh: np.ndarray,
    dh_last: np.ndarray | None,
    dc_last: np.ndarray | None,
    da: np.ndarray,
    dh0: np.ndarray,
    dc0: np.ndarray,
    threads: int,
    *,
    active: np.ndarray | None = None,
) -> None: ...
def gru_forward(
    xw: np.ndarray,
    wh: np.ndarray,
    bh: np.ndarray | None,
    h0: np.ndarray | None,
    hs: np.ndarray,
    gates: np.ndarray,
    threads: int,
    *,
    active: np.ndarray | None = None,
) -> None: ...
def gru_backward(
    dhs: np.ndarray,
    hs: np.ndarray,
    h0: np.ndarray | None,
    gates: np.ndarray,
    wh: np.ndarray,
    dh_last: np.ndarray | None,
    du: np.ndarray,
    dv: np.ndarray,
    dh0: np.ndarray,
    threads: int,
    *,
    active: np.ndarray | None = None,
) -> None: ...
def rows_gemm(a: np.ndarray, b: np.ndarray, bias: np.ndarray | None, out: np.ndarray, threads: int) -> None: ...
def reduce_gemm(a: np.ndarray, b: np.ndarray, out: np.ndarray, accumulate: bool, threads: int) -> None: ...
def column_sums(a: np.ndarray, out: np.ndarray, threads: int) -> None: ...
def isa() -> str: ...
def set_isa(name: str) -> None: ...
def available_isas() -> list[str]: ...
def get_num_threads() -> int: ...
def max_threads() -> int: ...
def set_num_threads(n: int) -> None: ...
def default_num_threads() -> int: ...
def limit_calling_thread(n: int) -> int: ...
def get_flush_subnormals() -> bool: ...
def set_flush_subnormals(enabled: bool) -> None: ...
def fma_peak(dtype: object, iterations: int, threads: int) -> tuple[float, float]: ...
def microkernel_peak(dtype: object, iterations: int, threads: int) -> tuple[float, float]: ...
def read_peak(dtype: object, bytes: int, iterations: int, threads: int) -> tuple[float, float]: ...
def line_round_trip_ns(exchanges: int) -> float | None: ...
def _step_team_counts() -> tuple[int, int]: ...
def _set_step_helper_delay_ns(ns: int) -> int: ...

class Stepper:
    def __init__(
        self,
        wx: list[np.ndarray],
        wh: list[np.ndarray],
        b: list[np.ndarray | None],
        state: np.ndarray,
        out: np.ndarray,
        activation: str,
        params: dict,
        cell_state: np.ndarray | None = None,
        state_key: object = None,
        bh: list[np.ndarray | None] | None = None,
    ) -> None: ...
    def current(self, params: dict, state: object) -> bool: ...
    @property
    def step(self) -> Callable[[object, dict, object], np.ndarray | None]: ...
