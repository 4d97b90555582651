"""`mlsignals` command line. Each subcommand group lives in ``mlsignals/commands/<name>.py``
and exposes ``register(app)``; this module only assembles them and turns errors into a
one-line reason with a non-zero exit code."""

from __future__ import annotations

import importlib
import sys

import typer
from sqlalchemy.exc import SQLAlchemyError

from common.errors import MLSignalsError

app = typer.Typer(
    name="mlsignals",
    help="Real-time ML trading signals: data, features, training, evaluation, prediction, backtest.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Command modules, in help order. A module that is not there yet is skipped, so the CLI
# works while later parts of the pipeline are being built.
_COMMAND_MODULES = ("data", "features", "train", "stack", "cv", "evaluate", "policy", "predict", "backtest", "signals")


def _register_all() -> None:
    for name in _COMMAND_MODULES:
        try:
            mod = importlib.import_module(f"mlsignals.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"mlsignals.commands.{name}":
                continue
            raise
        mod.register(app)


_register_all()


# Options that take several files after one flag (`--candles A B C`), as the CLI contract
# documents; click options take one value each, so such runs are expanded before parsing.
_MULTI_VALUE_OPTIONS = ("--candles", "--validation-candles", "--symbols")


# Options whose value may be left out (`--ray` alone, or `--ray ADDRESS`): the value they take then.
# Typer's parser has no optional values, so a bare one gets its default inserted before parsing.
_OPTIONAL_VALUE_OPTIONS = {"--ray": "local"}


def expand_multi_value_options(argv: list[str]) -> list[str]:
    """``--candles A B --json`` -> ``--candles A --candles B --json``; ``--ray --json`` ->
    ``--ray local --json``."""
    out: list[str] = []
    current: str | None = None
    for arg in argv:
        if arg in _MULTI_VALUE_OPTIONS:
            current = arg
            out.append(arg)
            continue
        if current is not None and not arg.startswith("-") and out[-1] != current:
            out.append(current)
        elif arg.startswith("-"):
            current = None
        out.append(arg)
    for i in range(len(out) - 1, -1, -1):
        bare = out[i] in _OPTIONAL_VALUE_OPTIONS and (i + 1 == len(out) or out[i + 1].startswith("-"))
        if bare:
            out.insert(i + 1, _OPTIONAL_VALUE_OPTIONS[out[i]])
    return out


def main(argv: list[str] | None = None) -> None:
    args = expand_multi_value_options(list(sys.argv[1:] if argv is None else argv))
    try:
        app(args=args, standalone_mode=False)
    except typer.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except typer.Abort:
        print("aborted", file=sys.stderr)
        raise SystemExit(1) from None
    except typer.TyperException as exc:  # usage errors: click's own one-line message
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(getattr(exc, "exit_code", 2)) from None
    except MLSignalsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except SQLAlchemyError as exc:  # the message may hold the URL: name only the kind of failure
        print(f"error: database unavailable or failing ({type(exc).__name__}); check DATABASE_URL", file=sys.stderr)
        raise SystemExit(2) from None
    except (KeyboardInterrupt, BrokenPipeError):
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
