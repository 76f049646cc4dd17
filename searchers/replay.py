"""A base for searchers that wrap a library's optimizer and resume by replay.

Optuna's and Hyperopt's TPE keep their model in library objects (a study, a
``Trials`` history) that cannot be written as readable state: pickling them ties a
saved state to one library version and to its private layout (STYLE.md #2). So a
:class:`ReplayedSearcher` keeps, besides those objects, the ordered log of what
it did to them -- every ask and every end -- and resumes by replay (STYLE.md #3):
a rebuilt searcher resets the library and sends the log through the same public
calls, which leaves the library exactly where the uninterrupted searcher left it.
"""

from __future__ import annotations

import abc
import math
from typing import Any, ClassVar, Generic, TypeVar

from warmtune.searchers.base import Observation, Searcher, Suggestion

#: What a subclass keeps per running trial to end it later (a trial number, a document).
Handle = TypeVar("Handle")

_SEED_BOUND = 2**31 - 1


class ReplayedSearcher(Searcher, Generic[Handle]):
    """An ask/tell searcher over a library optimizer that holds one value per trial.

    Lifecycle:

    1. :meth:`ask` refuses a trial id it has seen before, builds the ask event
       (:meth:`_ask_event`: the trial id, plus whatever the library call needs to
       be repeatable, such as a seed), asks the library for a trial
       (:meth:`_start_trial`), and logs the event with the config it got.
       It never returns ``None``: the library handles trials still running.
    2. :meth:`tell` keeps the latest value of each running trial. The library
       models one value per trial, so it only hears the last one (also when a
       scheduler stopped the trial early), as Ray Tune's wrappers do.
    3. :meth:`on_trial_end` tells the library that value, or a failure when the
       trial failed or never reported (:meth:`_finish_trial`), and logs the end.

    State is the base state, the space's signature, any extra state a subclass
    needs (:meth:`_extra_state`), the event log and the running trials' latest
    values. :meth:`_restore` resets the library (:meth:`_reset_library`) and
    replays the log through :meth:`_start_trial` and :meth:`_finish_trial`,
    checking that each replayed ask gives the recorded config: a different one
    means another library version wrote the state, and continuing would silently
    diverge. Nothing of the library is pickled, so a saved state stays readable.

    Subclasses set ``library`` (its name in error messages), implement the three
    abstract hooks, and call :meth:`_reset` at the end of their ``__init__``, once
    everything :meth:`_reset_library` needs is in place.

    Args:
        space: the search space.
        seed: seed of the searcher's own random generator.
    """

    #: The wrapped library's name, as error messages spell it.
    library: ClassVar[str] = ""

    # Lifecycle --------------------------------------------------------------------
    def ask(self, trial_id: str) -> Suggestion:
        """Ask the library for a trial and suggest its configuration.

        Raises:
            ValueError: ``trial_id`` was asked for before; use a fresh id.
        """
        if trial_id in self._asked:
            raise ValueError(f"trial id {trial_id!r} was already asked for; use a fresh id")
        event = self._ask_event(trial_id)
        config = self._start(event)
        self._history.append({**event, "config": config})
        return Suggestion(trial_id=trial_id, config=dict(config))

    def tell(self, observation: Observation) -> None:
        """Keep the latest value of a running trial; the library hears it at the trial's end.

        Results of trials this searcher did not start, or that already ended,
        are ignored.
        """
        if observation.trial_id in self._running:
            self._latest[observation.trial_id] = _finite_or_none(observation.value)

    def on_trial_end(self, trial_id: str) -> None:
        """Tell the library the trial's last value, or a failure if it failed or never reported."""
        if trial_id not in self._running:
            return
        value = self._latest.pop(trial_id, None)
        self._end(trial_id, value)
        self._history.append({"end": trial_id, "value": value})

    # State ------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """The base state plus the space, any extra state, the event log and latest values."""
        return {
            **super().state(),
            "space": self.space.signature(),
            **self._extra_state(),
            "history": [dict(event) for event in self._history],
            "latest": dict(self._latest),
        }

    def _restore(self, state: dict[str, Any]) -> None:
        """Reset the library and replay the saved log through it.

        Raises:
            ValueError: the state was saved for another space, or replaying it gave
                a config other than the recorded one (another library version).
        """
        if state.get("space") != self.space.signature():
            raise ValueError(
                f"this {self.library} state was saved for a different search space; "
                "rebuild it with the space it was saved with, or start a fresh searcher"
            )
        self._restore_extra(state)
        self._reset()
        for event in state["history"]:
            if "ask" in event:
                config = self._start(event)
                if not _same_config(config, event["config"]):
                    raise ValueError(
                        f"replaying the saved {self.library} history gave trial "
                        f"{event['ask']!r} the config {config} instead of the recorded "
                        f"{event['config']}; the state was probably written by another "
                        f"{self.library} version{self._version_note()}: resume with that "
                        "version, or start a fresh searcher"
                    )
            else:
                self._end(event["end"], event["value"])
            self._history.append(dict(event))
        self._latest.update({k: _finite_or_none(v) for k, v in state["latest"].items()})
        # Last: whatever replay needed from self.rng came from the log, so the
        # generator is set to where the saved searcher's was.
        super()._restore(state)

    # Hooks ------------------------------------------------------------------------
    def _ask_event(self, trial_id: str) -> dict[str, Any]:
        """The log entry of a new ask, without its config; the default is the id alone.

        Override to record what :meth:`_start_trial` needs to repeat the ask on
        replay (a seed drawn from ``self.rng``, say); keep ``"ask": trial_id`` first.
        """
        return {"ask": trial_id}

    @abc.abstractmethod
    def _start_trial(self, event: dict[str, Any]) -> tuple[dict[str, Any], Handle]:
        """Ask the library for the trial of ``event``, a new or a replayed ask.

        Returns:
            The trial's configuration (active parameters only) and the handle
            :meth:`_finish_trial` gets when the trial ends.
        """

    @abc.abstractmethod
    def _finish_trial(self, handle: Handle, value: float | None) -> None:
        """Tell the library a trial's final value, or that it failed (``value is None``)."""

    @abc.abstractmethod
    def _reset_library(self) -> None:
        """Replace the library's objects with fresh ones, as at construction."""

    def _extra_state(self) -> dict[str, Any]:
        """State the subclass needs beyond the log (a sampler seed, say); default none."""
        return {}

    def _restore_extra(self, state: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """Load what :meth:`_extra_state` wrote; runs before the library is reset."""

    def _version_note(self) -> str:
        """Text after "another <library> version" in the replay error; default none."""
        return ""

    # Internals --------------------------------------------------------------------
    def _reset(self) -> None:
        """Fresh library objects and an empty log: the state right after construction."""
        self._reset_library()
        self._history: list[dict[str, Any]] = []
        self._asked: set[str] = set()
        self._running: dict[str, Handle] = {}
        self._latest: dict[str, float | None] = {}

    def _draw_seed(self) -> int:
        """A seed for the library drawn from the searcher's own generator (STYLE.md #4)."""
        return int(self.rng.integers(_SEED_BOUND))

    def _start(self, event: dict[str, Any]) -> dict[str, Any]:
        config, handle = self._start_trial(event)
        self._asked.add(event["ask"])
        self._running[event["ask"]] = handle
        return config

    def _end(self, trial_id: str, value: float | None) -> None:
        self._finish_trial(self._running.pop(trial_id), value)


def _finite_or_none(value: float | None) -> float | None:
    # Observation.of already maps NaN/inf to None; a hand-built one may not have.
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def _same_config(a: dict[str, Any], b: dict[str, Any]) -> bool:
    # Strict: ``True == 1`` under ``==``, but they are different choices here. Floats
    # survive a JSON round trip exactly, so exact equality is the right test.
    if a.keys() != b.keys():
        return False
    return all(type(x) is type(b[k]) and x == b[k] for k, x in a.items())
