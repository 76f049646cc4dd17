"""Population-based training (Jaderberg et al. 2017): the population and its explore step.

Ray Tune's ``PopulationBasedTraining`` scheduler is the engine: it ranks the
population every ``perturbation_interval`` iterations, and a trial in the bottom
``quantile_fraction`` copies the checkpoint of one in the top (exploit). What
warmtune adds is owned here, with no Ray in it:

- the initial population: :meth:`PBT.ask` draws it, uniformly or, with a warm
  start, first the similarity-weighted portfolio of past best configurations,
  then a mix of the past's good region and uniform draws whose prior share
  shrinks as the population grows (as BOHB's prior weight does with evidence);
- the explore step, :meth:`PBT.explore`: each value is resampled from the space
  with probability ``resample_probability``, else perturbed on its own scale
  (x 0.8 or x 1.25 on log scales, +-20 % of the range on linear ones, the next
  choice for categoricals) and clipped into the space. Children of conditional
  parameters are re-completed, so an explored configuration always validates,
  which Ray's own explore does not guarantee. The randomness is the searcher's
  own seeded generator rather than Python's global ``random``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from warmtune.searchers.base import Searcher, Suggestion
from warmtune.space import CategoricalParam, FloatParam, SearchSpace, sample_param


class PBT(Searcher):
    """The population and explore step of population-based training.

    Args:
        space: the search space.
        seed: seed of the searcher's own generator.
        perturbation_interval: training iterations between exploit/explore rounds.
        quantile_fraction: the bottom fraction copies the top fraction (0 < q <= 0.5).
        resample_probability: chance of redrawing a value instead of perturbing it.
        warm_start: a :class:`~warmtune.searchers.warmstart.WarmStart` for the initial
            population (not part of :meth:`state`; pass it again to ``from_state``).
        initial_design: how many members the warm start designs.
    """

    name = "pbt"
    supports_warm_start = True
    copies_checkpoints = True
    schedules_trials = True
    passed_again = ("warm_start",)

    def __init__(
        self,
        *,
        space: SearchSpace,
        seed: int | None = None,
        perturbation_interval: int = 2,
        quantile_fraction: float = 0.25,
        resample_probability: float = 0.25,
        warm_start: Any = None,
        initial_design: int = 5,
    ) -> None:
        super().__init__(space=space, seed=seed)
        if perturbation_interval < 1:
            raise ValueError(
                f"perturbation_interval must be >= 1 iteration, got {perturbation_interval}"
            )
        if not 0 < quantile_fraction <= 0.5:
            raise ValueError(f"quantile_fraction must be in (0, 0.5], got {quantile_fraction}")
        if not 0 <= resample_probability <= 1:
            raise ValueError(f"resample_probability must be in [0, 1], got {resample_probability}")
        self.perturbation_interval = int(perturbation_interval)
        self.quantile_fraction = float(quantile_fraction)
        self.resample_probability = float(resample_probability)
        self.warm_start = warm_start
        self.initial_design = int(initial_design)
        self._design = (
            warm_start.initial_design(self.initial_design, rng=np.random.default_rng(seed))
            if warm_start is not None
            else []
        )
        self._members = 0

    def state(self) -> dict[str, Any]:
        return {**super().state(), "members": self._members}

    def _restore(self, state: dict[str, Any]) -> None:
        super()._restore(state)
        self._members = int(state.get("members", 0))

    def ask(self, trial_id: str) -> Suggestion:
        """A new member of the initial population."""
        i = self._members
        self._members += 1
        u = self.rng.random()
        if i < len(self._design):
            return Suggestion(trial_id=trial_id, config=dict(self._design[i]))
        # The past's share is the probability that the past knows best: draw from its
        # good region that often, else uniformly.
        if self.warm_start is not None and u < self.warm_start.weights.past_share:
            (drawn,) = self.warm_start.sample(1, self.rng, which="good")
            config = self.space.complete(self.space.project(drawn), self.rng)
            return Suggestion(trial_id=trial_id, config=config)
        return Suggestion(trial_id=trial_id, config=self.space.sample(self.rng))

    def explore(self, config: dict[str, Any]) -> dict[str, Any]:
        """A perturbed copy of ``config`` that is valid in the space."""
        out: dict[str, Any] = {}
        for name, p in self.space.items():
            if not self.space.is_active(name, out):
                continue
            if name not in config or self.rng.random() < self.resample_probability:
                out[name] = sample_param(p, self.rng)
            else:
                out[name] = self._perturb(p, config[name])
        return self.space.validate(out)

    def _perturb(self, p: Any, value: Any) -> Any:
        if isinstance(p, CategoricalParam):
            i = p.index(value) + int(self.rng.choice([-1, 1]))
            return p.choices[min(max(i, 0), len(p.choices) - 1)]
        up = bool(self.rng.random() < 0.5)
        if p.log:
            new = value * (1.25 if up else 0.8)
        else:
            new = value + (0.2 if up else -0.2) * (p.high - p.low)
        new = float(np.clip(new, p.low, p.high))
        return new if isinstance(p, FloatParam) else int(np.clip(round(new), p.low, p.high))
