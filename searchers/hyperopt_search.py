"""Hyperopt's TPE as a warmtune ask/tell searcher.

Hyperopt has no ask/tell object; its TPE is a function of the history:
``hyperopt.tpe.suggest(new_ids, domain, trials, seed)`` returns the next trial
document, and the caller fills the document's result in. That is how Ray Tune's
``HyperOptSearch`` drives it, and how :class:`HyperOptTPE` does, without Ray.

The space becomes a Hyperopt expression once, at construction: floats map to
``hp.uniform`` / ``hp.loguniform``; integers to ``hp.quniform`` /
``hp.qloguniform`` over ``[low - 0.5, high + 0.5]`` with ``q = 1``, rounded and
clipped, so every integer of ``[low, high]`` (both ends included) gets a full
unit of mass and nothing outside can come out; categoricals to ``hp.choice``
over indices, mapped back to the exact values (``None``, ``True`` and ``1``
stay distinct). A parameter conditional on a categorical parent is nested in the
parent's ``hp.choice`` branches for the values that activate it, so Hyperopt
samples it only there; such parents may themselves be conditional (chains).

Resuming is by replay (STYLE.md #3, see
:class:`~warmtune.searchers.replay.ReplayedSearcher`): the state is the ordered log of asks (with
the seed each ``tpe.suggest`` call got, drawn from the searcher's own
generator) and ends; a rebuilt searcher replays it through the same calls.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, cast

import numpy as np
from hyperopt import Trials, hp, tpe
from hyperopt.base import JOB_STATE_DONE, JOB_STATE_ERROR, STATUS_FAIL, STATUS_OK, Domain

from warmtune.searchers.replay import ReplayedSearcher
from warmtune.space import CategoricalParam, FloatParam, IntParam, SearchSpace


class HyperOptTPE(ReplayedSearcher[dict[str, Any]]):
    """Tree-structured Parzen estimator from Hyperopt (``hyperopt.tpe.suggest``).

    Lifecycle: :meth:`ask` runs ``tpe.suggest`` for one new trial document;
    :meth:`tell` keeps each trial's latest value; :meth:`on_trial_end` writes that
    value into the document (or marks it failed when the trial failed or never
    reported). :meth:`ask` never returns ``None``; Hyperopt itself counts running
    trials as the worst results, which spreads out parallel suggestions.

    Args:
        space: the search space. Conditions must name a single categorical parent
            (parents may be conditional themselves).
        seed: seed of the searcher's own generator, from which every
            ``tpe.suggest`` call draws its seed.
        n_startup_jobs: trials sampled at random before TPE takes over.

    Raises:
        ValueError: ``n_startup_jobs`` is invalid, or the space has a condition
            Hyperopt cannot express (on several parents, or on a non-categorical one).
    """

    name = "hyperopt"
    library = "hyperopt"

    def __init__(
        self,
        *,
        space: SearchSpace,
        seed: int | None = None,
        n_startup_jobs: int = 10,
    ) -> None:
        super().__init__(space=space, seed=seed)
        HyperOptTPE._check(locals())
        self.n_startup_jobs = n_startup_jobs
        self._domain = Domain(lambda config: config, hyperopt_space(space))
        self._reset()

    @staticmethod
    def _check(args: Mapping[str, Any]) -> None:
        """The TPE options (see ``Searcher.check_options``)."""
        n_startup_jobs = args["n_startup_jobs"]
        if isinstance(n_startup_jobs, bool) or not isinstance(n_startup_jobs, int):
            raise ValueError(f"n_startup_jobs must be an int, got {n_startup_jobs!r}; e.g. 10")
        if n_startup_jobs < 1:
            # tpe.suggest asserts on an empty history when it has no random start.
            raise ValueError(
                f"n_startup_jobs must be >= 1, got {n_startup_jobs}; "
                "TPE needs at least one finished trial to model"
            )

    # State ------------------------------------------------------------------------
    # Replay hooks -----------------------------------------------------------------
    def _ask_event(self, trial_id: str) -> dict[str, Any]:
        # tpe.suggest takes its seed per call: log it so that replay repeats the call.
        return {"ask": trial_id, "seed": self._draw_seed()}

    def _reset_library(self) -> None:
        self._trials = Trials()

    def _start_trial(self, event: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        new_ids = self._trials.new_trial_ids(1)
        self._trials.refresh()
        docs = tpe.suggest(
            new_ids,
            self._domain,
            self._trials,
            int(event["seed"]),
            n_startup_jobs=self.n_startup_jobs,
        )
        self._trials.insert_trial_docs(docs)
        self._trials.refresh()
        # insert_trial_docs may copy the document; keep the stored one to fill in later.
        doc = next(d for d in reversed(self._trials.trials) if d["tid"] == new_ids[0])
        return config_from_vals(self.space, doc["misc"]["vals"]), doc

    def _finish_trial(self, doc: dict[str, Any], value: float | None) -> None:
        if value is None:
            # As Ray's HyperOptSearch marks errored trials.
            doc["state"] = JOB_STATE_ERROR
            doc["result"] = {"status": STATUS_FAIL}
        else:
            doc["state"] = JOB_STATE_DONE
            doc["result"] = {"loss": value, "status": STATUS_OK}
        self._trials.refresh()


def hyperopt_space(space: SearchSpace) -> dict[str, Any]:
    """The Hyperopt expression of ``space``: unconditional parameters at the top,
    conditional ones nested in their parent's ``hp.choice`` branches.

    Raises:
        ValueError: a condition names several parents or a non-categorical
            parent, which Hyperopt's choice tree cannot express.
    """
    children: dict[str, list[list[str]]] = {
        name: [[] for _ in p.choices]
        for name, p in space.items()
        if isinstance(p, CategoricalParam)
    }
    roots: list[str] = []
    for name, p in space.items():
        if not p.when:
            roots.append(name)
            continue
        parents = list(p.when)
        if len(parents) > 1 or parents[0] not in children:
            what = (
                f"on several parameters ({', '.join(parents)})"
                if len(parents) > 1
                else f"on the non-categorical parameter '{parents[0]}'"
            )
            raise ValueError(
                f"parameter '{name}' is conditional {what}, which hyperopt's choice tree "
                "cannot express; condition it on one categorical parameter, or use the "
                "'optuna' or 'bohb' searcher for this space"
            )
        parent = cast(CategoricalParam, space[parents[0]])  # checked just above
        for value in p.when[parents[0]]:
            children[parents[0]][parent.index(value)].append(name)

    # One node per parameter, shared by every branch it appears in: Hyperopt then
    # knows it as a single label that is active under any of those branches.
    nodes: dict[str, Any] = {}

    def node(name: str) -> Any:
        if name not in nodes:
            nodes[name] = _param_node(name, space[name], children, node)
        return nodes[name]

    return {name: node(name) for name in roots}


def _param_node(
    name: str,
    p: FloatParam | IntParam | CategoricalParam,
    children: dict[str, list[list[str]]],
    node: Any,
) -> Any:
    if isinstance(p, FloatParam):
        if p.log:
            return hp.loguniform(name, math.log(p.low), math.log(p.high))
        return hp.uniform(name, p.low, p.high)
    if isinstance(p, IntParam):
        # Widened by half a unit so that rounding gives both ends a full unit of mass.
        if p.log:
            return hp.qloguniform(name, math.log(p.low - 0.5), math.log(p.high + 0.5), 1)
        return hp.quniform(name, p.low - 0.5, p.high + 0.5, 1)
    branches = children[name]
    if not any(branches):
        return hp.choice(name, list(range(len(p.choices))))
    return hp.choice(name, [{child: node(child) for child in branch} for branch in branches])


def config_from_vals(space: SearchSpace, vals: dict[str, list[Any]]) -> dict[str, Any]:
    """The configuration a Hyperopt trial's ``misc.vals`` stands for.

    Hyperopt leaves the values of inactive parameters empty; active ones are
    turned into the space's types (clipped, since ``exp(log(high))`` may land an
    ulp above ``high`` and rounding may land half a unit outside).
    """
    config: dict[str, Any] = {}
    for name, p in space.items():
        values = vals.get(name) or []
        if not values:
            continue
        v = values[0]
        if isinstance(p, FloatParam):
            config[name] = float(np.clip(float(v), p.low, p.high))
        elif isinstance(p, IntParam):
            config[name] = int(np.clip(round(float(v)), p.low, p.high))
        else:
            config[name] = p.choices[int(v)]
    return config
