"""deepcheck.train: objectives against closed-form Gaussian maximum-likelihood fits, the adversary protocol
(eval mode, no parameter gradients, step in train mode), the non-finite guard, warm-up, exact resuming,
a real flow on digits, and the command line."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from deepcheck import data as data_mod
from deepcheck.checkpoint import load_checkpoint
from deepcheck.flows import LinearFlow
from deepcheck.train import EpochStats, evaluate_bpd, train


class PixelFlow(nn.Module):
    """A test double that follows the deepcheck flow conventions: ``z = (y - 0.5 - m) * exp(-s)`` per pixel,
    an ActNorm-style ``initialized`` buffer (``m`` set from the first train-mode batch), and optional fault
    injection (``nan_calls``: train-mode forward calls whose log-density is NaN; ``inf_grad_calls``: calls whose
    loss is finite but whose gradient is not). Records the mode of every call."""

    def __init__(self, shape=(1, 8, 8), n_bins=17):
        super().__init__()
        self.input_shape = tuple(shape)
        self.n_bins = n_bins
        self.m = nn.Parameter(torch.zeros(shape, dtype=torch.float64))
        self.s = nn.Parameter(torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("initialized", torch.tensor(0, dtype=torch.uint8))
        self.config = {"model": "pixel-test-double"}
        self.calls = 0
        self.nan_calls: set[int] = set()
        self.inf_grad_calls: set[int] = set()
        self.log: list[tuple[bool, bool, bool]] = []  # (training, grad enabled, any param requires grad)

    def forward(self, x):
        if self.training and not bool(self.initialized):
            with torch.no_grad():
                self.m.copy_(x.mean(0) - 0.5)
                self.initialized.fill_(1)
                self.m_after_init = self.m.detach().clone()
        z = (x - 0.5 - self.m) * torch.exp(-self.s)
        logdet = -self.s.sum().expand(x.shape[0])
        return z, logdet

    def inverse(self, z):
        return z * torch.exp(self.s) + self.m + 0.5

    def log_prob(self, x):
        self.log.append((self.training, torch.is_grad_enabled(), any(p.requires_grad for p in self.parameters())))
        z, logdet = self(x)
        lp = -0.5 * z.pow(2).flatten(1).sum(1) - 0.5 * math.log(2 * math.pi) * z[0].numel() + logdet
        if self.training and torch.is_grad_enabled():
            self.calls += 1
            if self.calls in self.nan_calls:
                lp = lp * float("nan")
            if self.calls in self.inf_grad_calls:
                zero = self.s.flatten()[0] - self.s.flatten()[0].detach()
                lp = lp + 0.0 * torch.sqrt(zero)  # value +0, d sqrt(u)/du at 0 is inf: the gradient is NaN
        return lp

    def bpd(self, x):
        d = math.prod(self.input_shape)
        return (-self.log_prob(x) + d * math.log(self.n_bins)) / (d * math.log(2))

    def sample(self, n, temperature=1.0, generator=None):
        return self.inverse(temperature * torch.randn((n, *self.input_shape), generator=generator,
                                                      dtype=torch.float64))


def gaussian_data(n=256, d=2, seed=0):
    rng = np.random.default_rng(seed)
    A = np.array([[1.5, 0.0], [0.7, 0.4]])[:d, :d]
    return torch.from_numpy(rng.standard_normal((n, d)) @ A.T + np.array([1.0, -2.0])[:d])


def fit_gaussian(model, x, **kw):
    """Full-batch Adam until the fit is converged (a convex-in-distribution problem with a unique optimum)."""
    kw = {"epochs": 400, "batch_size": len(x), "lr": 0.05, "optimizer": "adam", "warmup_steps": 0,
          "progress": False, **kw}
    return train(model, x, **kw)


def moments(x):
    x = x.numpy()
    m = x.mean(0)
    return m, (x - m).T @ (x - m) / len(x)


# ------------------------------------------------------------------------------------------- objectives
def test_mle_on_gaussian_data_reaches_the_closed_form_fit():
    x = gaussian_data()
    model = LinearFlow(2)
    res = fit_gaussian(model, x)
    m, S = moments(x)  # the Gaussian maximum-likelihood estimate, computed with numpy
    np.testing.assert_allclose(model.mean.detach().numpy(), m, atol=1e-5)
    np.testing.assert_allclose(model.cov.detach().numpy(), S, atol=1e-5)
    # the loss at the fit: NLL / d = 1/2 (1 + log 2 pi) + 1/(2d) log det S nats, in bits/dim (d = 2)
    ref = (0.5 * (1 + math.log(2 * math.pi)) + 0.25 * np.linalg.slogdet(S)[1]) / math.log(2)
    assert res.train_loss[-1] == pytest.approx(ref, abs=1e-4)
    assert res.steps == 400 and res.skipped_steps == 0


def test_adversarial_mode_with_a_shift_adversary_fits_the_shifted_data():
    # adversary(x) = x + c makes the adversarial objective the MLE of the shifted data: mean m + c, covariance S
    x = gaussian_data(seed=1)
    c = torch.tensor([0.3, -0.2], dtype=torch.float64)
    model = LinearFlow(2)
    fit_gaussian(model, x, mode="adversarial", adversary=lambda mod, xb: xb + c)
    m, S = moments(x)
    np.testing.assert_allclose(model.mean.detach().numpy(), m + c.numpy(), atol=1e-5)
    np.testing.assert_allclose(model.cov.detach().numpy(), S, atol=1e-5)


@pytest.mark.parametrize("lam", [0.25, 0.5])
def test_hybrid_mode_fits_the_lambda_mixture(lam):
    # (1 - lam) NLL(x) + lam NLL(x + c) is the NLL of the mixture {x: 1 - lam, x + c: lam}; its Gaussian MLE has
    # mean m + lam c and covariance S + lam (1 - lam) c c^T
    x = gaussian_data(seed=2)
    c = torch.tensor([0.8, 0.5], dtype=torch.float64)
    model = LinearFlow(2)
    fit_gaussian(model, x, mode="hybrid", hybrid_lambda=lam, adversary=lambda mod, xb: xb + c)
    m, S = moments(x)
    cc = np.outer(c.numpy(), c.numpy())
    np.testing.assert_allclose(model.mean.detach().numpy(), m + lam * c.numpy(), atol=1e-5)
    np.testing.assert_allclose(model.cov.detach().numpy(), S + lam * (1 - lam) * cc, atol=1e-5)


def test_adversary_runs_in_eval_mode_without_parameter_grads_and_the_step_in_train_mode():
    seen = []

    def adversary(model, x):
        seen.append((model.training, any(p.requires_grad for p in model.parameters()), x.requires_grad))
        return x.flip(0)

    model = PixelFlow()
    d = data_mod.load("digits", "val", limit=40)
    train(model, d, mode="hybrid", adversary=adversary, epochs=1, batch_size=20, progress=False)
    assert seen == [(False, False, False)] * 2
    # after the adversary: train mode, grads on, parameters trainable, for every loss evaluation
    steps = [entry for entry in model.log if entry[1]]
    assert steps and all(entry == (True, True, True) for entry in steps)
    assert all(p.requires_grad for p in model.parameters())
    # the data-dependent init happened on the first clean batch, in train mode, before the first adversary call
    assert bool(model.initialized)
    assert model.log[0] == (True, False, True)


def test_default_pgd_adversary_raises_the_nll_it_trains_on():
    from deepcheck.attacks import pgd

    x = gaussian_data(n=64, seed=3)
    model = LinearFlow(2)
    res = train(model, x, val_data=x, mode="adversarial", attack_eps=0.3, attack_norm="l2", attack_steps=5,
                epochs=2, batch_size=32, warmup_steps=0, progress=False)
    assert res.history[-1].val_adv_bpd > res.history[-1].val_bpd
    # the recorded adversarial bits/dim equals an independent call of pgd with the same settings (any seed:
    # pgd starts at delta = 0 without restarts, so it is deterministic)
    x_adv = pgd(model, x, 0.3, norm="l2", likelihood="decrease", steps=5, restarts=0, clamp=None, seed=123)
    assert res.history[-1].val_adv_bpd == pytest.approx(float(model.bpd(x_adv).mean().detach()), rel=1e-12)
    assert evaluate_bpd(model, x) == pytest.approx(res.history[-1].val_bpd, rel=1e-12)


def test_hybrid_with_the_default_adversary_on_images_clamps_to_the_pixel_box():
    from deepcheck.attacks import pgd

    d = data_mod.load("digits", "train", limit=64)
    va = data_mod.load("digits", "val", limit=32)
    model = PixelFlow()
    res = train(model, d, val_data=va, mode="hybrid", attack_eps=0.05, attack_steps=3, epochs=1, batch_size=32,
                warmup_steps=0, progress=False)
    h = res.history[-1]
    assert h.val_adv_bpd > h.val_bpd and res.skipped_steps == 0
    model.eval()
    x = va.pixels(torch.float64)
    x_adv = pgd(model, x, 0.05, norm="linf", likelihood="decrease", steps=3, restarts=0, clamp=(0.0, 1.0))
    assert h.val_adv_bpd == pytest.approx(float(model.bpd(x_adv).mean().detach()), rel=1e-12)


# ------------------------------------------------------------------------------------------- guard, warm-up
def test_non_finite_steps_are_skipped_and_counted():
    d = data_mod.load("digits", "val", limit=60)
    ref = PixelFlow()
    train(ref, d, epochs=1, batch_size=10, progress=False, seed=4)  # 6 steps, no faults
    model = PixelFlow()
    model.nan_calls = {2, 5}
    model.inf_grad_calls = {3}
    res = train(model, d, epochs=2, batch_size=10, progress=False, seed=4)
    assert res.skipped_steps == 3 and res.history[0].skipped == 3 and res.history[1].skipped == 0
    assert res.steps == 12
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert math.isfinite(res.history[0].train_loss)
    # a skipped step changes nothing: a run that skips every step keeps the parameters it had after the init
    frozen = PixelFlow()
    frozen.nan_calls = set(range(1, 7))
    res = train(frozen, d, epochs=1, batch_size=10, progress=False, seed=4)
    assert res.skipped_steps == 6 and math.isnan(res.train_loss[0])
    assert torch.equal(frozen.s, torch.zeros_like(frozen.s))
    assert torch.equal(frozen.m, frozen.m_after_init)
    assert not torch.equal(ref.s, torch.zeros_like(ref.s))


def test_warmup_is_linear_then_constant():
    x = gaussian_data(n=40)
    res = train(LinearFlow(2), x, epochs=3, batch_size=10, lr=0.01, warmup_steps=6, progress=False)
    assert [h.lr for h in res.history] == pytest.approx([0.01 * 4 / 6, 0.01, 0.01])
    assert [h.steps for h in res.history] == [4, 4, 4]


# ------------------------------------------------------------------------------------------- resume
def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("mode", ["mle", "hybrid"])
def test_resume_reproduces_the_uninterrupted_run_bitwise(tmp_path, mode):
    d = data_mod.load("digits", "train", limit=96)
    val = data_mod.load("digits", "val", limit=32)

    def fgsm(model, x):  # a deterministic adversary that uses the model's input gradient
        x = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(-model.log_prob(x).sum(), x)
        return (x + 0.02 * g.sign()).clamp(0, 1).detach()

    kw = {"val_data": val, "mode": mode, "batch_size": 16, "lr": 0.01, "warmup_steps": 5, "progress": False,
          "seed": 7, "adversary": fgsm}
    full = PixelFlow()
    res_full = train(full, d, epochs=4, checkpoint=tmp_path / "full.pt", **kw)
    part = PixelFlow()
    train(part, d, epochs=2, checkpoint=tmp_path / "part.pt", **kw)
    resumed = PixelFlow()  # a fresh process would build a fresh model
    res = train(resumed, d, epochs=4, checkpoint=tmp_path / "part.pt", **kw)
    assert res.resumed_from == 2
    for k, v in _state(full).items():
        assert torch.equal(resumed.state_dict()[k], v), k
    for a, b in zip(res.history, res_full.history):
        assert (a.epoch, a.train_loss, a.val_bpd, a.val_adv_bpd, a.steps, a.lr) == \
               (b.epoch, b.train_loss, b.val_bpd, b.val_adv_bpd, b.steps, b.lr)
    assert res.steps == res_full.steps == 24
    # both checkpoints now hold the same optimizer state
    a = load_checkpoint(tmp_path / "full.pt", PixelFlow()).optimizer_state
    b = load_checkpoint(tmp_path / "part.pt", PixelFlow()).optimizer_state
    for key, st in a["state"].items():
        for name, t in st.items():
            assert torch.equal(torch.as_tensor(t), torch.as_tensor(b["state"][key][name])), (key, name)
    # a finished run resumes to nothing; changed settings are refused; resume=False starts over
    again = train(PixelFlow(), d, epochs=4, checkpoint=tmp_path / "part.pt", **kw)
    assert again.resumed_from == 4 and len(again.history) == 4
    with pytest.raises(ValueError, match="seed=7"):
        train(PixelFlow(), d, epochs=5, checkpoint=tmp_path / "part.pt", **{**kw, "seed": 8})
    if mode == "mle":  # attack settings do not matter to a maximum-likelihood run
        assert len(train(PixelFlow(), d, epochs=4, checkpoint=tmp_path / "part.pt", attack_eps=0.5,
                         **kw).history) == 4
    else:
        with pytest.raises(ValueError, match="attack_eps"):
            train(PixelFlow(), d, epochs=4, checkpoint=tmp_path / "part.pt", attack_eps=0.5, **kw)
    fresh = train(PixelFlow(), d, epochs=1, checkpoint=tmp_path / "part.pt", resume=False, **kw)
    assert fresh.resumed_from is None and len(fresh.history) == 1


def test_same_seed_same_numbers_other_seed_other_numbers():
    d = data_mod.load("digits", "val", limit=48)
    runs = [train(PixelFlow(), d, epochs=2, batch_size=16, progress=False, seed=s).train_loss for s in (1, 1, 2)]
    assert runs[0] == runs[1] and runs[0] != runs[2]


# ------------------------------------------------------------------------------------------- a real flow
def test_tiny_glow_on_digits_lowers_validation_bits_per_dim():
    from deepcheck.flows import build

    tr = data_mod.load("digits", "train", limit=640)
    va = data_mod.load("digits", "val")
    model = build("glow", "tiny", tr.shape, n_bins=tr.n_bins, seed=0)
    before = evaluate_bpd(model, va)
    res = train(model, tr, val_data=va, epochs=3, batch_size=32, lr=3e-3, warmup_steps=10, progress=False)
    after = res.history[-1].val_bpd
    # a fresh Glow is close to N(0, I) on y - 0.5: ~4.3 bits/dim; 60 Adamax steps bring it below ~3.5
    assert after < before - 0.5, (before, after)
    assert res.val_bpd == sorted(res.val_bpd, reverse=True)  # monotone over these 3 epochs
    # the recorded value is the mean bits/dim of the mid-bin pixels, computed here from the levels and log_prob
    # alone: bpd = (-log p(y) + D log n_bins) / (D ln 2), y = (k + 0.5) / n_bins
    model.eval()
    y = (va.levels.double() + 0.5) / va.n_bins
    with torch.no_grad():
        nats = -model.log_prob(y.to(torch.float32)).double() + va.dim * math.log(va.n_bins)
    assert after == pytest.approx(float((nats / (va.dim * math.log(2.0))).mean()), rel=1e-5)
    # bits/dim bounds -log2 P(k) / D >= 0 only averaged over dequantisation noise (deepcheck.data): a 16-draw
    # estimate of that average is positive (it sits near the mid-bin value, far from 0)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        deq = [float(model.bpd(va.dequantize(gen, torch.float32)).double().mean()) for _ in range(16)]
    assert min(deq) > 0 and abs(np.mean(deq) - after) < 0.5, (deq, after)


# ------------------------------------------------------------------------------------------- bad input, CLI
@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"mode": "robust"}, ValueError, "mode"),
        ({"optimizer": "sgd"}, ValueError, "optimizer"),
        ({"epochs": -1}, ValueError, "epochs"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"batch_size": 2.0}, TypeError, "batch_size"),
        ({"lr": 0.0}, ValueError, "lr"),
        ({"hybrid_lambda": 1.5}, ValueError, "hybrid_lambda"),
        ({"clip_grad": -1.0}, ValueError, "clip_grad"),
        ({"attack_eps": float("nan")}, ValueError, "attack_eps"),
        ({"seed": -1}, ValueError, "seed"),
        ({"attack_norm": "l1"}, ValueError, "attack_norm"),
        ({"adversary": 3}, TypeError, "adversary"),
    ],
)
def test_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        train(LinearFlow(2), gaussian_data(n=8), progress=False, **kwargs)


def test_bad_data():
    with pytest.raises(ValueError, match="n_bins"):
        train(PixelFlow(n_bins=256), data_mod.load("digits", "val", limit=4), progress=False)
    with pytest.raises(ValueError, match="shape"):
        train(LinearFlow(3), gaussian_data(n=8), progress=False)
    with pytest.raises(TypeError, match="data"):
        train(LinearFlow(2), np.zeros((8, 2)), progress=False)
    with pytest.raises(ValueError, match="val_data"):
        train(LinearFlow(2), gaussian_data(n=8), val_data=torch.full((4, 2), float("nan"), dtype=torch.float64),
              progress=False)
    with pytest.raises(ValueError, match="adversary must return"):
        train(LinearFlow(2), gaussian_data(n=8), mode="adversarial", adversary=lambda m, x: x[:1], progress=False)


def test_cli_trains_and_resumes(tmp_path, capsys):
    from deepcheck.cli import main

    argv = ["train", "--model", "glow", "--config", "tiny", "--data", "digits", "--limit", "64", "--epochs", "1",
            "--batch-size", "32", "--out", str(tmp_path / "run"), "--no-progress"]
    assert main(argv) == 0
    hist = json.loads((tmp_path / "run" / "history.json").read_text())
    assert len(hist["history"]) == 1 and hist["model_config"]["model"] == "glow"
    assert main([*argv[:10], "2", *argv[11:]]) == 0
    hist = json.loads((tmp_path / "run" / "history.json").read_text())
    assert hist["resumed_from"] == 1 and [h["epoch"] for h in hist["history"]] == [1, 2]
    ck = load_checkpoint(tmp_path / "run" / "checkpoint.pt")  # rebuilt from the saved config
    assert ck.state["epoch"] == 2 and type(ck.model).__name__ == "Glow"
    assert "wrote" in capsys.readouterr().out
    assert isinstance(EpochStats(**hist["history"][0]), EpochStats)
    hybrid = ["train", "--model", "realnvp", "--data", "digits", "--limit", "32", "--val-limit", "16", "--epochs", "1",
              "--mode", "hybrid", "--attack-steps", "2", "--attack-eps", "0.05", "--out", str(tmp_path / "h"),
              "--no-progress"]
    assert main(hybrid) == 0
    hist = json.loads((tmp_path / "h" / "history.json").read_text())["history"]
    assert hist[0]["val_adv_bpd"] > hist[0]["val_bpd"]


def test_config_and_keywords_give_the_same_run():
    from deepcheck.train import TrainConfig

    d = data_mod.load("digits", "val", limit=48)
    kw = dict(epochs=2, batch_size=16, lr=3e-3, warmup_steps=3, seed=4, progress=False)
    by_kw = train(PixelFlow(), d, **kw).train_loss
    cfg = TrainConfig(**kw)
    assert train(PixelFlow(), d, config=cfg).train_loss == by_kw
    # keywords replace the config's fields; the config itself is frozen and unchanged
    assert train(PixelFlow(), d, config=TrainConfig(**{**kw, "seed": 99}), seed=4).train_loss == by_kw
    assert train(PixelFlow(), d, config=cfg, seed=5).train_loss != by_kw
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 1  # type: ignore[misc]
    with pytest.raises(ValueError, match="lr"):
        TrainConfig(lr=-1.0)
    with pytest.raises(TypeError, match="config"):
        train(PixelFlow(), d, config={"epochs": 1})
    with pytest.raises(TypeError, match="unexpected keyword"):
        train(PixelFlow(), d, epoch=1)
