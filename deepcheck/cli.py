"""The command line. Each sub-command lives in the module that does the work; that module defines
``configure_parser(name: str, parser: argparse.ArgumentParser) -> None`` and ``main(name: str, args) -> int``.
Modules are imported only when their command runs (torch start-up is not paid by ``--help``)."""

from __future__ import annotations

import argparse
import importlib

COMMANDS = {
    "train": ("deepcheck.train", "train a flow (maximum likelihood, adversarial or hybrid)"),
    "attack": ("deepcheck.evaluate", "attack a trained flow on a dataset and report bits/dim"),
    "evaluate": ("deepcheck.evaluate", "bits/dim against eps, OOD attack and AUROC for trained flows"),
    "reproduce": ("deepcheck.reproduce", "verify the theorems and regenerate the paper's figures"),
}


def main(argv: list[str] | None = None) -> int:
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m deepcheck")
    sub = parser.add_subparsers(dest="command", required=True)
    name = next((a for a in argv if not a.startswith("-")), None)
    for cmd, (_, help_) in COMMANDS.items():
        p = sub.add_parser(cmd, help=help_)
        if cmd == name:
            importlib.import_module(COMMANDS[cmd][0]).configure_parser(cmd, p)
    args = parser.parse_args(argv)
    module = importlib.import_module(COMMANDS[args.command][0])
    return int(module.main(args.command, args) or 0)
