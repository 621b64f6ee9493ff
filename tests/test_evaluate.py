"""deepcheck.evaluate: the rank AUROC against a brute-force pair count, bits/dim under attack on a tiny GLOW,
the result dataclass and JSON, and the ``attack`` / ``evaluate`` commands end to end on a checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from deepcheck.attacks import pgd
from deepcheck.evaluate import EvalResult, auroc, bpd_against_eps, bpd_of, evaluate_model, ood_attack

from .models import randomised_tiny_glow


@pytest.fixture(scope="module")
def glow():
    return randomised_tiny_glow(n_bins=17)


@pytest.fixture(scope="module")
def digits():
    from deepcheck.data import load

    return load("digits", "test", limit=12)


# ------------------------------------------------------------------------------------------- AUROC
def _pairs(a, b):
    a, b = np.asarray(a)[:, None], np.asarray(b)[None, :]
    return float(np.mean((a > b) + 0.5 * (a == b)))


def test_auroc_equals_the_pair_count_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(50):
        a = rng.integers(0, 6, size=rng.integers(1, 30)).astype(float)  # many ties
        b = rng.integers(0, 6, size=rng.integers(1, 30)).astype(float)
        assert auroc(a, b) == pytest.approx(_pairs(a, b), abs=1e-12)
    a, b = rng.standard_normal(500) + 1, rng.standard_normal(400)
    assert auroc(a, b) == pytest.approx(_pairs(a, b), abs=1e-12)


def test_auroc_extremes_and_errors():
    assert auroc([2, 3], [0, 1]) == 1.0 and auroc([0, 1], [2, 3]) == 0.0 and auroc([1, 1], [1]) == 0.5
    with pytest.raises(ValueError, match="scores_in"):
        auroc([], [1.0])
    with pytest.raises(ValueError, match="scores_out"):
        auroc([1.0], [np.nan])


# ------------------------------------------------------------------------------------------- bits/dim
def test_bpd_against_eps_on_glow(glow, digits):
    eps = [0.0, 2 / 255, 8 / 255]
    table = bpd_against_eps(glow, digits, eps, steps=5, seed=1)
    assert table.shape == (3, len(digits))
    x = digits.pixels(torch.float32)
    np.testing.assert_allclose(table[0], glow.bpd(x).detach().double().numpy(), rtol=1e-6)
    assert np.all(np.diff(table.mean(axis=1)) > 0)
    # the same numbers as calling pgd directly (no hidden randomness), and deterministic
    direct = bpd_of(glow, pgd(glow, x, 8 / 255, steps=5, restarts=0, seed=1))
    np.testing.assert_allclose(table[2], direct, rtol=1e-6)
    np.testing.assert_array_equal(table, bpd_against_eps(glow, digits, eps, steps=5, seed=1))


def test_evaluate_model_ood_and_json(glow, digits, tmp_path):
    noise = torch.rand(10, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    r = evaluate_model(glow, digits, [0.0, 4 / 255], ood_data={"noise": noise}, ood_eps=8 / 255, steps=5,
                       label="glow", data_name="digits/test")
    o = r.ood["noise"]
    before, after = ood_attack(glow, noise, 8 / 255, steps=5)
    assert o["bpd_clean"] == pytest.approx(before.mean()) and o["bpd_attacked"] == pytest.approx(after.mean())
    assert o["bpd_attacked"] < o["bpd_clean"]
    clean_in = bpd_of(glow, digits.pixels())
    assert o["auroc_clean"] == pytest.approx(_pairs(-clean_in, -before))
    assert o["auroc_attacked"] == pytest.approx(_pairs(-clean_in, -after))
    assert o["auroc_attacked"] <= o["auroc_clean"]
    saved = json.loads(r.save(tmp_path / "r.json").read_text())
    assert EvalResult(**saved) == r
    with pytest.raises(ValueError, match="eps"):
        evaluate_model(glow, digits, [-1.0])
    with pytest.raises(ValueError, match="ood_eps"):
        evaluate_model(glow, digits, [0.0], ood_data={"noise": noise})


# ------------------------------------------------------------------------------------------- CLI
def test_attack_and_evaluate_commands(glow, tmp_path, capsys):
    from deepcheck.checkpoint import save_checkpoint
    from deepcheck.cli import main

    save_checkpoint(tmp_path / "run" / "checkpoint.pt", glow)
    out = tmp_path / "eval.json"
    rc = main(["evaluate", "--checkpoint", str(tmp_path / "run"), "--data", "digits", "--limit", "6", "--eps", "0",
               "0.02", "--steps", "3", "--ood-eps", "0.03", "--out", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())["results"][0]
    assert res["eps"] == [0.0, 0.02] and res["n_in"] == 6 and set(res["ood"]) == {"uniform-noise"}
    assert res["bpd"][1] > res["bpd"][0]
    assert "AUROC" in capsys.readouterr().out
    rc = main(["attack", "--checkpoint", str(tmp_path / "run" / "checkpoint.pt"), "--data", "digits", "--limit", "4",
               "--eps", "0", "0.05", "--norm", "l2", "--steps", "2", "--restarts", "0"])
    assert rc == 0 and "eps=0.05" in capsys.readouterr().out
