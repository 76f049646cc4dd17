"""Warm starts from the knowledge base: which past tasks a job learns from, and how.

:class:`WarmStartSource` is the recipe, plain data that pickles with Tune's
experiment state. It reads the knowledge base and builds the
:class:`~warmtune.searchers.warmstart.WarmStart` (similarity model, initial design
and prior) for a job's space and task, again on ``--resume``, limited to the
tasks the job started with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from warmtune.spec import JobSpec

__all__ = ["WarmStartSource", "warm_start_for"]


@dataclass(frozen=True)
class WarmStartSource:
    """Where a job's warm start comes from.

    Attributes:
        kb_path: the knowledge base.
        space: the job's search space (``SearchSpace.to_dict``).
        meta_features: the job's task meta-features.
        seed: the job's seed.
        tasks: the past tasks to learn from (names); empty means all usable ones.
    """

    kb_path: str
    space: dict[str, Any]
    meta_features: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    tasks: tuple[str, ...] = ()

    def past_tasks(self) -> list[Any]:
        """The knowledge base's tasks that share at least one parameter with the space."""
        import json

        from warmtune.knowledge import KnowledgeBase
        from warmtune.searchers.similarity import past_tasks_from_frame

        frame = KnowledgeBase(self.kb_path).observations()
        if frame.empty:
            return []
        if self.tasks:
            frame = frame[frame["task"].isin(self.tasks)]
        names = set(self.space)
        shares = frame["space_json"].map(lambda s: bool(names & set(json.loads(s))))
        frame = frame[shares & frame["value"].notna()]
        return past_tasks_from_frame(frame) if len(frame) else []

    def build(self) -> Any:
        """The :class:`WarmStart`, or ``None`` when no past task is usable."""
        from warmtune.searchers.warmstart import WarmStart
        from warmtune.space import SearchSpace

        tasks = self.past_tasks()
        if not tasks:
            return None
        return WarmStart(
            space=SearchSpace(self.space),
            past_tasks=tasks,
            meta_features=self.meta_features,
            seed=self.seed,
        )

    def __call__(self) -> dict[str, Any]:
        """The extras a restored BOHB takes again (see ``searcher_from_state``)."""
        return {"warm_start": self.build()}


def warm_start_for(spec: JobSpec) -> tuple[Any, WarmStartSource | None]:
    """The warm start a job asks for: ``(WarmStart or None, its source or None)``.

    ``searcher.options.warm_start`` false: none. True or absent: from the
    knowledge base when it holds usable past tasks; else the search starts cold.
    """
    from warmtune.searchers import searcher_class

    switch = spec.searcher.options.get("warm_start")
    cls = searcher_class(spec.searcher.name)
    if switch is False or "warm_start" not in cls.__init__.__kwdefaults__:
        return None, None
    source = WarmStartSource(
        kb_path=spec.knowledge_base.path,
        space=spec.search_space.to_dict(),
        meta_features=spec.task_meta_features(),
        seed=spec.seed,
    )
    warm = source.build()
    if warm is None:
        return None, None
    names = tuple(sorted(warm.weights.past))
    return warm, WarmStartSource(**{**source.__dict__, "tasks": names})
