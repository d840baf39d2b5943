"""The L-BFGS-B driver (optim/lbfgsb.py) against scipy.optimize.minimize: the same routine,
so the same iterates to the last bit, and without minimize's per-variable Python objects."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import Bounds, minimize

from styleflow.optim import lbfgsb
from styleflow.plan.memory import optimiser_bytes


def _problem(n: int = 240, seed: int = 1):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, n))
    q = a @ a.T / n + 0.1 * np.eye(n)
    b = 5 * rng.normal(size=n)

    def fun(x):
        return float(0.5 * x @ q @ x - b @ x + np.sum(np.sin(x))), q @ x - b + np.cos(x)
    return fun


N = 240
BOUNDS = {
    "none": None,
    "both": Bounds(np.full(N, -1.0), np.full(N, 1.5)),
    "mixed": Bounds(np.r_[np.full(N // 2, -np.inf), np.full(N // 2, -0.5)],
                    np.r_[np.full(N // 3, 0.5), np.full(N - N // 3, np.inf)]),
}


@pytest.mark.parametrize("bounds", sorted(BOUNDS))
@pytest.mark.parametrize("history,evaluations", [(3, 20), (10, 400)])
def test_same_iterates_as_scipy(bounds, history, evaluations):
    fun = _problem(N)
    theirs, ours = [], []

    def record(intermediate_result):  # scipy passes a result only to this parameter name
        theirs.append(intermediate_result.x.copy())

    expected = minimize(fun, np.full(N, 2.0), jac=True, method="L-BFGS-B",
                        bounds=BOUNDS[bounds], callback=record,
                        options={"maxcor": history, "maxfun": evaluations})
    got = lbfgsb.minimize(fun, np.full(N, 2.0), bounds=BOUNDS[bounds], history=history,
                          max_evaluations=evaluations,
                          callback=lambda result: ours.append(result.x.copy()))
    assert len(ours) == len(theirs) > 3
    assert all(np.array_equal(a, b) for a, b in zip(ours, theirs))
    assert np.array_equal(got.x, expected.x) and got.fun == expected.fun
    assert (got.nfev, got.nit, got.status, got.message) == (
        expected.nfev, expected.nit, expected.status, expected.message)


def test_iteration_limit_and_bounds_untouched():
    fun = _problem(N)
    lower = np.full(N, -1.0)
    result = lbfgsb.minimize(fun, np.zeros(N), bounds=Bounds(lower, np.full(N, 1.0)),
                             history=5, max_iterations=4)
    assert result.nit == 4 and result.status == 1
    assert "ITERATIONS" in result.message
    assert np.all(lower == -1.0)  # the caller's bounds are read, never written
    assert np.all(np.abs(result.x) <= 1.0)


def test_bound_arrays_kinds():
    lower, upper, kind = lbfgsb.bound_arrays(
        Bounds([-np.inf, 0.0, -np.inf, 1.0], [np.inf, np.inf, 2.0, 3.0]), 4)
    assert kind.tolist() == [0, 1, 3, 2]
    assert lower.tolist() == [0.0, 0.0, 0.0, 1.0] and upper.tolist() == [0.0, 0.0, 2.0, 3.0]
    # Per-channel bounds broadcast over the variables.
    lower, upper, kind = lbfgsb.bound_arrays(Bounds(-1.0, 1.0), 6)
    assert kind.tolist() == [2] * 6 and lower.shape == (6,)


def test_no_objects_per_variable():
    """scipy's minimize builds a Python tuple per bounded variable; the driver's memory above
    its state is a few arrays (measured with tracemalloc, which sees NumPy's buffers)."""
    import tracemalloc

    n = 300_000
    calls = []

    def fun(x):
        calls.append(1)
        return float(np.sum((x - 0.5) ** 2)), 2 * (x - 0.5)

    bounds = Bounds(np.zeros(n), np.ones(n))
    tracemalloc.start()
    try:
        lbfgsb.minimize(fun, np.zeros(n), bounds=bounds, history=3, max_evaluations=3)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert calls
    # The state the memory plan counts (optimiser_bytes), the gradient fun returns and a
    # little: far below minimize's ~330 B per variable.
    assert peak < (optimiser_bytes("lbfgs", 3) + 40) * n
