"""Optuna's TPE as a warmtune ask/tell searcher.

An in-memory :class:`optuna.Study` driven through Optuna's own ask/tell API with
define-by-run: :meth:`OptunaTPE.ask` walks the :class:`~warmtune.space.SearchSpace`
in order and suggests only the parameters that are active given the values chosen
so far, so conditional spaces need no translation. Results are held back until the
trial ends: Optuna's TPE models one value per trial, and the last value a trial
reported (also when a scheduler stopped it early) is the one it is told, as Ray
Tune's ``OptunaSearch`` does.

Resuming is by replay (STYLE.md #3, see
:class:`~warmtune.searchers.replay.ReplayedSearcher`): the state is the ordered log of asks and
ends; a rebuilt searcher creates a fresh study with the same sampler seed and
replays the log through the same ``study.ask`` / ``study.tell`` calls, which
leaves the sampler exactly where the uninterrupted one was. Nothing of Optuna is
pickled, so a saved state stays readable.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import optuna
from optuna.trial import TrialState

from warmtune.searchers.replay import ReplayedSearcher
from warmtune.space import CategoricalParam, FloatParam, SearchSpace


class OptunaTPE(ReplayedSearcher[int]):
    """Tree-structured Parzen estimator from Optuna (``optuna.samplers.TPESampler``).

    Lifecycle: :meth:`ask` starts an Optuna trial and suggests its parameters;
    :meth:`tell` keeps each trial's latest value; :meth:`on_trial_end` tells the
    study that value (or ``FAIL`` when the trial failed or never reported).
    :meth:`ask` never returns ``None``: trials still running are handled by the
    constant liar instead of waiting for them.

    Args:
        space: the search space.
        seed: seed of the searcher's own generator, from which the sampler's seed
            is drawn; the same seed gives the same suggestions for the same tells.
        n_startup_trials: finished trials sampled at random before TPE takes over.
        multivariate: model the parameters jointly (Optuna's multivariate TPE)
            rather than one by one.
        group: decompose a conditional space into the groups of parameters that
            occur together and model each jointly (needs ``multivariate``). ``None``
            turns it on exactly when the space is conditional and ``multivariate``
            is on: without it Optuna samples every parameter that is not in all
            trials independently. Optuna 5 still marks ``group`` experimental;
            warmtune opts in deliberately, so that warning is silenced.
        constant_liar: treat running trials as bad results so that parallel
            workers do not all get the same suggestion (keep it on with many workers).

    Raises:
        ValueError: an option is out of range or the options contradict each other.
    """

    name = "optuna"
    library = "optuna"

    def __init__(
        self,
        *,
        space: SearchSpace,
        seed: int | None = None,
        n_startup_trials: int = 10,
        multivariate: bool = True,
        group: bool | None = None,
        constant_liar: bool = True,
    ) -> None:
        super().__init__(space=space, seed=seed)
        OptunaTPE._check(locals())
        if group is None:
            group = space.is_conditional and bool(multivariate)
        self.n_startup_trials = n_startup_trials
        self.multivariate = bool(multivariate)
        self.group = bool(group)
        self.constant_liar = bool(constant_liar)
        # Drawn from our own generator so that even seed=None gives a sampler seed
        # that the state can record, and a resumed searcher replays exactly.
        self._study_seed = self._draw_seed()
        self._choices = {
            name: _optuna_choices(p) for name, p in space.items() if isinstance(p, CategoricalParam)
        }
        self._reset()

    @staticmethod
    def _check(args: Mapping[str, Any]) -> None:
        """The TPE options (see ``Searcher.check_options``)."""
        n_startup_trials = args["n_startup_trials"]
        if isinstance(n_startup_trials, bool) or not isinstance(n_startup_trials, int):
            raise ValueError(f"n_startup_trials must be an int, got {n_startup_trials!r}; e.g. 10")
        if n_startup_trials < 0:
            raise ValueError(
                f"n_startup_trials must be >= 0, got {n_startup_trials}; "
                "use 0 to let TPE decide from the first trial"
            )
        if args["group"] and not args["multivariate"]:
            raise ValueError(
                "group=True needs multivariate=True (Optuna's grouped TPE is multivariate); "
                "set multivariate=True or group=False"
            )

    # State ------------------------------------------------------------------------
    # Replay hooks -----------------------------------------------------------------
    def _extra_state(self) -> dict[str, Any]:
        return {"study_seed": self._study_seed}

    def _restore_extra(self, state: dict[str, Any]) -> None:
        self._study_seed = int(state["study_seed"])

    def _version_note(self) -> str:
        return f" (this is {optuna.__version__})"

    def _reset_library(self) -> None:
        with warnings.catch_warnings():
            # ``group`` is experimental in Optuna 5; it is our deliberate choice.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = optuna.samplers.TPESampler(
                seed=self._study_seed,
                n_startup_trials=self.n_startup_trials,
                multivariate=self.multivariate,
                group=self.group,
                constant_liar=self.constant_liar,
            )
        # Optuna logs a line per study and per trial at INFO; inside a warmtune search
        # those lines drown the progress report, so keep Optuna to warnings.
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self._study = optuna.create_study(direction="minimize", sampler=sampler)

    def _start_trial(self, event: dict[str, Any]) -> tuple[dict[str, Any], int]:
        # Define-by-run: only the parameters active given the values so far.
        trial = self._study.ask()
        config: dict[str, Any] = {}
        for name, p in self.space.items():
            if not self.space.is_active(name, config):
                continue
            if isinstance(p, FloatParam):
                config[name] = float(trial.suggest_float(name, p.low, p.high, log=p.log))
            elif isinstance(p, CategoricalParam):
                choices = self._choices[name]
                value = trial.suggest_categorical(name, choices)
                config[name] = value if choices is p.choices else p.choices[value]
            else:
                config[name] = int(trial.suggest_int(name, p.low, p.high, log=p.log))
        return config, trial.number

    def _finish_trial(self, number: int, value: float | None) -> None:
        if value is None:
            self._study.tell(number, state=TrialState.FAIL)
        else:
            self._study.tell(number, value)


def _optuna_choices(p: CategoricalParam) -> Any:
    """The choices as Optuna sees them: the values themselves, or their indices.

    Optuna finds a choice with ``==``, under which ``True`` and ``1`` (or ``1``
    and ``1.0``) are the same choice; our space tells them apart. Such choices
    go to Optuna as indices, which TPE treats identically (categoricals are
    unordered), while the common case keeps readable values in the study.
    """
    try:
        distinct = len(set(p.choices)) == len(p.choices)
    except TypeError:  # unhashable: cannot happen for JSON scalars, but stay safe
        distinct = False
    return p.choices if distinct else list(range(len(p.choices)))
