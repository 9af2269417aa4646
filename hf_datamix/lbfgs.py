"""A batched L-BFGS: many independent small problems minimised at once, each with its own memory and step.

``torch.optim.LBFGS`` over a sum of independent losses shares one line search and one curvature
memory between problems whose curvatures differ by orders of magnitude, and stalls; here every
problem keeps its own, so each converges as it would alone, while the work stays one tensor program.
"""

from __future__ import annotations

import contextlib
import os

import torch


def batched_lbfgs(
    fun, x0: torch.Tensor, max_iter: int = 500, history: int = 10, ftol: float = 1e-10, gtol: float = 1e-14
) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimise ``B`` independent smooth functions at once with L-BFGS; returns ``(x (B, d), f (B,))``.

    ``fun(x, ids)`` returns the values (b,) and gradients (b, d) of problems ``ids`` at ``x`` (b, d).
    Every problem keeps its own curvature memory and Armijo step size, so each converges as if it
    were optimised alone, while all share one tensor computation.  A problem stops when an
    iteration lowers its value by less than ``ftol`` relatively (or its gradient is below ``gtol``).
    """
    ids = torch.arange(x0.shape[0], device=x0.device)
    x_out, f_out = x0.clone(), torch.empty(x0.shape[0], dtype=x0.dtype, device=x0.device)
    x = x0.clone()
    f, g = fun(x, ids)
    mem_s = torch.zeros(history, *x.shape, dtype=x.dtype, device=x.device)
    mem_y, rho = torch.zeros_like(mem_s), torch.zeros(history, x.shape[0], dtype=x.dtype, device=x.device)
    gamma = 1.0 / g.norm(dim=1).clamp(min=1e-12)  # first step: unit length along -g, then Armijo
    live, head = g.abs().amax(dim=1) > gtol, 0
    for it in range(max_iter + 1):
        if it == max_iter:
            live = torch.zeros_like(live)  # out of iterations: everything left is written out as is
        dead = ~live
        n_dead = int(dead.sum())
        # Drop finished problems from the working set once enough have finished (gathers are not free).
        if n_dead and (4 * n_dead >= len(ids) or n_dead == len(ids)):
            x_out[ids[dead]], f_out[ids[dead]] = x[dead], f[dead]
            mem_s, mem_y, rho = mem_s[:, live], mem_y[:, live], rho[:, live]
            ids, x, f, g, gamma, live = ids[live], x[live], f[live], g[live], gamma[live], live[live]
        if len(ids) == 0 or it == max_iter:
            break
        # Two-loop recursion, vectorised over problems (rho = 0 marks an empty/skipped memory slot).
        q, alphas = g.clone(), []
        order = [(head - 1 - i) % history for i in range(history)]
        for k in order:
            alphas.append(rho[k] * (mem_s[k] * q).sum(dim=1))
            q -= alphas[-1][:, None] * mem_y[k]
        direction = q * gamma[:, None]
        for k, alpha in zip(reversed(order), reversed(alphas)):
            direction += mem_s[k] * (alpha - rho[k] * (mem_y[k] * direction).sum(dim=1))[:, None]
        direction = -direction
        slope = (g * direction).sum(dim=1)
        uphill = ~(slope < 0)
        if uphill.any():  # lost curvature information: restart that problem along the gradient
            direction[uphill] = -g[uphill] / g[uphill].norm(dim=1, keepdim=True).clamp(min=1e-300)
            slope[uphill] = (g[uphill] * direction[uphill]).sum(dim=1)
            rho[:, uphill] = 0
        step, done = torch.ones_like(f), ~live
        x_new, f_new, g_new = x.clone(), f.clone(), g.clone()
        for _ in range(40):  # backtracking (Armijo) line search, per problem
            pending = (~done).nonzero().squeeze(1)
            if len(pending) == 0:
                break
            trial = x[pending] + step[pending, None] * direction[pending]
            f_t, g_t = fun(trial, ids[pending])
            ok = torch.isfinite(f_t) & (f_t <= f[pending] + 1e-4 * step[pending] * slope[pending])
            accepted = pending[ok]
            x_new[accepted], f_new[accepted], g_new[accepted] = trial[ok], f_t[ok], g_t[ok]
            done[accepted] = True
            step[pending[~ok]] *= 0.5
        s, y = x_new - x, g_new - g
        sy = (s * y).sum(dim=1)
        valid = done & live & (sy > 1e-10 * s.norm(dim=1) * y.norm(dim=1)) & (sy > 0)
        mem_s[head], mem_y[head] = torch.where(valid[:, None], s, 0), torch.where(valid[:, None], y, 0)
        rho[head] = torch.where(valid, 1.0 / torch.where(valid, sy, 1.0), 0)
        gamma = torch.where(valid, sy / torch.where(valid, (y * y).sum(dim=1), 1.0), gamma)
        head = (head + 1) % history
        finished = ~done | ((f - f_new) <= ftol * f.abs()) | (g_new.abs().amax(dim=1) <= gtol)
        x, f, g, live = x_new, f_new, g_new, live & ~finished
    return x_out, f_out


@contextlib.contextmanager
def intra_op_threads(count: int):
    """Run with ``count`` torch intra-op threads, restoring the count after (also usable as a decorator)."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def one_thread():
    # The fit's tensors are small (starts*T*R elements), so intra-op threads gain ~20 % on an idle
    # machine but cost 10x when the cores are shared (e.g. several ranks per node): use one thread.
    return intra_op_threads(1)


#: A batched fit whose evaluations touch at least this many elements (problems x runs) runs on the cores this
#: process owns instead of one thread: from here intra-op threads pay for themselves (a 64-domain log-linear fit
#: over 325 runs touches 6.2 M, a 5-domain one over 30 runs 45 k).
THREADED_FROM = 2_000_000


def threads_for(elements: int) -> int:
    """Intra-op threads for a batched fit of ``elements``: 1 below :data:`THREADED_FROM` (``one_thread``'s
    reason), else this process's share of the cores it may run on (its CPU affinity divided by the processes
    on this node, ``LOCAL_WORLD_SIZE``, as torchrun and accelerate set it), at most torch's own default."""
    if elements < THREADED_FROM:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    return max(1, min(torch.get_num_threads(), cores // local))


def fit_threads(elements: int):
    """Run a batched fit of ``elements`` with :func:`threads_for` threads, restoring the count after."""
    return intra_op_threads(threads_for(elements))


#: Where a law may be fitted: ``auto`` (this process's GPU for a fit of at least :data:`THREADED_FROM` elements
#: when there is one, else the CPU), ``cpu`` or ``cuda``.
FIT_DEVICES = ("auto", "cpu", "cuda")


def fit_device(elements: int, requested: str = "auto") -> torch.device:
    """The device a batched fit of ``elements`` runs on (``requested`` is one of :data:`FIT_DEVICES`).

    ``auto`` keeps the usual small fit on the CPU, where it is fastest and every recorded decision was made, and
    sends a large one (e.g. 64 domains with cross-validation folds: minutes on a few cores) to the GPU the
    process trains on; the fit is float64 either way.
    """
    if requested not in FIT_DEVICES:
        raise ValueError(f"device={requested!r}: a law is fitted on one of {FIT_DEVICES}.")
    if requested == "cpu" or (requested == "auto" and (elements < THREADED_FROM or not torch.cuda.is_available())):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError("device='cuda' but torch sees no CUDA device here: fit with device='auto' or 'cpu'.")
    return torch.device("cuda", torch.cuda.current_device())
