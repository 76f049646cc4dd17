"""warmtune's search algorithms: ask/tell objects without Ray, plus their Ray adapters.

Each algorithm subclasses :class:`~warmtune.searchers.base.Searcher` and registers
under its ``name``; :func:`make_searcher` builds one by that name.
"""

from __future__ import annotations

import inspect
from typing import Any

from warmtune.searchers.base import (
    History,
    Observation,
    Searcher,
    Suggestion,
    registered_searchers,
    searcher_class,
    searcher_from_state,
)
from warmtune.searchers.bohb import BOHB
from warmtune.searchers.hyperband import ASHA, Hyperband
from warmtune.searchers.pbt import PBT
from warmtune.searchers.random_search import RandomSearch
from warmtune.space import SearchSpace

__all__ = [
    "ASHA",
    "BOHB",
    "History",
    "Hyperband",
    "Observation",
    "PBT",
    "RandomSearch",
    "Searcher",
    "Suggestion",
    "check_searcher",
    "make_searcher",
    "registered_searchers",
    "searcher_from_state",
]


def make_searcher(
    name: str,
    *,
    space: SearchSpace,
    seed: int | None,
    options: dict[str, Any] | None = None,
    max_budget: float | None = None,
    population_size: int | None = None,
    warm_start: Any = None,
    history: History | None = None,
) -> Searcher:
    """Build the searcher registered as ``name`` with its options.

    ``max_budget`` (the job's full budget in training iterations) and
    ``population_size`` (the job's trials) fill the options of the same names for
    searchers that take them, unless given. In
    ``options``, ``warm_start`` is the job file's switch (``true``/``false``; absent
    means "when the knowledge base has data"); the ``warm_start`` argument is the
    :class:`~warmtune.searchers.warmstart.WarmStart` to use when it is on. ``history``
    (earlier results of the same task) goes to searchers that take one (BOHB) and is
    dropped for the rest, which start as they always do.

    Raises:
        ValueError: unknown name, or options the searcher does not take.
    """
    cls, kwargs = _constructor_arguments(
        name, options, max_budget, population_size, warm_start, history
    )
    return cls(space=space, seed=seed, **kwargs)


def check_searcher(
    name: str,
    *,
    space: SearchSpace,
    seed: int | None,
    options: dict[str, Any] | None = None,
    max_budget: float | None = None,
    population_size: int | None = None,
) -> type[Searcher]:
    """What :func:`make_searcher` would raise for these options, without building the
    searcher (a job file is checked before its knowledge base is read, and its searcher
    built once, by the run); returns the searcher's class.

    Raises:
        ValueError: as :func:`make_searcher`.
    """
    cls, kwargs = _constructor_arguments(name, options, max_budget, population_size, None, None)
    cls.check_options(space=space, seed=seed, **kwargs)
    return cls


def _constructor_arguments(
    name: str,
    options: dict[str, Any] | None,
    max_budget: float | None,
    population_size: int | None,
    warm_start: Any,
    history: History | None,
) -> tuple[type[Searcher], dict[str, Any]]:
    """The class registered as ``name`` and the keyword arguments to build it with."""
    if name not in registered_searchers():
        raise ValueError(f"unknown searcher {name!r}; choose one of {registered_searchers()}")
    cls = searcher_class(name)
    options = dict(options or {})
    switch = options.pop("warm_start", None)
    if switch is not None and not isinstance(switch, bool):
        raise ValueError(f"warm_start must be true or false, got {switch!r}")
    repeat = options.pop("repeat_history", None)
    if repeat is not None and not isinstance(repeat, bool):
        raise ValueError(f"repeat_history must be true or false, got {repeat!r}")
    if repeat is not None and not cls.takes_history:
        raise ValueError(
            f"searcher {name!r} takes no history of the task; remove repeat_history, "
            "or use searcher bohb"
        )
    accepted = [
        p.name
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.kind is p.KEYWORD_ONLY
        and p.name not in ("space", "seed")
        and (p.name not in cls.passed_again or p.name == "warm_start")
    ]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        takes = ", ".join(accepted) or "no options"
        raise ValueError(f"searcher {name!r} has no option(s) {unknown}; it takes: {takes}")
    if switch is not None and not cls.supports_warm_start:
        raise ValueError(
            f"searcher {name!r} cannot start warm; remove warm_start, or use searcher bohb"
        )
    if "max_budget" in accepted and max_budget is not None:
        options.setdefault("max_budget", max_budget)
    if "population_size" in accepted and population_size is not None:
        options.setdefault("population_size", population_size)
    if warm_start is not None and switch is not False:
        options["warm_start"] = warm_start
    if history is not None and len(history) and switch is not False and cls.takes_history:
        options["history"] = history
    return cls, options
