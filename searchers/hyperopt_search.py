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

Resuming is by replay (STYLE.md #3): the state is the ordered log of asks (with
the seed each ``tpe.suggest`` call got, drawn from the searcher's own
generator) and ends; a rebuilt searcher replays it through the same calls.
"""

from __future__ import annotations

import math
from typing import Any, cast

import numpy as np
from hyperopt import Trials, hp, tpe
from hyperopt.base import JOB_STATE_DONE, JOB_STATE_ERROR, STATUS_FAIL, STATUS_OK, Domain

from warmtune.searchers.base import Observation, Searcher, Suggestion
from warmtune.space import CategoricalParam, FloatParam, IntParam, SearchSpace

_SEED_BOUND = 2**31 - 1


class HyperOptTPE(Searcher):
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

    def __init__(
        self,
        *,
        space: SearchSpace,
        seed: int | None = None,
        n_startup_jobs: int = 10,
    ) -> None:
        super().__init__(space=space, seed=seed)
        if isinstance(n_startup_jobs, bool) or not isinstance(n_startup_jobs, int):
            raise ValueError(f"n_startup_jobs must be an int, got {n_startup_jobs!r}; e.g. 10")
        if n_startup_jobs < 1:
            # tpe.suggest asserts on an empty history when it has no random start.
            raise ValueError(
                f"n_startup_jobs must be >= 1, got {n_startup_jobs}; "
                "TPE needs at least one finished trial to model"
            )
        self.n_startup_jobs = n_startup_jobs
        self._domain = Domain(lambda config: config, hyperopt_space(space))
        self._reset()

    # Lifecycle --------------------------------------------------------------------
    def ask(self, trial_id: str) -> Suggestion:
        """Suggest a configuration with ``tpe.suggest``.

        Raises:
            ValueError: ``trial_id`` was asked for before; use a fresh id.
        """
        if trial_id in self._asked:
            raise ValueError(f"trial id {trial_id!r} was already asked for; use a fresh id")
        seed = int(self.rng.integers(_SEED_BOUND))
        config = self._ask(trial_id, seed)
        self._history.append({"ask": trial_id, "seed": seed, "config": config})
        return Suggestion(trial_id=trial_id, config=dict(config))

    def tell(self, observation: Observation) -> None:
        """Keep the latest value of a running trial; Hyperopt hears it at the trial's end.

        Results of trials this searcher did not start, or that already ended,
        are ignored.
        """
        if observation.trial_id in self._running:
            self._latest[observation.trial_id] = _finite_or_none(observation.value)

    def on_trial_end(self, trial_id: str) -> None:
        """Record the trial's last value, or a failure if it failed or never reported."""
        if trial_id not in self._running:
            return
        value = self._latest.pop(trial_id, None)
        self._end(trial_id, value)
        self._history.append({"end": trial_id, "value": value})

    # State ------------------------------------------------------------------------
    def options(self) -> dict[str, Any]:
        return {"n_startup_jobs": self.n_startup_jobs}

    def state(self) -> dict[str, Any]:
        """The base state plus the event log and running trials' latest values."""
        return {
            **super().state(),
            "space": self.space.signature(),
            "history": [dict(event) for event in self._history],
            "latest": dict(self._latest),
        }

    def _restore(self, state: dict[str, Any]) -> None:
        if state.get("space") != self.space.signature():
            raise ValueError(
                "this hyperopt state was saved for a different search space; "
                "rebuild it with the space it was saved with, or start a fresh searcher"
            )
        self._reset()
        for event in state["history"]:
            if "ask" in event:
                config = self._ask(event["ask"], int(event["seed"]))
                if not _same_config(config, event["config"]):
                    raise ValueError(
                        f"replaying the saved hyperopt history gave trial {event['ask']!r} "
                        f"the config {config} instead of the recorded {event['config']}; "
                        "the state was probably written by another hyperopt version: "
                        "resume with that version, or start a fresh searcher"
                    )
            else:
                self._end(event["end"], event["value"])
            self._history.append(dict(event))
        self._latest.update({k: _finite_or_none(v) for k, v in state["latest"].items()})
        # Last: replay drew nothing from self.rng (the seeds came from the log).
        super()._restore(state)

    # Internals --------------------------------------------------------------------
    def _reset(self) -> None:
        self._trials = Trials()
        self._history: list[dict[str, Any]] = []
        self._asked: set[str] = set()
        self._running: dict[str, dict[str, Any]] = {}  # trial id -> Hyperopt trial doc
        self._latest: dict[str, float | None] = {}

    def _ask(self, trial_id: str, seed: int) -> dict[str, Any]:
        new_ids = self._trials.new_trial_ids(1)
        self._trials.refresh()
        docs = tpe.suggest(
            new_ids, self._domain, self._trials, seed, n_startup_jobs=self.n_startup_jobs
        )
        self._trials.insert_trial_docs(docs)
        self._trials.refresh()
        # insert_trial_docs may copy the document; keep the stored one to fill in later.
        doc = next(d for d in reversed(self._trials.trials) if d["tid"] == new_ids[0])
        self._asked.add(trial_id)
        self._running[trial_id] = doc
        return config_from_vals(self.space, doc["misc"]["vals"])

    def _end(self, trial_id: str, value: float | None) -> None:
        doc = self._running.pop(trial_id)
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


def _finite_or_none(value: float | None) -> float | None:
    # Observation.of already maps NaN/inf to None; a hand-built one may not have.
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def _same_config(a: dict[str, Any], b: dict[str, Any]) -> bool:
    # Strict: ``True == 1`` under ``==``, but they are different choices here.
    if a.keys() != b.keys():
        return False
    return all(type(x) is type(b[k]) and x == b[k] for k, x in a.items())
