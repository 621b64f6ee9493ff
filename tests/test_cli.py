"""The command lines speak plainly: each bad input of :data:`BAD_INPUTS` is fed to its CLI, which must print the
exact one-line ``error: ...`` given there on stderr and exit with status 2 (no traceback); the README's table
*bad input -> what the user sees* is :func:`bad_input_table` (``python tests/test_cli.py`` prints it). Also:
``--debug`` shows the traceback, ``--help`` imports no torch, every option has help, outputs are checked before any
work, progress bars only on request and on a terminal, written files follow the umask, ``train`` prints its last
epoch once, and ``bench`` runs from any folder.
"""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DIR = "TMP"  # how the table writes the test's temporary folder

# (what the user got wrong, the command line, the first (and only) line of stderr); TMP is a fresh folder holding
# garbage.pt (not a checkpoint), afile (a plain file) and run/checkpoint.pt (a real checkpoint), and nothing else.
BAD_INPUTS: list[tuple[str, str, str]] = [
    ("a dataset that is not installed",
     "python -m deepcheck train --data fashion-mnist --root TMP/nodata --out TMP/out",
     "error: Fashion-MNIST not found in TMP/nodata: install it with `apt-get install dataset-fashion-mnist` "
     "(Debian/Ubuntu) or pass root=DIR, a folder with train-images-idx3-ubyte.gz etc."),
    ("an unknown dataset",
     "python -m deepcheck train --data mnist --out TMP/out",
     "error: argument --data: invalid choice: 'mnist' (choose from 'digits', 'mnist5k', 'fashion-mnist', 'idx', "
     "'cifar10', 'npz', 'uniform-noise', 'foolbox-mnist', 'foolbox-fashion-mnist', 'foolbox-cifar10', "
     "'foolbox-cifar100', 'foolbox-imagenet')"),
    ("an unknown split",
     "python -m deepcheck attack --checkpoint TMP/run --split valid",
     "error: argument --split: invalid choice: 'valid' (choose from 'train', 'val', 'test', 'all')"),
    ("a negative budget",
     "python -m deepcheck attack --checkpoint TMP/run --eps -0.1",
     "error: argument --eps: must be a finite number >= 0, got '-0.1'"),
    ("a budget that is not a number",
     "python -m deepcheck evaluate --checkpoint TMP/run --ood-eps nan",
     "error: argument --ood-eps: must be a finite number, got 'nan'"),
    ("no images",
     "python -m deepcheck attack --checkpoint TMP/run --limit 0",
     "error: argument --limit: must be an integer >= 1, got '0'"),
    ("no training images",
     "python -m deepcheck train --limit 0 --out TMP/out",
     "error: argument --limit: must be an integer >= 1, got '0'"),
    ("an empty batch",
     "python -m deepcheck train --batch-size 0 --out TMP/out",
     "error: argument --batch-size: must be an integer >= 1, got '0'"),
    ("no epochs",
     "python -m deepcheck train --epochs 0 --out TMP/out",
     "error: argument --epochs: must be an integer >= 1, got '0'"),
    ("a learning rate that is not a number",
     "python -m deepcheck train --lr nan --out TMP/out",
     "error: argument --lr: must be a finite number, got 'nan'"),
    ("no --out for train",
     "python -m deepcheck train",
     "error: the following arguments are required: --out"),
    ("--device cuda on a machine without CUDA",
     "python -m deepcheck train --device cuda --out TMP/out",
     "error: --device cuda: CUDA is not available on this machine; use --device cpu"),
    ("an --out folder that cannot be made",
     "python -m deepcheck train --out TMP/afile/run",
     "error: --out TMP/afile/run is not a writable folder: Not a directory"),
    ("an --out file that cannot be written (checked before the model is read)",
     "python -m deepcheck attack --checkpoint TMP/missing.pt --out TMP/afile/result.json",
     "error: --out TMP/afile/result.json cannot be written: Not a directory"),
    ("a file that is not a checkpoint",
     "python -m deepcheck attack --checkpoint TMP/garbage.pt",
     "error: TMP/garbage.pt is not a flowrobust checkpoint, or it is corrupt or truncated (torch.load cannot read "
     "it)"),
    ("a checkpoint that does not exist",
     "python -m deepcheck evaluate --checkpoint TMP/missing.pt",
     "error: no checkpoint at TMP/missing.pt"),
    ("a misspelt command",
     "python -m deepcheck trian --out TMP/out",
     "error: argument COMMAND: invalid choice: 'trian' "
     "(choose from 'train', 'attack', 'evaluate', 'reproduce', 'certify')"),
    ("an unknown budget",
     "python -m deepcheck reproduce --budget huge",
     "error: argument --budget: invalid choice: 'huge' (choose from 'full', 'full-mnist5k', 'quick', 'smoke')"),
    ("an unknown result tag",
     "python -m linflow verify --only R9",
     "error: only='R9' names no verification check; valid tags: R1, R2, R3, R4, R5, R6, R7, SYM (or the name of "
     "one check)"),
    ("a seed that is not a number",
     "python -m linflow verify --seed x",
     "error: argument --seed: must be an integer >= 0, got 'x'"),
    ("an unknown benchmark",
     "python -m bench l3",
     "error: unknown benchmark(s) 'l3'; available: attacks, box, certify, ddp, flows, l2, train, training"),
]


def bad_input_table() -> str:
    """The README's table, from :data:`BAD_INPUTS`."""
    rows = ["| bad input | command | what the user sees (stderr; exit status 2) |", "|---|---|---|"]
    rows += [f"| {what} | `{cmd}` | `` {line} `` |" for what, cmd, line in BAD_INPUTS]
    return "\n".join(rows)


def run_in_process(command: str, capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """Run ``python -m <package> <argv>`` through the package's ``main(argv)``; (status, stdout, stderr)."""
    words = command.split()
    assert words[:2] == ["python", "-m"], command
    package, argv = words[2], words[3:]
    if package == "deepcheck":
        from deepcheck.cli import main
    elif package == "linflow":
        from linflow.__main__ import main
    else:
        from bench.__main__ import main
    capsys.readouterr()
    status = main(argv)
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    from deepcheck.checkpoint import save_checkpoint
    from tests.models import randomised_tiny_glow

    (tmp_path / "garbage.pt").write_bytes(b"this is not a checkpoint\n")
    (tmp_path / "afile").write_text("a plain file\n")
    save_checkpoint(tmp_path / "run" / "checkpoint.pt", randomised_tiny_glow(n_bins=17))
    return tmp_path


@pytest.mark.parametrize("what, command, line", BAD_INPUTS, ids=[row[0] for row in BAD_INPUTS])
def test_each_bad_input_gives_one_plain_line_and_status_2(what, command, line, folder, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the row says: a machine without CUDA
    before = sorted(p.name for p in folder.iterdir())
    status, out, err = run_in_process(command.replace(DIR, str(folder)), capsys)
    assert status == 2, (out, err)
    assert err.splitlines() == [line.replace(DIR, str(folder))]
    assert "Traceback" not in out + err
    if "--out" not in command:  # nothing was written (a train --out folder is made before the work starts)
        assert sorted(p.name for p in folder.iterdir()) == before


def test_the_readme_shows_the_bad_input_table():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert bad_input_table() in readme, "README.md's bad-input table differs: paste `python tests/test_cli.py`"


def test_debug_shows_the_traceback(folder, capsys):
    status, out, err = run_in_process(f"python -m deepcheck attack --checkpoint {folder}/garbage.pt --debug", capsys)
    assert status == 2 and err.startswith("Traceback") and "direct cause" in err  # torch.load's error, then ours
    assert err.splitlines()[-1].startswith(f"error: {folder}/garbage.pt is not a flowrobust checkpoint")
    status, out, err = run_in_process("python -m linflow verify --only R9 --debug", capsys)
    assert status == 2 and err.startswith("Traceback") and err.splitlines()[-1].startswith("error: only='R9'")


def test_the_real_processes_exit_2_with_one_line():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    for argv in (["-m", "deepcheck", "train", "--epochs", "0", "--out", "x"],
                 ["-m", "linflow", "verify", "--only", "R9"]):
        res = subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert res.returncode == 2 and len(res.stderr.splitlines()) == 1 and res.stderr.startswith("error: ")
        assert res.stdout == ""


def test_help_imports_no_torch_and_every_option_has_help():
    code = ("import sys, contextlib, io\nfrom deepcheck.cli import COMMANDS, main\n"
            "for c in COMMANDS:\n    with contextlib.redirect_stdout(io.StringIO()):\n"
            "        assert main([c, '--help']) == 0\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy', 'scipy', 'cvxpy'))\n"
            "assert not bad, bad")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 0, res.stderr
    from deepcheck.cli import COMMANDS, build_parser

    for command in COMMANDS:
        parser = build_parser(command)
        sub = next(a for a in parser._actions if a.dest == "command").choices[command]
        for action in sub._actions:
            assert action.help and action.help.strip(), (command, action.option_strings)
        text = sub.format_help()
        assert "(default: " in text and "--debug" in text and "--no-progress" in text
    from linflow.__main__ import build_parser as linflow_parser

    verify = next(a for a in linflow_parser()._actions if a.dest == "command").choices["verify"]
    assert all(action.help for action in verify._actions) and "(default: 0)" in verify.format_help()


def test_the_commands_name_what_the_library_accepts():
    from deepcheck.commands import common, reproduce, train
    from deepcheck.data import readers
    from deepcheck.reproduce import BUDGETS
    from deepcheck.train import MODES, OPTIMIZERS

    assert common.DATASETS == readers.DATASETS and common.SPLITS == readers.SPLITS
    assert train.MODES == MODES and train.OPTIMIZERS == OPTIMIZERS
    assert reproduce.BUDGET_NAMES == tuple(sorted(BUDGETS))


def test_written_files_follow_the_umask(tmp_path):
    from deepcheck.checkpoint import save_checkpoint
    from deepcheck.fileio import atomic_write
    from deepcheck.flows import LinearFlow

    old = os.umask(0o022)
    try:
        for mask in (0o022, 0o077, 0o002):
            os.umask(mask)
            for path in (atomic_write(tmp_path / f"{mask:o}.json", "{}"),
                         save_checkpoint(tmp_path / f"{mask:o}.pt", LinearFlow(2))):
                assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask, (path, oct(mask))
    finally:
        os.umask(old)


def test_train_prints_its_last_epoch_once_with_and_without_progress(tmp_path, capsys, monkeypatch):
    from deepcheck.cli import main
    from deepcheck.commands import train as train_command

    argv = ["train", "--config", "tiny", "--data", "digits", "--limit", "32", "--val-limit", "16", "--epochs", "1",
            "--batch-size", "16", "--no-resume"]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert sum(line.startswith("epoch 1:") for line in out.splitlines()) == 1 and "wrote" in out
    monkeypatch.setattr(train_command, "show_progress", lambda no_progress: True)
    assert main([*argv, "--out", str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert sum(line.startswith("epoch 1:") for line in out.splitlines()) == 1
    assert (tmp_path / "b" / "checkpoint.pt").is_file()


def test_attack_shows_a_progress_bar_only_when_asked_and_on_a_terminal(folder, capsys, monkeypatch):
    from deepcheck.commandline import show_progress
    from deepcheck.commands import evaluate as evaluate_command

    assert show_progress(False) is False  # pytest's stderr is not a terminal

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stderr", Terminal())
    assert show_progress(False) is True and show_progress(True) is False
    monkeypatch.undo()
    argv = f"python -m deepcheck attack --checkpoint {folder}/run --limit 4 --eps 0 0.02 --steps 2"
    status, _, err = run_in_process(argv, capsys)
    assert status == 0 and "bits/dim" not in err
    monkeypatch.setattr(evaluate_command, "show_progress", lambda no_progress: not no_progress)
    status, out, err = run_in_process(argv, capsys)
    assert status == 0 and "decrease bits/dim" in err and "eps=0.02" in out
    status, _, err = run_in_process(argv + " --no-progress", capsys)
    assert status == 0 and "bits/dim" not in err


def test_bench_lists_its_benchmarks_and_runs_from_any_folder(tmp_path):
    res = subprocess.run([sys.executable, str(ROOT / "bench"), "--help"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300, env={**os.environ, "PYTHONPATH": ""})
    assert res.returncode == 0, res.stderr
    for name in ("attacks", "box", "flows", "l2", "train", "training"):
        assert f"\n  {name} " in res.stdout
    res = subprocess.run([sys.executable, "-m", "bench", "l3"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 2 and res.stderr.startswith("error: unknown benchmark(s) 'l3'")


if __name__ == "__main__":
    print(bad_input_table())
