"""The typer application and the one place where user errors become one-line messages."""

from __future__ import annotations

import importlib
import sys
import warnings

import typer

from dardiag.errors import DardiagError

_COMMANDS = ("inspect", "profile", "demo", "train", "sample", "plot", "latents", "prompts", "generate", "calibrate",
             "cache_plan", "cache_eval",
             "to-dar")

_typer_app = typer.Typer(
    name="dardiag",
    help="Diagnose Diffusion Transformers: magnitude, gradients, redundancy and routing "
    "along depth and noise level.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@_typer_app.callback()
def _root() -> None:
    """Diagnose Diffusion Transformers along depth and noise level."""


def _register() -> None:
    for name in _COMMANDS:
        module = f"dardiag.cli.cmd_{name.replace('-', '_')}"  # to-dar -> cmd_to_dar
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise


def _unwrap(text: str) -> str:
    """Paragraphs as single lines: rich keeps a docstring's line breaks in the command list."""
    return "\n\n".join(" ".join(p.split()) for p in text.strip().split("\n\n"))


def _tidy_help(group) -> None:
    """Help as written: rich markup would eat ``dardiag[lora]`` (a tag to rich), a flag would show a
    value type ``<bool>`` it does not take, and a docstring's line breaks would cut sentences."""
    rich = _typer_app.rich_markup_mode == "rich"
    if rich:
        from rich.markup import escape
    for c in [group, *group.commands.values()]:
        if c.help:
            c.help = escape(_unwrap(c.help)) if rich else _unwrap(c.help)
        for p in [*c.params, c.get_help_option(c.context_class(c))]:
            if p is None:
                continue
            if rich and getattr(p, "help", None):
                p.help = escape(p.help)
            if getattr(p, "is_flag", False):
                p.metavar = ""


def _format_warning(message, category, filename, lineno, line=None):
    return f"warning: {message}\n"


def app(argv: list[str] | None = None) -> None:
    """Console entry point: run the CLI, turning user errors into one line and exit status 2."""
    warnings.formatwarning = _format_warning
    _register()
    group = typer.main.get_command(_typer_app)
    _tidy_help(group)
    try:
        rc = group.main(args=argv, standalone_mode=False)
    except DardiagError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as e:  # Ctrl-C, or dardiag.runs.stop.Stopped (130 after SIGINT, 143 after SIGTERM)
        rc = getattr(e, "exit_code", 130)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort as e:  # click turns KeyboardInterrupt into Abort, raised from it
        rc = getattr(e.__cause__ or e.__context__, "exit_code", 130)
    except Exception as e:  # click's errors arrive here in non-standalone mode (typer >= 0.25 has its own click)
        kinds = {k.__name__ for k in type(e).__mro__}
        if "UsageError" in kinds and "NoArgsIsHelpError" not in kinds:  # a bad flag or value: one line too
            where = f"{e.ctx.command_path} --help" if getattr(e, "ctx", None) is not None else "dardiag --help"
            print(f"error: {' '.join(e.format_message().split())} (see {where})", file=sys.stderr)
            sys.exit(2)
        if hasattr(e, "show") and hasattr(e, "exit_code"):  # `dardiag` alone: the help
            e.show()
            sys.exit(e.exit_code)
        raise
    # not standalone, click returns Ctrl-C as the value 130 instead of raising: a script must see it fail
    if rc in (130, 143):
        from dardiag.runs.stop import last_exit_code, last_keeps

        rc = last_exit_code() or rc  # typer reports every KeyboardInterrupt as 130; a SIGTERM stop exits 143
        # a command that cannot continue (sample) says what it left instead
        print(f"interrupted: {last_keeps() or 'finished work is kept; run the same command again to continue'}",
              file=sys.stderr)
        sys.exit(rc)
    if isinstance(rc, int) and rc != 0:
        sys.exit(rc)


main = app
command = _typer_app.command  # command modules register with ``@command("name")``
