"""``longctx``: the entry point. Commands live one per module and are imported only when used,
so ``longctx --help`` and ``longctx tasks`` never import torch or vllm."""

from __future__ import annotations

import importlib
import importlib.util
import sys

import click

from longctx._errors import LongctxError

#: command name -> "module:attribute"; one thin module per command.
COMMANDS: dict[str, str] = {
    "sweep": "longctx.cli.sweep:sweep",
    "report": "longctx.cli.report:report",
    "compare": "longctx.cli.compare:compare",
    "score": "longctx.cli.score:score",
    "tasks": "longctx.cli.listing:tasks",
    "runners": "longctx.cli.listing:runners",
    "models": "longctx.cli.models:models",
    "presets": "longctx.cli.presets:presets",
    "runs": "longctx.cli.runs:runs",
    "hope": "longctx.cli.hope:hope",
    "sandbox": "longctx.cli.sandbox:sandbox",
}

HELP = {
    "sweep": "Run a task over lengths x depths with a runner; resumable.",
    "report": "Write one self-contained HTML report for run folders.",
    "compare": "Compare runs on the same samples: paired tests, effective length, cost (HTML, JSON).",
    "score": "Rescore predictions produced elsewhere with a task's official metric.",
    "tasks": "List the registered tasks.",
    "runners": "List the registered runners.",
    "models": "List the named models (context window, where they live).",
    "presets": "List the presets of `sweep --preset`: RULER NIAH, BABILong, demo.",
    "runs": "List run folders and their status: finished, interrupted, running.",
    "hope": "HOPE checkpoints: convert from nested-learning, inspect.",
    "sandbox": "Run code in the RLM sandbox; check which isolation layers are active.",
}


class UserError(click.ClickException):
    """A :class:`LongctxError` as the CLI shows it: one line, exit code 2."""

    exit_code = 2


class LazyGroup(click.Group):
    """A group whose commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in COMMANDS if _available(name)]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS or not _available(name):
            return None
        module, attr = COMMANDS[name].split(":")
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, HELP.get(name, "")) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context):  # noqa: ANN201
        try:
            return super().invoke(ctx)
        except LongctxError as exc:
            raise UserError(str(exc)) from None


def _available(name: str) -> bool:
    return importlib.util.find_spec(COMMANDS[name].split(":")[0]) is not None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="longctx")
def cli() -> None:
    """Measure how well language models use long contexts, and where they fail."""


def main() -> None:
    """Console entry point: user errors are one line on stderr and exit code 2."""
    try:
        cli.main(prog_name="longctx", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.UsageError as exc:  # bad flags: one line naming the problem and where help is
        where = exc.ctx.command_path if exc.ctx else "longctx"
        click.echo(f"Error: {exc.format_message()} (see '{where} --help')", err=True)
        sys.exit(2)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:  # pragma: no cover - interactive
        click.echo("interrupted; finished results are saved, rerun the same command to resume", err=True)
        sys.exit(130)
    except BrokenPipeError:  # pragma: no cover - e.g. `longctx tasks | head`
        sys.exit(0)


if __name__ == "__main__":  # pragma: no cover
    main()
