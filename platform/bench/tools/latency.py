"""Suggest-latency benchmark: ``python -m warmtune.bench.tools.latency``.

Measures how long ``ask()`` takes once a searcher has ``--own`` observations of its
own, with a knowledge base of ``--kb-size`` past observations over ``--tasks`` tasks
behind the warm start, on a 7-parameter mixed space shaped like LCBench's. Each
measured ask follows a tell, so the model is refitted every time (the worst case).
Optuna's TPE runs on the same observations for comparison.

It also times what a warm start costs before its first suggestion. A knowledge base
measures each task's pairwise concordances once, when the task's job joins
(:meth:`warmtune.knowledge.KnowledgeBase.update_similarities`, timed here for one
task against its nearest neighbours), and a warm start reads them back: the set-up
is timed with the pairs a knowledge base would hold for the tasks it weighs
(``--measure-pairs`` measures them during set-up instead, as for a knowledge base
imported without them). It prints Markdown; numbers are what this machine measured,
nothing is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from warmtune.searchers.base import Observation, Searcher
from warmtune.space import SearchSpace

SPACE = SearchSpace(
    {
        "batch_size": {"type": "int", "low": 16, "high": 512, "log": True},
        "learning_rate": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
        "momentum": {"type": "float", "low": 0.1, "high": 0.99},
        "weight_decay": {"type": "float", "low": 1e-5, "high": 1e-1},
        "num_layers": {"type": "int", "low": 1, "high": 5},
        "max_units": {"type": "int", "low": 64, "high": 1024, "log": True},
        "max_dropout": {"type": "float", "low": 0.0, "high": 1.0},
    }
)
MAX_BUDGET = 27


def objective(config: dict[str, Any], shift: float, budget: float) -> float:
    """A smooth synthetic task: distance to a task-specific optimum, plus a fidelity term."""
    x = np.array(
        [
            np.log(config["batch_size"]) / np.log(512),
            (np.log10(config["learning_rate"]) + 4) / 3,
            config["momentum"],
            config["weight_decay"] * 10,
            config["num_layers"] / 5,
            np.log(config["max_units"]) / np.log(1024),
            config["max_dropout"],
        ]
    )
    return float(((x - (0.3 + 0.4 * shift)) ** 2).sum() + 0.1 / budget)


def past_tasks(n_tasks: int, per_task: int, seed: int) -> list[Any]:
    from warmtune.searchers.pasttask import PastTask

    rng = np.random.default_rng(seed)
    tasks = []
    for t in range(n_tasks):
        shift = t / max(1, n_tasks - 1)
        configs = [SPACE.sample(rng) for _ in range(per_task)]
        tasks.append(
            PastTask(
                name=f"task{t}",
                meta_features={"shift": shift},
                space=SPACE,
                configs=configs,
                values=np.array([objective(c, shift, MAX_BUDGET) for c in configs]),
            )
        )
    return tasks


def feed(searcher: Searcher, n: int, shift: float) -> None:
    """Drive ``searcher`` one trial at a time until it holds ``n`` observations."""
    told, k = 0, 0
    while told < n:
        s = searcher.ask(f"t{k}")
        k += 1
        if s is None:
            continue
        budget = s.budget or MAX_BUDGET
        searcher.tell(
            Observation.of(s.trial_id, s.config, budget, objective(s.config, shift, budget))
        )
        searcher.on_trial_end(s.trial_id)
        told += 1


def time_asks(searcher: Searcher, n: int, shift: float) -> list[float]:
    """Milliseconds of ``n`` asks that propose a new configuration, each followed by a
    tell (so models refit every time). Promotions, which need no model, are not timed."""
    out: list[float] = []
    k = 0
    while len(out) < n:
        k += 1
        start = time.perf_counter()
        s = searcher.ask(f"m{k}")
        elapsed = (time.perf_counter() - start) * 1000
        if s is not None and s.resume_from is None:
            out.append(elapsed)
        if s is not None:
            budget = s.budget or MAX_BUDGET
            value = objective(s.config, shift, budget)
            searcher.tell(Observation.of(s.trial_id, s.config, budget, value))
            searcher.on_trial_end(s.trial_id)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="warmtune bench latency", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--own", type=int, default=1000, help="own observations first")
    parser.add_argument("--kb-size", type=int, default=50_000, help="past observations")
    parser.add_argument("--tasks", type=int, default=34, help="past tasks")
    parser.add_argument("--asks", type=int, default=50, help="asks measured")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--measure-pairs",
        action="store_true",
        help="measure the past tasks' pairwise concordances during set-up",
    )
    args = parser.parse_args(argv)

    from warmtune.searchers import make_searcher
    from warmtune.searchers.pastmodels import PastModels
    from warmtune.searchers.similarity import TaskSimilarity, task_concordances
    from warmtune.searchers.warmstart import WarmStart, nearest_tasks

    shift = 0.45
    meta = {"shift": shift}
    tasks = past_tasks(args.tasks, args.kb_size // args.tasks, args.seed)
    chosen = nearest_tasks(tasks, SPACE, meta, 128)
    start = time.perf_counter()
    task_concordances(chosen[0], nearest_tasks(tasks[1:], SPACE, {}, 127))
    join_s = time.perf_counter() - start
    stored = None
    if not args.measure_pairs:
        # What the knowledge base holds for the tasks the warm start weighs.
        models = PastModels(space=SPACE, past_tasks=chosen)
        stored = TaskSimilarity(models=models).pairwise_state()
    start = time.perf_counter()
    warm = WarmStart(
        space=SPACE, past_tasks=tasks, meta_features=meta, seed=args.seed, pairwise=stored
    )
    setup_s = time.perf_counter() - start

    builders: dict[str, Callable[[], Searcher]] = {
        f"bohb (warm, {args.kb_size:,}-observation KB)": lambda: make_searcher(
            "bohb", space=SPACE, seed=args.seed, max_budget=MAX_BUDGET, warm_start=warm
        ),
        "bohb (cold)": lambda: make_searcher(
            "bohb", space=SPACE, seed=args.seed, max_budget=MAX_BUDGET
        ),
        "optuna TPE (warmtune's OptunaTPE)": lambda: make_searcher(
            "optuna", space=SPACE, seed=args.seed
        ),
    }
    print(
        f"knowledge base: {args.tasks} tasks, {len(tasks) * (args.kb_size // args.tasks)} "
        f"observations; warm start weighs {len(warm.task_names)} of them"
    )
    print(
        f"set-up before the first suggestion: {setup_s:.1f} s "
        + (
            "(pairwise concordances measured here)"
            if args.measure_pairs
            else "(with the pairwise concordances the knowledge base stores)"
        )
    )
    print(f"a joining task's concordances with its nearest neighbours: {join_s:.1f} s")
    print("\n| searcher | own observations | median ask (ms) | p90 ask (ms) |")
    print("| --- | --- | --- | --- |")
    for name, build in builders.items():
        searcher = build()
        feed(searcher, args.own, shift)
        times = sorted(time_asks(searcher, args.asks, shift))
        p90 = times[int(0.9 * (len(times) - 1))]
        print(f"| {name} | {args.own} | {statistics.median(times):.1f} | {p90:.1f} |", flush=True)


if __name__ == "__main__":
    main()
