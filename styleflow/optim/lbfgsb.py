"""scipy's L-BFGS-B routine, driven directly instead of through `scipy.optimize.minimize`.

`minimize` hands L-BFGS-B's bounds through a list of one Python tuple per variable (and
back), and fills the routine's bound arrays in a Python loop: at print size (a 4096x3072
image has 38 million variables) that is gigabytes of short-lived objects, more than the
optimiser's own state, and tens of seconds before the first evaluation. The routine itself
(`scipy.optimize._lbfgsb.setulb`) needs only flat arrays, which NumPy fills at once. The loop
below is the one `minimize` runs, so the iterates are the same to the last bit
(tests/test_lbfgsb.py compares them); where scipy lacks that routine, `minimize` is used.
What it holds per variable is counted in plan/memory.py's optimiser_bytes.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy.optimize import Bounds, OptimizeResult
from scipy.optimize import minimize as _scipy_minimize

try:  # the compiled routine and its messages (scipy >= 1.15's C port)
    from scipy.optimize import _lbfgsb
    from scipy.optimize._lbfgsb_py import status_messages, task_messages
    DIRECT = hasattr(_lbfgsb, "setulb")
except ImportError:  # pragma: no cover - other scipy layouts
    DIRECT = False

# scipy's defaults for L-BFGS-B's tolerances and line search.
FTOL = 2.2204460492503131e-09
GTOL = 1e-5
MAX_LINE_STEPS = 20
# The routine's task codes.
_NEW_X, _FG, _CONVERGED, _STOP = 1, 3, 4, 5
_EVALUATIONS_SPENT, _ITERATIONS_SPENT = 502, 504


def bound_arrays(bounds: Bounds | None, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """L-BFGS-B's (lower, upper, kind) arrays for `n` variables from `bounds` (whose lb/ub
    broadcast to n values; infinite for none): kind 0 free, 1 lower only, 2 both, 3 upper
    only."""
    if bounds is None:
        return np.zeros(n), np.zeros(n), np.zeros(n, np.int32)
    lower, upper = _flat(bounds.lb, n), _flat(bounds.ub, n)
    has_lower, has_upper = np.isfinite(lower), np.isfinite(upper)
    kind = np.where(has_lower, np.where(has_upper, 2, 1), np.where(has_upper, 3, 0))
    if not has_lower.all():
        lower = np.where(has_lower, lower, 0.0)
    if not has_upper.all():
        upper = np.where(has_upper, upper, 0.0)
    return lower, upper, kind.astype(np.int32)


def _flat(values, n: int) -> np.ndarray:
    """`values` as n contiguous float64 values: the array itself where it already is one
    (it is only read), else a broadcast copy."""
    values = np.asarray(values, np.float64)
    if values.shape == (n,) and values.flags.c_contiguous:
        return values
    return np.array(np.broadcast_to(values, (n,)))


def minimize(fun: Callable[[np.ndarray], tuple[float, np.ndarray]], x0: np.ndarray, *,
             bounds: Bounds | None = None, history: int = 10, max_evaluations: int = 15000,
             max_iterations: int = 15000,
             callback: Callable[[OptimizeResult], None] | None = None) -> OptimizeResult:
    """Minimise `fun` (x -> (value, float64 gradient)) from `x0` by L-BFGS-B with `history`
    correction pairs, as `scipy.optimize.minimize(fun, x0, jac=True, method="L-BFGS-B",
    bounds=bounds, callback=callback, options={"maxcor": history, "maxfun": max_evaluations,
    "maxiter": max_iterations})` does, with the same result fields (x, fun, nfev, nit,
    status, message, success). `callback` gets each new iterate (x, fun)."""
    if not DIRECT:
        return _scipy_minimize(fun, x0, jac=True, method="L-BFGS-B", bounds=bounds,
                               callback=callback,
                               options={"maxcor": history, "maxfun": max_evaluations,
                                        "maxiter": max_iterations})
    x = np.array(x0, np.float64).ravel()
    n = x.size
    lower, upper, kind = bound_arrays(bounds, n)
    if bounds is not None:
        np.clip(x, np.broadcast_to(np.asarray(bounds.lb, np.float64), (n,)),
                np.broadcast_to(np.asarray(bounds.ub, np.float64), (n,)), out=x)
    m = history
    f = np.array(0.0, np.float64)
    g = np.zeros(n, np.float64)
    work = np.zeros(2 * m * n + 5 * n + 11 * m * m + 8 * m, np.float64)
    int_work = np.zeros(3 * n, np.int32)
    task = np.zeros(2, np.int32)
    line_task = np.zeros(2, np.int32)
    lsave = np.zeros(4, np.int32)
    isave = np.zeros(44, np.int32)
    dsave = np.zeros(29, np.float64)
    factr = FTOL / np.finfo(float).eps
    evaluations, iterations = 0, 0
    evaluated_at = None
    while True:
        g = np.asarray(g, np.float64)
        _lbfgsb.setulb(m, x, lower, upper, kind, f, g, factr, GTOL, work, int_work, task,
                       lsave, isave, dsave, MAX_LINE_STEPS, line_task)
        if task[0] == _FG:
            # minimize() evaluates only at a point it has not evaluated last.
            if evaluated_at is None or not np.array_equal(x, evaluated_at):
                evaluated_at = x.copy()
                value, g = fun(evaluated_at)
                f = float(value)
                evaluations += 1
        elif task[0] == _NEW_X:
            iterations += 1
            if callback is not None:
                callback(OptimizeResult(x=x, fun=f))
            if iterations >= max_iterations:
                task[:] = _STOP, _ITERATIONS_SPENT
            elif evaluations > max_evaluations:
                task[:] = _STOP, _EVALUATIONS_SPENT
        else:
            break
    if task[0] == _CONVERGED:
        status = 0
    elif evaluations > max_evaluations or iterations >= max_iterations:
        status = 1
    else:
        status = 2
    message = f"{status_messages[task[0]]}: {task_messages[task[1]]}"
    return OptimizeResult(x=x, fun=f, jac=g, nfev=evaluations, njev=evaluations,
                          nit=iterations, status=status, message=message,
                          success=status == 0)
