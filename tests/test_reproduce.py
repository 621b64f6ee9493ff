"""``python -m deepcheck reproduce``: the smoke run writes every artifact, the report agrees with results.json,
a rerun skips finished steps, the cache is invalidated when it should be, and the computations behind the
figures agree with independent methods (brute force)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.image as mpimg  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from deepcheck import cli, reproduce  # noqa: E402
from deepcheck.reproduce import compute_linear as linear  # noqa: E402
from deepcheck.reproduce import report as rep  # noqa: E402
from deepcheck.reproduce import steps_deep, steps_linear  # noqa: E402

EXPECTED_FIGURES = {
    "geometry": ["geometry"],
    "attack_vs_eps": ["nll_vs_eps"],
    "waterfilling": ["waterfilling"],
    "tradeoff": ["tradeoff"],
    "deep_attack": ["bpd_vs_eps", "bpd_vs_eps_l2", "image_grid"],
    "ood": ["ood_histograms"],
    "teaser": ["teaser"],
    "ood_curve": ["ood_curve_uniform-noise"],
    "theory": ["theory_vs_deep_glow", "theory_vs_deep_realnvp"],
    "deep_tradeoff": ["deep_tradeoff"],
}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("reproduce") / "smoke"
    results = reproduce.run("smoke", out, seed=0, progress=False)
    return out, results


def _steps(results: dict) -> dict[str, dict]:
    return {s["name"]: s for s in results["steps"]}


# ---------------------------------------------------------------------------------------------- artifacts
def test_smoke_run_writes_results_and_report(smoke) -> None:
    out, results = smoke
    assert (out / "results.json").is_file() and (out / "report.md").is_file()
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk == results
    steps = _steps(results)
    assert list(steps)[:5] == ["verify", "geometry", "attack_vs_eps", "waterfilling", "tradeoff"]
    assert {"train_glow_mle", "train_glow_hybrid", "train_realnvp_mle", "train_realnvp_hybrid", "deep_attack", "ood",
            "teaser", "ood_curve", "dequant", "theory", "deep_tradeoff"} <= set(steps)
    for s in results["steps"]:
        assert s["status"] in ("ok", "not run"), (s["name"], s["status"], s.get("reason"), s.get("notes"))
        if s["status"] == "not run":
            assert s["reason"], s["name"]
    assert results["run"]["exit_status"] == 0
    report = (out / "report.md").read_text()
    for s in results["steps"]:
        assert s["title"] in report
        if s["status"] == "not run":
            assert f"not run: {s['reason']}" in report
    assert "CIFAR-10" in report and "## Not reproduced" in report
    for pkg in ("numpy", "torch", "cvxpy", "matplotlib"):
        assert re.search(rf"\| {pkg} \| \d", report), pkg


def test_every_figure_is_a_valid_png_and_pdf(smoke) -> None:
    out, results = smoke
    steps = _steps(results)
    for name, stems in EXPECTED_FIGURES.items():
        if steps[name]["status"] != "ok":
            continue
        for stem in stems:
            png, pdf = out / "figures" / f"{stem}.png", out / "figures" / f"{stem}.pdf"
            assert f"figures/{stem}.png" in steps[name]["figures"]
            img = mpimg.imread(png)
            assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50 and img.shape[2] in (3, 4)
            assert float(img[..., :3].std()) > 0.01, f"{stem}.png is blank"
            data = pdf.read_bytes()
            assert data.startswith(b"%PDF") and b"%%EOF" in data[-64:] and len(data) > 1000


def test_every_step_ran(smoke) -> None:
    """Every building block of the pipeline is in this checkout, so no step may be reported as not run."""
    for s in smoke[1]["steps"]:
        assert s["status"] == "ok", (s["name"], s.get("reason"))


# ---------------------------------------------------------------------------------------------- report == json
def _table_after(report: str, heading_fragment: str) -> list[list[str]]:
    """The rows (cells as strings) of the first markdown table after the line containing ``heading_fragment``."""
    lines = report.splitlines()
    start = next(i for i, line in enumerate(lines) if heading_fragment in line)
    rows, seen = [], False
    for line in lines[start + 1:]:
        if line.startswith("|"):
            seen = True
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            if not all(set(c) <= {"-"} for c in cells):
                rows.append(cells)
        elif seen:
            break
    return rows[1:]  # without the header


def _close(text: str, value: float) -> bool:
    return abs(float(text) - value) <= 5e-4 * max(abs(value), 1e-12) + 1e-12


def test_report_numbers_equal_results_json(smoke) -> None:
    out, results = smoke
    report = (out / "report.md").read_text()
    steps = _steps(results)
    geo = steps["geometry"]["results"]
    rows = _table_after(report, "NLL change (nats) of the optimal perturbations")
    assert len(rows) == len(geo["points"])
    for k, row in enumerate(rows):
        assert int(row[0]) == k
        assert _close(row[2], geo["rise"][k]) and _close(row[3], geo["brute_force_rise"][k])
        assert _close(row[4], geo["drop"][k]) and _close(row[5], geo["brute_force_drop"][k])
    att = steps["attack_vs_eps"]["results"]
    rows = _table_after(report, "mean NLL rise (nats) over")
    for i, row in enumerate(rows):
        assert _close(row[0], att["eps"][i]) and _close(row[1], att["exact_l2"][i])
    wf = steps["waterfilling"]["results"]
    (row,) = _table_after(report, "universal adversarial training (R5)")
    assert _close(row[0], wf["tau"]) and int(row[1]) == wf["n_lifted"] and _close(row[2], wf["kl"])
    if steps["verify"]["status"] == "ok":
        checks = steps["verify"]["results"]["checks"]
        rows = _table_after(report, "verification of R1-R7 (docs/theory.md)")
        assert len(rows) == len(checks)
        for row, c in zip(rows, checks):
            assert row[1] == c["name"] and _close(row[3], c["worst"]) and int(row[5]) == c["cases"]
    teaser = steps["teaser"]["results"]["rows"]
    rows = _table_after(report, "teaser: mean bits/dim")
    for row, t in zip(rows, teaser):
        if t["measured"] is not None:
            assert _close(row[1], t["measured"])
        assert _close(row[2], t["paper"])
    sets = steps["ood"]["results"]["sets"]
    rows = _table_after(report, "OOD attack (")
    assert len(rows) == sum(len(s["models"]) for s in sets.values())
    for row in rows:
        m = sets[row[1]]["models"][row[0]]
        assert _close(row[2], m["in_mean"]) and _close(row[3], m["ood_mean"]) and _close(row[5], m["auroc_before"])
        assert _close(row[6], m["auroc_after"])


# ---------------------------------------------------------------------------------------------- caching
def test_rerun_skips_finished_steps_through_the_cli(smoke, capsys: pytest.CaptureFixture) -> None:
    out, first = smoke
    before = {p: p.stat().st_mtime_ns for p in (out / "checkpoints").glob("*.pt")}
    assert before, "no checkpoints were written"
    status = cli.main(["reproduce", "--budget", "smoke", "--out", str(out), "--seed", "0", "--no-progress"])
    assert status == 0
    printed = capsys.readouterr().out
    assert "report:" in printed
    second = json.loads((out / "results.json").read_text())
    s1, s2 = _steps(first), _steps(second)
    for name, rec in s1.items():
        if rec["status"] == "ok":
            assert s2[name]["status"] == "cached", name
            assert s2[name]["results"] == rec["results"], name
        else:
            assert s2[name]["status"] == rec["status"]
    assert {p: p.stat().st_mtime_ns for p in (out / "checkpoints").glob("*.pt")} == before
    assert "cached" in (out / "report.md").read_text()


def test_same_seed_same_numbers(smoke) -> None:
    """Recomputing a linear and a deep step (``force``) from the same seed reproduces the recorded numbers."""
    out, results = smoke
    steps = _steps(results)
    ctx = _ctx(out, force=True)
    ctx.records.update(steps)
    by_name = {s.name: s for s in reproduce.STEPS + reproduce.deep_steps(ctx.budget)}
    for name in ("attack_vs_eps", "deep_attack"):
        again = reproduce.run_step(by_name[name], ctx)
        assert again["status"] == "ok", again.get("reason")
        assert again["results"] == steps[name]["results"], name


def _toy_step(calls: list[int], figure: bool = True) -> reproduce.Step:
    def fn(ctx: reproduce.Context) -> reproduce.StepOutput:
        import matplotlib.pyplot as plt

        calls.append(ctx.seed)
        fig, ax = plt.subplots()
        ax.plot([0, 1], [0, ctx.seed])
        return reproduce.StepOutput(results={"value": float(ctx.seed)}, figures={"toy": fig} if figure else {})

    return reproduce.Step("toy", "Toy", fn, ("geometry",))


def _ctx(out: Path, **kw) -> reproduce.Context:
    return reproduce.Context(budget=reproduce.BUDGETS["smoke"], seed=kw.pop("seed", 0), device="cpu", out=out, **kw)


def test_cache_is_invalidated_by_settings_seed_force_and_missing_files(tmp_path: Path) -> None:
    calls: list[int] = []
    step = _toy_step(calls)
    assert reproduce.run_step(step, _ctx(tmp_path))["status"] == "ok"
    assert reproduce.run_step(step, _ctx(tmp_path))["status"] == "cached"
    assert reproduce.run_step(step, _ctx(tmp_path, seed=1))["status"] == "ok"  # other seed
    assert reproduce.run_step(step, _ctx(tmp_path, seed=1, force=True))["status"] == "ok"
    (tmp_path / "figures" / "toy.png").unlink()
    assert reproduce.run_step(step, _ctx(tmp_path, seed=1))["status"] == "ok"  # a figure went missing
    smoke = reproduce.BUDGETS["smoke"]
    unrelated = reproduce.Context(budget=smoke.with_settings(attack={"dim": 5}), seed=1, device="cpu", out=tmp_path)
    assert reproduce.run_step(step, unrelated)["status"] == "cached"  # a setting of another step changed
    other = reproduce.Context(budget=smoke.with_settings(geometry={"eps": 0.25}), seed=1, device="cpu", out=tmp_path)
    assert reproduce.run_step(step, other)["status"] == "ok"  # a setting of the step changed
    assert calls == [0, 1, 1, 1, 1]


def test_cache_key_covers_every_field_of_the_steps_sections() -> None:
    """The key hashes whole settings sections: any field of a step's section changes it, no other section does."""
    import dataclasses

    smoke = reproduce.BUDGETS["smoke"]
    step = reproduce.Step("s", "S", lambda ctx: reproduce.StepOutput(), ("eval", "teaser"))

    def key(budget: reproduce.Budget) -> str:
        return reproduce.step_key(step, reproduce.Context(budget=budget, seed=0, device="cpu", out=Path(".")))

    base = key(smoke)
    for section in ("eval", "teaser"):
        for f in dataclasses.fields(getattr(smoke, section)):
            value = getattr(getattr(smoke, section), f.name)
            changed = (value + 1) if isinstance(value, (int, float)) else (str(value) + "x")
            assert key(smoke.with_settings(**{section: {f.name: changed}})) != base, (section, f.name)
    assert key(smoke.with_settings(ood={"eps": 0.3}, geometry={"eps": 0.1})) == base
    with pytest.raises(AttributeError):
        smoke.settings(("no_such_section",))


def test_missing_inputs_and_crashes_are_reported_not_faked(tmp_path: Path) -> None:
    def missing(ctx):
        raise reproduce.NotAvailable("the model it fine-tunes was not trained")

    def crash(ctx):
        raise RuntimeError("boom")

    def broken_import(ctx):
        import deepcheck.no_such_module  # noqa: F401

    rec = reproduce.run_step(reproduce.Step("m", "M", missing, ("geometry",)), _ctx(tmp_path))
    assert rec["status"] == "not run" and "was not trained" in rec["reason"] and rec["results"] == {}
    rec = reproduce.run_step(reproduce.Step("c", "C", crash, ("geometry",)), _ctx(tmp_path))
    assert rec["status"] == "failed" and "boom" in rec["reason"]
    rec = reproduce.run_step(reproduce.Step("i", "I", broken_import, ("geometry",)), _ctx(tmp_path))
    assert rec["status"] == "failed" and "ModuleNotFoundError" in rec["reason"]  # an ImportError is no "not run"
    assert not any((tmp_path / "steps" / f"{n}.json").exists() for n in "mci")


def test_a_failing_step_makes_the_run_fail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(ctx):
        return reproduce.StepOutput(results={"x": 1.0}, passed=False)

    monkeypatch.setattr(steps_linear, "STEPS", [reproduce.Step("bad", "Bad", failing, ("geometry",))])
    monkeypatch.setattr(steps_deep, "deep_steps", lambda budget: [])
    res = reproduce.run("smoke", tmp_path, progress=False)
    assert res["run"]["exit_status"] == 1 and res["run"]["failed_steps"] == ["bad"]
    assert "| bad | failed |" in (tmp_path / "report.md").read_text()


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="budget"):
        reproduce.run("huge", tmp_path)
    with pytest.raises(TypeError, match="seed"):
        reproduce.run("smoke", tmp_path, seed=True)
    with pytest.raises(ValueError, match="device"):
        reproduce.run("smoke", tmp_path, device="tpu")
    with pytest.raises(TypeError, match="budget"):
        reproduce.run(3, tmp_path)


def test_atomic_json_and_number_format(tmp_path: Path) -> None:
    p = rep.write_json(tmp_path / "a" / "b.json", {"x": np.float64(0.5), "y": np.arange(3), "z": float("nan"),
                                                   "t": torch.tensor([1.5])})
    assert json.loads(p.read_text()) == {"x": 0.5, "y": [0, 1, 2], "z": "nan", "t": [1.5]}
    assert [f.name for f in p.parent.iterdir()] == ["b.json"]  # no temporary file left behind
    assert rep.fmt(1234.5678) == "1235" and rep.fmt(3) == "3" and rep.fmt(1.2e-9) == "1.2e-09"


# ---------------------------------------------------------------------------------------------- computations
def test_geometry_optima_agree_with_an_independent_brute_force() -> None:
    """Exact lowering/raising (R1/R2) vs a dense polar grid of the disk, computed here from scratch."""
    r = linear.compute_geometry(eps=0.5, brute_force=400)
    mean, P = np.asarray(r["mean"]), np.linalg.inv(np.asarray(r["cov"]))
    ang = np.linspace(0, 2 * np.pi, 20000, endpoint=False)
    rad = 0.5 * np.sqrt(np.linspace(0, 1, 400))
    disk = (rad[:, None, None] * np.stack([np.cos(ang[::20]), np.sin(ang[::20])], 1)[None]).reshape(-1, 2)
    circle = 0.5 * np.stack([np.cos(ang), np.sin(ang)], 1)

    def change(D: np.ndarray, v: np.ndarray) -> np.ndarray:
        return D @ P @ v + 0.5 * np.einsum("ni,ij,nj->n", D, P, D)

    for k, x in enumerate(np.asarray(r["points"])):
        v = x - mean
        assert np.isclose(np.linalg.norm(r["delta_decrease"][k]), 0.5, rtol=1e-9)
        assert r["rise"][k] >= change(circle, v).max() - 1e-9
        assert r["rise"][k] <= change(circle, v).max() * (1 + 1e-5) + 1e-9
        assert r["drop"][k] <= change(disk, v).min() + 1e-9
        assert r["drop"][k] >= change(disk, v).min() - 2e-3 * max(1.0, abs(r["drop"][k]))
    assert np.isclose(r["rise"][0], 0.25 / (2 * r["s_min"]), rtol=1e-10)  # the mean: eps^2 / (2 s_min), R4


def test_attacks_never_beat_the_exact_optimum_or_its_certificate(smoke) -> None:
    """PGD is feasible: its NLL rise is at most the exact L2 optimum and the certified L-inf upper bound."""
    r = _steps(smoke[1])["attack_vs_eps"]["results"]
    exact, pgd = np.asarray(r["exact_l2_points"]), np.asarray(r["pgd_l2_points"])
    assert np.all(pgd <= exact * (1 + 1e-8) + 1e-10)
    lo, up = np.asarray(r["linf_lower_points"]), np.asarray(r["linf_upper_points"])
    assert np.all(lo <= up * (1 + 1e-9) + 1e-12)
    assert np.all(np.asarray(r["pgd_linf_points"]) <= up * (1 + 1e-8) + 1e-10)
    assert np.all(exact[1:] > 0) and np.all(np.diff(exact, axis=0) >= -1e-12)  # grows with eps


def test_waterfilling_matches_designs_worked_example() -> None:
    w = linear.compute_waterfilling(0.5, seed=0)["worked"]
    assert w["tau"] == pytest.approx(1.125, rel=1e-10)
    assert np.allclose(w["eigvals"], [1.125, 1.125, 4.0], rtol=1e-10)
    assert w["kl"] == pytest.approx(0.36649, abs=5e-6)
    assert w["rise_robust"] == pytest.approx(0.4444, abs=5e-5)


def test_figures_only_draw() -> None:
    """``deepcheck.figures`` holds drawing only: importing it loads neither torch nor linflow nor the pipeline."""
    import subprocess
    import sys

    code = ("import sys, deepcheck.figures as f; "
            "print(sorted(m for m in ('torch', 'linflow', 'deepcheck.reproduce') if m in sys.modules)); "
            "print(sorted(n for n in dir(f) if not n.startswith('_')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0] == "[]"
    assert "plots" in out[1] and not any(m in out[1] for m in ("'linear'", "'deep'", "'availability'"))


# ---------------------------------------------------------------------------------------------- full-size steps
class _ImageLinear(torch.nn.Module):
    """deepcheck's torch LinearFlow on images (flattened): a deep-flow stand-in with exact linflow answers."""

    def __init__(self, flow: object, shape: tuple[int, int, int], n_bins: int) -> None:
        super().__init__()
        from deepcheck.flows.linear import LinearFlow as TorchLinear

        self.inner = TorchLinear.from_linflow(flow, n_bins=n_bins)
        self.shape, self.n_bins = shape, n_bins

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner.log_prob(x.reshape(len(x), -1))

    def bpd(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner.bpd(x.reshape(len(x), -1))


def _mid_images(n: int, seed: int, n_bins: int = 17) -> torch.Tensor:
    """Mid-bin images (1, 3, 3) with levels 5..11 of 17: small perturbations stay inside [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(5, 12, (n, 1, 3, 3), generator=g).double() + 0.5) / n_bins


def test_theory_vs_deep_on_a_linear_flow_reproduces_linflow_exactly() -> None:
    """With the 'deep' model equal to the fitted linear flow, transferring the R1 optimum gives exactly the
    linear prediction (pixel mapping and bits/dim conversion), PGD reaches it, and nothing exceeds the optima."""
    import linflow
    from deepcheck.reproduce import compute_theory as theory

    x_train, x_test = _mid_images(300, 0), _mid_images(20, 1)
    flow = theory.fit_linear(x_train, theory.resolve_reg(None, 17))
    assert theory.resolve_reg(None, 17) == pytest.approx(1 / (12 * 17**2))
    net = _ImageLinear(flow, (1, 3, 3), 17)
    b = reproduce.BUDGETS["smoke"].with_settings(theory={"eps": (0.03, 0.06), "n": 20, "pgd_steps": 100,
                                                         "universal_steps": 100})
    res = theory.theory_vs_deep({"lin / mle": net}, x_test, flow, b, seed=0)
    r = res["models"]["lin / mle"]
    X = x_test.reshape(20, -1).numpy()
    for i, e in enumerate(res["eps"]):
        assert (x_test.min() - e > 0) and (x_test.max() + e < 1)  # the clamp never binds here
        pred = float(np.mean(linflow.optimal_nll_change(flow, X, e))) / (9 * np.log(2))
        assert res["predicted_r1"][i] == pytest.approx(pred, rel=1e-12)
        assert r["transfer_r1"][i] == pytest.approx(pred, rel=1e-9)
        assert pred * 0.99 <= r["pgd"][i] <= pred * (1 + 1e-9)
        assert r["cos_pgd_r1"][i] > 0.99
        assert r["transfer_r4"][i] <= res["predicted_r4"][i] * (1 + 1e-9)
        assert res["predicted_r4"][i] * 0.95 <= r["universal"][i] <= res["predicted_r4"][i] * (1 + 1e-9)
        assert 0.0 <= r["cos_universal_umin"][i] <= 1.0 + 1e-12


def test_linear_tradeoff_curve_starts_at_the_ml_fit_and_trades_accuracy_for_robustness() -> None:
    """eps_train = 0 is the ML fit (no accuracy loss) whose universal rise is eps_a^2 / (2 s_min) (R4, with s_min
    from an independent eigendecomposition); training lowers the rises and raises the clean bits/dim (R7)."""
    from deepcheck.reproduce import compute_tradeoff_deep as tdeep

    x_train, x_test = _mid_images(300, 0), _mid_images(20, 1)
    b = reproduce.BUDGETS["smoke"].with_settings(deep_tradeoff={"eps_attack": 0.05,
                                                                "linear_eps_train": (0.0, 0.02, 0.05, 0.1)})
    lin = tdeep.linear_curve(x_train, x_test, 17, b)
    X = x_train.reshape(300, -1).numpy()
    s_min = np.linalg.eigvalsh(np.cov(X.T, bias=True) + np.eye(9) / (12 * 17**2))[0]
    assert lin["loss"][0] == 0.0 and lin["loss_universal"][0] == pytest.approx(0.0, abs=1e-12)
    assert lin["rise_universal"][0] == pytest.approx(0.05**2 / (2 * s_min) / (9 * np.log(2)), rel=1e-8)
    assert np.all(np.diff(lin["rise_universal"]) < 0) and np.all(np.diff(lin["loss_universal"]) > 0)
    assert np.all(np.array(lin["attacked"]) > np.array(lin["clean"]))


def test_growth_threshold_and_strength_helpers() -> None:
    from deepcheck.reproduce import compute_phenomena as phen

    assert phen.first_eps([0.0, 0.1, 0.2], [False, False, True]) == 0.2
    assert phen.first_eps([0.0, 0.1], [False, False]) is None
    assert phen.strength_mask([0.0, 1, 2, 3, 4, 5], 2) == [False, True, False, True, False, True]
    assert phen.strength_mask([0.0, 1, 2], 1) == [False, True, True]
    b = reproduce.BUDGETS["full"]
    grid = phen.eps_grid(b, "linf")
    assert grid[0] == 0.0 and b.teaser.eps in grid and grid == sorted(grid)


def test_smoke_new_steps_are_consistent(smoke) -> None:
    """The full-size steps: strengths are fractions, AUROC in [0, 1], thresholds on the grid, dequantised
    bits/dim above mid-bin (the mid-bin value misses the within-bin variance) and the trade-off's MLE point."""
    steps = _steps(smoke[1])
    for norm, r in steps["deep_attack"]["results"]["norms"].items():
        for label, fr in r["strength"].items():
            for s in fr:
                if s is not None:
                    assert 0.0 < s["fraction"] <= 1.0 + 1e-12, (norm, label, s)
        for e in r["growth_eps"].values():
            assert e is None or e in r["eps"]
    for res in steps["ood_curve"]["results"]["sets"].values():
        for m in res["models"].values():
            assert all(0.0 <= a <= 1.0 for a in m["auroc"]) and len(m["median_bpd"]) == len(res["eps"])
            t = m["threshold_eps"]
            assert t is None or m["median_bpd"][res["eps"].index(t)] <= m["in_median"]
    for d in steps["dequant"]["results"]["models"].values():
        assert d["bound"] <= d["dequantized"] and d["k"] == 2
    pts = steps["deep_tradeoff"]["results"]["deep"]
    assert pts[0]["lambda"] == 0.0 and pts[0]["loss"] == 0.0 and len(pts) == 2 and pts[1]["lambda"] == 0.5
