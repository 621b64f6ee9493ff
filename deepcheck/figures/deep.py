"""The computations behind the deep-flow figures, shared by ``reproduce`` and ``notebooks/04_deep_flows.py``.

* :func:`train_flow` -- a GLOW or RealNVP from :func:`deepcheck.flows.build`, trained by
  :func:`deepcheck.train.train` (maximum likelihood, or hybrid: ``(1 - lam) NLL(x) + lam NLL(x_adv)``), with a
  checkpoint so that a rerun does not retrain;
* :func:`compute_bpd_vs_eps` -- bits/dim of in-distribution test images after the PGD attack that lowers the
  likelihood (:func:`deepcheck.attacks.pgd`), against the budget;
* :func:`compute_ood` -- the out-of-distribution attack (PGD raising the likelihood of OOD images) and the
  AUROC of the likelihood score before and after;
* :func:`teaser_rows` -- the measured numbers next to the paper's teaser (:data:`PAPER_TEASER`).

Pixels are mid-bin ``y = (k + 0.5) / n_bins`` for attacks and evaluation (DESIGN, deep conventions); every
attack is clamped to ``[0, 1]``. ``budget`` is a :class:`deepcheck.reproduce.Budget` (any object with its
fields).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .availability import require

PAPER_TEASER = {"clean": 1.6, "attacked": 150.0, "noise": 11.0, "noise_attacked": 4.2, "robust_clean": 1.7,
                "robust_attacked": 2.7}
"""The teaser figure of Pope et al. (2020): bits/dim (most likely) of one CIFAR-10 image (see paper.md)."""


TRAIN_SETTINGS = "deep_dataset,deep_config,deep_epochs,deep_batch_size,deep_lr,deep_n_train,finetune,hybrid,train"
"""The budget fields (prefixes) that change a trained model."""


def checkpoint_name(model: str, mode: str, budget: Any, seed: int, device: str = "cpu") -> str:
    """``<model>_<mode>_<hash of the training settings, seed and device>.pt``: one file per distinct model."""
    blob = json.dumps([budget.section(TRAIN_SETTINGS), seed, device], sort_keys=True, default=list)
    return f"{model}_{mode}_{hashlib.sha256(blob.encode()).hexdigest()[:10]}.pt"


@dataclass
class DeepData:
    """The images of the deep experiments (``deepcheck.data.ImageData``): ``train``/``val``/``test`` of the
    in-distribution set, ``ood`` the out-of-distribution sets by name, and ``missing`` the OOD sets that could
    not be loaded here (name -> reason; e.g. Fashion-MNIST where its Debian package is not installed)."""

    train: Any
    val: Any
    test: Any
    ood: dict[str, Any]
    missing: dict[str, str] = field(default_factory=dict)


def deep_data(budget: Any, seed: int) -> DeepData:
    """``budget.deep_dataset`` (train limited to ``deep_n_train``, 512 validation images, enough test images)
    and the out-of-distribution sets ``budget.deep_ood`` (``ood_n`` test images each) in the same shape,
    resampled bilinearly where the size differs. An OOD set with another number of levels is requantised to
    the model's: ``k' = floor(k n_bins / n_bins_ood)`` (uniform noise is drawn with the model's levels)."""
    load = require("deepcheck.data", "load")
    train = load(budget.deep_dataset, "train", seed=seed, limit=budget.deep_n_train)
    val = load(budget.deep_dataset, "val", seed=seed, limit=512)
    test = load(budget.deep_dataset, "test", seed=seed, limit=max(budget.eval_n, budget.ood_n))
    ood, missing = {}, {}
    for name in budget.deep_ood:
        if name == "uniform-noise":
            ood[name] = load(name, "test", seed=seed, shape=tuple(train.shape), n=budget.ood_n, n_bins=train.n_bins)
            continue
        try:
            o = load(name, "test", seed=seed, limit=budget.ood_n, size=tuple(train.shape[1:]), resize="interpolate",
                     channels=train.shape[0])
        except FileNotFoundError as exc:
            missing[name] = str(exc)
            continue
        if o.n_bins != train.n_bins:
            levels = (o.levels.long() * train.n_bins // o.n_bins).to(o.levels.dtype)
            o = type(o)(levels, o.labels, train.n_bins, o.name)
        ood[name] = o
    return DeepData(train, val, test, ood, missing)


def train_flow(model: str, mode: str, budget: Any, data: DeepData, *, seed: int, device: str = "cpu",
               checkpoint: str | Path | None = None, init: Any = None) -> tuple[Any, dict[str, Any]]:
    """Build ``model`` ("glow" or "realnvp") at ``budget.deep_config`` and train it by ``mode`` ("mle",
    "adversarial" or "hybrid" with ``hybrid_lambda``; the adversary is PGD of budget ``train_eps`` in
    ``train_norm`` with ``train_pgd_steps`` steps). Returns the model (eval mode) and a summary with the
    per-epoch history. An existing ``checkpoint`` of the same settings is resumed (finished: no training).

    From scratch: ``deep_epochs`` epochs with a 200-step learning-rate warm-up. With ``init`` (a trained model
    of the same architecture, e.g. the maximum-likelihood one) the new model starts from its weights and is
    fine-tuned for ``finetune_epochs`` epochs with a ``finetune_warmup``-step warm-up: robust fine-tuning, so
    that the clean and the hybrid model differ only by the hybrid objective."""
    build = require("deepcheck.flows", "build")
    train = require("deepcheck.train", "train")
    b = budget
    net = build(model, b.deep_config, tuple(data.train.shape), n_bins=data.train.n_bins, seed=seed)
    epochs, warmup = b.deep_epochs, 200
    if init is not None:
        net.load_state_dict(init.state_dict())
        epochs, warmup = b.finetune_epochs, b.finetune_warmup
    net.to(device)
    res = train(net, data.train, val_data=data.val, mode=mode, epochs=epochs, batch_size=b.deep_batch_size,
                lr=b.deep_lr, warmup_steps=warmup, hybrid_lambda=b.hybrid_lambda, attack_eps=b.train_eps,
                attack_norm=b.train_norm, attack_steps=b.train_pgd_steps, checkpoint=checkpoint, seed=seed,
                progress=False, device=device)
    hist = [asdict(h) for h in res.history]
    last = hist[-1] if hist else {}
    summary = {"model": model, "mode": mode, "config": b.deep_config, "dataset": b.deep_dataset,
               "n_train": len(data.train), "n_params": sum(p.numel() for p in net.parameters()),
               "epochs": len(hist), "fine_tuned": init is not None, "train_seconds": res.wall_time,
               "skipped_steps": res.skipped_steps,
               "val_bpd": last.get("val_bpd"), "val_adv_bpd": last.get("val_adv_bpd"),
               "train_loss": last.get("train_loss"), "history": hist}
    return res.model.eval(), summary


def compute_bpd_vs_eps(models: dict[str, Any], x: Any, budget: Any, *, seed: int) -> dict[str, Any]:
    """Mean and median bits/dim of the images ``x`` after the likelihood-lowering PGD attack (``eval_norm``,
    ``eval_pgd_steps`` steps, a run from zero and ``eval_restarts`` random restarts) for each budget of
    ``eval_eps`` and ``teaser_eps``, per model; and the first ``grid_images`` images, clean and attacked at
    ``teaser_eps``, for the maximum-likelihood ``teaser_model`` (else the first model): the image grid."""
    attack, bpd = require("deepcheck.evaluate", "attack_in_batches", "bpd_of")
    b = budget
    eps_grid = sorted(set(b.eval_eps) | {0.0, b.teaser_eps})
    curves, medians, teaser = {}, {}, {}
    grid = None
    grid_label = f"{b.teaser_model} / mle" if f"{b.teaser_model} / mle" in models else next(iter(models))
    for label, net in models.items():
        means, meds = [], []
        for e in eps_grid:
            xa = attack(net, x, e, norm=b.eval_norm, likelihood="decrease", steps=b.eval_pgd_steps,
                        restarts=b.eval_restarts, seed=seed)
            v = bpd(net, xa)
            means.append(float(v.mean()))
            meds.append(float(np.median(v)))
            if e == b.teaser_eps and label == grid_label:
                k = b.grid_images
                grid = {"model": label, "clean": x[:k].cpu().numpy(), "attacked": xa[:k].cpu().numpy(),
                        "bpd_clean": bpd(net, x[:k]), "bpd_attacked": v[:k]}
        curves[label], medians[label] = means, meds
        teaser[label] = {"clean": means[eps_grid.index(0.0)], "attacked": means[eps_grid.index(b.teaser_eps)]}
    return {"eps": eps_grid, "norm": b.eval_norm, "n_images": int(len(x)), "mean_bpd": curves,
            "median_bpd": medians, "at_teaser_eps": teaser, "teaser_eps": b.teaser_eps, "grid": grid}


def compute_ood(models: dict[str, Any], x_in: Any, x_ood: Any, budget: Any, *, seed: int,
                ood_name: str = "uniform-noise") -> dict[str, Any]:
    """Per model: bits/dim of in-distribution images ``x_in``, of OOD images ``x_ood`` (the set ``ood_name``) and
    of ``x_ood`` after the PGD attack that *raises* their likelihood (``ood_eps`` in ``eval_norm``,
    ``ood_pgd_steps`` steps), and the AUROC of the likelihood score (in vs OOD) before and after the attack."""
    attack, bpd, auroc = require("deepcheck.evaluate", "attack_in_batches", "bpd_of", "auroc")
    b = budget
    res: dict[str, Any] = {"ood": ood_name, "eps": b.ood_eps, "norm": b.eval_norm, "n_in": int(len(x_in)),
                           "n_ood": int(len(x_ood)), "models": {}}
    for label, net in models.items():
        b_in, b_ood = bpd(net, x_in), bpd(net, x_ood)
        xa = attack(net, x_ood, b.ood_eps, norm=b.eval_norm, likelihood="increase", steps=b.ood_pgd_steps,
                    restarts=0, seed=seed)
        b_att = bpd(net, xa)
        res["models"][label] = {"in_bpd": b_in, "ood_bpd": b_ood, "ood_attacked_bpd": b_att,
                                "auroc_before": auroc(-b_in, -b_ood), "auroc_after": auroc(-b_in, -b_att),
                                "in_mean": float(b_in.mean()), "ood_mean": float(b_ood.mean()),
                                "ood_attacked_mean": float(b_att.mean())}
    return res


def teaser_rows(budget: Any, model: str, at_teaser_eps: dict[str, Any], ood: dict[str, Any]
                ) -> list[tuple[str, float | None, float]]:
    """``(case, measured, paper)`` rows of the teaser for ``model``: its maximum-likelihood version on clean and
    attacked images, on OOD images before and after the OOD attack (``ood``: a :func:`compute_ood` result),
    and its hybrid-trained version (``None`` where that model was not trained)."""
    b = budget
    mle, hyb = at_teaser_eps[f"{model} / mle"], at_teaser_eps.get(f"{model} / hybrid")
    o = ood["models"][f"{model} / mle"]
    ood_name = "uniform noise" if ood["ood"] == "uniform-noise" else ood["ood"]
    return [("clean image, clean model", mle["clean"], PAPER_TEASER["clean"]),
            (f"attacked image (eps {b.teaser_eps:g}), clean model", mle["attacked"], PAPER_TEASER["attacked"]),
            (f"{ood_name}, clean model", o["ood_mean"], PAPER_TEASER["noise"]),
            (f"{ood_name} after the OOD attack (eps {b.ood_eps:g})", o["ood_attacked_mean"],
             PAPER_TEASER["noise_attacked"]),
            ("clean image, hybrid-trained model", None if hyb is None else hyb["clean"], PAPER_TEASER["robust_clean"]),
            (f"attacked image (eps {b.teaser_eps:g}), hybrid-trained model", None if hyb is None else hyb["attacked"],
             PAPER_TEASER["robust_attacked"])]
