"""Task similarity: which past tasks should a new search listen to, and how much.

A :class:`PastTask` holds the observations of one finished search (its space, configs,
values to minimise, budgets) and its meta-features. :class:`TaskSimilarity` learns, from
those past tasks alone, how to weight them for a new target task, and re-weights them as
the target's own observations arrive.

The measure of similarity between a task ``A`` and a task ``B`` is *rank agreement*:
Kendall's tau between the values ``B`` actually got on some configurations and what a
cheap surrogate of ``A`` predicts for the same configurations. The surrogate is a kernel
(Nadaraya-Watson) regression of ``A``'s normalised ranks over its configurations, in the
unit-scaled coordinates of ``B``'s space, with its bandwidth chosen by leave-one-out on
``A`` itself. Distances use only the parameters both configurations have (mean squared
difference per shared parameter; a categorical mismatch counts 1), so tasks whose spaces
differ (added, removed or renamed parameters, other ranges, other choices) still compare
on what is compatible; a renamed parameter is simply one removed and one added. Only
pairs of target observations at the same budget are compared, so low-fidelity values are
never ranked against full-fidelity ones.

How the weight of past task ``t`` for a target is formed:

1. *Prior from meta-features.* ``mu_t = a + b * k(m_target, m_t)`` where ``k`` is a
   kernel on meta-features: ``exp(-d2 / (2 l^2)) * lam ** mismatches``, ``d2`` the mean
   squared difference of the numeric meta-features standardised over the knowledge base,
   ``mismatches`` the number of differing labels. The bandwidth ``l``, the label penalty
   ``lam`` and the line ``(a, b)`` are learned by leave-one-task-out (LOTO) on the past:
   the rank agreement of every pair of past tasks is measured as above, and the
   ``(l, lam)`` whose line, fitted without task ``i``, best predicts the agreements of
   ``i`` with the others (least squares, every ``i`` in turn) wins. Its LOTO mean squared
   error is the prior variance ``s2_prior``: how far a meta-feature guess is off, measured.
   With ``l`` infinite the prior is the average agreement of past tasks, so uninformative
   meta-features cost nothing.
2. *Evidence from the target's own observations.* ``tau_t``, the rank agreement of
   ``t``'s surrogate with the target's observations. Its sampling variance is Kendall's
   null variance ``2 (2n + 5) / (9 n (n - 1))`` for the ``n`` compared observations (an
   upper bound on the variance when there is correlation, so it errs on the side of
   the prior).
3. *Shrinkage.* The posterior mean of a normal prior and a normal measurement:
   ``rho_t = (mu_t / s2_prior + tau_t / s2_tau) / (1 / s2_prior + 1 / s2_tau)``. With no
   own observations ``rho_t = mu_t``; as they grow ``s2_tau`` shrinks and the evidence
   takes over at the rate its own variance dictates, no tuned constant involved.
4. *Weights.* ``w_t`` proportional to ``max(rho_t, 0) ** 2`` (a squared correlation is
   the share of the target's rank variation a task explains; anti-correlated or unrelated
   tasks get exactly zero), normalised over past tasks.

How much the past as a whole is worth against the target's own evidence: the past's
agreement ``tau_past = sum_t w_t rho_t`` is converted to an equivalent number of own
observations ``alpha``, read off a *self-learning curve* calibrated on the past tasks:
the rank agreement a task's surrogate fitted on ``n`` of its own random observations
reaches on its other observations, averaged over tasks, for ``n = 2, 4, 8, ...``. The
past is worth ``alpha`` own observations if own data needs ``alpha`` observations to
predict the target as well as the past does. The weight of the past is then
``alpha / (alpha + n_own)`` (a pseudo-count, as in a Dirichlet-process prior): it decays
as own evidence grows and is zero when no past task agrees with the target.

Cost: per-task structures (unit-scaled reference configs, normalised ranks, bandwidths)
are built at construction and re-encoded once per target space; :meth:`weights` then
costs a few matrix products over at most ``max_reference`` configs per past task and
``max_compare`` target observations (a rank-stratified subset when there are more).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from warmtune.space import CategoricalParam, SearchSpace

__all__ = [
    "PastTask",
    "TaskSimilarity",
    "TaskWeights",
    "past_tasks_from_frame",
]

# Kernel-regression bandwidths tried by leave-one-out, in units of the root mean squared
# per-parameter distance on the unit-scaled space (1 = the whole range). A search range,
# not a tuned value: the ends are "a few grid cells" and "flat".
_SURROGATE_BANDWIDTHS = np.geomspace(0.02, 1.0, 12)
# Meta-feature kernel bandwidths (in standard deviations) and label-mismatch factors
# tried by LOTO; infinity is the "meta-features say nothing" model.
_META_BANDWIDTHS = (*np.geomspace(0.1, 10.0, 11).tolist(), math.inf)
_META_MISMATCH = (0.0, 0.25, 0.5, 0.75, 1.0)
# Variance of a similarity uniform on [-1, 1]: the prior when there are too few past
# tasks (fewer than 3) to learn one by LOTO.
_UNINFORMED_VARIANCE = 1.0 / 3.0


# ---------------------------------------------------------------------------------------
# Past tasks
# ---------------------------------------------------------------------------------------
class PastTask:
    """The observations of one finished search, with values to *minimise*.

    Args:
        name: task name, unique within a knowledge base.
        meta_features: name -> number or label (str/bool) describing the task.
        space: the search space the task was searched in.
        configs: the evaluated configurations, in ``space``.
        values: the metric as reported, one per config.
        budgets: the budget of each observation; default: all at ``max_budget``.
        max_budget: the task's full budget; default: the largest budget seen (1 if none).
        mode: ``"min"`` or ``"max"``: how ``values`` are reported. ``"max"`` values are
            negated here, so :attr:`values` is always to be minimised.

    Observations with a non-finite value (failed trials) are dropped.

    Raises:
        ValueError: empty name, unknown mode, or lengths that do not match.
    """

    def __init__(
        self,
        *,
        name: str,
        meta_features: Mapping[str, Any],
        space: SearchSpace,
        configs: Sequence[Mapping[str, Any]],
        values: Sequence[float] | np.ndarray,
        budgets: Sequence[float] | np.ndarray | None = None,
        max_budget: float | None = None,
        mode: str = "min",
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if not isinstance(space, SearchSpace):
            raise ValueError(f"space must be a SearchSpace, got {type(space).__name__}")
        vals = np.asarray(values, dtype=float).reshape(-1)
        if len(vals) != len(configs):
            raise ValueError(
                f"task {name!r}: {len(configs)} configs but {len(vals)} values; "
                "give one value per config"
            )
        if budgets is None:
            full = 1.0 if max_budget is None else float(max_budget)
            buds = np.full(len(vals), full)
        else:
            buds = np.asarray(budgets, dtype=float).reshape(-1)
            if len(buds) != len(vals):
                raise ValueError(
                    f"task {name!r}: {len(vals)} values but {len(buds)} budgets; "
                    "give one budget per value or none"
                )
        keep = np.isfinite(vals) & np.isfinite(buds)
        self.name = name
        self.meta_features = dict(meta_features)
        self.space = space
        self.configs = [dict(c) for c, k in zip(configs, keep, strict=True) if k]
        self.values = (vals[keep] if mode == "min" else -vals[keep]).copy()
        self.budgets = buds[keep].copy()
        if max_budget is None:
            max_budget = float(self.budgets.max()) if len(self.budgets) else 1.0
        self.max_budget = float(max_budget)

    def __repr__(self) -> str:
        return f"PastTask(name={self.name!r}, observations={len(self.values)})"

    def final_indices(self) -> np.ndarray:
        """Per distinct configuration, the index of its highest-budget observation."""
        if len(self.budgets) == 0 or np.all(self.budgets == self.budgets[0]):
            return np.arange(len(self.values))
        best: dict[str, int] = {}
        for i, config in enumerate(self.configs):
            key = json.dumps(config, sort_keys=True)
            j = best.get(key)
            if j is None or self.budgets[i] > self.budgets[j]:
                best[key] = i
        return np.array(sorted(best.values()), dtype=int)


def past_tasks_from_frame(frame: Any) -> list[PastTask]:
    """Group knowledge-base rows into :class:`PastTask` objects, one per task.

    Args:
        frame: a pandas DataFrame with columns ``task``, ``meta_features_json``,
            ``space_json``, ``config_json``, ``budget``, ``max_budget``, ``value`` and
            ``mode`` (``"min"``/``"max"``). Meta-features, space and mode are read from
            each task's first row.

    Raises:
        ValueError: a column is missing.
    """
    needed = [
        "task",
        "meta_features_json",
        "space_json",
        "config_json",
        "budget",
        "max_budget",
        "value",
        "mode",
    ]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise ValueError(f"knowledge-base frame lacks column(s) {missing}; it needs {needed}")
    tasks = []
    for name, rows in frame.groupby("task", sort=True):
        first = rows.iloc[0]
        tasks.append(
            PastTask(
                name=str(name),
                meta_features=json.loads(first["meta_features_json"]),
                space=SearchSpace(json.loads(first["space_json"])),
                configs=[json.loads(s) for s in rows["config_json"]],
                values=rows["value"].to_numpy(dtype=float),
                budgets=rows["budget"].to_numpy(dtype=float),
                max_budget=float(rows["max_budget"].max()),
                mode=str(first["mode"]),
            )
        )
    return tasks


# ---------------------------------------------------------------------------------------
# Encoding configurations in a space's unit-scaled coordinates
# ---------------------------------------------------------------------------------------
_UNKNOWN = -2  # a categorical value the space does not list: present, matches nothing
_ABSENT = -1


_MISSING = object()


def _key(value: Any) -> str:
    return json.dumps(value)


class _Raw:
    """Configurations as columns: per parameter name, numbers (NaN if absent or not a
    number) and, on demand, JSON keys (None if absent)."""

    def __init__(self, configs: Sequence[Mapping[str, Any]]) -> None:
        self.n = len(configs)
        names: dict[str, None] = {}
        for c in configs:
            names.update(dict.fromkeys(c))
        self._columns: dict[str, list[Any]] = {
            name: [c.get(name, _MISSING) for c in configs] for name in names
        }
        self.num: dict[str, np.ndarray] = {}
        for name, col in self._columns.items():
            self.num[name] = np.array(
                [float(v) if _is_number(v) else math.nan for v in col], dtype=float
            )
        self._keys: dict[str, list[str | None]] = {}

    def keys(self, name: str) -> list[str | None] | None:
        """JSON keys of a column (they tell ``True`` from ``1``), computed once."""
        if name not in self._columns:
            return None
        if name not in self._keys:
            # Keyed by type as well: as dict keys True, 1 and 1.0 would collide.
            memo: dict[tuple[type, Any], str] = {}
            out: list[str | None] = []
            for v in self._columns[name]:
                if v is _MISSING:
                    out.append(None)
                    continue
                try:
                    k = (type(v), v)
                    if k not in memo:
                        memo[k] = _key(v)
                    out.append(memo[k])
                except TypeError:  # unhashable (a list, say): no memo
                    out.append(_key(v))
            self._keys[name] = out
        return self._keys[name]


@dataclass(frozen=True)
class _Layout:
    """Unit-scaling of a space: numeric parameters map to [0, 1] on their own scale."""

    num_names: tuple[str, ...]
    num_lo: np.ndarray
    num_span: np.ndarray
    num_log: np.ndarray
    num_int: np.ndarray
    num_bounds: tuple[tuple[float, float], ...]
    cat_names: tuple[str, ...]
    cat_choices: tuple[tuple[Any, ...], ...]

    @classmethod
    def of(cls, space: SearchSpace) -> _Layout:
        num, lo, span, log, is_int, bounds, cat, choices = [], [], [], [], [], [], [], []
        for name, p in space.items():
            if isinstance(p, CategoricalParam):
                cat.append(name)
                choices.append(tuple(p.choices))
                continue
            a, b = float(p.low), float(p.high)
            if p.type == "int":
                # Integers own the unit interval around them, so the top value is not
                # squeezed against the edge of the range.
                a, b = a - 0.5, b + 0.5
                if p.log:
                    a = max(a, float(p.low) * 0.5)
            ta, tb = (math.log(a), math.log(b)) if p.log else (a, b)
            num.append(name)
            lo.append(ta)
            span.append(tb - ta)
            log.append(bool(p.log))
            is_int.append(p.type == "int")
            bounds.append((float(p.low), float(p.high)))
        return cls(
            tuple(num),
            np.array(lo, dtype=float),
            np.array(span, dtype=float),
            np.array(log, dtype=bool),
            np.array(is_int, dtype=bool),
            tuple(bounds),
            tuple(cat),
            tuple(choices),
        )

    @property
    def n_params(self) -> int:
        return len(self.num_names) + len(self.cat_names)

    def encode(self, raw: _Raw, *, clip: bool) -> _Encoded:
        """Unit-scaled numbers (NaN = absent) and choice indices (-1 absent, -2 unknown).

        With ``clip`` a value outside the space (out of range, unlisted choice) counts as
        absent, as :meth:`SearchSpace.project` would drop it; without, an out-of-range
        number keeps its position beyond [0, 1], which is what a distance wants.
        """
        num = np.full((raw.n, len(self.num_names)), np.nan)
        for j, name in enumerate(self.num_names):
            col = raw.num.get(name)
            if col is None:
                continue
            v = col.copy()
            lo, hi = self.num_bounds[j]
            out = (v < lo) | (v > hi)
            if self.num_log[j]:
                with np.errstate(invalid="ignore", divide="ignore"):
                    v = np.where(v > 0, np.log(np.where(v > 0, v, 1.0)), np.nan)
            v = (v - self.num_lo[j]) / self.num_span[j]
            if clip:
                v[out] = np.nan
            num[:, j] = v
        cat = np.full((raw.n, len(self.cat_names)), _ABSENT, dtype=np.int64)
        for j, name in enumerate(self.cat_names):
            keys = raw.keys(name)
            if keys is None:
                continue
            index = {_key(c): i for i, c in enumerate(self.cat_choices[j])}
            miss = _ABSENT if clip else _UNKNOWN
            cat[:, j] = [_ABSENT if k is None else index.get(k, miss) for k in keys]
        return _Encoded(self, num, cat)

    def decode(self, num: np.ndarray, cat: np.ndarray) -> dict[str, Any]:
        """A partial config from one encoded row (absent entries left out)."""
        out: dict[str, Any] = {}
        for j, name in enumerate(self.num_names):
            u = num[j]
            if not np.isfinite(u):
                continue
            t = self.num_lo[j] + float(np.clip(u, 0.0, 1.0)) * self.num_span[j]
            v = math.exp(t) if self.num_log[j] else t
            lo, hi = self.num_bounds[j]
            if self.num_int[j]:
                out[name] = int(min(max(round(v), lo), hi))
            else:
                out[name] = float(min(max(v, lo), hi))
        for j, name in enumerate(self.cat_names):
            if cat[j] >= 0:
                out[name] = self.cat_choices[j][int(cat[j])]
        return out


@dataclass(frozen=True)
class _Encoded:
    layout: _Layout
    num: np.ndarray
    cat: np.ndarray

    def take(self, idx: np.ndarray) -> _Encoded:
        return _Encoded(self.layout, self.num[idx], self.cat[idx])

    def features(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(left, right, mask)`` with ``left_a @ right_b`` = sum over the parameters both
        rows have of the squared difference (numbers) or mismatch (choices), and
        ``mask_a @ mask_b`` = how many parameters both have."""
        present = np.isfinite(self.num)
        x = np.where(present, self.num, 0.0)
        pn = present.astype(float)
        has = (self.cat != _ABSENT).astype(float)
        onehot = [
            (self.cat[:, j : j + 1] == np.arange(len(ch))[None, :]).astype(float)
            for j, ch in enumerate(self.layout.cat_choices)
        ]
        oh = np.concatenate(onehot, axis=1) if onehot else np.zeros((len(x), 0))
        # Single precision: ranks need no more, and it halves the cost of the products.
        left = np.concatenate([x * x, pn, x, has, oh], axis=1).astype(np.float32)
        right = np.concatenate([pn, x * x, -2.0 * x, has, -oh], axis=1).astype(np.float32)
        mask = np.concatenate([pn, has], axis=1).astype(np.float32)
        return left, right, mask


def _sq_dist(left: np.ndarray, right: np.ndarray, m_a: np.ndarray, m_b: np.ndarray) -> np.ndarray:
    """Mean squared per-parameter distance; 1 (as far as two unit ranges get) when two
    configurations share no parameter."""
    total = left @ right.T
    count = m_a @ m_b.T
    with np.errstate(invalid="ignore", divide="ignore"):
        d2 = np.where(count > 0, total / np.maximum(count, 1.0), 1.0)
    return np.maximum(d2, 0.0)


def _rank01(y: np.ndarray) -> np.ndarray:
    """Normalised ranks in [0, 1] (0 = best), ties sharing their mean rank."""
    n = len(y)
    if n < 2:
        return np.zeros(n)
    uniq, inv = np.unique(y, return_inverse=True)
    counts = np.bincount(inv)
    ends = np.cumsum(counts)
    mean_rank = ends - (counts + 1) / 2.0
    return mean_rank[inv] / (n - 1)


def _stratified(values: np.ndarray, budgets: np.ndarray, cap: int) -> np.ndarray:
    """At most ``cap`` indices spread evenly over the (budget, value) order: every budget
    keeps its share and every rank band is represented."""
    n = len(values)
    if n <= cap:
        return np.arange(n)
    order = np.lexsort((values, budgets))
    return np.sort(order[np.unique(np.round(np.linspace(0, n - 1, cap)).astype(int))])


def _kendall(pred: np.ndarray, y: np.ndarray, budgets: np.ndarray) -> tuple[np.ndarray, int]:
    """Kendall's tau-a of each row of ``pred`` against ``y`` over pairs at equal budget.

    Returns:
        (tau per row, number of pairs compared).
    """
    iu, ju = np.triu_indices(len(y), 1)
    same = budgets[iu] == budgets[ju]
    iu, ju = iu[same], ju[same]
    npairs = len(iu)
    if npairs == 0:
        return np.zeros(len(pred)), 0
    sy = np.sign(y[iu] - y[ju]).astype(np.float32)
    p32 = pred.astype(np.float32)
    sp = np.sign(p32[:, iu] - p32[:, ju])
    return (sp @ sy).astype(float) / npairs, npairs


def _tau_variance(npairs: int) -> float:
    """Kendall's null variance ``2 (2n + 5) / (9 n (n - 1))`` for the ``n`` whose
    ``n (n - 1) / 2`` equals the number of compared pairs."""
    if npairs <= 0:
        return math.inf
    n = (1.0 + math.sqrt(1.0 + 8.0 * npairs)) / 2.0
    return 2.0 * (2.0 * n + 5.0) / (9.0 * n * (n - 1.0))


def _nw_predict(
    d2: np.ndarray, ranks: np.ndarray, inv2h2: np.ndarray, starts: np.ndarray
) -> np.ndarray:
    """Nadaraya-Watson predictions, one column block per task.

    Args:
        d2: (queries, references of all tasks) squared distances.
        ranks: normalised rank of each reference.
        inv2h2: ``1 / (2 h^2)`` of each reference's task.
        starts: first column of each task's block.

    Returns:
        (tasks, queries) predicted normalised ranks.
    """
    # Subtracting each block's nearest distance keeps the exponentials from underflowing
    # far from every reference (the prediction then tends to the nearest neighbour's).
    nearest = np.minimum.reduceat(d2, starts, axis=1)
    sizes = np.diff(np.append(starts, d2.shape[1]))
    k = np.exp(-(d2 - np.repeat(nearest, sizes, axis=1)) * inv2h2.astype(d2.dtype)[None, :])
    num = np.add.reduceat(k * ranks.astype(d2.dtype)[None, :], starts, axis=1)
    den = np.add.reduceat(k, starts, axis=1)
    return (num / den).T.astype(float)


def _loo_bandwidth(d2: np.ndarray, ranks: np.ndarray) -> float:
    """The surrogate bandwidth whose leave-one-out predictions best agree (Kendall's tau)
    with a task's own ranks."""
    n = len(ranks)
    if n < 3:
        return float(_SURROGATE_BANDWIDTHS[-1])
    d2 = d2 - np.min(d2 + np.eye(n) * 1e9, axis=1, keepdims=True)
    preds = []
    for h in _SURROGATE_BANDWIDTHS:
        # The diagonal (minus the nearest neighbour's distance) is negative and may
        # overflow; it is zeroed right after.
        with np.errstate(over="ignore"):
            k = np.exp(-d2 / (2.0 * h * h))
        np.fill_diagonal(k, 0.0)
        preds.append((k @ ranks) / np.maximum(k.sum(axis=1), 1e-300))
    tau, _ = _kendall(np.array(preds), ranks, np.zeros(n))
    return float(_SURROGATE_BANDWIDTHS[int(np.argmax(tau))])


# ---------------------------------------------------------------------------------------
# Per-task structures
# ---------------------------------------------------------------------------------------
@dataclass
class _TaskData:
    task: PastTask
    raw: _Raw  # final observations only
    values: np.ndarray
    budgets: np.ndarray
    ranks: np.ndarray
    reference: np.ndarray  # indices into the final observations: the surrogate's support
    compare: np.ndarray  # indices compared against other tasks' surrogates
    bandwidth: float = 1.0


@dataclass(frozen=True)
class _Bank:
    """All tasks' references encoded in one target space, stacked for one matrix product."""

    layout: _Layout
    right: np.ndarray
    mask: np.ndarray
    ranks: np.ndarray
    inv2h2: np.ndarray
    starts: np.ndarray
    full: bool  # every reference has every parameter of the space
    # Fast path, references stacked per task and padded to equal size:
    right3: np.ndarray  # (tasks, size, features)
    coef3: np.ndarray  # (tasks, 1, size): -1 / (2 h^2 n_params)
    weights3: np.ndarray  # (tasks, size, 2): [rank, 1] of real references, 0 for padding


@dataclass(frozen=True)
class TaskWeights:
    """How much a target task should listen to each past task and to itself.

    Attributes:
        past: task name -> weight; the weights sum to 1 over past tasks (all 0 when no
            past task agrees with the target).
        target: share of the target's own evidence in ``[0, 1]``; ``1 - target`` is the
            weight of the past, :meth:`weight_of_past` at ``n_own``.
        prior_strength: ``alpha``, what the weighted past is worth in own observations.
        n_own: number of own observations these weights were computed from.
        explanations: task name -> why: ``meta_distance``, ``meta_kernel``,
            ``prior_similarity``, ``performance_similarity`` (None before evidence),
            ``comparable_observations``, ``comparable_pairs``, ``shared_params``,
            ``evidence_share``, ``similarity``, ``weight``.
    """

    past: dict[str, float]
    target: float
    prior_strength: float
    n_own: int
    explanations: dict[str, dict[str, Any]]

    def weight_of_past(self, n_own: int) -> float:
        """``alpha / (alpha + n_own)``: the past as a pseudo-count of ``alpha`` observations."""
        if self.prior_strength <= 0.0:
            return 0.0
        return self.prior_strength / (self.prior_strength + max(int(n_own), 0))

    def ranked(self) -> list[tuple[str, float]]:
        """Past tasks by decreasing weight (ties by name)."""
        return sorted(self.past.items(), key=lambda kv: (-kv[1], kv[0]))


# ---------------------------------------------------------------------------------------
# Meta-features
# ---------------------------------------------------------------------------------------
class _MetaTable:
    """Numeric meta-features standardised over the past tasks, plus labels."""

    def __init__(self, metas: Sequence[Mapping[str, Any]]) -> None:
        names: dict[str, None] = {}
        for m in metas:
            names.update(dict.fromkeys(m))
        self.num: list[str] = []
        self.cat: list[str] = []
        for name in names:
            vals = [m[name] for m in metas if name in m]
            if all(_is_number(v) for v in vals):
                self.num.append(name)
            else:
                self.cat.append(name)
        cols = np.array([[_num(m.get(n)) for n in self.num] for m in metas], dtype=float)
        cols = cols.reshape(len(metas), len(self.num))
        with np.errstate(invalid="ignore"):
            self.mean = np.nanmean(cols, axis=0) if len(metas) else np.zeros(len(self.num))
            std = np.nanstd(cols, axis=0) if len(metas) else np.ones(len(self.num))
        # A feature constant over the past cannot tell past tasks apart: drop it.
        keep = np.isfinite(std) & (std > 0)
        self.num = [n for n, k in zip(self.num, keep, strict=True) if k]
        self.mean, self.std = self.mean[keep], std[keep]

    def encode(self, meta: Mapping[str, Any]) -> tuple[np.ndarray, list[str | None]]:
        z = np.array([_num(meta.get(n)) for n in self.num], dtype=float)
        z = (z - self.mean) / self.std
        labels = [None if n not in meta else _key(meta[n]) for n in self.cat]
        return z, labels

    @staticmethod
    def distance(
        za: np.ndarray, la: list[str | None], zb: np.ndarray, lb: list[str | None]
    ) -> tuple[float, int]:
        """(mean squared standardised difference over shared numeric features, label
        mismatches over shared labels)."""
        both = np.isfinite(za) & np.isfinite(zb)
        d2 = float(np.mean((za[both] - zb[both]) ** 2)) if both.any() else 0.0
        mism = sum(
            1 for a, b in zip(la, lb, strict=True) if a is not None and b is not None and a != b
        )
        return d2, mism


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(
        v, (bool, np.bool_)
    )


def _num(v: Any) -> float:
    return float(v) if _is_number(v) else math.nan


def _meta_kernel(d2: np.ndarray, mism: np.ndarray, bandwidth: float, mismatch: float) -> np.ndarray:
    k = np.ones_like(d2) if math.isinf(bandwidth) else np.exp(-d2 / (2.0 * bandwidth**2))
    return k * np.power(mismatch, mism)


def _fit_line(k: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares ``y ~ a + b k``; a flat kernel gives the mean."""
    if len(y) == 0:
        return 0.0, 0.0
    kc = k - k.mean()
    var = float(kc @ kc)
    if var <= 1e-12 * len(k):
        return float(y.mean()), 0.0
    b = float(kc @ (y - y.mean())) / var
    return float(y.mean() - b * k.mean()), b


# ---------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------
class TaskSimilarity:
    """Similarity of past tasks to a target task, calibrated on the past tasks themselves.

    See the module docstring for the measure and the calibration. Construction does the
    calibration (pairwise rank agreement of the past tasks, LOTO choice of the
    meta-feature kernel, the self-learning curve); :meth:`weights` is then cheap.

    Args:
        past_tasks: the knowledge base, one :class:`PastTask` per task (unique names).
        seed: seed of the generator that picks reference subsets and the random draws of
            the learning curve; the same tasks and seed give the same model.
        max_reference: at most this many observations of each past task support its
            surrogate (a speed/accuracy knob: the cost of :meth:`weights` grows with it).
        max_compare: at most this many observations are compared by rank (a
            rank-stratified subset); Kendall's tau over 128 observations has a standard
            error of about 0.06.

    Raises:
        ValueError: no past tasks, duplicate names, or non-positive sizes.
    """

    def __init__(
        self,
        *,
        past_tasks: Sequence[PastTask],
        seed: int | None = 0,
        max_reference: int = 128,
        max_compare: int = 128,
    ) -> None:
        if not past_tasks:
            raise ValueError("past_tasks is empty: give at least one PastTask")
        names = [t.name for t in past_tasks]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate task name(s) {dup}: give each past task one entry")
        if max_reference < 2 or max_compare < 2:
            raise ValueError(
                f"max_reference ({max_reference}) and max_compare ({max_compare}) must be >= 2"
            )
        self.seed = seed
        self.max_reference = int(max_reference)
        self.max_compare = int(max_compare)
        self._rng = np.random.default_rng(seed)
        self._tasks = [self._prepare(t) for t in past_tasks]
        self._banks: dict[str, _Bank] = {}
        self._shared: dict[str, list[list[str]]] = {}
        self._own: dict[str, _Encoded] = {}
        for td in self._tasks:
            enc = self._own_encoding(td)
            ref = enc.take(td.reference)
            left, right, mask = ref.features()
            td.bandwidth = _loo_bandwidth(_sq_dist(left, right, mask, mask), td.ranks[td.reference])
        self._meta = _MetaTable([t.meta_features for t in past_tasks])
        self._meta_codes = [self._meta.encode(t.meta_features) for t in past_tasks]
        self.pairwise = self._pairwise_agreement()
        self._calibrate_prior()
        self._curve_n, self._curve_tau = self._self_curve()

    # -- construction -------------------------------------------------------------------
    def _prepare(self, task: PastTask) -> _TaskData:
        final = task.final_indices()
        values, budgets = task.values[final], task.budgets[final]
        n = len(final)
        reference = (
            np.arange(n)
            if n <= self.max_reference
            else np.sort(self._rng.choice(n, self.max_reference, replace=False))
        )
        return _TaskData(
            task=task,
            raw=_Raw([task.configs[i] for i in final]),
            values=values,
            budgets=budgets,
            ranks=_rank01(values),
            reference=reference,
            compare=_stratified(values, budgets, self.max_compare),
        )

    def _own_encoding(self, td: _TaskData) -> _Encoded:
        key = td.task.name
        if key not in self._own:
            self._own[key] = _Layout.of(td.task.space).encode(td.raw, clip=False)
        return self._own[key]

    def bank(self, space: SearchSpace) -> _Bank:
        """Every past task's surrogate support encoded in ``space`` (cached per space)."""
        sig = space.signature()
        if sig not in self._banks:
            layout = _Layout.of(space)
            rights, masks, ranks, inv, starts, at = [], [], [], [], [], 0
            for td in self._tasks:
                enc = layout.encode(td.raw, clip=False).take(td.reference)
                _, right, mask = enc.features()
                rights.append(right)
                masks.append(mask)
                ranks.append(td.ranks[td.reference])
                inv.append(np.full(len(td.reference), 1.0 / (2.0 * td.bandwidth**2)))
                starts.append(at)
                at += len(td.reference)
            right, mask = np.concatenate(rights), np.concatenate(masks)
            all_ranks, all_inv = np.concatenate(ranks), np.concatenate(inv)
            sizes = [len(td.reference) for td in self._tasks]
            size, t, feat = max(sizes), len(sizes), right.shape[1]
            right3 = np.zeros((t, size, feat), dtype=np.float32)
            coef3 = np.zeros((t, 1, size), dtype=np.float32)
            weights3 = np.zeros((t, size, 2), dtype=np.float32)
            n_params = max(layout.n_params, 1)
            for i, (at, n) in enumerate(zip(starts, sizes, strict=True)):
                right3[i, :n] = right[at : at + n]
                coef3[i, 0, :n] = -all_inv[at : at + n] / n_params
                weights3[i, :n, 0] = all_ranks[at : at + n]
                weights3[i, :n, 1] = 1.0
            self._banks[sig] = _Bank(
                layout=layout,
                right=right,
                mask=mask,
                ranks=all_ranks,
                inv2h2=all_inv,
                starts=np.array(starts, dtype=int),
                full=bool(mask.all()),
                right3=right3,
                coef3=coef3,
                weights3=weights3,
            )
        return self._banks[sig]

    def _predict_encoded(self, bank: _Bank, enc: _Encoded) -> np.ndarray:
        left, _, mask = enc.features()
        if bank.full and bool(mask.all()):
            # Every parameter present on both sides (the common case): the shared count
            # is the number of parameters, so scaling and kernel fold into one factor.
            # One small product per task (stacked, padded to equal size) rather than one
            # large one: small products stay single-threaded, which on a busy machine is
            # several times faster than a contended multi-threaded BLAS call.
            e = np.exp(np.matmul(left[None], bank.right3.transpose(0, 2, 1)) * bank.coef3)
            sums = np.matmul(e, bank.weights3)  # (tasks, queries, [rank-weighted, plain])
            num, den = sums[..., 0], sums[..., 1]
            if not (den <= 1e-30).any():  # else far from every reference: underflow
                return (num / den).astype(float)
        d2 = _sq_dist(left, bank.right, mask, bank.mask)
        return _nw_predict(d2, bank.ranks, bank.inv2h2, bank.starts)

    def _pairwise_agreement(self) -> np.ndarray:
        """``A[i, j]``: agreement of task i's surrogate with task j's observations."""
        t = len(self._tasks)
        agree = np.full((t, t), np.nan)
        for j, td in enumerate(self._tasks):
            bank = self.bank(td.task.space)
            enc = bank.layout.encode(td.raw, clip=False).take(td.compare)
            pred = self._predict_encoded(bank, enc)
            tau, npairs = _kendall(pred, td.values[td.compare], td.budgets[td.compare])
            if npairs:
                agree[:, j] = tau
            agree[j, j] = np.nan  # in-sample: says nothing about transfer
        return agree

    def _calibrate_prior(self) -> None:
        t = len(self._tasks)
        # Both directions measure the same relation with independent noise: average them.
        both = np.stack([self.pairwise, self.pairwise.T])
        count = np.isfinite(both).sum(axis=0)
        sym = np.where(count > 0, np.nansum(both, axis=0) / np.maximum(count, 1), np.nan)
        self._d2 = np.zeros((t, t))
        self._mism = np.zeros((t, t))
        for i in range(t):
            for j in range(t):
                self._d2[i, j], self._mism[i, j] = _MetaTable.distance(
                    *self._meta_codes[i], *self._meta_codes[j]
                )
        iu, ju = np.triu_indices(t, 1)
        y = sym[iu, ju]
        ok = np.isfinite(y)
        iu, ju, y = iu[ok], ju[ok], y[ok]
        if t < 3 or len(y) < 3:
            self.meta_bandwidth, self.meta_mismatch = math.inf, 1.0
            self.prior_line = (float(y.mean()) if len(y) else 0.0, 0.0)
            self.prior_variance = _UNINFORMED_VARIANCE
            return
        best = (math.inf, math.inf, 1.0)
        for bw in _META_BANDWIDTHS:
            for lam in _META_MISMATCH if self._meta.cat else (1.0,):
                k = _meta_kernel(self._d2[iu, ju], self._mism[iu, ju], bw, lam)
                err, count = 0.0, 0
                for i in range(t):
                    held = (iu == i) | (ju == i)
                    if not held.any() or held.all():
                        continue
                    a, b = _fit_line(k[~held], y[~held])
                    err += float(np.sum((a + b * k[held] - y[held]) ** 2))
                    count += int(held.sum())
                mse = err / max(count, 1)
                # Ties go to the simpler (flatter) kernel: it comes later in the grid.
                if mse <= best[0] + 1e-12:
                    best = (mse, bw, lam)
        mse, self.meta_bandwidth, self.meta_mismatch = best
        # Few past tasks measure the prior's spread poorly (three alike tasks would claim
        # a near-certain prior, that no evidence could move). Conjugate (scaled inverse
        # chi-square) estimate: the LOTO residuals of the t (t - 1) / 2 distinct pairs
        # plus one pseudo-residual at the uninformed variance.
        n_pairs = len(y)
        mse = (mse * n_pairs + _UNINFORMED_VARIANCE) / (n_pairs + 1)
        k = _meta_kernel(
            self._d2[iu, ju], self._mism[iu, ju], self.meta_bandwidth, self.meta_mismatch
        )
        self.prior_line = _fit_line(k, y)
        # The LOTO error includes the noise of the measured agreements, so it overstates
        # the prior's spread a little: the evidence then takes over slightly sooner.
        self.prior_variance = max(mse, 1e-6)

    def _self_curve(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean rank agreement of a task's surrogate fitted on ``n`` of its own random
        observations with its other observations, for ``n = 2, 4, 8, ...``."""
        # Up to the surrogate support size: past tasks speak through at most that many
        # observations each, so an equivalence beyond it is never needed.
        sizes = [len(td.values) for td in self._tasks]
        ns = [int(n) for n in 2 ** np.arange(1, 12) if n <= min(max(sizes) - 8, self.max_reference)]
        curve_n, curve_tau = [], []
        for n in ns:
            taus = []
            for td in self._tasks:
                total = len(td.values)
                if total - n < 8:
                    continue
                enc = self._own_encoding(td)
                perm = self._rng.permutation(total)
                train, rest = perm[:n], perm[n:]
                test = rest[_stratified(td.values[rest], td.budgets[rest], self.max_compare)]
                tr = enc.take(train)
                left, right, mask = tr.features()
                bw = _loo_bandwidth(_sq_dist(left, right, mask, mask), td.ranks[train])
                lt, _, mt = enc.take(test).features()
                d2 = _sq_dist(lt, right, mt, mask)
                pred = _nw_predict(
                    d2, td.ranks[train], np.full(n, 1.0 / (2 * bw * bw)), np.array([0])
                )
                tau, npairs = _kendall(pred, td.values[test], td.budgets[test])
                if npairs:
                    taus.append(float(tau[0]))
            if taus:
                curve_n.append(float(n))
                curve_tau.append(float(np.mean(taus)))
        return np.array(curve_n), np.array(curve_tau)

    # -- public -------------------------------------------------------------------------
    @property
    def task_names(self) -> list[str]:
        """Past task names, in the order of :meth:`predict_ranks` rows."""
        return [td.task.name for td in self._tasks]

    def calibration(self) -> dict[str, Any]:
        """What was learned from the past (JSON-able): meta-feature kernel bandwidth and
        label factor, the prior line and variance, and the self-learning curve."""
        return {
            "meta_bandwidth": None if math.isinf(self.meta_bandwidth) else self.meta_bandwidth,
            "meta_mismatch": self.meta_mismatch,
            "prior_line": list(self.prior_line),
            "prior_variance": self.prior_variance,
            "learning_curve": {
                "n": self._curve_n.tolist(),
                "tau": self._curve_tau.tolist(),
            },
            "surrogate_bandwidth": {td.task.name: td.bandwidth for td in self._tasks},
        }

    def equivalent_observations(self, agreement: float) -> float:
        """How many own observations predict as well as a past of this agreement does:
        the self-learning curve read backwards (0 for no agreement, at most the largest
        ``n`` the curve measured)."""
        if agreement <= 0.0 or len(self._curve_n) == 0:
            return 0.0
        tau = np.maximum.accumulate(self._curve_tau)
        n = self._curve_n
        keep = np.concatenate([[True], np.diff(tau) > 0]) & (tau > 0)
        tau, n = tau[keep], n[keep]
        if len(tau) == 0:
            return float(self._curve_n[-1])
        if agreement >= tau[-1]:
            return float(n[-1])
        return float(np.interp(agreement, np.concatenate([[0.0], tau]), np.concatenate([[0.0], n])))

    def predict_ranks(
        self, *, space: SearchSpace, configs: Sequence[Mapping[str, Any]]
    ) -> np.ndarray:
        """Each past task's surrogate at ``configs`` (of ``space``): predicted normalised
        ranks, 0 = that task's best; shape (tasks, configs)."""
        if not configs:
            return np.zeros((len(self._tasks), 0))
        bank = self.bank(space)
        return self._predict_encoded(bank, bank.layout.encode(_Raw(configs), clip=False))

    def weights(
        self,
        *,
        space: SearchSpace,
        meta_features: Mapping[str, Any] | None = None,
        configs: Sequence[Mapping[str, Any]] = (),
        values: Sequence[float] | np.ndarray = (),
        budgets: Sequence[float] | np.ndarray | None = None,
    ) -> TaskWeights:
        """Weights of the past tasks for a target, given its own observations so far.

        Args:
            space: the target's search space.
            meta_features: the target's meta-features (unknown names are ignored).
            configs: the target's evaluated configs.
            values: their values, to minimise; non-finite ones are ignored.
            budgets: their budgets (default: all equal); only equal-budget pairs are
                compared by rank.

        Raises:
            ValueError: lengths of configs, values and budgets differ.
        """
        vals = np.asarray(values, dtype=float).reshape(-1)
        if len(vals) != len(configs):
            raise ValueError(f"{len(configs)} configs but {len(vals)} values: give one value each")
        buds = np.zeros(len(vals)) if budgets is None else np.asarray(budgets, float).reshape(-1)
        if len(buds) != len(vals):
            raise ValueError(f"{len(vals)} values but {len(buds)} budgets: give one budget each")
        ok = np.flatnonzero(np.isfinite(vals))
        n_own = len(ok)
        t = len(self._tasks)

        # (1) prior from meta-features
        zt, lt = self._meta.encode(meta_features or {})
        d2 = np.zeros(t)
        mism = np.zeros(t)
        for i, (zi, li) in enumerate(self._meta_codes):
            d2[i], mism[i] = _MetaTable.distance(zt, lt, zi, li)
        kern = _meta_kernel(d2, mism, self.meta_bandwidth, self.meta_mismatch)
        mu = np.clip(self.prior_line[0] + self.prior_line[1] * kern, -1.0, 1.0)

        # (2) evidence: past surrogates against own observations
        tau = np.full(t, np.nan)
        npairs, m = 0, 0
        bank = self.bank(space)
        if n_own >= 2:
            sub = ok[_stratified(vals[ok], buds[ok], self.max_compare)]
            m = len(sub)
            enc = bank.layout.encode(_Raw([configs[i] for i in sub]), clip=False)
            pred = self._predict_encoded(bank, enc)
            tau_all, npairs = _kendall(pred, vals[sub], buds[sub])
            if npairs:
                tau = tau_all

        # (3) shrinkage: posterior mean of prior and measurement
        s2_tau = _tau_variance(npairs)
        share = 0.0 if math.isinf(s2_tau) else self.prior_variance / (self.prior_variance + s2_tau)
        rho = mu if npairs == 0 else (1.0 - share) * mu + share * tau

        # (4) weights
        shared = self._shared_params(space, bank)
        score = np.maximum(rho, 0.0) ** 2
        score[np.array([len(s) == 0 for s in shared])] = 0.0  # nothing to transfer
        total = float(score.sum())
        w = score / total if total > 0 else np.zeros(t)
        agreement = float(w @ rho) if total > 0 else 0.0
        alpha = self.equivalent_observations(agreement)
        tw_past = alpha / (alpha + n_own) if alpha > 0 else 0.0

        explanations = {}
        for i, td in enumerate(self._tasks):
            explanations[td.task.name] = {
                "meta_distance": float(math.sqrt(d2[i])),
                "label_mismatches": int(mism[i]),
                "meta_kernel": float(kern[i]),
                "prior_similarity": float(mu[i]),
                "performance_similarity": None if npairs == 0 else float(tau[i]),
                "comparable_observations": int(m),
                "comparable_pairs": int(npairs),
                "shared_params": shared[i],
                "evidence_share": float(share),
                "similarity": float(rho[i]),
                "weight": float(w[i]),
            }
        return TaskWeights(
            past={td.task.name: float(w[i]) for i, td in enumerate(self._tasks)},
            target=1.0 - tw_past,
            prior_strength=float(alpha),
            n_own=int(n_own),
            explanations=explanations,
        )

    def _shared_params(self, space: SearchSpace, bank: _Bank) -> list[list[str]]:
        sig = space.signature()
        if sig not in self._shared:
            self._shared[sig] = [
                [n for n in space if n in td.task.space and _compatible(space[n], td.task.space[n])]
                for td in self._tasks
            ]
        return self._shared[sig]


def _compatible(a: Any, b: Any) -> bool:
    """Two parameters can share information: both numeric with overlapping ranges, or
    both categorical with a common choice."""
    if isinstance(a, CategoricalParam) or isinstance(b, CategoricalParam):
        if not (isinstance(a, CategoricalParam) and isinstance(b, CategoricalParam)):
            return False
        return bool({_key(c) for c in a.choices} & {_key(c) for c in b.choices})
    return a.low <= b.high and b.low <= a.high
