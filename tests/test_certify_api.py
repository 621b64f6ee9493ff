"""The public surface of ``deepcheck.certify``: ``nll_bounds`` (argument checks, the witness, units,
determinism, float32 models) and the ``certify`` command (``run`` called directly)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from deepcheck.certify import METHODS, nll_bounds, nll_upper_bound
from deepcheck.checkpoint import save_checkpoint
from deepcheck.cli import main as cli_main
from deepcheck.flows import LinearFlow, build
from tests.models import perturb_parameters


def tiny_glow(dtype: torch.dtype = torch.float64, n_bins: int | None = 17) -> torch.nn.Module:
    model = build("glow", "tiny", (1, 8, 8), n_bins=n_bins, seed=0, hidden=4, steps=1).to(dtype)
    with torch.no_grad():
        model.log_prob(torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=dtype))
    return perturb_parameters(model, scale=0.05, seed=1).eval()


def images(n: int = 3, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    x = torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(2), dtype=dtype)
    return torch.where(x < 0.3, torch.zeros_like(x), x)


@pytest.mark.parametrize("kwargs, err, match", [
    ({"eps": -0.1}, ValueError, "eps"),
    ({"eps": float("nan")}, ValueError, "eps"),
    ({"eps": "0.1"}, ValueError, "eps"),
    ({"norm": "l1"}, ValueError, "norm"),
    ({"method": "crown"}, ValueError, "method"),
    ({"clamp": (1.0, 0.0)}, ValueError, "clamp"),
    ({"clamp": "box"}, TypeError, "clamp"),
])
def test_bad_arguments_are_named(kwargs, err, match):
    args = {"eps": 0.01, **kwargs}
    with pytest.raises(err, match=match):
        nll_bounds(tiny_glow(), images(), **args)


def test_bad_model_and_inputs():
    with pytest.raises(TypeError, match="model must be one of"):
        nll_bounds(torch.nn.Linear(2, 2), torch.zeros(1, 2), 0.1)
    with pytest.raises(ValueError, match="shape"):
        nll_bounds(tiny_glow(), torch.zeros(2, 1, 4, 4, dtype=torch.float64), 0.1)
    with pytest.raises(TypeError, match="floating-point"):
        nll_bounds(tiny_glow(), torch.zeros(2, 1, 8, 8, dtype=torch.long), 0.1)
    with pytest.raises(ValueError, match="outside the clamp box"):
        nll_bounds(tiny_glow(), images() + 2.0, 0.1)
    fresh = build("glow", "tiny", (1, 8, 8), seed=0, hidden=4, steps=1).double()
    with pytest.raises(ValueError, match="initialized=False"):
        nll_bounds(fresh, images(), 0.1)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_witness_is_feasible_and_lower_is_its_nll(norm):
    model, x, eps = tiny_glow(), images(), 0.03
    b = nll_bounds(model, x, eps, norm=norm, method="zonotope", steps=20, restarts=1)
    size = b.delta.abs().flatten(1).max(1).values if norm == "linf" else b.delta.flatten(1).norm(dim=1)
    assert bool(torch.all(size <= eps * (1 + 1e-12)))
    assert bool(torch.all(x + b.delta >= 0)) and bool(torch.all(x + b.delta <= 1))
    with torch.no_grad():
        torch.testing.assert_close(b.lower, -model.log_prob(x + b.delta), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(b.lower_bpd, model.bpd(x + b.delta), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(b.clean_bpd, model.bpd(x), rtol=1e-12, atol=1e-12)
    assert bool(torch.all(b.clean <= b.lower)) and bool(torch.all(b.lower <= b.upper))
    s = b.summary()
    assert s["n"] == 3 and math.isclose(s["ratio_bpd"], s["upper_bpd"] / s["lower_bpd"])


def test_bits_per_dim_without_n_bins_and_eps_zero():
    model = tiny_glow(n_bins=None)
    b = nll_bounds(model, images(), 0.0, method="ibp")
    assert bool(torch.all(b.delta == 0)) and bool(torch.all(b.lower == b.clean))
    torch.testing.assert_close(b.upper_bpd, b.upper / (64 * math.log(2)))


def test_same_seed_same_numbers_and_float32_models():
    x = images()
    a = nll_bounds(tiny_glow(), x, 0.02, method="symbolic", steps=10, seed=3)
    b = nll_bounds(tiny_glow(), x, 0.02, method="symbolic", steps=10, seed=3)
    assert torch.equal(a.upper, b.upper) and torch.equal(a.lower, b.lower) and torch.equal(a.delta, b.delta)
    m32 = tiny_glow(torch.float32)
    c = nll_bounds(m32, x.float(), 0.02, method="zonotope", steps=10)
    assert c.upper.dtype == torch.float64 and bool(torch.all(c.lower <= c.upper))
    assert bool(torch.all(nll_upper_bound(m32, x.float(), 0.02, method="ibp") >= c.lower))


def test_linear_flow_is_covered():
    model = LinearFlow(3)
    with torch.no_grad():
        model.A.copy_(torch.tensor([[2.0, 0.0, 0.0], [0.5, 1.0, 0.0], [0.0, -0.3, 0.5]], dtype=torch.float64))
    b = nll_bounds(model, torch.zeros(2, 3, dtype=torch.float64), 0.1, clamp=None, method="symbolic")
    assert bool(torch.all(b.lower <= b.upper))


def _argv(tmp_path, checkpoint, **kw):
    argv = ["certify", "--checkpoint", str(checkpoint), "--n", "2", "--steps", "5", "--restarts", "0",
            "--eps", "0.004", "0.008", "--out", str(tmp_path / "cert.json")]
    for k, v in kw.items():
        argv += [f"--{k}", str(v)]
    return argv


def test_command_line_method_names_are_the_library_s():
    from deepcheck.commands.certify import METHODS as CLI_METHODS

    assert CLI_METHODS == METHODS


@pytest.mark.parametrize("method", METHODS)
def test_cli_run_writes_the_table(tmp_path, capsys, method):
    ck = save_checkpoint(tmp_path / "run" / "checkpoint.pt", tiny_glow(torch.float32))
    assert cli_main(_argv(tmp_path, ck.parent, method=method)) == 0
    out = json.loads((tmp_path / "cert.json").read_text())
    assert [r["eps"] for r in out["results"]] == [0.004, 0.008]
    for r in out["results"]:
        assert r["method"] == method and r["n"] == 2
        assert all(lo <= up for lo, up in zip(r["per_sample"]["lower"], r["per_sample"]["upper"]))
    assert "excess ratio" in capsys.readouterr().out


def test_cli_refuses_vector_models_and_empty_sets(tmp_path, capsys):
    ck = save_checkpoint(tmp_path / "lin.pt", LinearFlow(4))
    assert cli_main(_argv(tmp_path, ck)) == 2
    assert "image flow" in capsys.readouterr().err
    assert cli_main(_argv(tmp_path, ck, n=0)) == 2
    assert "must be an integer >= 1" in capsys.readouterr().err
