"""Ray Tune adapters: any warmtune ask/tell searcher as a Tune ``Searcher``, and the
pause/resume side of successive halving and PBT as Tune ``TrialScheduler``s.

The adapters own no search logic. :class:`TuneSearcher` forwards Tune's calls to
the ask/tell object, negates ``max`` metrics (searchers always minimise), and
saves the searcher's JSON state (not a pickle) into the experiment directory, so
``Tuner.restore`` continues the search where it stopped.

For searchers that hand out budgets (Hyperband, ASHA, BOHB),
:class:`BudgetScheduler` carries out their decisions on Tune's trials: a trial
pauses when it reports at the budget it was given, and resumes (from its
checkpoint) when the searcher promotes it to a higher rung. Promotions are
asked for with ``searcher.promotion()`` whenever a worker is free, so no worker
waits for the next new trial to be created first.

For PBT, :class:`PBTScheduler` is Ray's asynchronous ``PopulationBasedTraining``
carrying out the decisions of :meth:`warmtune.searchers.pbt.PBT.perturb`: Ray times
the perturbation points, saves and copies the checkpoints and pauses members to share
the workers; which member keeps a checkpoint, which copies whom and with what
configuration is decided by the searcher, as in the benchmark simulator.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, Protocol

from ray.tune.experiment import Trial
from ray.tune.schedulers import PopulationBasedTraining, TrialScheduler
from ray.tune.schedulers.pbt import _PBTTrialState
from ray.tune.search import Searcher as TuneSearcherBase

from warmtune.searchers.base import Observation, Searcher, searcher_from_state
from warmtune.searchers.warmstart import WarmStart
from warmtune.space import SearchSpace


class SearchMetrics(Protocol):
    """Where the adapter reports what it measures (warmtune's run passes
    :class:`warmtune.cluster.metrics.JobMetrics`); must pickle."""

    def suggest_latency(self, searcher: str, seconds: float) -> None:
        """One ``ask`` of the searcher named ``searcher`` took ``seconds``."""

    def kb_top_weight(self, task: str, weight: float, previous: str | None) -> None:
        """The warm start's most similar past task is now ``task`` (before: ``previous``)."""


class TuneSearcher(TuneSearcherBase):
    """Expose ``searcher`` to Ray Tune.

    Args:
        searcher: the ask/tell search algorithm.
        metric: the reported metric to optimise.
        mode: ``"min"`` or ``"max"``.
        rebuild: returns the non-data arguments the searcher takes again when it is
            restored from its state (a BOHB warm start); must pickle.
        metrics: when given, each ``ask`` is timed and, for a warm-started searcher,
            the weight of the most similar past task is reported to it.
    """

    CKPT_FILE_TMPL = "warmtune-searcher-{}.json"
    # Not called `searcher`: Tune treats any object with a `.searcher` as a wrapper
    # (ConcurrencyLimiter style) and walks into it when saving.

    def __init__(
        self,
        searcher: Searcher,
        *,
        metric: str,
        mode: str,
        rebuild: Callable[[], dict[str, Any]] | None = None,
        metrics: SearchMetrics | None = None,
    ) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        super().__init__(metric=metric, mode=mode)
        self.algorithm = searcher
        self.rebuild = rebuild
        self.metrics = metrics
        self._kb_top: str | None = None  # the past task last recorded as most similar
        self._configs: dict[str, dict[str, Any]] = {}
        # Budgeted searchers: trial id -> budget of its current segment, and
        # promotions decided but not yet resumed by Tune.
        self.targets: dict[str, float] = {}
        self.promotions: dict[str, float] = {}
        # The warm start's task weights each time they change, for `warmtune report`.
        self.warm_start_log: list[dict[str, Any]] = []
        self._log_warm_start()

    # Tune's Searcher API ---------------------------------------------------------------
    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict, **spec: Any
    ) -> bool:
        # The space lives in the ask/tell searcher; Tune's param_space stays empty.
        if metric:
            self._metric = metric
        if mode:
            self._mode = mode
        return True

    def suggest(self, trial_id: str) -> dict | None:
        start = time.perf_counter()
        suggestion = self.algorithm.ask(trial_id)
        self._record_metrics(time.perf_counter() - start)
        self._log_warm_start()
        if suggestion is None:
            return None
        if suggestion.resume_from is not None and suggestion.trial_id != trial_id:
            # A promotion of a paused trial: the scheduler resumes it; no new trial.
            self.promote(suggestion.trial_id, suggestion.budget)
            return None
        self._configs[trial_id] = dict(suggestion.config)
        if suggestion.budget is not None:
            self.targets[trial_id] = float(suggestion.budget)
        return dict(suggestion.config)

    def promote(self, trial_id: str, budget: float | None) -> None:
        """Record that the searcher resumes ``trial_id`` up to ``budget``."""
        self.promotions[trial_id] = float(budget) if budget is not None else float("inf")

    def new_promotion(self) -> str | None:
        """Ask the searcher for its next promotion and record it; return the trial id."""
        suggestion = self.algorithm.promotion()
        if suggestion is None:
            return None
        self.promote(suggestion.trial_id, suggestion.budget)
        return suggestion.trial_id

    def resumed(self, trial_id: str) -> None:
        """Tune restarted a promoted trial: its new segment's budget becomes current."""
        if trial_id in self.promotions:
            self.targets[trial_id] = self.promotions.pop(trial_id)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.algorithm.tell(self._observation(trial_id, result))
        self._log_warm_start()

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        # Tune has already passed the last result to on_trial_result; only a
        # failure is news here.
        if error:
            budget = float((result or {}).get("training_iteration", 0) or 0)
            config = self._configs.get(trial_id, (result or {}).get("config", {}))
            self.algorithm.tell(Observation.of(trial_id, config, budget, None))
        self.algorithm.on_trial_end(trial_id)
        self._configs.pop(trial_id, None)
        self.targets.pop(trial_id, None)
        self.promotions.pop(trial_id, None)

    # Persistence ----------------------------------------------------------------------
    def get_state(self) -> dict:
        return {
            "space": self.algorithm.space.to_dict(),
            "searcher": self.algorithm.state(),
            "configs": self._configs,
            "targets": self.targets,
            "promotions": self.promotions,
            "warm_start_log": self.warm_start_log,
            "metric": self._metric,
            "mode": self._mode,
        }

    def set_state(self, state: dict) -> None:
        # __setstate__ sets `rebuild` before calling here; a plain construction has it.
        rebuild = getattr(self, "rebuild", None)
        extras = rebuild() if callable(rebuild) else {}
        self.algorithm = searcher_from_state(
            state["searcher"], SearchSpace(state["space"]), **extras
        )
        self._configs = dict(state["configs"])
        self.targets = dict(state.get("targets", {}))
        self.promotions = dict(state.get("promotions", {}))
        self.warm_start_log = list(state.get("warm_start_log", []))
        self._metric, self._mode = state["metric"], state["mode"]

    def save(self, checkpoint_path: str) -> None:
        # Tune writes to a temporary name and os.replace()s it: the swap is atomic.
        with open(checkpoint_path, "w") as f:
            json.dump(self.get_state(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path) as f:
            self.set_state(json.load(f))

    def __getstate__(self) -> dict:
        # Tune pickles the search algorithm into its experiment state; keep that
        # pickle to plain data (the JSON state, the rebuild recipe and the metrics
        # hook) so it survives library upgrades.
        return {**self.get_state(), "rebuild": self.rebuild, "metrics": self.metrics}

    def __setstate__(self, state: dict) -> None:
        self.rebuild = state.pop("rebuild", None)
        # Saved before the hook existed: "job" named the job, and its metrics stop.
        state.pop("job", None)
        self.metrics = state.pop("metrics", None)
        self._kb_top = None
        self.set_state(state)

    # Helpers --------------------------------------------------------------------------
    def _record_metrics(self, ask_seconds: float) -> None:
        """Report one ``ask`` to the metrics hook, if any."""
        if self.metrics is None:
            return
        self.metrics.suggest_latency(self.algorithm.name, ask_seconds)
        # BOHB re-weights the past inside ask(); its public warm start has the result.
        warm = self.algorithm.warm_start
        if isinstance(warm, WarmStart):
            ranked = warm.weights.ranked()
            if ranked:
                task, weight = ranked[0]
                self.metrics.kb_top_weight(task, weight, self._kb_top)
                self._kb_top = task

    def _log_warm_start(self) -> None:
        """Append the warm start's current task weights when they changed (time, own
        observations behind them, the past's share and each past task's weight)."""
        warm = self.algorithm.warm_start
        if warm is None:
            return
        weights = warm.weights
        entry = {
            "n_own": int(weights.n_own),
            "past_share": float(weights.past_share),
            "own": float(weights.own),
            "random": float(weights.random),
            "past": {str(k): float(v) for k, v in weights.past.items()},
        }
        last = self.warm_start_log[-1] if self.warm_start_log else None
        if last is None or any(last.get(k) != v for k, v in entry.items()):
            # Why, for the ten heaviest tasks: the learned prior of their concordance
            # and the concordance measured on the job's results (None before any).
            why = {}
            for name, _ in weights.ranked()[:10]:
                e = weights.explanations.get(name)
                if e:
                    why[str(name)] = [float(e["prior_mean"]), e["measured"], int(e["pairs"])]
            self.warm_start_log.append({"time": time.time(), **entry, "why": why})

    def _observation(self, trial_id: str, result: dict) -> Observation:
        value = result.get(self._metric)
        if value is not None and self._mode == "max":
            value = -float(value)
        # The result's config is the trial's current one (PBT changes it on exploit).
        reported = result.get("config")
        space = self.algorithm.space
        if isinstance(reported, dict):
            config = {k: v for k, v in reported.items() if k in space}
        else:
            config = self._configs.get(trial_id, {})
        return Observation.of(trial_id, config, result.get("training_iteration", 0), value)


class BudgetScheduler(TrialScheduler):
    """Pause trials at their budget and resume the ones the searcher promotes.

    Works with a :class:`TuneSearcher` whose searcher hands out budgets
    (``Suggestion.budget``) and promotions (``Suggestion.resume_from``), found at
    run time through Tune's search algorithm, so a restored searcher is the one
    used. Trials that reach the job's full budget end through the run's stop
    criterion; when the search can start nothing more, paused trials that will
    never be promoted are stopped so the run ends.

    Args:
        max_budget: the job's full budget (training iterations).
        max_concurrent: at most this many trials run at once (``None``: as
            resources allow). Paused trials do not count, unlike Tune's own
            concurrency limit, which would wait for them forever.
    """

    def __init__(self, *, max_budget: float, max_concurrent: int | None = None) -> None:
        super().__init__()
        self.max_budget = float(max_budget)
        self.max_concurrent = max_concurrent

    @staticmethod
    def _adapter(tune_controller: Any) -> TuneSearcher:
        return _tune_searcher(tune_controller, "BudgetScheduler")

    def on_trial_add(self, tune_controller: Any, trial: Trial) -> None:
        pass

    def on_trial_error(self, tune_controller: Any, trial: Trial) -> None:
        pass

    def on_trial_complete(self, tune_controller: Any, trial: Trial, result: dict) -> None:
        pass

    def on_trial_remove(self, tune_controller: Any, trial: Trial) -> None:
        pass

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict) -> str:
        adapter = self._adapter(tune_controller)
        adapter.resumed(trial.trial_id)
        target = adapter.targets.get(trial.trial_id, self.max_budget)
        iteration = float(result.get("training_iteration", 0))
        if iteration >= target and target < self.max_budget:
            return TrialScheduler.PAUSE
        return TrialScheduler.CONTINUE

    def choose_trial_to_run(self, tune_controller: Any) -> Trial | None:
        trials = tune_controller.get_trials()
        running = sum(t.status == Trial.RUNNING for t in trials)
        if self.max_concurrent is not None and running >= self.max_concurrent:
            return None
        adapter = self._adapter(tune_controller)
        by_id = {t.trial_id: t for t in trials}
        # Promotions decided earlier: resume the paused ones; those Tune is already
        # resuming wait for their first result (see on_trial_result); the rest
        # (errored, removed) are dropped.
        for trial_id in list(adapter.promotions):
            trial = by_id.get(trial_id)
            if trial is not None and trial.status == Trial.PAUSED:
                return trial
            if trial is None or trial.status not in (Trial.RUNNING, Trial.PENDING):
                adapter.promotions.pop(trial_id)
        promoted = adapter.new_promotion()
        if promoted is not None and promoted in by_id and by_id[promoted].status == Trial.PAUSED:
            return by_id[promoted]
        for t in trials:
            if t.status == Trial.PENDING:
                return t
        if running == 0 and not adapter.promotions and tune_controller.search_alg.is_finished():
            # Nothing runs, nothing more starts, nothing is promoted: the paused
            # trials are done (their results are already in).
            for t in trials:
                if t.status == Trial.PAUSED:
                    tune_controller.stop_trial(t)
        return None

    def debug_string(self) -> str:
        return "warmtune budget scheduler (successive halving decided by the searcher)"


def _tune_searcher(tune_controller: Any, who: str) -> TuneSearcher:
    """The run's :class:`TuneSearcher`, found at run time (a restored one after a resume)."""
    searcher = tune_controller.search_alg
    while not isinstance(searcher, TuneSearcher):
        searcher = getattr(searcher, "searcher", None)
        if searcher is None:
            raise ValueError(f"{who} needs a warmtune TuneSearcher as the search algorithm")
    return searcher


def _explored_by_warmtune(config: dict[str, Any]) -> dict[str, Any]:
    raise RuntimeError("PBTScheduler takes its explored configurations from warmtune's PBT")


class PBTScheduler(PopulationBasedTraining):
    """Ray Tune's asynchronous PBT, carrying out the decisions of warmtune's PBT searcher.

    Ray's scheduler keeps what it does on a cluster: it pauses members so that a
    population larger than the cluster takes turns, saves a checkpoint where told and
    copies it into the member that exploits. The searcher (the one Tune runs, so a
    restored one after a resume) says where the perturbation points are
    (``Searcher.due``) and decides there (``Searcher.perturb``); Ray's own interval,
    ranking, random choice and explore step are not used.

    Args:
        max_concurrent: at most this many members train at once (``None``: as
            resources allow); the others wait paused or pending, and take turns at the
            perturbation points. Tune's own concurrency limit would instead keep the
            rest of the population from being created at all.
    """

    def __init__(self, *, max_concurrent: int | None = None) -> None:
        self.max_concurrent = max_concurrent
        # Ray's interval check passes at every result; `due` decides (on_trial_result).
        super().__init__(
            time_attr="training_iteration",
            perturbation_interval=1,
            custom_explore_fn=_explored_by_warmtune,
        )
        # Explored configurations decided for exploits in progress, by trial id.
        self._decided: dict[str, dict[str, Any]] = {}

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict) -> str:
        adapter = _tune_searcher(tune_controller, "PBTScheduler")
        iteration = result.get("training_iteration")
        if iteration is None or not adapter.algorithm.due(trial.trial_id, float(iteration)):
            return TrialScheduler.CONTINUE
        return str(super().on_trial_result(tune_controller, trial, result))

    def on_trial_add(self, tune_controller: Any, trial: Trial) -> None:
        # Ray's scheduler refuses search algorithms, whose configurations its own explore
        # step would change behind their backs; here the searcher decides the explore.
        _tune_searcher(tune_controller, "PBTScheduler")
        if not self._metric or not self._metric_op:
            raise ValueError("PBTScheduler needs the run's metric and mode (tune.TuneConfig)")
        self._trial_state[trial] = _PBTTrialState(trial)

    def _checkpoint_or_exploit(
        self,
        trial: Trial,
        tune_controller: Any,
        upper_quantile: list[Trial],
        lower_quantile: list[Trial],
    ) -> None:
        adapter = _tune_searcher(tune_controller, "PBTScheduler")
        # The result that reached the perturbation point (Ray saved it just before).
        result = dict(self._trial_state[trial].last_result or {})
        decision = adapter.algorithm.perturb(adapter._observation(trial.trial_id, result))
        # Ray's mechanism, given quantiles that hold exactly the decision: the trial saves
        # a checkpoint if it is "top"; if it is "bottom" it copies the one "top" trial.
        upper: list[Trial] = [trial] if decision.checkpoint else []
        lower: list[Trial] = []
        if decision.exploit is not None:
            by_id = {t.trial_id: t for t in tune_controller.get_trials()}
            source = by_id.get(decision.exploit.source)
            if source is None:
                return
            upper, lower = [source], [trial]
            self._decided[trial.trial_id] = dict(decision.exploit.config)
        super()._checkpoint_or_exploit(trial, tune_controller, upper, lower)
        self._decided.pop(trial.trial_id, None)

    def choose_trial_to_run(self, tune_controller: Any) -> Trial | None:
        if self.max_concurrent is not None:
            running = sum(t.status == Trial.RUNNING for t in tune_controller.get_trials())
            if running >= self.max_concurrent:
                return None
        return super().choose_trial_to_run(tune_controller)

    def _get_new_config(self, trial: Trial, trial_to_clone: Trial) -> tuple[dict, dict]:
        return dict(self._decided[trial.trial_id]), {}

    def debug_string(self) -> str:
        return "warmtune PBT (Ray's PopulationBasedTraining carrying out warmtune's decisions)"
