"""Random search: every configuration drawn uniformly from the space."""

from __future__ import annotations

from warmtune.searchers.base import Searcher, Suggestion


class RandomSearch(Searcher):
    """Independent uniform draws (on each parameter's scale), the baseline of baselines.

    Args:
        space: the search space.
        seed: seed of the searcher's own generator; the same seed gives the same
            sequence of configurations.
    """

    name = "random"

    def ask(self, trial_id: str) -> Suggestion:
        return Suggestion(trial_id=trial_id, config=self.space.sample(self.rng))
