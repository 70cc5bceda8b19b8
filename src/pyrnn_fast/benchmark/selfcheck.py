"""The self-check: every backend's forward and all five gradients against the NumPy reference,
and the one comparison (``relative_error`` against ``TOLERANCE``) that the main job and the
tests both use.

Tolerances, relative to the largest magnitude of the reference result:
- float64: the backends sum the same products in other orders (blocked GEMMs, FMA) and use
  their own tanh (a few ulp); rounding differences are ~1e-15 and the recurrence contracts
  them, so 1e-12 leaves three orders of margin without hiding a real bug (which is O(1e-3+)).
- float32: the same argument with eps = 6e-8: observed errors are ~1e-6 for sums over a
  few hundred terms; 1e-5 is the bound docs/DESIGN.md promises.
"""

from __future__ import annotations

import numpy as np

from .. import _api, _reference

#: Largest relative error accepted, per result dtype.
TOLERANCE = {"float64": 1e-12, "float32": 1e-5}
CHECK_SHAPES = [(6, 3, 5, 7), (0, 2, 3, 4), (9, 1, 4, 8)]  # (T, N, D, H): plain, T = 0, N = 1


def relative_error(got, ref, dtype=None) -> float:
    """max |got - ref| / max |ref|, with ``ref`` in float64: inf on a shape mismatch or when
    ``got`` is not of ``dtype`` (if given), 0 for empty arrays. Within ``TOLERANCE[dtype]``
    means the backend agrees with the reference."""
    got, ref = np.asarray(got), np.asarray(ref)
    if got.shape != ref.shape or (dtype is not None and got.dtype != np.dtype(dtype)):
        return float("inf")
    if ref.size == 0:
        return 0.0
    scale = max(float(np.max(np.abs(ref))), np.finfo(np.float64).tiny)
    return float(np.max(np.abs(got.astype(np.float64) - ref))) / scale


def self_check(backends) -> tuple[dict, bool]:
    """Max relative error of each backend, per dtype, over CHECK_SHAPES × (tanh, relu) × (hs, h_last,
    5 grads), against the float64 reference run on the same (dtype-rounded) inputs. Returns
    ``({backend: {dtype: err}}, ok)``; a wrong result dtype counts as an infinite error."""
    errors = {name: dict.fromkeys(TOLERANCE, 0.0) for name in backends}
    rng = np.random.default_rng(1)
    for T, N, D, H in CHECK_SHAPES:
        raw = [rng.standard_normal(s) for s in ((T, N, D), (D, H), (H, H), (H,), (N, H), (T, N, H), (N, H))]
        raw[1] /= np.sqrt(D)
        raw[2] *= 0.9 / np.sqrt(H)
        for dt in TOLERANCE:
            x, Wx, Wh, b, h0, dhs, dh_last = (a.astype(dt) for a in raw)
            ref_in = [a.astype(np.float64) for a in (x, Wx, Wh, b, h0, dhs, dh_last)]
            for act in ("tanh", "relu"):
                hs_ref, h_last_ref = _reference.rnn_forward(
                    x=ref_in[0], Wx=ref_in[1], Wh=ref_in[2], b=ref_in[3], h0=ref_in[4], activation=act
                )
                hs_in = hs_ref.astype(dt)  # both backward passes see the same hs
                grads_ref = _reference.rnn_backward(
                    ref_in[5],
                    ref_in[0],
                    ref_in[1],
                    ref_in[2],
                    hs_in.astype(np.float64),
                    ref_in[4],
                    dh_last=ref_in[6],
                    activation=act,
                )
                for name in backends:
                    hs, h_last = _api.rnn_forward(x, Wx, Wh, b, h0, activation=act, time_major=True, backend=name)
                    g = _api.rnn_backward(
                        dhs, x, Wx, Wh, hs_in, h0, dh_last=dh_last, activation=act, time_major=True, backend=name
                    )
                    outs = [hs, h_last, *g]
                    errs = [relative_error(o, r, dt) for o, r in zip(outs, [hs_ref, h_last_ref, *grads_ref])]
                    errors[name][dt] = max(errors[name][dt], *errs)
    ok = all(errors[name][dt] <= TOLERANCE[dt] for name in backends for dt in TOLERANCE)
    return errors, ok


def print_self_check(errors, what="pyrnn_fast._reference", checked="tanh+relu; hs, h_last and all 5 grads"):
    """The self-check table: each backend's max relative error per dtype, ok or FAIL against TOLERANCE."""
    print(
        f"\nself-check against {what} (shapes T,N,D,H = "
        f"{', '.join('x'.join(map(str, s)) for s in CHECK_SHAPES)}; {checked})"
    )
    width = max(8, *(len(name) for name in errors))
    print(f"  {'backend':<{width}}" + "".join(f"{dt + ' max rel err':>24}" for dt in TOLERANCE))
    for name, per_dtype in errors.items():
        cells = [
            f"{err:.1e} {'ok' if err <= TOLERANCE[dt] else f'FAIL (> {TOLERANCE[dt]:.0e})'}"
            for dt, err in per_dtype.items()
        ]
        print(f"  {name:<{width}}" + "".join(f"{c:>24}" for c in cells))
