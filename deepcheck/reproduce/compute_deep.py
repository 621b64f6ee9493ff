"""The deep-flow experiments of ``reproduce``, shared with ``notebooks/04_deep_flows.py``.

* :func:`deep_data` -- the in-distribution images and the OOD sets, in the model's shape;
* :func:`train_flow` -- a GLOW or RealNVP from :func:`deepcheck.flows.build`, trained by
  :func:`deepcheck.train.train` (maximum likelihood, or hybrid: ``(1 - lam) NLL(x) + lam NLL(x_adv)``), with a
  checkpoint (:func:`checkpoint_name`) so that a rerun does not retrain;
* :func:`compute_bpd_vs_eps` -- bits/dim of in-distribution test images after the PGD attack that lowers the
  likelihood (:func:`deepcheck.evaluate.bpd_against_eps`), against the budget;
* :func:`compute_ood` -- the out-of-distribution attack (:func:`deepcheck.evaluate.ood_attack`, PGD raising the
  likelihood of OOD images) and the AUROC of the likelihood score before and after;
* :func:`teaser_rows` -- the measured numbers next to the paper's teaser (:data:`PAPER_TEASER`).

Pixels are mid-bin ``y = (k + 0.5) / n_bins`` for attacks and evaluation (docs/theory.md, deep conventions); every
attack is clamped to ``[0, 1]``. ``budget`` is a :class:`deepcheck.reproduce.budget.Budget`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..data import load
from ..evaluate import attack_in_batches, auroc, bpd_of, ood_attack
from ..flows import build
from ..train import train
from .budget import Budget
from .compute_phenomena import ATTACK_BATCH, attack_curves  # ATTACK_BATCH: images per PGD batch

PAPER_TEASER = {"clean": 1.6, "attacked": 150.0, "noise": 11.0, "noise_attacked": 4.2, "robust_clean": 1.7,
                "robust_attacked": 2.7}
"""The teaser figure of Pope et al. (2020): bits/dim (most likely) of one CIFAR-10 image (see paper.md)."""

TRAIN_SECTIONS = ("deep", "train")
"""The :class:`Budget` sections that change a trained model."""


def checkpoint_name(model: str, mode: str, budget: Budget, seed: int, device: str = "cpu") -> str:
    """``<model>_<mode>_<hash of the training settings, seed and device>.pt``: one file per distinct model."""
    blob = json.dumps([budget.settings(TRAIN_SECTIONS), seed, device], sort_keys=True, default=list)
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


def deep_data(budget: Budget, seed: int) -> DeepData:
    """``budget.deep.dataset`` (train limited to ``deep.n_train``, 512 validation images, the first test images:
    as many as the largest ``n`` of the steps that read them)
    and the out-of-distribution sets ``budget.ood.sets`` (``ood.n`` test images each) in the same shape,
    resampled bilinearly where the size differs. An OOD set with another number of levels is requantised to
    the model's: ``k' = floor(k n_bins / n_bins_ood)`` (uniform noise is drawn with the model's levels)."""
    d, n_ood = budget.deep, budget.ood.n
    train = load(d.dataset, "train", seed=seed, limit=d.n_train)
    val = load(d.dataset, "val", seed=seed, limit=512)
    test = load(d.dataset, "test", seed=seed, limit=max(budget.eval.n, n_ood, budget.dequant.n, budget.theory.n,
                                                         budget.deep_tradeoff.n))
    ood, missing = {}, {}
    for name in budget.ood.sets:
        if name == "uniform-noise":
            ood[name] = load(name, "test", seed=seed, shape=tuple(train.shape), n=n_ood, n_bins=train.n_bins)
            continue
        try:
            o = load(name, "test", seed=seed, limit=n_ood, size=tuple(train.shape[1:]), resize="interpolate",
                     channels=train.shape[0])
        except FileNotFoundError as exc:
            missing[name] = str(exc)
            continue
        if o.n_bins != train.n_bins:
            levels = (o.levels.long() * train.n_bins // o.n_bins).to(o.levels.dtype)
            o = type(o)(levels, o.labels, train.n_bins, o.name)
        ood[name] = o
    return DeepData(train, val, test, ood, missing)


def train_flow(model: str, mode: str, budget: Budget, data: DeepData, *, seed: int, device: str = "cpu",
               checkpoint: str | Path | None = None, init: Any = None) -> tuple[Any, dict[str, Any]]:
    """Build ``model`` ("glow" or "realnvp") at ``budget.deep.config`` and train it by ``mode`` ("mle",
    "adversarial" or "hybrid" with ``train.hybrid_lambda``; the adversary is PGD of budget ``train.eps`` in
    ``train.norm`` with ``train.pgd_steps`` steps). Returns the model (eval mode) and a summary with the
    per-epoch history. An existing ``checkpoint`` of the same settings is resumed (finished: no training).

    From scratch: ``train.epochs`` epochs with a 200-step learning-rate warm-up. With ``init`` (a trained model
    of the same architecture, e.g. the maximum-likelihood one) the new model starts from its weights and is
    fine-tuned for ``train.finetune_epochs`` epochs with a ``train.finetune_warmup``-step warm-up: robust
    fine-tuning, so that the clean and the hybrid model differ only by the hybrid objective."""
    d, t = budget.deep, budget.train
    net = build(model, d.config, tuple(data.train.shape), n_bins=data.train.n_bins, seed=seed)
    epochs, warmup = t.epochs, 200
    if init is not None:
        net.load_state_dict(init.state_dict())
        epochs, warmup = t.finetune_epochs, t.finetune_warmup
    net.to(device)
    res = train(net, data.train, val_data=data.val, mode=mode, epochs=epochs, batch_size=t.batch_size, lr=t.lr,
                warmup_steps=warmup, hybrid_lambda=t.hybrid_lambda, attack_eps=t.eps, attack_norm=t.norm,
                attack_steps=t.pgd_steps, checkpoint=checkpoint, seed=seed, progress=False, device=device)
    hist = [asdict(h) for h in res.history]
    last = hist[-1] if hist else {}
    summary = {"model": model, "mode": mode, "config": d.config, "dataset": d.dataset,
               "n_train": len(data.train), "n_params": sum(p.numel() for p in net.parameters()),
               "epochs": len(hist), "fine_tuned": init is not None, "train_seconds": res.wall_time,
               "skipped_steps": res.skipped_steps,
               "val_bpd": last.get("val_bpd"), "val_adv_bpd": last.get("val_adv_bpd"),
               "train_loss": last.get("train_loss"), "history": hist}
    return res.model.eval(), summary


def compute_bpd_vs_eps(models: dict[str, Any], x: Any, budget: Budget, *, seed: int) -> dict[str, Any]:
    """Mean and median bits/dim of the images ``x`` after the likelihood-lowering PGD attack (``eval.pgd_steps``
    steps, a run from zero and ``eval.restarts`` random restarts) against the budget, in each norm of
    ``eval.norms`` (:func:`.compute_phenomena.attack_curves`: also the eps of ``eval.growth``-fold growth and the
    attack's strength), per model; the top-level curves are those of ``eval.norm`` (with ``teaser.eps``); and
    the first ``teaser.grid_images`` images, clean and attacked at ``teaser.eps``, for the maximum-likelihood
    ``teaser.model`` (else the first model): the image grid."""
    ev, ts = budget.eval, budget.teaser
    norms = budget.with_settings(eval={"norms": tuple(dict.fromkeys((ev.norm, *ev.norms)))})
    per_norm = attack_curves(models, x, norms, seed=seed)
    main = per_norm[ev.norm]
    eps_grid, curves, medians = main["eps"], main["mean_bpd"], main["median_bpd"]
    teaser = {label: {"clean": curves[label][eps_grid.index(0.0)], "attacked": curves[label][eps_grid.index(ts.eps)]}
              for label in models}
    kw = dict(norm=ev.norm, likelihood="decrease", steps=ev.pgd_steps, restarts=ev.restarts, seed=seed)
    label = f"{ts.model} / mle" if f"{ts.model} / mle" in models else next(iter(models))
    net, xg = models[label], x[:ts.grid_images]
    xa = attack_in_batches(net, xg, ts.eps, batch_size=ATTACK_BATCH, **kw)
    grid = {"model": label, "clean": xg.cpu().numpy(), "attacked": xa.cpu().numpy(), "bpd_clean": bpd_of(net, xg),
            "bpd_attacked": bpd_of(net, xa)}
    for r in per_norm.values():
        r.pop("per_image")
    return {"eps": eps_grid, "norm": ev.norm, "n_images": int(len(x)), "mean_bpd": curves,
            "median_bpd": medians, "at_teaser_eps": teaser, "teaser_eps": ts.eps, "grid": grid, "norms": per_norm}


def compute_ood(models: dict[str, Any], x_in: Any, x_ood: Any, budget: Budget, *, seed: int,
                ood_name: str = "uniform-noise") -> dict[str, Any]:
    """Per model: bits/dim of in-distribution images ``x_in``, of OOD images ``x_ood`` (the set ``ood_name``) and
    of ``x_ood`` after the PGD attack that *raises* their likelihood (``ood.eps`` in ``eval.norm``,
    ``ood.pgd_steps`` steps; :func:`deepcheck.evaluate.ood_attack`), and the AUROC of the likelihood score (in
    vs OOD) before and after the attack."""
    o, norm = budget.ood, budget.eval.norm
    res: dict[str, Any] = {"ood": ood_name, "eps": o.eps, "norm": norm, "n_in": int(len(x_in)),
                           "n_ood": int(len(x_ood)), "models": {}}
    for label, net in models.items():
        b_in = bpd_of(net, x_in)
        b_ood, b_att = ood_attack(net, x_ood, o.eps, norm=norm, steps=o.pgd_steps, restarts=0,
                                  batch_size=ATTACK_BATCH, seed=seed)
        res["models"][label] = {"in_bpd": b_in, "ood_bpd": b_ood, "ood_attacked_bpd": b_att,
                                "auroc_before": auroc(-b_in, -b_ood), "auroc_after": auroc(-b_in, -b_att),
                                "in_mean": float(b_in.mean()), "ood_mean": float(b_ood.mean()),
                                "ood_attacked_mean": float(b_att.mean())}
    return res


def teaser_rows(budget: Budget, model: str, at_teaser_eps: dict[str, Any], ood: dict[str, Any]
                ) -> list[tuple[str, float | None, float]]:
    """``(case, measured, paper)`` rows of the teaser for ``model``: its maximum-likelihood version on clean and
    attacked images, on OOD images before and after the OOD attack (``ood``: a :func:`compute_ood` result),
    and its hybrid-trained version (``None`` where that model was not trained)."""
    eps, ood_eps = budget.teaser.eps, budget.ood.eps
    mle, hyb = at_teaser_eps[f"{model} / mle"], at_teaser_eps.get(f"{model} / hybrid")
    o = ood["models"][f"{model} / mle"]
    ood_name = "uniform noise" if ood["ood"] == "uniform-noise" else ood["ood"]
    return [("clean image, clean model", mle["clean"], PAPER_TEASER["clean"]),
            (f"attacked image (eps {eps:g}), clean model", mle["attacked"], PAPER_TEASER["attacked"]),
            (f"{ood_name}, clean model", o["ood_mean"], PAPER_TEASER["noise"]),
            (f"{ood_name} after the OOD attack (eps {ood_eps:g})", o["ood_attacked_mean"],
             PAPER_TEASER["noise_attacked"]),
            ("clean image, hybrid-trained model", None if hyb is None else hyb["clean"], PAPER_TEASER["robust_clean"]),
            (f"attacked image (eps {eps:g}), hybrid-trained model", None if hyb is None else hyb["attacked"],
             PAPER_TEASER["robust_attacked"])]
