"""Ray Tune adapter: any warmtune ask/tell searcher as a ``ray.tune.search.Searcher``.

The adapter owns no search logic. It forwards Tune's calls to the ask/tell object,
negates ``max`` metrics (searchers always minimise), and saves the searcher's
JSON state (not a pickle) into the experiment directory, so ``Tuner.restore``
continues the search where it stopped.
"""

from __future__ import annotations

import json
from typing import Any

from ray.tune.search import Searcher as TuneSearcherBase

from warmtune.searchers.base import Observation, Searcher, searcher_from_state
from warmtune.space import SearchSpace


class TuneSearcher(TuneSearcherBase):
    """Expose ``searcher`` to Ray Tune.

    Args:
        searcher: the ask/tell search algorithm.
        metric: the reported metric to optimise.
        mode: ``"min"`` or ``"max"``.
    """

    CKPT_FILE_TMPL = "warmtune-searcher-{}.json"
    # Not called `searcher`: Tune treats any object with a `.searcher` as a wrapper
    # (ConcurrencyLimiter style) and walks into it when saving.

    def __init__(self, searcher: Searcher, *, metric: str, mode: str) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        super().__init__(metric=metric, mode=mode)
        self.algorithm = searcher
        self._configs: dict[str, dict[str, Any]] = {}

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
        suggestion = self.algorithm.ask(trial_id)
        if suggestion is None:
            return None
        self._configs[trial_id] = dict(suggestion.config)
        return dict(suggestion.config)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.algorithm.tell(self._observation(trial_id, result))

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

    # Persistence ----------------------------------------------------------------------
    def get_state(self) -> dict:
        return {
            "space": self.algorithm.space.to_dict(),
            "searcher": self.algorithm.state(),
            "configs": self._configs,
            "metric": self._metric,
            "mode": self._mode,
        }

    def set_state(self, state: dict) -> None:
        self.algorithm = searcher_from_state(state["searcher"], SearchSpace(state["space"]))
        self._configs = dict(state["configs"])
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
        # pickle to plain JSON-able data so it survives library upgrades.
        return self.get_state()

    def __setstate__(self, state: dict) -> None:
        self.set_state(state)

    # Helpers --------------------------------------------------------------------------
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
