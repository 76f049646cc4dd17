"""``warmtune bench``: searchers on benchmarks, leave-one-task-out (see :mod:`warmtune.bench`),
and the measurement tools (:mod:`warmtune.bench.tools`): ``overhead``, ``latency``,
``throughput maml|nas``, ``compare``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from warmtune.bench import PASTS, REFERENCE_CONFIGS
from warmtune.bench.methods import expand_methods


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


class _BenchGroup(click.Group):
    """``warmtune bench BENCHMARK ...`` runs the protocol (the ``run`` command), and
    ``warmtune bench TOOL ...`` a measurement tool."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["run", *args]
        return super().parse_args(ctx, args)

    def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write_usage(ctx.command_path, "BENCHMARK [OPTIONS] | TOOL [ARGS]...")


@click.group(cls=_BenchGroup)
def bench() -> None:
    """Benchmark searchers, and measure warmtune itself.

    `warmtune bench BENCHMARK [OPTIONS]` (lcbench, yahpo:NAME|PATH, nb201:DATASET, nqm)
    replays every method on the benchmark, leave one task out; `warmtune bench run
    --help` lists its options. The tools: `overhead` (what the platform adds to a
    search), `latency` (a searcher's suggest time against the knowledge base's size),
    `throughput maml|nas` (training steps per second of the trainables), `compare`
    (trained NAS cells against random ones); each takes --help.
    """


_TOOL = {"context_settings": {"ignore_unknown_options": True, "help_option_names": []}}


@bench.command("overhead", add_help_option=False, **_TOOL)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def overhead(args: tuple[str, ...]) -> None:
    """What Tune and warmtune add to a fixed search (--help for the options)."""
    from warmtune.bench.tools.overhead import main

    main(list(args))


@bench.command("latency", add_help_option=False, **_TOOL)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def latency(args: tuple[str, ...]) -> None:
    """A searcher's suggest time against the knowledge base's size (--help)."""
    from warmtune.bench.tools.latency import main

    main(list(args))


@bench.command("throughput", add_help_option=False, **_TOOL)
@click.argument("family", type=click.Choice(["maml", "nas"]))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def throughput(family: str, args: tuple[str, ...]) -> None:
    """Training throughput of the few-shot (maml) or NAS trainables (FAMILY --help)."""
    if family == "maml":
        from warmtune.bench.tools.maml_throughput import main as run_maml

        run_maml(list(args))
    else:
        from warmtune.bench.tools.nas_throughput import main as run_nas

        run_nas(list(args))


@bench.command("compare", add_help_option=False, **_TOOL)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def compare(args: tuple[str, ...]) -> None:
    """Train a NAS job's found cell beside random cells (--help)."""
    from warmtune.bench.tools.nas_compare import main

    main(list(args))


@bench.command("run")
@click.argument("benchmark")
@click.option(
    "--tasks",
    default=None,
    help="Comma-separated target tasks, or 'all' (default: all; nb201: the named dataset).",
)
@click.option(
    "--methods",
    default="default",
    show_default=True,
    help="Comma-separated methods, or a keyword: default (every method but the "
    "ablations; pbt too where trials have weights, nqm), ablations (bohb, bohb-warm and "
    "each bohb-warm-* ablation), all.",
)
@click.option("--budget", default=20.0, show_default=True, help="Full-fidelity equivalents.")
@click.option("--workers", default=1, show_default=True, help="Simulated parallel workers.")
@click.option("--seeds", default=10, show_default=True, help="Seeds per (task, method): 0..S-1.")
@click.option(
    "--past",
    type=click.Choice(PASTS),
    default="random",
    show_default=True,
    help="Knowledge base per other task: 100 random full evaluations, or an earlier "
    "simulated BOHB search (multi-fidelity).",
)
@click.option(
    "--past-mix",
    default=None,
    metavar="K:KIND[,K:KIND]",
    help="Add K distractor tasks of each KIND (mirrored, permuted, shifted) per past task.",
)
@click.option(
    "--jobs",
    default=None,
    type=int,
    help="Processes to run in (default: the number of CPUs).",
)
@click.option(
    "--reference-configs",
    default=REFERENCE_CONFIGS,
    show_default=True,
    help="Random configurations that define a task's y* and median (nb201: all cells).",
)
@click.option(
    "--target-gap",
    default=None,
    type=float,
    help="runs.csv evals_to_target tolerance in metric units (default 0.5).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("warmtune-bench"),
    show_default=True,
    help="Output folder (summary.csv, summary.md, evaluations.parquet, regret.png).",
)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Knowledge-base and reference cache (default: OUT/cache).",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The data directory (default: $WARMTUNE_DATA, else ~/.cache/warmtune/data; "
    "`warmtune data fetch lcbench nb201` fills it).",
)
@click.option("--metric", default=None, help="YAHPO output to optimise (lcbench: val_accuracy).")
@click.option("--mode", type=click.Choice(["min", "max"]), default=None, help="Its direction.")
@click.option(
    "--fidelity",
    default=None,
    help="YAHPO fidelity, integer (lcbench: epoch; iterations) or float (iaml: trainsize; "
    "each budget a fit from scratch).",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def run(
    benchmark: str,
    tasks: str | None,
    methods: str,
    budget: float,
    workers: int,
    seeds: int,
    past: str,
    past_mix: str | None,
    jobs: int | None,
    reference_configs: int,
    target_gap: float | None,
    out: Path,
    cache_dir: Path | None,
    data_dir: Path | None,
    metric: str | None,
    mode: str | None,
    fidelity: str | None,
    quiet: bool,
) -> None:
    """Benchmark searchers on BENCHMARK: lcbench, yahpo:PATH, nb201:DATASET or nqm.

    Leave-one-task-out: each target task is warm-started from the benchmark's other
    tasks. Prints the mean normalised regret per method and budget.
    """
    from warmtune.bench import load_benchmark, markdown_table, run_bench

    try:
        if seeds < 1:
            raise ValueError(f"--seeds must be >= 1, got {seeds}")
        if workers < 1:
            raise ValueError(f"--workers must be >= 1, got {workers}")
        if reference_configs < 10:
            raise ValueError(f"--reference-configs must be >= 10, got {reference_configs}")
        if target_gap is not None and not target_gap >= 0:
            raise ValueError(f"--target-gap must be >= 0, got {target_gap}")
        spec = load_benchmark(
            benchmark,
            data_dir=data_dir,
            metric=metric,
            mode=mode,
            fidelity=fidelity,
            target_gap=target_gap,
        )
        if tasks is None:
            targets = spec.default_tasks
        elif tasks == "all":
            targets = spec.tasks
        else:
            targets = _split(tasks)
        table = run_bench(
            spec,
            tasks=targets,
            methods=expand_methods(methods, weights=spec.weights),
            budget=budget,
            workers=workers,
            seeds=list(range(seeds)),
            out=out,
            cache_dir=cache_dir,
            past=past,
            past_mix=past_mix,
            reference_configs=reference_configs,
            jobs=jobs if jobs is not None else max(1, os.cpu_count() or 1),
            progress=None if quiet else sys.stderr,
        )
    except ValueError as e:
        click.echo(f"warmtune: error: {e}", err=True)
        sys.exit(2)
    click.echo(markdown_table(table), nl=False)
    click.echo(f"results in {out}")
