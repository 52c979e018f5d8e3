"""Command-line plumbing shared by the tools: one line per user mistake, flags anywhere.

Every tool reports a mistake in its input as ONE line, ``<tool>: error: <what, which key or file, the
fix>``, exits with status 2 (argparse's code for a usage error) and prints no traceback. ``--debug`` on
the command line, or ``GN_DET_DEBUG=1`` in the environment, brings the traceback back.

``ArgumentParser`` also lets flags come anywhere: ``--eval-only`` after the ``KEY VALUE`` overrides
is a flag, not an override (detectron2's parser would swallow it into the overrides).
"""
from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Type

__all__ = ["UserError", "ArgumentParser", "one_line", "debug_requested", "run_tool", "USER_ERRORS"]

DEBUG_ENV = "GN_DET_DEBUG"

# A token that is a value, not a flag, even though it starts with "-": a negative number (-5, -.5, -1e-3).
_NUMBER = re.compile(r"^-(\d|\.\d)")
# The KEY of a KEY VALUE config override (MODEL.WEIGHTS, SOLVER.BASE_LR): it ends a flag's list of values.
_CONFIG_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+$")


class UserError(Exception):
    """A mistake in what the user gave (a flag, a config key, a file): reported as one line, exit 2."""


# What a tool reports as one line when it escapes ``main``: mistakes in input files, keys and values
# surface as these (config errors are KeyError/ValueError subclasses, unreadable files OSError).
USER_ERRORS: Tuple[Type[BaseException], ...] = (UserError, ValueError, KeyError, OSError)


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message (KeyError without its quotes)."""
    if isinstance(exc, KeyError) and exc.args and isinstance(exc.args[0], str):
        text = exc.args[0]
    else:
        text = str(exc)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def debug_requested(argv: Optional[Sequence[str]] = None) -> bool:
    """True with ``--debug`` in ``argv`` (default sys.argv) or GN_DET_DEBUG set to anything but ''/0."""
    argv = sys.argv[1:] if argv is None else argv
    return "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def run_tool(prog: str, main: Callable[[Optional[List[str]]], object], argv: Optional[List[str]] = None,
             errors: Tuple[Type[BaseException], ...] = USER_ERRORS) -> int:
    """Call ``main(argv)``; an exception of ``errors`` becomes one line on stderr and exit status 2.

    Returns main's integer result (0 for None), for ``sys.exit(run_tool(...))``.
    """
    try:
        result = main(argv)
    except errors as exc:
        if debug_requested(argv):
            raise
        print(f"{prog}: error: {one_line(exc)}", file=sys.stderr, flush=True)
        return 2
    return result if isinstance(result, int) else 0


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors and flags allowed anywhere among the positionals.

    - An error prints ``<prog>: error: <message>`` (one line; ``--help`` shows the usage) and exits 2.
    - Flags may come before, between or after positionals and ``KEY VALUE`` overrides: known flags and
      their arguments are moved in front (a flag taking a list, nargs "+" or "*", takes the tokens up
      to the next flag or ``KEY VALUE`` override, an upper-case dotted key); ``--`` ends the flags. An unknown flag is an error naming the
      closest known ones. A negative number (``-5``, ``-1e-3``) is a value, not a flag.
    - ``--debug`` (show tracebacks) is added to every parser.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self.add_argument("--debug", action="store_true",
                          help=f"show the full traceback of an error (or set {DEBUG_ENV}=1)")

    def error(self, message: str):  # type: ignore[override]
        """One line (no usage block), exit status 2."""
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")

    def _flag_arity(self) -> Dict[str, object]:
        """Option string -> nargs of its action (0 for store_true/help/version)."""
        arity: Dict[str, object] = {}
        for action in self._actions:
            for option in action.option_strings:
                arity[option] = action.nargs
        return arity

    def _split_flags(self, argv: List[str]) -> List[str]:
        """``argv`` with every flag (and its arguments) moved before the positionals, order kept."""
        arity = self._flag_arity()
        flags: List[str] = []
        rest: List[str] = []
        i = 0
        while i < len(argv):
            token = argv[i]
            if token == "--":
                rest.extend(argv[i + 1:])
                break
            name = token.split("=", 1)[0]
            if name in arity:
                count = 0 if "=" in token else _count(arity[name])
                if arity[name] in ("+", "*") and "=" not in token:  # a list: up to the next flag or override
                    while i + 1 + count < len(argv) and not _is_flag(argv[i + 1 + count]) \
                            and not _CONFIG_KEY.match(argv[i + 1 + count]):
                        count += 1
                flags.extend(argv[i:i + 1 + count])
                i += 1 + count
                continue
            if token.startswith("-") and len(token) > 1 and not _NUMBER.match(token):
                known = sorted(arity)
                close = difflib.get_close_matches(name, known, n=2, cutoff=0.6)
                hint = f"; did you mean {' or '.join(close)}?" if close else f"; known flags: {', '.join(known)}"
                self.error(f"unknown flag {name}{hint}")
            rest.append(token)
            i += 1
        if rest and any(arity.get(t.split("=", 1)[0]) in ("+", "*") for t in flags):
            return flags + ["--"] + rest  # or argparse would give the positionals to that list flag too
        return flags + rest

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        """argparse's parse_args after moving the flags in front of the positionals."""
        argv = list(sys.argv[1:] if args is None else args)
        parsed = super().parse_args(self._split_flags(argv), namespace)
        for action in self._actions:  # argparse keeps a "--" that ends the flags in a REMAINDER positional
            value = getattr(parsed, action.dest, None)
            if action.nargs == argparse.REMAINDER and isinstance(value, list) and value[:1] == ["--"]:
                setattr(parsed, action.dest, value[1:])
        return parsed


def _is_flag(token: str) -> bool:
    """A token that starts a flag (or ``--``), not a value such as ``-5``."""
    return token.startswith("-") and len(token) > 1 and not _NUMBER.match(token)


def _count(nargs: object) -> int:
    """How many arguments follow a flag with this nargs (0 for flags that take none)."""
    if nargs is None:
        return 1
    if isinstance(nargs, int):
        return nargs
    if nargs == "?":
        return 1
    return 0
