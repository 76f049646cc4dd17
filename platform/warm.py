"""Warm starts from the knowledge base: which past tasks a job learns from, and how.

:class:`WarmStartSource` is the recipe, plain data that pickles with Tune's
experiment state. It reads the knowledge base and builds, for a job's space and task,
again on ``--resume`` (limited to the tasks the job started with):

* the :class:`~warmtune.searchers.warmstart.WarmStart` over the *other* tasks (the
  similarity model, the portfolio and the past's models), and
* the :class:`~warmtune.searchers.base.History` of the *same* task: earlier searches of
  the task the job searches are its own evidence, not a past to transfer from. The
  search fits its model on them from the first suggestion and does not re-run a
  configuration an earlier job measured at the full budget under the same seed (set
  ``searcher.options.repeat_history: true`` to allow it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from warmtune.knowledge import KnowledgeBase, past_tasks
from warmtune.searchers.base import History, Observation
from warmtune.searchers.warmstart import WarmStart
from warmtune.space import SearchSpace
from warmtune.spec import JobSpec

__all__ = ["WarmStartSource", "warm_start_for"]


@dataclass(frozen=True)
class WarmStartSource:
    """Where a job's warm start comes from.

    Attributes:
        kb_path: the knowledge base.
        space: the job's search space (``SearchSpace.to_dict``).
        task: the job's task name (its rows are the job's history).
        meta_features: the job's task meta-features.
        seed: the job's seed.
        max_budget: the job's full budget (a history observation at it counts as known).
        tasks: the past tasks to learn from (names); ``None`` means all usable ones (a
            resumed job keeps the ones it started with).
        repeat_history: allow configurations of the history to run again.
    """

    kb_path: str
    space: dict[str, Any]
    task: str = ""
    meta_features: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    max_budget: float = 1.0
    tasks: tuple[str, ...] | None = None
    repeat_history: bool = False

    def _frame(self) -> pd.DataFrame:

        frame = KnowledgeBase(self.kb_path).observations()
        if frame.empty:
            return frame
        names = set(self.space)
        shares = frame["space_json"].map(
            lambda s: isinstance(s, str) and bool(names & set(json.loads(s)))
        )
        return frame[shares & frame["value"].notna() & frame["config_json"].notna()]

    def past_tasks(self) -> list[Any]:
        """The knowledge base's other tasks that share at least one parameter with the space."""

        frame = self._frame()
        if frame.empty:
            return []
        frame = frame[frame["task"] != self.task]
        if self.tasks is not None:
            frame = frame[frame["task"].isin(self.tasks)]
        return past_tasks(frame) if len(frame) else []

    def history(self) -> Any:
        """The job's own task's earlier results (a :class:`History`), or ``None``."""

        frame = self._frame()
        if frame.empty:
            return None
        mine = frame[frame["task"] == self.task]
        if mine.empty:
            return None
        space = SearchSpace(self.space)
        observations, known = [], set()
        for row in mine.itertuples(index=False):
            # Searchers minimise: a "max" objective's values are negated.
            config = json.loads(row.config_json)
            value = (1.0 if row.mode == "min" else -1.0) * float(row.value)
            observations.append(Observation.of(str(row.trial_id), config, float(row.budget), value))
            seed = getattr(row, "seed", None)
            full = float(row.budget) >= self.max_budget - 1e-9
            if full and seed is not None and pd.notna(seed) and int(seed) == self.seed:
                projected = space.project(config)
                if projected == config:  # the same configuration in this space
                    known.add(json.dumps(space.validate(config), sort_keys=True))
        return History(
            observations=tuple(observations),
            known=frozenset() if self.repeat_history else frozenset(known),
        )

    def build(self) -> Any:
        """The :class:`WarmStart` over the other tasks, or ``None`` when none is usable."""

        tasks = self.past_tasks()
        if not tasks:
            return None
        return WarmStart(
            space=SearchSpace(self.space),
            past_tasks=tasks,
            meta_features=self.meta_features,
            seed=self.seed,
            # Measured as each job joined: the similarity model reuses them.
            pairwise=KnowledgeBase(self.kb_path).similarities(),
        )

    def __call__(self) -> dict[str, Any]:
        """The extras a restored BOHB takes again (see ``searcher_from_state``)."""
        return {"warm_start": self.build(), "history": self.history()}


def warm_start_for(spec: JobSpec) -> tuple[Any, Any, WarmStartSource | None]:
    """The warm start a job asks for: ``(WarmStart or None, History or None, its source
    or None)``.

    ``searcher.options.warm_start`` false: none. True or absent: from the knowledge
    base when it holds usable tasks (other tasks for the warm start, the same task for
    the history); else the search starts cold.
    """
    options = spec.searcher.options
    switch = options.get("warm_start")
    cls = spec.searcher_class
    if switch is False or not cls.supports_warm_start:
        return None, None, None
    source = WarmStartSource(
        kb_path=spec.knowledge_base.path,
        space=spec.search_space.to_dict(),
        task=spec.task.name,
        meta_features=spec.task_meta_features,
        seed=spec.seed,
        max_budget=float(spec.budget.max_iterations),
        repeat_history=bool(options.get("repeat_history", False)),
    )
    warm = source.build()
    history = source.history() if cls.takes_history else None
    if warm is None and history is None:
        return None, None, None
    names = tuple(sorted(warm.weights.past)) if warm is not None else ()
    return warm, history, WarmStartSource(**{**source.__dict__, "tasks": names})
