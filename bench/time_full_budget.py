"""Estimate the wall time of ``python -m deepcheck reproduce --full`` from a scaled-down copy of the full budget.

The copy keeps every image count and batch size (so per-batch costs are those of the full run) and divides:
the training images of each model (``deep.n_train``, ``deep_tradeoff.n_train``) by ``--train-scale`` and every
PGD step count by ``--attack-scale``. Each deep step's time is then scaled back: training time by the train
scale, attack time by the attack scale (an over-estimate: the clean evaluations and the first PGD pass do not
shrink); the linear steps run unscaled. Each step's CPU time (user + system, this process) is recorded beside its
wall time: on a loaded machine the CPU time is the better estimate of the wall time on an idle one (an upper
bound while torch's threads do not speed a step up). Steps cached in ``--out`` by an earlier call are reused
with their recorded wall time. Prints a table and writes ``<out>/timing.json``.

    PYTHONPATH=$PWD python bench/time_full_budget.py --out /tmp/full_scaled
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

from deepcheck.reproduce import BUDGETS, cli, run
from deepcheck.reproduce.budget import Budget

TRAIN_STEPS = ("train_glow_mle", "train_glow_hybrid", "train_realnvp_mle", "train_realnvp_hybrid")


def scaled(full: Budget, train_scale: int, attack_scale: int) -> Budget:
    """The full budget with training images / ``train_scale`` and PGD steps / ``attack_scale``."""
    def s(steps: int) -> int:
        return max(1, round(steps / attack_scale))

    ev, o, th, dt, d = full.eval, full.ood, full.theory, full.deep_tradeoff, full.deep
    return full.with_settings(
        deep={"n_train": None if d.n_train is None or train_scale == 1 else max(64, d.n_train // train_scale)},
        eval={"pgd_steps": s(ev.pgd_steps), "strong_steps": s(ev.strong_steps)},
        ood={"pgd_steps": s(o.pgd_steps)},
        theory={"pgd_steps": s(th.pgd_steps), "universal_steps": s(th.universal_steps)},
        deep_tradeoff={"n_train": dt.n_train if train_scale == 1 or (dt.n_train or d.n_train) is None
                       else max(64, (dt.n_train or d.n_train) // train_scale),
                       "attack_steps": s(dt.attack_steps)})


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _timed_run_step(inner, cpu: dict[str, float]):  # noqa: ANN001, ANN202 - a wrapper of pipeline.run_step
    def run_step(step, ctx):  # noqa: ANN001, ANN202
        c0 = _cpu()
        record = inner(step, ctx)
        cpu[step.name] = _cpu() - c0 if record.get("status") != "cached" else float(record.get("seconds", 0.0))
        return record
    return run_step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/full_scaled")
    ap.add_argument("--train-scale", type=int, default=10)
    ap.add_argument("--attack-scale", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget", default="full", help="the budget to scale (default full; quick with scales 1)")
    ap.add_argument("--part", choices=("all", "linear", "deep"), default="all",
                    help="run only the linear or only the deep steps (two processes can then run side by side)")
    args = ap.parse_args()
    budget = scaled(BUDGETS[args.budget], args.train_scale, args.attack_scale)
    if args.part == "deep":
        cli.steps_linear.STEPS = []
    elif args.part == "linear":
        cli.steps_deep.deep_steps = lambda budget: []
    step_cpu: dict[str, float] = {}
    cli.run_step = _timed_run_step(cli.run_step, step_cpu)
    t0, c0 = time.perf_counter(), _cpu()
    results = run(budget, Path(args.out), seed=args.seed, progress=False)
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    rows, total = [], 0.0
    for st in results["steps"]:
        sec = step_cpu.get(st["name"], float(st.get("seconds", 0.0)))
        if st["name"] in TRAIN_STEPS:
            est = sec * args.train_scale
        elif st["name"] == "deep_tradeoff":
            train_s = sum(p.get("train_seconds", 0.0) for p in st["results"].get("deep", []))
            f = min(1.0, train_s / max(float(st.get("seconds", 0.0)), 1e-9))  # the training share of the wall time
            est = sec * (f * args.train_scale + (1.0 - f) * args.attack_scale)
        elif st["name"] in ("deep_attack", "ood", "ood_curve", "theory", "teaser", "dequant"):
            est = sec * args.attack_scale
        else:
            est = sec
        total += est
        rows.append({"step": st["name"], "status": st["status"], "wall_s": float(st.get("seconds", 0.0)),
                     "cpu_s": sec, "full_estimate_s": est})
        print(f"{st['name']:24s} {st['status']:8s} wall {float(st.get('seconds', 0.0)):8.1f} s  CPU {sec:8.1f} s"
              f"  -> full ~{est:8.1f} s", flush=True)
    print(f"scaled run: wall {wall:.0f} s, CPU {cpu:.0f} s; full estimate from CPU time {total:.0f} s "
          f"({total / 60:.1f} min)")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "timing.json").write_text(json.dumps(
        {"train_scale": args.train_scale, "attack_scale": args.attack_scale, "wall_s": wall, "cpu_s": cpu,
         "full_estimate_s": total, "steps": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
