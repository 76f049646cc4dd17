"""The ask/tell interface every warmtune search algorithm implements.

Lifecycle, as an engine (the Ray Tune adapter or the benchmark simulator) drives it:

1. The engine builds the searcher with keyword arguments: the
   :class:`~warmtune.space.SearchSpace`, a ``seed`` and the algorithm's options.
2. Whenever a worker is free it calls :meth:`Searcher.ask` with a fresh trial id.
   The searcher returns a :class:`Suggestion` (what configuration, up to what
   budget) or ``None`` when it has nothing to propose right now (a synchronous
   bracket waiting for stragglers, say); the engine asks again later.
3. For every result a trial reports, the engine calls :meth:`Searcher.tell`
   with an :class:`Observation`. Values are always *minimised*: the engine
   negates a metric whose mode is ``max`` before telling.
4. When a trial ends (finished, stopped early or failed) the engine calls
   :meth:`Searcher.on_trial_end`. The default does nothing.
5. At any time the engine may call :meth:`Searcher.state`, a JSON-able dict,
   and later rebuild an equal searcher with :func:`searcher_from_state`:
   the rebuilt searcher makes the same next suggestions.

A searcher never reaches into Ray; everything it knows arrives through these calls.

Budgets (multi-fidelity searchers: Hyperband, ASHA, BOHB):

- ``Suggestion.budget`` means: run the trial to this many training iterations,
  then pause it (keep its checkpoint). ``None`` leaves it to the job's full budget.
- A promotion resumes a paused trial under its own id:
  ``Suggestion(trial_id=<paused id>, config=<its config>, budget=<higher rung>,
  resume_from=<paused id>)``. The fresh id the engine offered to ``ask`` is then
  unused; the engine may offer it again.
- Observations arrive per reported iteration (``Observation.budget`` is the
  iteration). A searcher takes, for each rung, the observation at its budget (or
  the last one below it when reports skip iterations).
- A trial's segment is over when it reports at (or past) its budget, or when the
  engine calls ``on_trial_end``, whichever comes first. Ending before the budget
  (stopped by the engine) counts as a failure at that rung; an engine that also
  calls ``on_trial_end`` when it pauses a trial does so before it asks again.
  Failed observations (``value is None``) count as the worst result of their
  rung and are never promoted.
- The engine decides when to ask; a searcher never hands out a trial that is
  still running.

Perturbations (``copies_checkpoints`` searchers: PBT): when a trial reports at an
iteration where :meth:`Searcher.due` is true, the engine hands that result to
:meth:`Searcher.perturb` instead of ``tell`` and carries out the
:class:`Perturbation`: it keeps the trial's checkpoint (weights and iteration) when
told, and for an exploit the trial continues from the source's kept checkpoint, at
its iteration, with the new configuration.
"""

from __future__ import annotations

import abc
import importlib
import inspect
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from warmtune.space import SearchSpace

if TYPE_CHECKING:
    from warmtune.searchers.warmstart import WarmStart


@dataclass(frozen=True)
class Suggestion:
    """A searcher's decision: run ``config`` under ``trial_id`` up to ``budget``.

    Attributes:
        trial_id: the id the engine asked for.
        config: the configuration (active parameters only).
        budget: the budget (in training iterations) to run to before the trial
            is paused or stopped; ``None`` leaves it to the job's full budget
            and its scheduler.
        resume_from: id of an earlier trial whose checkpoint this one continues
            (promotions in successive halving, exploits in PBT), else ``None``.
    """

    trial_id: str
    config: dict[str, Any]
    budget: float | None = None
    resume_from: str | None = None


@dataclass(frozen=True)
class Observation:
    """One result: ``config`` reached ``value`` (to minimise) at ``budget``.

    ``value`` is ``None`` for a failed trial (an error, NaN or infinity).
    """

    trial_id: str
    config: dict[str, Any]
    budget: float
    value: float | None

    @property
    def failed(self) -> bool:
        return self.value is None

    @classmethod
    def of(cls, trial_id: str, config: dict[str, Any], budget: float, value: Any) -> Observation:
        """Build an observation, turning a non-finite or missing value into a failure."""
        v = None if value is None else float(value)
        if v is not None and not math.isfinite(v):
            v = None
        return cls(trial_id=trial_id, config=dict(config), budget=float(budget), value=v)


@dataclass(frozen=True)
class Exploit:
    """Continue from ``source``'s checkpoint with ``config`` (``source``'s, explored)."""

    source: str
    config: dict[str, Any]


@dataclass(frozen=True)
class Perturbation:
    """A decision at a perturbation point (:meth:`Searcher.perturb`): keep this trial's
    checkpoint for others to copy, and/or continue from another trial's (``exploit``)."""

    checkpoint: bool
    exploit: Exploit | None = None


@dataclass(frozen=True)
class History:
    """Earlier results of the very task being searched (a knowledge base's same-task rows).

    They are the search's own evidence, not a past task to transfer from: a searcher
    that takes a history fits its model on them from the first suggestion, and never
    runs a configuration in ``known`` again.

    Attributes:
        observations: the earlier results (values minimised, as ever).
        known: configurations measured at the full budget under the job's seed, as
            sorted-key JSON: with a deterministic trainable their results are known.
    """

    observations: tuple[Observation, ...] = ()
    known: frozenset[str] = frozenset()

    def __len__(self) -> int:
        return len(self.observations)


@dataclass
class _Registry:
    classes: dict[str, type[Searcher]] = field(default_factory=dict)


_REGISTRY = _Registry()

# Searchers whose libraries take long to import register on first use.
_LAZY_MODULES = {
    "optuna": "warmtune.searchers.optuna_search",
    "hyperopt": "warmtune.searchers.hyperopt_search",
}


class Searcher(abc.ABC):
    """Base class of warmtune's search algorithms (see the module docstring).

    Subclasses set ``name``, implement :meth:`ask`, and keep everything they
    need to continue in :meth:`state` (and accept it back as keyword
    arguments of ``from_state``).

    Args:
        space: the search space.
        seed: seed of the searcher's own random generator.
    """

    name: ClassVar[str] = ""
    #: True for searchers that also decide when trials pause or stop (successive
    #: halving, PBT): an engine then runs them without a scheduler of its own.
    schedules_trials: ClassVar[bool] = False
    #: True for searchers that start warm from a knowledge base (the ``warm_start``
    #: keyword, a :class:`~warmtune.searchers.warmstart.WarmStart`).
    supports_warm_start: ClassVar[bool] = False
    #: True for searchers that take earlier results of the same task
    #: (:class:`History`, the ``history`` keyword) as their own evidence.
    takes_history: ClassVar[bool] = False
    #: True for searchers whose trials start from other trials' checkpoints later on
    #: (PBT's exploit): they implement :meth:`due` and :meth:`perturb`, and an engine
    #: carries out their perturbations and keeps every checkpoint.
    copies_checkpoints: ClassVar[bool] = False
    #: The warm start this searcher uses (``supports_warm_start`` searchers set it from
    #: their ``warm_start`` keyword); ``None`` when it starts cold.
    warm_start: WarmStart | None = None
    #: Constructor keywords that are objects rather than data (a warm start, a history,
    #: an expert prior): left out of :meth:`options` and :meth:`state`, and passed again
    #: to :meth:`from_state`.
    passed_again: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *, space: SearchSpace, seed: int | None = None) -> None:
        _check_space(space)
        self.space = space
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    @classmethod
    def check_options(cls, *, space: SearchSpace, seed: int | None = None, **options: Any) -> None:
        """Raise the ``ValueError`` that ``cls(space=space, seed=seed, **options)`` would
        raise for its options, without building the searcher.

        The constructor's arguments, defaults filled in, go to the ``_check(args)`` static
        method of every class in the MRO that defines one, base classes first; each
        ``__init__`` runs its own class's ``_check`` on the same arguments, so a job file
        is checked by the very code that builds its searcher, once.
        """
        _check_space(space)
        try:
            bound = inspect.signature(cls.__init__).bind(None, space=space, seed=seed, **options)
        except TypeError as e:
            raise ValueError(f"searcher {cls.name or cls.__name__!r}: {e}") from None
        bound.apply_defaults()
        args = dict(bound.arguments)
        for klass in reversed(cls.__mro__):
            check = klass.__dict__.get("_check")
            if isinstance(check, staticmethod):
                check.__func__(args)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name:
            _REGISTRY.classes[cls.name] = cls

    @abc.abstractmethod
    def ask(self, trial_id: str) -> Suggestion | None:
        """Propose the next trial, or return ``None`` if there is nothing to run now."""

    def tell(self, observation: Observation) -> None:  # noqa: B027 - optional hook
        """Take one reported result. The default ignores it."""

    def on_trial_end(self, trial_id: str) -> None:  # noqa: B027 - optional hook
        """A trial finished, was stopped or failed. The default does nothing."""

    def promotion(self) -> Suggestion | None:
        """A paused trial to resume now, for engines that resume trials on their own
        schedule (``schedules_trials`` searchers); never starts a new trial. The
        default has none."""
        return None

    def due(self, trial_id: str, iteration: float) -> bool:
        """Whether ``trial_id`` reporting at ``iteration`` reached a perturbation point,
        where the engine calls :meth:`perturb` instead of :meth:`tell`
        (``copies_checkpoints`` searchers). The default: never."""
        return False

    def perturb(self, observation: Observation) -> Perturbation:
        """Take the result that reached a perturbation point and decide (see
        :class:`Perturbation`); the engine keeps the checkpoint and carries out the
        exploit. Only ``copies_checkpoints`` searchers, which also implement :meth:`due`."""
        raise NotImplementedError(
            f"searcher {self.name!r} has no perturbation points (copies_checkpoints is False)"
        )

    def options(self) -> dict[str, Any]:
        """The constructor's keyword arguments other than ``space``, ``seed`` and
        :attr:`passed_again`, read back from the attributes of the same names.

        Derived from the signature of ``__init__``, so an option a subclass adds is in
        the saved state without more code; a constructor keyword the searcher does not
        keep under its own name is an error here (and in the contract tests).
        """
        options = {}
        for name in _option_names(type(self)):
            try:
                options[name] = getattr(self, name)
            except AttributeError:
                raise TypeError(
                    f"{type(self).__name__} takes the option {name!r} but keeps no attribute "
                    f"of that name; store it as self.{name} so that options() saves it, or "
                    "list it in passed_again if it is an object rather than data"
                ) from None
        return options

    def state(self) -> dict[str, Any]:
        """JSON-able state; ``searcher_from_state(s.state(), space)`` continues identically.

        Subclasses extend the dict with what they learned and override :meth:`_restore`.
        """
        return {
            "name": self.name,
            "seed": self.seed,
            "options": self.options(),
            "rng": _rng_state(self.rng),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], space: SearchSpace, **extras: Any) -> Searcher:
        """Rebuild from :meth:`state`: construct with the saved options and ``extras``
        (the :attr:`passed_again` objects), then restore."""
        unknown = sorted(set(extras) - set(cls.passed_again))
        if unknown:
            raise ValueError(
                f"searcher {cls.name!r} takes no {unknown} when rebuilt from its state; "
                f"it takes again only {list(cls.passed_again) or 'nothing'}"
            )
        searcher = cls(space=space, seed=state["seed"], **extras, **state.get("options", {}))
        searcher._restore(state)
        return searcher

    def _restore(self, state: dict[str, Any]) -> None:
        """Load what :meth:`state` wrote (the base part: the random generator)."""
        self.rng.bit_generator.state = state["rng"]


def searcher_from_state(state: dict[str, Any], space: SearchSpace, **extras: Any) -> Searcher:
    """Rebuild a searcher from :meth:`Searcher.state`.

    ``extras`` are the non-data arguments the searcher's ``from_state`` takes again
    (a BOHB warm start, say).
    """
    try:
        cls = searcher_class(state.get("name", ""))
    except KeyError:
        raise ValueError(
            f"unknown searcher {state.get('name')!r} in saved state; "
            f"known: {sorted(_REGISTRY.classes)}"
        ) from None
    return cls.from_state(state, space, **extras)


def searcher_class(name: str) -> type[Searcher]:
    """The searcher class registered under ``name`` (raises ``KeyError`` if none)."""
    if name not in _REGISTRY.classes and name in _LAZY_MODULES:
        importlib.import_module(_LAZY_MODULES[name])
    return _REGISTRY.classes[name]


def registered_searchers() -> list[str]:
    """Names of every searcher a job file can use."""
    return sorted(set(_REGISTRY.classes) | set(_LAZY_MODULES))


def _check_space(space: Any) -> None:
    if not isinstance(space, SearchSpace):
        raise ValueError(
            f"space must be a warmtune SearchSpace, got {type(space).__name__}; "
            "build one with SearchSpace({...})"
        )


def _option_names(cls: type[Searcher]) -> list[str]:
    """The keyword arguments of ``cls.__init__`` that :meth:`Searcher.options` saves."""
    names = []
    for p in inspect.signature(cls.__init__).parameters.values():
        if p.name in ("self", "space", "seed") or p.name in cls.passed_again:
            continue
        if p.kind is not inspect.Parameter.KEYWORD_ONLY:
            raise TypeError(
                f"{cls.__name__}.__init__ takes {p.name!r} as {p.kind.description}; a "
                "searcher's options are keyword-only, so that options() can save them"
            )
        names.append(p.name)
    return names


def _rng_state(rng: np.random.Generator) -> dict[str, Any]:
    # PCG64's state is a dict of Python ints: JSON-able as it is.
    return dict(rng.bit_generator.state)
