"""The past a target is warm-started from: leave one task out, then optionally polluted.

For a target task, the knowledge base is every *other* task of the benchmark. Two
kinds of past (``past=``):

* ``random`` (default, comparable with published transfer baselines): each other task
  with the same :data:`KB_CONFIGS` random configurations evaluated at full fidelity
  (seed :data:`KB_SEED`). A table benchmark (nb201) holds every architecture of the
  other datasets instead.
* ``searches`` (what users' knowledge bases hold): each other task with the
  observations of one earlier simulated cold BOHB search of :data:`PAST_SEARCH_FFE`
  full-fidelity equivalents (seed :data:`KB_SEED`, one worker, the benchmark's own
  budgets): multi-fidelity, and different configurations on every task.

Each past task carries the runtimes of its observations (the simulator's clock: the
seconds a trial had trained when it reported) and the benchmark's meta-features of the
task (:attr:`~warmtune.bench.benchmarks.Benchmark.meta_features`).

**Distractors** (``mix=``, ``--past-mix K:KIND[,K:KIND]``): ``K`` tasks of each kind are
added per real past task, each a transformation of that past task alone (never of the
target), seeded by the task, the kind and its number:

* ``mirrored``: the objective reversed in rank at every budget: the best configuration
  gets the worst value and so on (the values themselves are kept).
* ``permuted``: each hyperparameter's values permuted between the task's
  configurations, independently per parameter: the marginals stay, the relation between
  configuration and value is gone.
* ``shifted``: the landscape moved: every numeric parameter's unit-scaled position
  ``u`` becomes ``(u + d) mod 1`` with ``d`` drawn from ``[0.25, 0.75]``, every
  categorical's choice index rotated by a nonzero offset, so the optimum sits in
  another region of the space.

A distractor keeps its source task's meta-features: the worst case, in which nothing but
the target's own results can tell it apart. Every past is built from the other tasks
alone and cached as Parquet (distractors are deterministic transformations of the
cached tasks).
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from warmtune.bench.reference import sample_configs, write_atomically
from warmtune.bench.simulator import simulate
from warmtune.searchers import make_searcher
from warmtune.searchers.encoding import SpaceCodec
from warmtune.searchers.pasttask import PastTask

if TYPE_CHECKING:
    from warmtune.bench.benchmarks import Benchmark

__all__ = [
    "DISTRACTORS",
    "KB_CONFIGS",
    "KB_SEED",
    "PASTS",
    "PAST_SEARCH_FFE",
    "distractor",
    "knowledge_base",
    "parse_mix",
    "past_search",
    "random_past",
]

#: The kinds of past a knowledge base can hold (see the module docstring).
PASTS = ("random", "searches")
#: The kinds of distractor ``--past-mix`` adds.
DISTRACTORS = ("mirrored", "permuted", "shifted")
#: Budget of each earlier simulated search in a ``searches`` past.
PAST_SEARCH_FFE = 20.0
#: Random configurations per past task in the knowledge base, and their seed.
KB_CONFIGS = 100
KB_SEED = 0


def parse_mix(text: str | None) -> list[tuple[int, str]]:
    """``"1:mirrored,3:permuted"`` -> ``[(1, "mirrored"), (3, "permuted")]``.

    Raises:
        ValueError: a malformed entry, a count below 1 or an unknown kind.
    """
    if not text:
        return []
    out = []
    for part in text.split(","):
        count, sep, kind = part.strip().partition(":")
        if not sep or not count.strip().isdigit() or int(count) < 1:
            raise ValueError(
                f"--past-mix entry {part.strip()!r} is not K:KIND with K >= 1; "
                "e.g. --past-mix 1:mirrored,3:permuted"
            )
        if kind.strip() not in DISTRACTORS:
            raise ValueError(
                f"--past-mix kind {kind.strip()!r} is unknown; use one of {list(DISTRACTORS)}"
            )
        out.append((int(count), kind.strip()))
    return out


def knowledge_base(
    bench: Benchmark,
    target: str,
    *,
    n: int = KB_CONFIGS,
    cache_dir: Path | None = None,
    past: str = "random",
    mix: Sequence[tuple[int, str]] = (),
) -> list[PastTask]:
    """The past tasks of ``target``: every other task, as ``past`` says (see :data:`PASTS`),
    then the ``mix`` distractors of each of them.

    Raises:
        ValueError: an unknown past or distractor kind.
    """
    if past not in PASTS:
        raise ValueError(f"--past must be one of {list(PASTS)}, got {past!r}")
    tasks = []
    for task in bench.tasks:
        if task == target:
            continue
        if past == "random":
            configs, values, budgets, runtimes = random_past(bench, task, n=n, cache_dir=cache_dir)
        else:
            configs, values, budgets, runtimes = past_search(bench, task, cache_dir=cache_dir)
        tasks.append(
            PastTask(
                name=str(task),
                meta_features=bench.meta_features(task),
                space=bench.space,
                configs=configs,
                values=values,
                budgets=budgets,
                max_budget=bench.max_budget,
                mode=bench.mode,
                runtimes=runtimes,
            )
        )
    mixed = list(tasks)
    for source in tasks:
        for count, kind in mix:
            mixed += [distractor(source, kind, k, seed=KB_SEED) for k in range(count)]
    return mixed


def random_past(
    bench: Benchmark, task: str, *, n: int, cache_dir: Path | None
) -> tuple[list[dict[str, Any]], np.ndarray, np.ndarray, np.ndarray]:
    """``n`` seeded random configurations at full fidelity (nb201: every architecture):
    ``(configs, values in the natural direction, budgets, runtimes)``."""
    if bench.reference_configs is not None:
        configs = bench.reference_configs
        values = np.asarray(bench.full_values(task, configs), dtype=float)
        runtimes = _costs(bench, task, configs)
    else:
        path = _cache_path(bench, cache_dir, f"{task}-{bench.metric}-n{n}-s{KB_SEED}-past")
        if path is not None and path.is_file():
            df = pd.read_parquet(path)
            configs = [json.loads(c) for c in df["config_json"]]
            values, runtimes = df["value"].to_numpy(float), df["runtime"].to_numpy(float)
        else:
            configs = sample_configs(bench.space, n, KB_SEED)
            values = np.asarray(bench.full_values(task, configs), dtype=float)
            runtimes = _costs(bench, task, configs)
            if path is not None:
                frame = pd.DataFrame(
                    {
                        "config_json": [json.dumps(c, sort_keys=True) for c in configs],
                        "value": values,
                        "runtime": runtimes,
                    }
                )
                write_atomically(frame, path)
    return list(configs), values, np.full(len(values), float(bench.max_budget)), runtimes


def past_search(
    bench: Benchmark, task: str, *, cache_dir: Path | None
) -> tuple[list[dict[str, Any]], np.ndarray, np.ndarray, np.ndarray]:
    """An earlier simulated search on ``task``, one cold BOHB run: the end of each of its
    segments as ``(configs, values in the natural direction, budgets, runtimes)``, the
    runtime being the seconds the trial had trained when it reported."""
    path = _cache_path(
        bench, cache_dir, f"{task}-{bench.metric}-bohb{PAST_SEARCH_FFE:g}-s{KB_SEED}-search"
    )
    if path is not None and path.is_file():
        df = pd.read_parquet(path)
    else:
        searcher = make_searcher(
            "bohb",
            space=bench.space,
            seed=KB_SEED,
            max_budget=bench.max_budget,
            options={"min_budget": bench.min_budget},
        )
        result = simulate(searcher, bench.backend(task), workers=1, budget_ffe=PAST_SEARCH_FFE)
        ev = result.evaluations.dropna(subset=["value"]).copy()
        ev["seconds"] = ev["end_time"] - ev["start_time"]
        retrain = getattr(bench.backend(task), "fidelity_kind", "iterations") == "retrain"
        # Training time so far: a resumed trial carries its earlier segments' time, a
        # trial retrained at a higher fidelity does not.
        ev["runtime"] = ev["seconds"] if retrain else ev.groupby("trial_id")["seconds"].cumsum()
        ends = ev.groupby(["trial_id", "segment"], sort=False).tail(1)
        df = pd.DataFrame(
            {
                "config_json": ends["config_json"].to_numpy(),
                "value": bench.minimised(ends["value"].to_numpy(dtype=float)),  # back to natural
                "budget": ends["budget"].to_numpy(dtype=float),
                "runtime": ends["runtime"].to_numpy(dtype=float),
            }
        )
        if path is not None:
            write_atomically(df, path)
    return (
        [json.loads(c) for c in df["config_json"]],
        df["value"].to_numpy(dtype=float),
        df["budget"].to_numpy(dtype=float),
        df["runtime"].to_numpy(dtype=float),
    )


def distractor(source: PastTask, kind: str, k: int, *, seed: int) -> PastTask:
    """The ``k``-th distractor of ``kind`` built from ``source`` alone (see the module
    docstring); named ``"{source}~{kind}{k}"``.

    Raises:
        ValueError: an unknown kind.
    """
    if kind not in DISTRACTORS:
        raise ValueError(f"unknown distractor kind {kind!r}; use one of {list(DISTRACTORS)}")
    rng = np.random.default_rng(
        [seed, zlib.crc32(source.name.encode()), DISTRACTORS.index(kind), k]
    )
    configs = [dict(c) for c in source.configs]
    values = source.values.copy()  # minimised: PastTask negated "max" values already
    if kind == "mirrored":
        for level in np.unique(source.budgets):
            at = np.flatnonzero(source.budgets == level)
            order = np.argsort(values[at], kind="stable")
            reversed_values = np.sort(values[at])[::-1]
            values[at[order]] = reversed_values
    else:
        keys = [json.dumps(c, sort_keys=True) for c in configs]
        distinct = list(dict.fromkeys(keys))
        originals = [json.loads(key) for key in distinct]
        moved = (
            _permuted(originals, source, rng)
            if kind == "permuted"
            else _shifted(originals, source, rng)
        )
        mapping = dict(zip(distinct, moved, strict=True))
        configs = [dict(mapping[key]) for key in keys]
    return PastTask(
        name=f"{source.name}~{kind}{k}",
        meta_features=source.meta_features,
        space=source.space,
        configs=configs,
        values=values,
        budgets=source.budgets,
        max_budget=source.max_budget,
        mode="min",
        runtimes=source.runtimes,
    )


def _permuted(
    configs: list[dict[str, Any]], source: PastTask, rng: np.random.Generator
) -> list[dict[str, Any]]:
    """Each parameter's values permuted among the configurations that have it."""
    out = [dict(c) for c in configs]
    for name in source.space:
        holders = [i for i, c in enumerate(configs) if name in c]
        for i, j in zip(holders, rng.permutation(holders), strict=True):
            out[i][name] = configs[j][name]
    space = source.space
    # A permuted parent can switch its children on or off: keep what stays valid and
    # draw the children that became active.
    return [space.validate(space.complete(space.project(c), rng)) for c in out]


def _shifted(
    configs: list[dict[str, Any]], source: PastTask, rng: np.random.Generator
) -> list[dict[str, Any]]:
    """Every configuration moved cyclically in the unit-scaled space (one shift per
    parameter), so the optimum sits in another region."""
    codec = SpaceCodec(source.space)
    rows = codec.encode(configs)
    shift = rng.uniform(0.25, 0.75, size=codec.dim)
    offset = np.array([rng.integers(1, c) if c > 1 else 0 for c in codec.n_choices], dtype=float)
    numeric = ~codec.is_categorical
    rows[:, numeric] = np.mod(rows[:, numeric] + shift[numeric], 1.0)
    cats = codec.is_categorical & (codec.n_choices > 1)
    rows[:, cats] = np.mod(rows[:, cats] + offset[cats], codec.n_choices[cats])
    space = source.space
    return [space.validate(space.complete(space.project(codec.decode(r)), rng)) for r in rows]


def _costs(bench: Benchmark, task: str, configs: Sequence[dict[str, Any]]) -> np.ndarray:
    if bench.full_costs is None:
        return np.full(len(configs), math.nan)
    return np.asarray(bench.full_costs(task, configs), dtype=float)


def _cache_path(bench: Benchmark, cache_dir: Path | None, key: str) -> Path | None:
    if cache_dir is None:
        return None
    return cache_dir / (f"{bench.name}-{key}".replace("/", "_").replace(" ", "_") + ".parquet")
