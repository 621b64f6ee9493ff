"""``python -m deepcheck reproduce``: verify R1-R7 and regenerate the paper's figures, with a report.

The pipeline is a list of *steps*. Each step computes JSON-able results, tables and figures from a
:class:`Budget` and a seed; the runner writes its record to ``<out>/steps/<name>.json`` (atomically) and skips
it on a rerun when a record with the same settings, seed, device and code exists and its figures are on disk
(``--force`` reruns everything). Trained models are checkpointed under ``<out>/checkpoints``. At the end
``results.json`` and ``report.md`` are written. The modules:

* :mod:`.budget` -- :class:`Budget`, nested per-step settings, and the budgets :data:`BUDGETS`
  (``smoke``, ``quick``, ``full``);
* :mod:`.pipeline` -- :class:`Step`, :class:`Context`, :class:`StepOutput`, the cached :func:`run_step`;
* :mod:`.compute_linear`, :mod:`.compute_deep` -- the experiments (also used by ``notebooks/``);
* :mod:`.steps_linear`, :mod:`.steps_deep` -- the steps: tables, notes and figures of each experiment;
* :mod:`.report` -- atomic files, ``results.json`` and ``report.md``;
* :mod:`.cli` -- :func:`run` (the command line: :mod:`deepcheck.commands.reproduce`).
"""

from .budget import (
    BUDGETS,
    AttackSettings,
    Budget,
    DeepSettings,
    EvalSettings,
    FlowsSettings,
    GeometrySettings,
    OODSettings,
    TeaserSettings,
    TradeoffSettings,
    TrainSettings,
    VerifySettings,
    WaterfillSettings,
)
from .cli import NOT_REPRODUCED, run
from .pipeline import Context, NotAvailable, Step, StepOutput, code_fingerprint, run_step, step_key
from .steps_deep import checkpoint_path, deep_steps, make_train_step, trained_models
from .steps_linear import STEPS

__all__ = ["BUDGETS", "Budget", "VerifySettings", "GeometrySettings", "AttackSettings", "WaterfillSettings",
           "TradeoffSettings", "DeepSettings", "FlowsSettings", "TrainSettings", "EvalSettings", "OODSettings",
           "TeaserSettings", "NOT_REPRODUCED", "run", "Context", "NotAvailable", "Step",
           "StepOutput", "code_fingerprint", "run_step", "step_key", "STEPS", "deep_steps", "make_train_step",
           "trained_models", "checkpoint_path"]
