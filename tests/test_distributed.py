"""Training, attacks and evaluation on several processes (torch.distributed, gloo on the CPU).

Two ranks (``torch.multiprocessing.spawn``) against one process, same global batch and seed, tiny GLOW,
20 steps (4 epochs of 37 digits, global batch 8: the last batch of each epoch splits 3 + 2): MLE and hybrid
in float64 agree to 1e-8 relative per tensor; MLE in float32 to 2e-4 in the relative 2-norm of all parameters
together (per tensor, Adamax's sign-like first steps on zero-initialised tensors give up to 2e-3); a dataset
of one image on two ranks (one rank has no sample). Sharded evaluation (bits/dim, attacked bits/dim, AUROC)
equals one process. A ``torchrun`` run killed mid-epoch (one rank exits abruptly) resumes from its last
checkpoint on a different number of ranks and in one process, and ends where the uninterrupted run ends.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from deepcheck import data as data_mod
from deepcheck import distributed
from deepcheck.evaluate import evaluate_model
from deepcheck.train import train
from tests.ddp_cases import build_case, case_data

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with gloo is not available in this torch build")

ROOT = Path(__file__).resolve().parents[1]
# name -> (mode, dtype, n_train, epochs, relative tolerance against one process)
CASES = {
    "mle64": ("mle", torch.float64, 37, 4, 1e-8),
    "hybrid64": ("hybrid", torch.float64, 37, 4, 1e-8),
    "mle32": ("mle", torch.float32, 37, 4, 2e-4),  # all parameters (2-norm), 3.4e-5 measured; per tensor 2e-3
    "one_image": ("mle", torch.float64, 1, 3, 1e-8),
}
EVAL = {"eps": [0.0, 0.03], "ood_eps": 0.03, "norm": "linf", "steps": 4, "restarts": 1, "batch_size": 3, "seed": 5}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _eval_data() -> tuple[data_mod.ImageData, dict]:
    test = data_mod.load("digits", "test", seed=0, limit=10)
    noise = data_mod.load("uniform-noise", "test", seed=1, shape=(1, 8, 8), n=7, n_bins=17)
    return test, {"uniform-noise": noise}


def _val(mode: str) -> data_mod.ImageData | None:
    """Validation (clean and attacked, sharded over the ranks) in the hybrid case only (it costs attacks)."""
    return data_mod.load("digits", "val", seed=0, limit=5) if mode == "hybrid" else None


def _job_train_and_evaluate(ctx: distributed.DistContext, out: Path) -> None:
    for name, (mode, dtype, n, epochs, _) in CASES.items():
        model, kw = build_case(mode, dtype)
        res = train(model, case_data(n), epochs=epochs, distributed=True, val_data=_val(mode), **kw)
        torch.save({"state": model.state_dict(), "loss": res.train_loss, "world": res.world_size,
                    "val": [(h.val_bpd, h.val_adv_bpd) for h in res.history]},
                   out / f"{name}_rank{ctx.rank}.pt")
        if name == "mle64":
            test, ood = _eval_data()
            r = evaluate_model(model, test, EVAL["eps"], ood_data=ood, ood_eps=EVAL["ood_eps"],
                               **{k: EVAL[k] for k in ("norm", "steps", "restarts", "batch_size", "seed")})
            (out / f"eval_rank{ctx.rank}.json").write_text(json.dumps(r.to_dict()))


def _worker(rank: int, world: int, port: int, job: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    with distributed.setup_from_env("cpu") as ctx:
        assert ctx.world_size == world and ctx.backend == "gloo"
        globals()[job](ctx, Path(out))


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(2, _free_port(), "_job_train_and_evaluate", str(out)), nprocs=2, join=True)
    return out


def _single(name: str) -> tuple[dict, list[float], list[tuple]]:
    mode, dtype, n, epochs, _ = CASES[name]
    model, kw = build_case(mode, dtype)
    res = train(model, case_data(n), epochs=epochs, val_data=_val(mode), **kw)
    assert res.world_size == 1 and res.steps == epochs * -(-n // kw["batch_size"])
    return model.state_dict(), res.train_loss, [(h.val_bpd, h.val_adv_bpd) for h in res.history]


def _assert_states_close(got: dict, want: dict, rtol: float, *, whole: bool = False) -> None:
    """Per tensor, ``max|got - want| <= rtol max|want|``; with ``whole``, ``||got - want||_2 <= rtol ||want||_2``
    over all floating entries together."""
    assert got.keys() == want.keys()
    if whole:
        keys = [k for k in want if want[k].is_floating_point()]
        w = torch.cat([want[k].double().ravel() for k in keys])
        g = torch.cat([got[k].double().ravel() for k in keys])
        err = float((g - w).norm() / w.norm())
        print(f"relative 2-norm difference of all parameters: {err:.3g}")
        assert err <= rtol, f"relative difference {err:.3g} > {rtol}"
        return
    for k in want:
        w, g = want[k].double(), got[k].double()
        scale = max(float(w.abs().max()), 1e-12) if w.numel() else 1.0
        err = float((g - w).abs().max()) / scale if w.numel() else 0.0
        assert err <= rtol, f"{k}: max relative difference {err:.3g} > {rtol}"


@pytest.mark.parametrize("name", list(CASES))
def test_two_ranks_reproduce_one_process(two_ranks: Path, name: str) -> None:
    rtol = CASES[name][4]
    r0 = torch.load(two_ranks / f"{name}_rank0.pt", weights_only=True)
    r1 = torch.load(two_ranks / f"{name}_rank1.pt", weights_only=True)
    assert r0["world"] == r1["world"] == 2
    for k, v in r0["state"].items():  # DDP keeps the ranks identical
        assert torch.equal(v, r1["state"][k]), k
    want_state, want_loss, want_val = _single(name)
    # the run moved the parameters far more than the tolerance (the comparison can fail)
    fresh = build_case(CASES[name][0], CASES[name][1])[0].state_dict()
    moved = max(float((want_state[k].double() - v.double()).abs().max()) for k, v in fresh.items()
                if v.is_floating_point())
    assert moved > 1e3 * rtol
    _assert_states_close(r0["state"], want_state, rtol, whole=CASES[name][1] == torch.float32)
    np.testing.assert_allclose(r0["loss"], want_loss, rtol=max(rtol, 1e-12))
    assert r0["val"] == r1["val"]
    if CASES[name][0] == "hybrid":
        assert all(adv > clean for clean, adv in want_val)  # the validation attack did something
        np.testing.assert_allclose(np.array(r0["val"], dtype=float), np.array(want_val, dtype=float), rtol=rtol)


def test_sharded_evaluation_equals_one_process(two_ranks: Path) -> None:
    got0 = json.loads((two_ranks / "eval_rank0.json").read_text())
    got1 = json.loads((two_ranks / "eval_rank1.json").read_text())
    assert got0 == got1
    model = build_case("mle", torch.float64)[0]
    model.load_state_dict(torch.load(two_ranks / "mle64_rank0.pt", weights_only=True)["state"])
    test, ood = _eval_data()
    want = evaluate_model(model, test, EVAL["eps"], ood_data=ood, ood_eps=EVAL["ood_eps"],
                          **{k: EVAL[k] for k in ("norm", "steps", "restarts", "batch_size", "seed")}).to_dict()
    assert want["bpd"][1] > want["bpd"][0]  # the attack did something
    np.testing.assert_allclose(got0["bpd"], want["bpd"], rtol=1e-12)
    np.testing.assert_allclose(got0["bpd_median"], want["bpd_median"], rtol=1e-12)
    for key in ("bpd_clean", "bpd_attacked", "auroc_clean", "auroc_attacked"):
        np.testing.assert_allclose(got0["ood"]["uniform-noise"][key], want["ood"]["uniform-noise"][key], rtol=1e-12)


def test_shard_sizes_and_map_batches_in_one_process() -> None:
    idx = torch.arange(10, 15)
    parts = [distributed.shard(idx, r, 3).tolist() for r in range(3)]
    assert parts == [[10, 11], [12, 13], [14]]
    assert [distributed.shard(idx[:1], r, 2).tolist() for r in range(2)] == [[10], []]
    with pytest.raises(ValueError, match="rank"):
        distributed.shard(idx, 3, 3)
    got = distributed.map_batches(lambda a, b: np.arange(a, b) * 2.0, 7, 3)
    np.testing.assert_array_equal(got, np.arange(7) * 2.0)
    assert distributed.backend_for("cpu") == "gloo" and distributed.backend_for("cuda:1") == "nccl"
    seeds = distributed.sample_seeds(123, [0, 1, 2, 1])
    assert seeds[1] == seeds[3] and len(set(seeds)) == 3 and all(0 <= s < 2**63 for s in seeds)


def test_distributed_true_without_a_process_group_is_a_clear_error() -> None:
    model, kw = build_case("mle", torch.float64)
    with pytest.raises(ValueError, match="process group"):
        train(model, case_data(5), epochs=1, distributed=True, **kw)


def _torchrun(nproc: int, out: Path, epochs: int, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(ROOT / "tests" / "ddp_train_script.py"), "--out", str(out), "--epochs", str(epochs), *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_killed_run_resumes_on_other_rank_counts(tmp_path: Path) -> None:
    epochs = 3  # 5 steps an epoch; rank 1 dies at step 8, in epoch 2, after the checkpoint of epoch 1
    killed = _torchrun(2, tmp_path, epochs, "--kill-at", "8", "--kill-rank", "1")
    assert killed.returncode != 0, killed.stdout + killed.stderr
    assert not (tmp_path / "final_rank0.pt").exists()
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ckpt["state"]["epoch"] == 1 and ckpt["state"]["world_size"] == 2
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(tmp_path / "checkpoint.pt", one / "checkpoint.pt")

    resumed = _torchrun(3, tmp_path, epochs)  # N = 2 -> M = 3 ranks
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    info = torch.load(tmp_path / "result.pt", weights_only=True)
    assert info == {"world_size": 3, "resumed_from": 1, "global_batch": 8}

    model, kw = build_case("mle", torch.float64)  # 2 -> 1 process
    res = train(model, case_data(), epochs=epochs, checkpoint=one / "checkpoint.pt", **kw)
    assert res.resumed_from == 1

    ref, kw = build_case("mle", torch.float64)  # uninterrupted, one process
    train(ref, case_data(), epochs=epochs, **kw)
    for r in range(3):
        _assert_states_close(torch.load(tmp_path / f"final_rank{r}.pt", weights_only=True), ref.state_dict(), 1e-8)
    _assert_states_close(model.state_dict(), ref.state_dict(), 1e-8)


def test_pgd_with_sample_seeds_does_not_depend_on_the_batch() -> None:
    from deepcheck.attacks import pgd

    model = build_case("mle", torch.float64)[0]
    x = case_data(6).pixels(torch.float64)
    model(x)  # ActNorm initialisation
    kw = {"norm": "l2", "steps": 6, "restarts": 1, "random_start": True, "clamp": (0.0, 1.0)}
    seeds = distributed.sample_seeds(7, range(6))
    whole = pgd(model, x, 0.3, sample_seeds=seeds, **kw)
    part = pgd(model, x[3:], 0.3, sample_seeds=seeds[3:], **kw)
    torch.testing.assert_close(part, whole[3:], rtol=1e-10, atol=1e-12)
    shared = pgd(model, x, 0.3, seed=1, **kw)  # one generator for the batch: the draws depend on the batch
    assert not torch.allclose(pgd(model, x[3:], 0.3, seed=1, **kw), shared[3:], rtol=1e-6, atol=1e-8)
    with pytest.raises(ValueError, match="sample_seeds has 2 seeds"):
        pgd(model, x[:3], 0.3, sample_seeds=seeds[:2], **kw)
    with pytest.raises(ValueError, match="sample_seeds"):
        pgd(model, x[:1], 0.3, sample_seeds=[-1], **kw)


def test_torchrun_command_line_train_and_attack(tmp_path: Path) -> None:
    """``torchrun -m deepcheck train`` and ``attack`` (the README's commands): the history records the world size and
    the global batch, and the 2-rank attack table equals the one-process table."""
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    common = ["--no-progress"]
    trained = subprocess.run([*torchrun, "-m", "deepcheck", "train", "--model", "glow", "--config", "tiny", "--data",
                              "digits", "--epochs", "1", "--limit", "48", "--batch-size", "16", "--out", str(run),
                              *common], env=env, capture_output=True, text=True, timeout=300)
    assert trained.returncode == 0, trained.stdout + trained.stderr
    history = json.loads((run / "history.json").read_text())
    assert history["world_size"] == 2 and history["global_batch"] == 16
    assert trained.stdout.count("wrote ") == 1  # rank 0 alone reports

    attack = ["-m", "deepcheck", "attack", "--checkpoint", str(run), "--data", "digits", "--limit", "24", "--eps",
              "0", "0.02", "--steps", "2", *common]
    two = subprocess.run([*torchrun, *attack], env=env, capture_output=True, text=True, timeout=300)
    one = subprocess.run([sys.executable, *attack], env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0 and one.returncode == 0, two.stderr + one.stderr
    table = [line for line in one.stdout.splitlines() if "bpd=" in line]
    assert len(table) == 2 and [line for line in two.stdout.splitlines() if "bpd=" in line] == table
