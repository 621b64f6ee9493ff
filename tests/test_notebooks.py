"""Every notebook in ``notebooks/`` (jupytext percent scripts) executes headless with smoke settings.

Each script is converted with jupytext to an in-memory notebook and run by nbclient on the ``python3`` kernel
(jupyter_client starts it with this interpreter, ``sys.executable``; its inline backend turns figures into PNG
outputs, which the test requires), with ``FLOWROBUST_SMOKE=1`` (and one OpenMP thread) in the environment that
the kernel inherits and the working directory a temporary folder. jupytext, nbclient and ipykernel are in the
``test`` extra of the package.
"""

from __future__ import annotations

import os
from pathlib import Path

import jupytext
import nbclient
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.py"))


def test_there_are_notebooks() -> None:
    assert len(NOTEBOOKS) >= 4, NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWROBUST_SMOKE", "1")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend: figures become PNG outputs
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # tiny convolutions: one thread is faster on a shared machine
    nb = jupytext.read(path)
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=300,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, f"{path.name} has no code cells"
    outputs = [o for c in code for o in c.get("outputs", [])]
    errors = [o for o in outputs if o.get("output_type") == "error"]
    assert not errors, errors
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert images, f"{path.name} drew no figure"
    assert os.environ.get("FLOWROBUST_SMOKE") == "1"
