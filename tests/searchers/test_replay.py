"""The replay base of the library-backed searchers (Optuna, Hyperopt), with a toy library
whose every answer depends on all it was told, so a replay that misses a call shows."""

from __future__ import annotations

import json

import numpy as np
import pytest

from warmtune.searchers.base import Observation
from warmtune.searchers.replay import ReplayedSearcher
from warmtune.space import SearchSpace

SPACE = SearchSpace({"x": {"type": "float", "low": 0.0, "high": 1.0}})


class ToyLibrary(ReplayedSearcher[int]):
    """Proposes the mean of the finished values so far, nudged by a per-ask seed."""

    name = ""  # not registered
    library = "toy"
    drift = 0.0  # a "newer version" answers differently

    def __init__(self, *, space: SearchSpace, seed: int | None = None) -> None:
        super().__init__(space=space, seed=seed)
        self._reset()

    def _ask_event(self, trial_id):
        return {"ask": trial_id, "seed": self._draw_seed()}

    def _reset_library(self):
        self.told: list[tuple[int, float | None]] = []
        self.number = 0

    def _start_trial(self, event):
        done = [v for _, v in self.told if v is not None]
        base = float(np.mean(done)) if done else 0.5
        nudge = np.random.default_rng(event["seed"]).uniform(-0.1, 0.1) + self.drift
        self.number += 1
        return {"x": float(np.clip(base + nudge, 0.0, 1.0))}, self.number

    def _finish_trial(self, handle, value):
        self.told.append((handle, value))


def drive(searcher, steps, start=0):
    out = []
    for i in range(start, start + steps):
        s = searcher.ask(f"t{i}")
        out.append(s.config)
        if i % 3:
            searcher.tell(Observation.of(s.trial_id, s.config, 1, s.config["x"] / 2))
        searcher.on_trial_end(s.trial_id)  # every third trial fails (never reported)
    return out


def test_a_restored_searcher_replays_its_log_and_continues_identically():
    original = ToyLibrary(space=SPACE, seed=3)
    drive(original, 7)
    pending = original.ask("t7")  # running at the save
    original.tell(Observation.of("t7", pending.config, 1, 0.25))
    state = json.loads(json.dumps(original.state()))
    restored = ToyLibrary.from_state(state, SPACE)
    assert restored.told == original.told
    for s in (original, restored):
        s.on_trial_end("t7")
    assert drive(restored, 5, start=8) == drive(original, 5, start=8)


def test_a_state_from_another_library_version_or_space_is_refused():
    searcher = ToyLibrary(space=SPACE, seed=0)
    drive(searcher, 4)
    state = searcher.state()

    class Newer(ToyLibrary):
        drift = 0.05

    with pytest.raises(ValueError, match="another toy version"):
        Newer.from_state(state, SPACE)
    other = SearchSpace({"x": {"type": "float", "low": 0.0, "high": 2.0}})
    with pytest.raises(ValueError, match="different search space"):
        ToyLibrary.from_state(state, other)


def test_only_the_last_value_reaches_the_library_and_ids_are_fresh():
    searcher = ToyLibrary(space=SPACE, seed=0)
    s = searcher.ask("a")
    for v in (0.9, float("nan"), 0.4):
        searcher.tell(Observation.of("a", s.config, 1, v))
    searcher.tell(Observation.of("stranger", s.config, 1, 0.0))  # not ours: ignored
    searcher.on_trial_end("a")
    assert searcher.told == [(1, 0.4)]
    with pytest.raises(ValueError, match="already asked"):
        searcher.ask("a")
