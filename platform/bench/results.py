"""What a simulation produced: the evaluations, the anytime curve, why it stopped."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import pandas as pd

__all__ = ["COLUMNS", "ContractError", "SimulationResult", "StopReason"]

#: Columns of :attr:`SimulationResult.evaluations`, in order.
COLUMNS = [
    "trial_id",
    "config_json",
    "budget",
    "value",
    "start_time",
    "end_time",
    "worker",
    "segment",
    "ffe_spent_so_far",
]


# Suggestion budgets are floats after rung arithmetic (27 * 3**-2 = 3.0000000000000004).
_EPS = 1e-9


# Results --------------------------------------------------------------------------------
StopReason = Literal["exhausted", "budget_ffe", "max_evaluations", "max_time"]


@dataclass(frozen=True)
class SimulationResult:
    """What a simulation produced.

    Attributes:
        evaluations: one row per reported iteration, in the order they were told
            (non-decreasing ``end_time``); columns :data:`COLUMNS`: ``trial_id``,
            ``config_json`` (sorted keys), ``budget`` (the iteration; for a
            ``"retrain"`` backend the fidelity value), ``value`` (minimised; NaN for
            a failure), ``start_time`` / ``end_time`` of the report in simulated
            seconds, ``worker``, ``segment`` (0 for a trial's first run, +1 per
            resume) and ``ffe_spent_so_far``.
        max_budget: the backend's full fidelity.
        workers: how many workers were simulated.
        seed: the simulation's seed.
        stop_reason: ``"exhausted"`` (the searcher had nothing left), or the limit
            that stopped it: ``"budget_ffe"``, ``"max_evaluations"``, ``"max_time"``.
        end_time: simulated seconds at the stop (``max_time`` when that cut it).
        ffe_spent: full-fidelity equivalents reported.
    """

    evaluations: pd.DataFrame
    max_budget: float
    workers: int
    seed: int
    stop_reason: StopReason
    end_time: float
    ffe_spent: float

    def incumbent_trajectory(self, at_budget: float | Literal["max"] = "max") -> pd.DataFrame:
        """The anytime curve: best value found at ``at_budget`` against FFE spent.

        Only evaluations at that budget count (by default full fidelity, the
        benchmark's regret), failures never do.

        Returns:
            One row per evaluation at the budget, in the order found, with columns
            ``ffe`` (spent when it was reported), ``time`` (its ``end_time``),
            ``value`` (the best so far) and ``trial_id`` (the incumbent's).
        """
        rows = self._at(at_budget)
        best = rows["value"].cummin()
        improved = rows["value"] < best.shift(1, fill_value=math.inf)
        return pd.DataFrame(
            {
                "ffe": rows["ffe_spent_so_far"].to_numpy(),
                "time": rows["end_time"].to_numpy(),
                "value": best.to_numpy(),
                "trial_id": rows["trial_id"].where(improved).ffill().to_numpy(),
            }
        )

    def best_at(self, ffe: float, *, at_budget: float | Literal["max"] = "max") -> float:
        """Best value at ``at_budget`` found with at most ``ffe`` spent (inf if none yet)."""
        rows = self._at(at_budget)
        values = rows["value"][rows["ffe_spent_so_far"] <= ffe + _EPS]
        return float(values.min()) if len(values) else math.inf

    def best_at_time(self, seconds: float, *, at_budget: float | Literal["max"] = "max") -> float:
        """Best value at ``at_budget`` reported by simulated time ``seconds`` (inf if none)."""
        rows = self._at(at_budget)
        values = rows["value"][rows["end_time"] <= seconds * (1 + _EPS)]
        return float(values.min()) if len(values) else math.inf

    def _at(self, at_budget: float | Literal["max"]) -> pd.DataFrame:
        budget = self.max_budget if at_budget == "max" else at_budget
        if isinstance(budget, str) or not 0 < budget <= self.max_budget * (1 + _EPS):
            raise ValueError(
                f"at_budget must be 'max' or a budget in (0, {self.max_budget}], got {at_budget!r}"
            )
        df = self.evaluations
        # Float budgets come out of rung arithmetic: compare them with a tolerance.
        return df[((df["budget"] - budget).abs() <= _EPS * budget) & df["value"].notna()]


class ContractError(RuntimeError):
    """The searcher broke the ask/tell contract (:mod:`warmtune.searchers.base`)."""
