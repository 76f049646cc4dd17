"""Population-based training (Jaderberg et al. 2017), decided here, with no Ray in it.

A population of ``population_size`` members trains at once. Every
``perturbation_interval`` iterations a member reaches a *perturbation point*, and the
engine hands its result to :meth:`PBT.perturb`, which decides:

- **checkpoint**: a member in the top ``quantile_fraction`` of the population keeps
  its weights now; others may copy them until its next perturbation point;
- **exploit**: a member in the bottom ``quantile_fraction`` continues from the weights
  of a top member that kept a checkpoint (chosen by the searcher's own seeded
  generator), with that member's configuration explored;
- otherwise it goes on as it is.

The population is ranked by each live member's result at its own latest
perturbation point (members without one yet and ended ones are left out; a failed
result, such as a diverged loss, ranks last, so the member copies a good one); the
quantile holds ``ceil(n * quantile_fraction)`` members, at most half of them. These
are the rules of Ray Tune's asynchronous ``PopulationBasedTraining`` (which leaves
failed members out instead, so a diverged one would never recover), which
carries out the decisions on a cluster (``warmtune.searchers.ray_adapter.PBTScheduler``:
Ray copies checkpoints and pauses trials; the decisions are the ones made here), and the
benchmark simulator carries out the same decisions with a backend that has weights.

When a member is due (:meth:`PBT.due`): ``perturbation_interval`` iterations after its
last perturbation point; an exploited member takes the source's iteration and its
last perturbation point, as it takes its weights.

The initial population: :meth:`PBT.ask` draws it, uniformly or, with a warm start,
first the similarity-weighted portfolio of past best configurations, then a mix of the
past's good region and uniform draws whose prior share shrinks as the population grows
(as BOHB's prior weight does with evidence).

The explore step, :meth:`PBT.explore`: each value is resampled from the space with
probability ``resample_probability``, else perturbed on its own scale (x 0.8 or x 1.25
on log scales, +-20 % of the range on linear ones, the next choice for categoricals)
and clipped into the space. Children of conditional parameters are re-completed, so an
explored configuration always validates.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from warmtune.searchers.base import Exploit, Observation, Perturbation, Searcher, Suggestion
from warmtune.space import CategoricalParam, FloatParam, SearchSpace, sample_param


class PBT(Searcher):
    """Population-based training: the population, and the exploit and explore decisions.

    Args:
        space: the search space.
        seed: seed of the searcher's own generator.
        perturbation_interval: training iterations between perturbation points.
        quantile_fraction: the bottom fraction copies the top fraction (0 < q <= 0.5).
        resample_probability: chance of redrawing a value instead of perturbing it.
        warm_start: a :class:`~warmtune.searchers.warmstart.WarmStart` for the initial
            population (not part of :meth:`state`; pass it again to ``from_state``).
        initial_design: how many members the warm start designs.
        population_size: members to start (a job's ``budget.trials``); ``None``: as many
            as the engine asks for.
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
        population_size: int | None = None,
    ) -> None:
        super().__init__(space=space, seed=seed)
        PBT._check(locals())
        self.population_size = population_size
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
        # The population is drawn from `rng`, the exploit and explore decisions from a
        # generator of their own: so the population does not depend on how an engine
        # interleaves new members with perturbations.
        self.explore_rng = np.random.default_rng(None if seed is None else [seed, 1])
        # Per member, in the order they joined (the ranking's tie order): its current
        # configuration, last result and iteration, its result and iteration at its
        # latest perturbation point, whether it kept a checkpoint there, whether it ended.
        self._population: dict[str, dict[str, Any]] = {}
        # Every exploit decided: [member, its iteration, source, source's iteration, config].
        self.exploits: list[list[Any]] = []

    @staticmethod
    def _check(args: Mapping[str, Any]) -> None:
        """PBT's options (see ``Searcher.check_options``)."""
        perturbation_interval = args["perturbation_interval"]
        quantile_fraction = args["quantile_fraction"]
        resample_probability = args["resample_probability"]
        population_size = args["population_size"]
        if perturbation_interval < 1:
            raise ValueError(
                f"perturbation_interval must be >= 1 iteration, got {perturbation_interval}"
            )
        if not 0 < quantile_fraction <= 0.5:
            raise ValueError(f"quantile_fraction must be in (0, 0.5], got {quantile_fraction}")
        if not 0 <= resample_probability <= 1:
            raise ValueError(f"resample_probability must be in [0, 1], got {resample_probability}")
        if population_size is not None and not (
            isinstance(population_size, int) and population_size >= 2
        ):
            raise ValueError(
                f"population_size must be an int >= 2, got {population_size!r}; a population "
                "of one has nobody to copy (the job's budget.trials sets it)"
            )

    def state(self) -> dict[str, Any]:
        return {
            **super().state(),
            "members": self._members,
            "population": [[tid, dict(m)] for tid, m in self._population.items()],
            "exploits": [list(e) for e in self.exploits],
            "explore_rng": dict(self.explore_rng.bit_generator.state),
        }

    def _restore(self, state: dict[str, Any]) -> None:
        super()._restore(state)
        self._members = int(state.get("members", 0))
        self._population = {tid: dict(m) for tid, m in state.get("population", [])}
        self.exploits = [list(e) for e in state.get("exploits", [])]
        if "explore_rng" in state:
            self.explore_rng.bit_generator.state = state["explore_rng"]

    def ask(self, trial_id: str) -> Suggestion | None:
        """A new member of the initial population (``None`` once it is complete)."""
        if self.population_size is not None and self._members >= self.population_size:
            return None
        suggestion = self._new_member(trial_id)
        self._population[trial_id] = {
            "config": dict(suggestion.config),
            "value": None,
            "iteration": 0.0,
            "score": None,
            "ranked": False,
            "perturbed_at": 0.0,
            "checkpoint": False,
            "ended": False,
        }
        return suggestion

    def tell(self, observation: Observation) -> None:
        member = self._population.get(observation.trial_id)
        if member is None:
            return
        # A member's configuration is the one decided here (drawn, then explored on each
        # exploit), which the engine carries out; a report's own copy may lag behind it.
        member["value"] = observation.value
        member["iteration"] = float(observation.budget)

    def on_trial_end(self, trial_id: str) -> None:
        if trial_id in self._population:
            self._population[trial_id]["ended"] = True

    def due(self, trial_id: str, iteration: float) -> bool:
        """Whether member ``trial_id`` reporting at ``iteration`` is at a perturbation point
        (never for a trial that is not a member)."""
        member = self._population.get(trial_id)
        return (
            member is not None and iteration - member["perturbed_at"] >= self.perturbation_interval
        )

    def perturb(self, observation: Observation) -> Perturbation:
        """Decide for a member at a perturbation point, given the result that reached it."""
        self.tell(observation)
        tid = observation.trial_id
        member = self._population[tid]
        member["score"], member["ranked"] = member["value"], True
        member["perturbed_at"] = member["iteration"]
        lower, upper = self._quantiles()
        # A failed member is never worth copying, even when all are failed.
        member["checkpoint"] = tid in upper and member["value"] is not None
        if tid not in lower:
            return Perturbation(checkpoint=member["checkpoint"])
        source = upper[int(self.explore_rng.integers(len(upper)))]
        donor = self._population[source]
        if not donor["checkpoint"]:
            # The top member kept no checkpoint at its latest perturbation point (it was
            # not at the top then): nothing to copy this time.
            return Perturbation(checkpoint=False)
        config = self.explore(donor["config"])
        self.exploits.append([tid, member["iteration"], source, donor["perturbed_at"], config])
        member.update(config=dict(config), perturbed_at=donor["perturbed_at"])
        member["iteration"] = donor["perturbed_at"]
        return Perturbation(checkpoint=False, exploit=Exploit(source=source, config=config))

    def _quantiles(self) -> tuple[list[str], list[str]]:
        """The bottom and top members by their results at their latest perturbation points."""
        ranked = [tid for tid, m in self._population.items() if m["ranked"] and not m["ended"]]
        # Worst first (values are minimised, a failed result is the worst); ties keep
        # the order members joined.
        ranked.sort(key=lambda tid: -_worst_if_failed(self._population[tid]["score"]))
        if len(ranked) <= 1:
            return [], []
        q = math.ceil(len(ranked) * self.quantile_fraction)
        if q > len(ranked) / 2:
            q = len(ranked) // 2
        return ranked[:q], ranked[len(ranked) - q :]

    def _new_member(self, trial_id: str) -> Suggestion:
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
            if name not in config or self.explore_rng.random() < self.resample_probability:
                out[name] = sample_param(p, self.explore_rng)
            else:
                out[name] = self._perturb(p, config[name])
        return self.space.validate(out)

    def _perturb(self, p: Any, value: Any) -> Any:
        if isinstance(p, CategoricalParam):
            i = p.index(value) + int(self.explore_rng.choice([-1, 1]))
            return p.choices[min(max(i, 0), len(p.choices) - 1)]
        up = bool(self.explore_rng.random() < 0.5)
        if p.log:
            new = value * (1.25 if up else 0.8)
        else:
            new = value + (0.2 if up else -0.2) * (p.high - p.low)
        new = float(np.clip(new, p.low, p.high))
        return new if isinstance(p, FloatParam) else int(np.clip(round(new), p.low, p.high))


def _worst_if_failed(score: float | None) -> float:
    return math.inf if score is None or not math.isfinite(score) else score
