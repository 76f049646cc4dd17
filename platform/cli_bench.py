"""``warmtune bench``: searchers on benchmarks, leave-one-task-out (see :mod:`warmtune.bench`)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

_DEFAULT_METHODS = "random,hyperband,bohb,bohb-warm,zeroshot"


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


@click.command()
@click.argument("benchmark")
@click.option(
    "--tasks",
    default=None,
    help="Comma-separated target tasks, or 'all' (default: all; nb201: the named dataset).",
)
@click.option(
    "--methods",
    default=_DEFAULT_METHODS,
    show_default=True,
    help="Comma-separated: random, hyperband, asha, bohb, bohb-warm, zeroshot, optuna, hyperopt.",
)
@click.option("--budget", default=20.0, show_default=True, help="Full-fidelity equivalents.")
@click.option("--workers", default=4, show_default=True, help="Simulated parallel workers.")
@click.option("--seeds", default=3, show_default=True, help="Seeds per (task, method): 0..S-1.")
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
    help="Benchmark data (default: $WARMTUNE_DATA).",
)
@click.option("--metric", default=None, help="YAHPO output to optimise (lcbench: val_accuracy).")
@click.option("--mode", type=click.Choice(["min", "max"]), default=None, help="Its direction.")
@click.option("--fidelity", default=None, help="YAHPO integer fidelity (lcbench: epoch).")
@click.option("--quiet", is_flag=True, help="No progress lines.")
def bench(
    benchmark: str,
    tasks: str | None,
    methods: str,
    budget: float,
    workers: int,
    seeds: int,
    out: Path,
    cache_dir: Path | None,
    data_dir: Path | None,
    metric: str | None,
    mode: str | None,
    fidelity: str | None,
    quiet: bool,
) -> None:
    """Benchmark searchers on BENCHMARK: lcbench, yahpo:PATH or nb201:DATASET.

    Leave-one-task-out: each target task is warm-started from the benchmark's other
    tasks. Prints the mean normalised regret per method and budget.
    """
    from warmtune.bench import load_benchmark, markdown_table, run_bench

    try:
        if seeds < 1:
            raise ValueError(f"--seeds must be >= 1, got {seeds}")
        if workers < 1:
            raise ValueError(f"--workers must be >= 1, got {workers}")
        spec = load_benchmark(
            benchmark, data_dir=data_dir, metric=metric, mode=mode, fidelity=fidelity
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
            methods=_split(methods),
            budget=budget,
            workers=workers,
            seeds=list(range(seeds)),
            out=out,
            cache_dir=cache_dir,
            progress=None if quiet else sys.stderr,
        )
    except ValueError as e:
        click.echo(f"warmtune: error: {e}", err=True)
        sys.exit(2)
    click.echo(markdown_table(table), nl=False)
    click.echo(f"results in {out}")
