"""R6 on MNIST-5k (issue 14 goal 1): one 60-CPU-s run of the pooled solver with its schedule changed, the certified
relative gap and, at eps 1 and 3, ``F`` above and ``Phi`` below the 600-s reference duals' ``Phi_ref``; the CPU times
of the polish and the free step and the polish's exact ``F`` after each evaluation (minus ``Phi_ref``).

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD python bench/r6_tune.py EPS NAME [key=value ...]

keys: ``asc``, ``pol`` (``_ASCENT_SHARE``, ``_POLISH_SHARE``), ``single_until`` (``_SINGLE_UNTIL``), ``doubling``
(``_DOUBLING``, 0/1), ``sched_first`` (the crowd schedule's first iteration), or any int option of ``_sample_pooled``.
Main's default before R6-TUNE is ``doubling=0 single_until=1e-7``. Compare two settings interleaved (same session,
two at a time), >= 4 runs each: the machine's load moves the numbers.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from threadpoolctl import threadpool_limits  # noqa: E402

from bench.bench_training import mnist5k  # noqa: E402
from linflow.training import pooled, pooled_k, pooled_polish  # noqa: E402
from linflow.validation import check_data  # noqa: E402

REF = {1.0: -312.69773932, 3.0: -74.15224054}  # Phi of the 600-s reference duals (/tmp/r6dual)


def main() -> None:
    eps, name = float(sys.argv[1]), sys.argv[2]
    kw: dict[str, int] = {}
    consts = {"asc": "_ASCENT_SHARE", "pol": "_POLISH_SHARE", "single_until": "_SINGLE_UNTIL"}
    for arg in sys.argv[3:]:
        key, val = arg.split("=")
        if key in consts:
            setattr(pooled, consts[key], float(val))
        elif key == "doubling":
            pooled._DOUBLING = bool(int(val))
        elif key == "sched_first":
            pooled._CrowdSchedule = lambda steps, first=int(val): pooled_k._CrowdSchedule(steps, first=first)
        else:
            kw[key] = int(val)
    ref = REF.get(eps, 0.0)
    log, pol, c0 = [], [], [0.0]

    def timed(label, fun):
        def wrap(*a, **k):
            t = time.process_time()
            out = fun(*a, **k)
            log.append(f"{label}[{t - c0[0]:.2f}-{time.process_time() - c0[0]:.2f}]{out[0] - ref:.2e}")
            return out
        return wrap

    evaluate = pooled_polish._Rotated.evaluate

    def spy(self, Z):
        out = evaluate(self, Z)
        pol.append(f"{time.process_time() - c0[0]:.2f}:{out['F'] - ref:.3e}")
        return out

    pooled._polish, pooled._free_step = timed("polish", pooled._polish), timed("free", pooled._free_step)
    pooled_polish._Rotated.evaluate = spy
    Xc, m, S = check_data(mnist5k(), 0.01)
    with threadpool_limits(1):
        c0[0] = time.process_time()
        info = pooled._sample_pooled(Xc, m, S, eps, 0.01, max_iter=10_000, tol=1e-10, max_seconds=60.0, **kw)[1]
        cpu = time.process_time() - c0[0]
    F, Phi = info.objective, info.objective - info.gap
    extra = f" F-ref {F - ref:.2e} ref-Phi {ref - Phi:.2e}" if eps in REF else ""
    print(f"RESULT eps {eps:g} {name}: gap {info.gap / abs(F):.3e} abs {info.gap:.2e}{extra} iters {info.iterations}"
          f" {info.status} CPU {cpu:.1f} " + " ".join(log), flush=True)
    print("POLISH", name, " ".join(pol), flush=True)


if __name__ == "__main__":
    main()
