"""What warmtune costs on top of Ray Tune, and how a fixed search scales with workers.

``python -m warmtune.bench.tools.overhead`` runs one fixed search (MAML on sinusoids, a fixed
amount of CPU work per trial, random search) twice: through :func:`warmtune.runner.run_job`,
the path ``warmtune run`` takes (results recorder, progress, knowledge-base add at the
end), and as a bare ``ray.tune.Tuner`` over the same function trainable with the same
trials, iterations, concurrency, checkpointing and ``reuse_actors``. The difference per
trial is warmtune's overhead. Then it runs the warmtune search with 1, 2 and 4 workers.

Only the searched learning rates vary between trials, so every trial does the same
work whatever configuration it draws. Wall times include everything from building the
job to the end of the run, and exclude starting Ray.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import io
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["OverheadReport", "Run", "main", "measure"]

TRAINABLE = "maml-sinusoid"
# Fixed settings: one training iteration is a fixed number of meta-updates on a fixed
# network, about 0.3 s of one core here.
PARAMS: dict[str, Any] = {
    "meta_iters_per_report": 100,
    "meta_batch_size": 10,
    "hidden": 40,
    "inner_steps": 1,
    "first_order": False,
    "eval_tasks": 25,
}
# Searched: step sizes only, which do not change the cost of a trial.
SPACE: dict[str, tuple[float, float]] = {"inner_lr": (1e-3, 2e-2), "meta_lr": (3e-4, 1e-2)}
ENGINES = ("ray-tune", "warmtune")


@dataclass(frozen=True)
class Run:
    """One timed search.

    Attributes:
        series: ``"overhead"`` (warmtune against bare Ray Tune) or ``"scaling"``.
        engine: ``"warmtune"`` or ``"ray-tune"``.
        workers: trials running at once (``max_concurrency``).
        ray_cpus: CPUs of the Ray instance it ran on.
        trials: trials in the search.
        iterations: training iterations per trial.
        wall_s: seconds from building the search to its end.
        driver_cpu_s: CPU seconds this (driver) process spent on it: Tune's and
            warmtune's own work, without the trials; other load on the machine
            barely changes it, unlike ``wall_s``.
        oversubscribed: more workers than this machine has cores.
        load: the machine's 1-minute load average when the run started (other
            work on the machine slows a run down).
    """

    series: str
    engine: str
    workers: int
    ray_cpus: float
    trials: int
    iterations: int
    wall_s: float
    driver_cpu_s: float
    oversubscribed: bool
    load: float

    @property
    def per_trial_s(self) -> float:
        """Wall seconds per trial."""
        return self.wall_s / self.trials


@dataclass(frozen=True)
class OverheadReport:
    """Every timed run, and the load on the machine around them.

    Attributes:
        runs: in the order they ran.
        cores: CPU cores of this machine (``os.cpu_count()``).
        load_before: 1-minute load average before the first run.
        load_after: 1-minute load average after the last run.
    """

    runs: list[Run]
    cores: int
    load_before: float
    load_after: float

    def _overhead(self, engine: str | None = None) -> list[Run]:
        runs = [r for r in self.runs if r.series == "overhead" and engine in (None, r.engine)]
        if not runs:
            raise ValueError("no overhead series was measured (measure(workers=0) skips it)")
        return runs

    def _fastest(self, engine: str) -> float:
        # Other work on the machine only ever adds time, so the fastest run is the
        # least disturbed one (the reasoning of timeit's minimum).
        return min(r.wall_s for r in self._overhead(engine))

    @property
    def trials(self) -> int:
        """Trials per search in the overhead series."""
        return self._overhead()[0].trials

    @property
    def bare_s(self) -> float:
        """Wall time of the fastest bare Ray Tune run.

        The overhead properties raise ``ValueError`` when that series was skipped.
        """
        return self._fastest("ray-tune")

    @property
    def warmtune_s(self) -> float:
        """Wall time of the fastest warmtune run."""
        return self._fastest("warmtune")

    @property
    def overhead_per_trial_s(self) -> float:
        """``(warmtune - bare) / trials``, in seconds."""
        return (self.warmtune_s - self.bare_s) / self.trials

    @property
    def ratio(self) -> float:
        """``warmtune / bare`` wall time (the target is at most 1.10)."""
        return self.warmtune_s / self.bare_s

    def markdown(self) -> str:
        """The runs as a Markdown table, then the overhead and the scaling in words."""
        lines = [
            "| series | engine | workers | Ray CPUs | trials | iterations | wall s | s/trial "
            "| driver CPU s | load |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in self.runs:
            workers = f"{r.workers} (oversubscribed)" if r.oversubscribed else str(r.workers)
            lines.append(
                f"| {r.series} | {r.engine} | {workers} | {r.ray_cpus:g} | {r.trials} "
                f"| {r.iterations} | {r.wall_s:.2f} | {r.per_trial_s:.3f} | {r.driver_cpu_s:.2f} "
                f"| {r.load:.2f} |"
            )
        lines.append("")
        if any(r.series == "overhead" for r in self.runs):
            verdict = "within" if self.ratio <= 1.10 else "NOT within"
            lines.append(
                f"warmtune overhead: {self.overhead_per_trial_s:+.3f} s per trial; "
                f"warmtune / bare Ray Tune = {self.ratio:.3f} "
                f"({verdict} the 10 % target; fastest runs above)"
            )
            cpu = {e: min(r.driver_cpu_s for r in self._overhead(e)) for e in ENGINES}
            lines.append(
                "driver CPU per trial: warmtune "
                f"{cpu['warmtune'] / self.trials:.3f} s, bare Ray Tune "
                f"{cpu['ray-tune'] / self.trials:.3f} s (least of the runs above)"
            )
        fastest: dict[int, float] = {}
        for r in self.runs:
            if r.series == "scaling":
                fastest[r.workers] = min(r.wall_s, fastest.get(r.workers, r.wall_s))
        base = fastest.get(1)
        for n, wall_s in fastest.items():
            speedup = f", speed-up {base / wall_s:.2f}x over 1 worker" if base else ""
            note = f" ({n} workers on {self.cores} cores: oversubscribed)" if n > self.cores else ""
            lines.append(f"{n} worker(s): {wall_s:.2f} s (fastest run){speedup}{note}")
        lines.append(
            f"load average (1 min) before {self.load_before:.2f}, after {self.load_after:.2f}, "
            f"on {self.cores} cores"
        )
        return "\n".join(lines)

    def write_csv(self, path: str | os.PathLike[str]) -> None:
        """One row per run, with ``per_trial_s`` added."""
        fields = [f.name for f in dataclasses.fields(Run)] + ["per_trial_s"]
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            for r in self.runs:
                writer.writerow({**dataclasses.asdict(r), "per_trial_s": r.per_trial_s})


def measure(
    *,
    trials: int = 12,
    iterations: int = 5,
    workers: int = 2,
    scaling: Sequence[int] = (1, 2, 4),
    repeats: int = 1,
    params: dict[str, Any] | None = None,
    warmup: bool = True,
    storage: str | os.PathLike[str] | None = None,
    seed: int = 0,
) -> OverheadReport:
    """Time the overhead series and the scaling series.

    When this process is already connected to Ray (``ray.init`` done), every search
    runs on that instance, which must have CPUs for the most workers asked for, and it
    stays up. Otherwise each series starts its own embedded instance with as many CPUs
    as its most workers (more than the machine's cores: oversubscribed, and said so)
    and shuts it down after.

    Args:
        trials: trials per search.
        iterations: training iterations per trial.
        workers: trials at once in the overhead series; 0 skips that series.
        scaling: worker counts of the scaling series (warmtune runs); empty skips it.
        repeats: runs per engine in the overhead series (alternating which goes
            first) and per worker count in the scaling series; the report compares
            the fastest ones.
        params: fixed trainable settings over :data:`PARAMS` (say, fewer meta-updates).
        warmup: first run one untimed one-trial search per engine, so that neither pays
            for the first imports and worker start-ups alone.
        storage: where results go (default: a temporary directory, removed after).
        seed: the searchers' seed.

    Raises:
        ValueError: a count below 1, or (on a Ray instance of the caller's) more
            workers than it has CPUs.
    """
    for name, value in (("trials", trials), ("iterations", iterations), ("repeats", repeats)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    if workers < 0 or any(w < 1 for w in scaling):
        raise ValueError(f"worker counts must be at least 1, got {workers} and {list(scaling)}")
    params = {**PARAMS, **(params or {})}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="warmtune-overhead-") as tmp:
        root = Path(storage) if storage is not None else Path(tmp)
        bench = _Bench(root=root, trials=trials, iterations=iterations, params=params, seed=seed)
        runs: list[Run] = []
        if workers:

            def overhead(cpus: float) -> None:
                if warmup:
                    bench.warmtune(1, trials=1, iterations=1)
                    bench.bare(1, trials=1, iterations=1)
                engines = [("ray-tune", bench.bare), ("warmtune", bench.warmtune)]
                for i in range(repeats):
                    for engine, run in engines[:: 1 if i % 2 == 0 else -1]:
                        runs.append(bench.timed("overhead", engine, run, workers, cpus))

            _on_ray(workers, overhead)
        if scaling:

            def scale(cpus: float) -> None:
                if warmup:
                    bench.warmtune(1, trials=1, iterations=1)
                for _ in range(repeats):
                    for w in scaling:
                        runs.append(bench.timed("scaling", "warmtune", bench.warmtune, w, cpus))

            _on_ray(max(scaling), scale)
    return OverheadReport(
        runs=runs,
        cores=os.cpu_count() or 1,
        load_before=load_before,
        load_after=os.getloadavg()[0],
    )


def _on_ray(cpus: int, series: Callable[[float], None]) -> None:
    """Run ``series`` on the caller's Ray, or on a fresh embedded one with ``cpus`` CPUs."""
    import logging

    import ray

    if ray.is_initialized():
        available = float(ray.cluster_resources().get("CPU", 0))
        if available < cpus:
            raise ValueError(
                f"the connected Ray instance has {available:g} CPUs and the series needs "
                f"{cpus}; ask for fewer workers or start Ray with more CPUs"
            )
        series(available)
        return
    ray.init(
        num_cpus=cpus, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING
    )
    try:
        series(float(cpus))
    finally:
        ray.shutdown()


@dataclass
class _Bench:
    """Builds and runs the two kinds of search; each run gets fresh names."""

    root: Path
    trials: int
    iterations: int
    params: dict[str, Any]
    seed: int
    count: int = 0

    def _name(self, engine: str) -> str:
        self.count += 1
        return f"{engine}-{self.count}"

    def timed(
        self, series: str, engine: str, run: Callable[[int], None], workers: int, cpus: float
    ) -> Run:
        load = os.getloadavg()[0]
        start, cpu = time.perf_counter(), time.process_time()
        run(workers)
        wall_s, cpu_s = time.perf_counter() - start, time.process_time() - cpu
        return Run(
            series=series,
            engine=engine,
            workers=workers,
            ray_cpus=cpus,
            trials=self.trials,
            iterations=self.iterations,
            wall_s=wall_s,
            driver_cpu_s=cpu_s,
            oversubscribed=workers > (os.cpu_count() or 1),
            load=load,
        )

    def warmtune(
        self, workers: int, *, trials: int | None = None, iterations: int | None = None
    ) -> None:
        from warmtune.runner import run_job
        from warmtune.spec import job_from_dict

        spec = job_from_dict(
            {
                "name": self._name("warmtune"),
                "task": {"name": "overhead-sinusoid"},
                "trainable": {"name": TRAINABLE, "params": self.params},
                "space": {
                    name: {"type": "float", "low": low, "high": high, "log": True}
                    for name, (low, high) in SPACE.items()
                },
                "objective": {"metric": "loss", "mode": "min"},
                "searcher": {"name": "random"},
                "budget": {
                    "trials": trials or self.trials,
                    "max_iterations": iterations or self.iterations,
                },
                "resources": {"cpu": 1},
                "max_concurrency": workers,
                "storage": str(self.root / "results"),
                "knowledge_base": {"path": str(self.root / "kb")},
                "seed": self.seed,
            },
            source="warmtune.bench.tools.overhead",
        )
        # The CLI's path: progress lines included (into a buffer, not the terminal).
        summary = run_job(spec, progress=True, stream=io.StringIO())
        _check(summary.n_trials, summary.n_errors, trials or self.trials, spec.name)

    def bare(
        self, workers: int, *, trials: int | None = None, iterations: int | None = None
    ) -> None:
        from ray import tune

        from warmtune.trainables import resolve_trainable

        iterations = iterations or self.iterations
        trainable = tune.with_resources(
            tune.with_parameters(
                resolve_trainable(TRAINABLE).load(),
                max_iterations=iterations,
                seed=self.seed,
                **self.params,
            ),
            {"cpu": 1},
        )
        tuner = tune.Tuner(
            trainable,
            param_space={name: tune.loguniform(low, high) for name, (low, high) in SPACE.items()},
            tune_config=tune.TuneConfig(
                metric="loss",
                mode="min",
                num_samples=trials or self.trials,
                max_concurrent_trials=workers,
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                name=self._name("ray-tune"),
                storage_path=str(self.root / "bare"),
                stop={"training_iteration": iterations},
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                verbose=0,
            ),
        )
        grid = tuner.fit()
        _check(len(grid), grid.num_errors, trials or self.trials, "bare Ray Tune")


def _check(n_trials: int, n_errors: int, expected: int, what: str) -> None:
    # A failed trial costs less than a finished one: its time would flatter the run.
    if n_trials != expected or n_errors:
        raise RuntimeError(
            f"{what}: {n_trials} trials ran, {n_errors} failed, {expected} expected; "
            "the timing would not compare like with like"
        )


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m warmtune.bench.tools.overhead``: run :func:`measure` and print the table."""
    parser = argparse.ArgumentParser(
        prog="warmtune bench overhead",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--trials", type=int, default=12, help="Trials per search (12).")
    parser.add_argument("--iterations", type=int, default=5, help="Iterations per trial (5).")
    parser.add_argument(
        "--workers", type=int, default=2, help="Workers of the overhead series (2; 0 skips it)."
    )
    parser.add_argument(
        "--scaling",
        default="1,2,4",
        help="Worker counts of the scaling series, comma-separated ('1,2,4'; '' skips it).",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="Runs per engine and per worker count; the fastest ones count (1).",
    )
    parser.add_argument(
        "--meta-iters",
        type=int,
        default=PARAMS["meta_iters_per_report"],
        help="Meta-updates per training iteration, i.e. the work per iteration (100).",
    )
    parser.add_argument("--out", type=Path, help="Also write the runs to this CSV file.")
    parser.add_argument(
        "--address",
        help="Run on this Ray cluster (HOST:PORT, e.g. one from cluster/local/start.sh) "
        "instead of embedded instances; it needs CPUs for the most workers asked for.",
    )
    args = parser.parse_args(argv)
    try:
        scaling = [int(w) for w in args.scaling.split(",") if w.strip()]
    except ValueError:
        parser.error(f"--scaling takes comma-separated integers, got {args.scaling!r}")
    counts = [args.trials, args.iterations, args.repeats, args.meta_iters, *scaling]
    if min(counts) < 1 or args.workers < 0:
        parser.error("counts must be at least 1 (--workers: at least 0)")
    if args.address:
        from warmtune.cluster.connect import connect_ray

        print(f"connected to {connect_ray(args.address)}", file=sys.stderr)
    # Tune prints a banner per search to stdout; keep stdout for the table.
    with contextlib.redirect_stdout(sys.stderr):
        report = measure(
            trials=args.trials,
            iterations=args.iterations,
            workers=args.workers,
            scaling=scaling,
            repeats=args.repeats,
            params={"meta_iters_per_report": args.meta_iters},
        )
    print(
        f"{TRAINABLE}, {args.meta_iters} meta-updates per iteration, {args.iterations} "
        f"iterations per trial, {args.trials} trials, random search, 1 CPU per trial"
    )
    print()
    print(report.markdown())
    if args.out:
        report.write_csv(args.out)
        print(f"runs written to {args.out}")


if __name__ == "__main__":
    main()
