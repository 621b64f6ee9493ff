"""Train a tiny GLOW under ``torchrun`` through the library (``setup_from_env`` + ``train(distributed=...)``),
for ``tests/test_distributed.py``. ``--kill-at STEP`` makes rank ``--kill-rank`` exit abruptly (``os._exit``)
when it reaches that step: a run killed mid-epoch. Writes ``OUT/final_rank{r}.pt`` (the parameters) at the end.

    torchrun --standalone --nproc_per_node 2 tests/ddp_train_script.py --out DIR --epochs 3
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from deepcheck import distributed
from deepcheck.train import loop
from tests.ddp_cases import build_case, case_data

torch.set_num_threads(1)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--mode", default="mle")
    p.add_argument("--kill-at", type=int, default=None)
    p.add_argument("--kill-rank", type=int, default=0)
    args = p.parse_args()
    out = Path(args.out)
    with distributed.setup_from_env("cpu") as ctx:
        if args.kill_at is not None and ctx.rank == args.kill_rank:
            real = loop.batch_objective

            def dying(model, x, cfg, clamp, step, **kw):  # noqa: ANN001, ANN003, ANN202
                if step == args.kill_at:
                    os._exit(17)
                return real(model, x, cfg, clamp, step, **kw)

            loop.batch_objective = dying
        model, kw = build_case(args.mode, torch.float64)
        result = loop.train(model, case_data(), epochs=args.epochs, checkpoint=out / "checkpoint.pt",
                            distributed=ctx.distributed, **kw)
        torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, out / f"final_rank{ctx.rank}.pt")
        if ctx.is_main:
            torch.save({"world_size": result.world_size, "resumed_from": result.resumed_from,
                        "global_batch": result.global_batch}, out / "result.pt")


if __name__ == "__main__":
    main()
