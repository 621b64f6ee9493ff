"""The command line ``python -m deepcheck <command> ...``.

Each command is a row of :data:`COMMANDS`: a module that defines
``configure_parser(name: str, parser: argparse.ArgumentParser) -> None`` and ``main(name: str, args) -> int``.
Only the chosen command's module is imported, and the modules under :mod:`deepcheck.commands` import torch only
inside ``main``, so ``--help`` answers at once. Wiring a new command is one row.

Conventions applied here to every command (:mod:`deepcheck.commandline`): a user error -- a bad option, or a
``ValueError``/``TypeError``/``OSError`` raised by the command -- prints one line ``error: ...`` on stderr and exits
with status 2 (``--debug`` shows the traceback); every command gets ``--debug`` and ``--no-progress`` (when it
does not define them itself); defaults are shown in ``--help``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .commandline import Parser, guarded

COMMANDS = {
    "train": ("deepcheck.commands.train", "train a flow (maximum likelihood, adversarial or hybrid)"),
    "attack": ("deepcheck.commands.evaluate", "attack a trained flow on a dataset and report bits/dim"),
    "evaluate": ("deepcheck.commands.evaluate", "bits/dim against eps, OOD attack and AUROC for trained flows"),
    "reproduce": ("deepcheck.commands.reproduce", "verify the theorems and regenerate the paper's figures"),
    "certify": ("deepcheck.commands.certify", "certified bounds on the worst-case NLL of trained flows"),
}


def build_parser(command: str | None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s options are configured (the other commands' modules are not imported)."""
    parser = Parser(prog="python -m deepcheck", description=__doc__.split("\n\n")[0])
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    for cmd, (module, help_) in COMMANDS.items():
        p = sub.add_parser(cmd, help=help_, description=help_)
        if cmd == command:
            importlib.import_module(module).configure_parser(cmd, p)
            if "--debug" not in p._option_string_actions:
                p.add_argument("--debug", action="store_true", help="show the traceback of an error")
            if "--no-progress" not in p._option_string_actions:
                p.add_argument("--no-progress", action="store_true", help="no progress bars (none when not a TTY)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the command, return the exit status (2: user error)."""
    argv = list(sys.argv[1:] if argv is None else argv)

    def body() -> int:
        command = next((a for a in argv if not a.startswith("-")), None)
        args = build_parser(command if command in COMMANDS else None).parse_args(argv)
        module = importlib.import_module(COMMANDS[args.command][0])
        return int(module.main(args.command, args) or 0)

    return guarded(body, debug="--debug" in argv)
