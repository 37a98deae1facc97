"""The `crystallab` command. Each subcommand lives in its own module and imports heavy
libraries only when it runs, so `crystallab --help` answers at once."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from importlib import import_module

from crystallab import __version__

COMMANDS = ("tasks", "measure", "analyze", "melt", "ladder", "lab", "demo", "report", "cluster", "compare")


class Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line (no usage block) with exit status 2, like every
    other bad input."""

    def error(self, message: str):  # noqa: ANN201  (argparse types it NoReturn)
        self.exit(2, f"crystallab: error: {message} (see: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="crystallab", description="Measure randomness crystallization in language models.")
    parser.add_argument("--version", action="version", version=f"crystallab {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    parser.add_argument(*VERBOSE, action="store_true", help=VERBOSE_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        import_module(f"crystallab.cli.{name}").add_parser(sub)
    _add_verbose(sub)
    return parser


VERBOSE = ("-v", "--verbose")
VERBOSE_HELP = "also print library warnings and trainer logs (always in the run folder's log file)"


def _add_verbose(sub: argparse._SubParsersAction) -> None:
    """``-v`` after any (sub)command too; SUPPRESS keeps a ``-v`` typed before the command."""
    for p in set(sub.choices.values()):
        p.add_argument(*VERBOSE, action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP)
        for action in p._actions:  # noqa: SLF001  (nested subcommands: lab planted-seed)
            if isinstance(action, argparse._SubParsersAction):
                _add_verbose(action)


def _one_line_warnings() -> None:
    """crystallab's own warnings (a user task below the family sizes) as one line each, like errors."""
    plain = warnings.formatwarning

    def fmt(message, category, filename, lineno, line=None):  # noqa: ANN001
        if category.__module__.startswith("crystallab"):
            return f"crystallab: warning: {message}\n"
        return plain(message, category, filename, lineno, line)

    warnings.formatwarning = fmt


def main(argv: list[str] | None = None) -> int:
    from crystallab.errors import UserError

    _one_line_warnings()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    debug = args.debug or bool(os.environ.get("CRYSTALLAB_DEBUG"))
    try:
        return int(args.run(args) or 0)
    except UserError as exc:
        if debug:
            raise
        print(f"crystallab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("crystallab: interrupted; finished work is kept, rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
