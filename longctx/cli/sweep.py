"""``longctx sweep``: run tasks over lengths x depths with a runner into a resumable run folder."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from longctx._config import with_thinking_budget
from longctx._errors import SweepStopped
from longctx._parsing import parse_depths, parse_endpoints, parse_lengths, parse_options
from longctx._protocols import Grid, RunnerConfig
from longctx._sweep import SweepOutcome, SweepSpec, run_sweep
from longctx.cli._sweep_config import sweep_settings

EPILOG = """\b
Examples:
  longctx sweep --task ruler/niah_single_1 --lengths 1k,2k,4k,8k --depths 0:100:11 \\
                --samples 3 --runner vllm --model default --out runs/smol-niah
  longctx sweep --task ruler/niah_single_2 --runner vllm \\
                --endpoint http://127.0.0.1:8000/v1 --model NAME --out runs/attached
  longctx sweep --preset ruler-niah --runner vllm --model NAME     # `longctx presets`
  longctx sweep --config run.yaml --samples 5    # flags override the file's settings
Without --out the run folder is runs/<date>-<task>-<model>-<runner> (printed); the
settings are saved in it as config.yaml (`longctx sweep --config FOLDER` resumes).
Rerunning the same command resumes: scored samples are skipped, samples whose last
result is an error are retried (--keep-errors keeps them).
A resume with settings that can change results (concurrency, dtype, engine version) is
refused unless --allow-mixed; with --deterministic, concurrency does not change them.
Exit codes: 0 done (errors may remain: see the summary), 2 bad input, 3 the engine is
gone (unfinished samples stay pending; rerun to resume), 4 more than --max-errors failures,
5 the next sample would pass --max-cost-usd (a rerun with a higher cap resumes)."""


@click.command(epilog=EPILOG)
@sweep_settings
@click.option("--task", "-t", "task_names", multiple=True, required=True, help="Task name (repeatable); see `longctx tasks`.")
@click.option("--lengths", "-l", default="1k,2k,4k", show_default=True,
              help="Context budgets in tokens (prompt + answer budget), e.g. 1k,2k,4k (k = 1024).")
@click.option("--depths", "-d", default="0:100:5", show_default=True,
              help="Evidence depths in percent: start:stop:count or a list 0,50,100.")
@click.option("--samples", "-n", default=3, show_default=True, help="Samples per (length, depth) cell.")
@click.option("--seed", default=42, show_default=True, help="Seed: same seed, same samples.")
@click.option("--runner", "-r", "runner_name", default="vllm", show_default=True, help="Runner; see `longctx runners`.")
@click.option("--model", "-m", default="default", show_default=True,
              help="Named model (`longctx models`), a local model folder, or an endpoint's model name.")
@click.option("--endpoint", multiple=True,
              help="Attach to an OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1; repeat it for several "
                   "servers (requests are spread over them, samples sharing a prefix stay on one).")
@click.option("--endpoints-file", type=click.Path(path_type=Path, dir_okay=False), metavar="FILE",
              help="Servers to attach to, one URL per line (# comments), with or instead of --endpoint.")
@click.option("--api-key-env", default="OPENAI_API_KEY", show_default=True, help="Env var holding the endpoint's key.")
@click.option("--concurrency", "-c", default=4, show_default=True,
              help="Requests in flight, per server when there are several.")
@click.option("--timeout", "timeout_s", default=600.0, show_default=True, help="Per-request timeout, seconds.")
@click.option("--retries", default=3, show_default=True, help="Retries on transient errors.")
@click.option("--chat-only", is_flag=True, help="Send chat messages (no answer-prefix prefill).")
@click.option("--max-thinking-tokens", type=int, metavar="N",
              help="Thinking budget of a reasoning model, apart from the answer's (default 2048): a thinking "
                   "that reaches N tokens is closed for the model (recorded as truncated) and the answer "
                   "generated after it. A model counts as reasoning when its chat template mentions <think> "
                   "(-R reasoning=true|false overrides); it gets the chat prompt without the answer prefix "
                   "and is scored on its answer only. Ignored for other models.")
@click.option("--option", "-O", "task_opts", multiple=True, metavar="KEY=VALUE", help="Task option (repeatable); SCOPE:KEY=VALUE applies it only to one task or family.")
@click.option("--runner-option", "-R", "runner_opts", multiple=True, metavar="KEY=VALUE", help="Runner option.")
@click.option("--out", "-o", type=click.Path(path_type=Path),
              help="Run folder (created or resumed); default runs/<date>-<task>-<model>-<runner>.")
@click.option("--limit", type=int, help="Record at most this many new samples now (rerun to continue).")
@click.option("--keep-errors", is_flag=True,
              help="Do not retry samples whose last result is an error (default: a rerun retries them).")
@click.option("--max-errors", type=int, metavar="N",
              help="Stop with exit code 4 as soon as more than N samples fail in this invocation.")
@click.option("--deterministic/--no-deterministic", default=False,
              help="Greedy answers independent of --concurrency and of server vs offline (vllm: float32 "
                   "and one sequence per engine step on CPU; slower). --no-deterministic overrides a "
                   "config file or preset (the demo preset is deterministic).")
@click.option("--allow-mixed", is_flag=True,
              help="Resume a folder whose results were recorded with other concurrency, dtype or engine "
                   "version (default: refuse; the report marks a mixed run).")
@click.option("--max-cost-usd", type=float, metavar="USD",
              help="Stop with exit code 5 before the next sample would take the run folder's total spend "
                   "(every recorded attempt, all sessions) past USD; a rerun with a higher cap resumes. "
                   "Needs a price for --model (--prices; a local engine costs 0).")
@click.option("--prices", type=click.Path(path_type=Path, dir_okay=False), metavar="FILE",
              help="Price table (YAML or TOML, USD per million tokens) over ~/.config/longctx/prices.yaml "
                   "and the shipped defaults; used by --max-cost-usd.")
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", metavar="[ADDRESS]",
              help="Run the samples in shards on Ray workers, each building the runner (in-process, or "
                   "attached to --endpoint servers); results are scored and written here, once each. "
                   "--ray alone starts a local Ray instance; ADDRESS: auto (this node's cluster), "
                   "ray://HOST:10001, HOST:6379. Needs longctx[ray] (docs/scale-out.md).")
@click.option("--ray-shards", type=int, metavar="N",
              help="With --ray: N shards, one worker each (default: the cluster's CPUs); -c is per shard.")
@click.option("--ray-gpus", type=float, metavar="G",
              help="With --ray: GPUs each shard's worker reserves (an in-process runner on GPU nodes, or "
                   "-r vllm launching one server per shard: 1); default 0.")
@click.option("--scoring", type=click.Choice(["generate", "choice"]), default="generate", show_default=True,
              help="generate: score the generated answers with the task's metric. choice: forced choice, the "
                   "log-likelihood of each candidate answer (the true one and --choices distractors of its "
                   "kind) after the prompt; correct when the true one ranks first, a tie is wrong. Reported "
                   "as choice_accuracy under TASK (forced choice); runners hf, hope, vllm; tasks with a closed "
                   "answer set (RULER single-answer NIAH, LongHealth, BABILong qa1).")
@click.option("--choices", type=int, metavar="K",
              help="With --scoring choice: distractors per sample (default 1, as nested-learning's NIAH); "
                   "tasks with a fixed answer set use all of it.")
def sweep(task_names: tuple[str, ...], lengths: str, depths: str, samples: int, seed: int, runner_name: str,
          model: str, endpoint: tuple[str, ...], endpoints_file: Path | None, api_key_env: str, concurrency: int,
          timeout_s: float, retries: int,
          chat_only: bool, task_opts: tuple[str, ...], runner_opts: tuple[str, ...], out: Path,
          limit: int | None, keep_errors: bool, max_errors: int | None, deterministic: bool,
          allow_mixed: bool, max_cost_usd: float | None, prices: Path | None, max_thinking_tokens: int | None = None,
          ray_address: str | None = None, ray_shards: int | None = None,
          ray_gpus: float | None = None, scoring: str = "generate", choices: int | None = None) -> None:
    """Run tasks over lengths x depths with a runner; resumable."""
    from longctx.cli._progress import RichProgress

    if concurrency < 1:
        raise click.BadParameter("must be at least 1", param_hint="--concurrency")
    servers = parse_endpoints(endpoint, endpoints_file)
    spec = SweepSpec(
        tasks=task_names,
        grid=Grid(parse_lengths(lengths), parse_depths(depths), samples, seed),
        runner=runner_name,
        runner_config=RunnerConfig(model=model, endpoint=servers[0] if servers else None,
                                   endpoints=servers if len(servers) > 1 else (), api_key_env=api_key_env,
                                   concurrency=concurrency,
                                   timeout_s=timeout_s, retries=retries, mode="chat" if chat_only else "completions",
                                   seed=seed),
        out=out,
        task_options=parse_options(task_opts, "-O"),
        runner_options=with_thinking_budget(parse_options(runner_opts, "-R"), max_thinking_tokens, runner_name),
        limit=limit,
        keep_errors=keep_errors,
        max_errors=max_errors,
        deterministic=deterministic,
        allow_mixed=allow_mixed,
        scoring=scoring,
        choices=choices,
        max_cost_usd=max_cost_usd,
        prices=prices,
        ray=ray_address,
        ray_shards=ray_shards,
        ray_gpus=ray_gpus,
    )
    console = Console(stderr=True)
    try:
        outcome = run_sweep(spec, RichProgress(console))
    except SweepStopped as exc:
        if isinstance(exc.outcome, SweepOutcome):
            print_summary(exc.outcome)
        raise Stopped(str(exc), exc.exit_code) from None
    print_summary(outcome)


class Stopped(click.ClickException):
    """A sweep that ended early: its one-line reason on stderr and its own exit code."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def print_summary(outcome) -> None:
    """The accuracy table and where the results are."""
    console = Console()
    try:
        from longctx.cli._tables import print_accuracy_table
    except ImportError:  # pragma: no cover - tables module ships with the reports
        print_accuracy_table = None
    results = outcome.store.latest_results()  # one per sample: the last attempt
    if print_accuracy_table is not None and results:
        from longctx.reports.aggregate import reported

        print_accuracy_table(reported(results), console)  # forced choice under TASK (forced choice)
    if (thinking := thinking_line(results)) is not None:
        console.print(thinking, highlight=False)
    console.print(summary_line(outcome), highlight=False)


def thinking_line(results) -> str | None:
    """``thinking: mean N tokens (max M), K of T cut by the budget``, for results that thought."""
    thought = [r for r in results if r.thinking is not None]
    if not thought:
        return None
    counts = [r.thinking_tokens for r in thought if r.thinking_tokens is not None]
    size = f"mean {sum(counts) / len(counts):,.0f} tokens (max {max(counts):,})" if counts else "tokens unknown"
    cut = sum(r.thinking_truncated for r in thought)
    return f"thinking: {size}, {cut} of {len(thought)} cut by the budget"


def summary_line(outcome) -> str:
    """``N new, N already done, N planned[, N errors][, N retried][, N kept errors][, N pending] -> FOLDER``."""
    parts = [f"{outcome.new} new", f"{outcome.skipped} already done", f"{outcome.planned} planned"]
    if outcome.errors:
        parts.append(f"{outcome.errors} errors")
    if outcome.retried:
        parts.append(f"{outcome.retried} retried")
    if outcome.kept_errors:
        parts.append(f"{outcome.kept_errors} kept errors")
    if outcome.pending:
        parts.append(f"{outcome.pending} pending")
    if getattr(outcome, "spent_usd", None) is not None:
        parts.append(f"${outcome.spent_usd:.4f} spent by the folder")
    return ", ".join(parts) + f" -> {outcome.store.root}"
