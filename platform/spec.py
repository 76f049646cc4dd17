"""Job specs: one YAML file (or the same object built in Python) describes a search.

A :class:`JobSpec` is validated once, when it is built, and frozen afterwards.
Every problem is reported with the path of the field and what to do about it,
before Ray starts. :func:`load_job` reads a YAML file; :func:`dump_job` writes one.

Example::

    name: quickstart
    task: {name: sinusoid, meta_features: {k_shot: 10}}
    trainable: {name: maml-sinusoid, params: {meta_iters_per_report: 50}}
    space:
      inner_lr: {type: float, low: 0.001, high: 0.5, log: true}
      first_order: {type: categorical, choices: [true, false]}
    objective: {metric: loss, mode: min}
    searcher: {name: random}
    scheduler: {name: asha, options: {grace_period: 1, reduction_factor: 3}}
    budget: {trials: 16, max_iterations: 8, time: 10m}
    resources: {cpu: 1, gpu: 0}
"""

from __future__ import annotations

import inspect
import os
import re
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from warmtune.searchers import check_searcher, registered_searchers, searcher_class
from warmtune.searchers.base import Searcher
from warmtune.space import Param, SearchSpace
from warmtune.trainables import TrainableInfo, resolve_trainable

__all__ = ["JobSpec", "JobSpecError", "default_storage", "dump_job", "load_job"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SCHEDULERS = ("fifo", "asha")


class JobSpecError(ValueError):
    """A job spec is invalid; ``problems`` lists ``(field path, message)`` pairs."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        lines = [f"{source} is invalid ({len(problems)} problem(s)):"]
        lines += [f"  - {path or '(top level)'}: {msg}" for path, msg in problems]
        super().__init__("\n".join(lines))


def _valid_name(v: str) -> str:
    if not _NAME.match(v):
        raise ValueError(
            f"{v!r} is not a valid name; use letters, digits, '_', '.', '-' "
            "(starting with a letter or digit)"
        )
    return v


def default_storage() -> str:
    """Where results go when a job names no storage: ``$WARMTUNE_STORAGE`` or
    ``~/warmtune_results``."""
    return os.environ.get("WARMTUNE_STORAGE") or str(Path("~/warmtune_results").expanduser())


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TaskSpec(_Strict):
    """The task being tuned: its name keys the knowledge base."""

    name: str = Field(description="Task name, e.g. 'omniglot-5w1s'.")
    meta_features: dict[str, float | int | str | bool] = Field(
        default_factory=dict, description="Numbers or labels that describe the task."
    )

    _check_name = field_validator("name")(lambda v: _valid_name(v))


class TrainableSpec(_Strict):
    """Which trainable runs each trial, and its fixed (not searched) parameters."""

    name: str = Field(description="Built-in name (maml-sinusoid, quadratic) or 'module:function'.")
    params: dict[str, Any] = Field(default_factory=dict)


class ObjectiveSpec(_Strict):
    metric: str = Field(description="A metric the trainable reports.")
    mode: Literal["min", "max"]


class SearcherSpec(_Strict):
    name: str = "random"
    options: dict[str, Any] = Field(default_factory=dict)


class AshaOptions(_Strict):
    """Options of Ray Tune's ASHA scheduler (asynchronous successive halving)."""

    grace_period: int = Field(1, ge=1, description="Iterations before a trial can be stopped.")
    reduction_factor: float = Field(3.0, gt=1, description="Keep the top 1/eta at each rung.")
    brackets: int = Field(1, ge=1)


class SchedulerSpec(_Strict):
    name: str = "fifo"
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> SchedulerSpec:
        if self.name not in _SCHEDULERS:
            raise ValueError(
                f"unknown scheduler {self.name!r}; choose one of {', '.join(_SCHEDULERS)}"
            )
        if self.name == "fifo" and self.options:
            raise ValueError("scheduler 'fifo' takes no options; remove 'options'")
        if self.name == "asha":
            try:
                AshaOptions.model_validate(self.options)
            except ValidationError as e:
                raise ValueError(
                    "; ".join(
                        f"options.{'.'.join(map(str, err['loc']))}: {_pydantic_msg(err, '')}"
                        for err in e.errors()
                    )
                ) from None
        return self


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string such as ``"90s"``, ``"5m"``, ``"1.5h"``."""
    if isinstance(value, bool):
        raise ValueError("a duration must be seconds or a string like '90s', '5m', '1h'")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smhd]?)\s*", str(value))
        if not m:
            raise ValueError(
                f"{value!r} is not a duration; write seconds (600) or '90s', '10m', '2h', '1d'"
            )
        seconds = float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    if seconds <= 0:
        raise ValueError(f"a duration must be positive, got {value!r}")
    return seconds


class BudgetSpec(_Strict):
    """How much to spend: trials and/or wall time, and each trial's full budget."""

    trials: int | None = Field(None, ge=1, description="Number of trials to run.")
    time: float | None = Field(None, description="Wall-time limit: seconds, or '30m', '2h'.")
    max_iterations: int = Field(
        10, ge=1, description="Full budget of one trial, in training iterations."
    )

    @field_validator("time", mode="before")
    @classmethod
    def _parse_time(cls, v: Any) -> Any:
        return None if v is None else parse_duration(v)

    @model_validator(mode="after")
    def _need_a_limit(self) -> BudgetSpec:
        if self.trials is None and self.time is None:
            raise ValueError("set 'trials', 'time' or both, or the search would never end")
        return self


class ResourcesSpec(_Strict):
    """Resources of one trial. Fractions of a GPU share one device between trials."""

    cpu: float = Field(1.0, gt=0)
    gpu: float = Field(0.0, ge=0)

    @field_validator("gpu")
    @classmethod
    def _whole_above_one(cls, v: float) -> float:
        if v > 1 and not float(v).is_integer():
            raise ValueError(
                f"{v} GPUs: above 1 a trial needs whole GPUs; use a fraction <= 1 or an integer"
            )
        return v


class KnowledgeBaseSpec(_Strict):
    """Where past searches are kept, and whether this job joins them."""

    path: str = Field(
        default_factory=lambda: (
            os.environ.get("WARMTUNE_KB") or str(Path("~/warmtune_kb").expanduser())
        ),
        description="Local path or URI (default: $WARMTUNE_KB or ~/warmtune_kb).",
    )
    add: bool = Field(True, description="Add this job's observations when it finishes.")


class JobSpec(_Strict):
    """A whole search job. Build it from a dict (``JobSpec.model_validate``) or a file
    (:func:`load_job`); construction validates everything."""

    name: str = Field(description="Job name; results go to STORAGE/NAME.")
    task: TaskSpec
    trainable: TrainableSpec
    space: dict[str, Param]
    objective: ObjectiveSpec
    searcher: SearcherSpec = Field(default_factory=SearcherSpec)
    scheduler: SchedulerSpec = Field(default_factory=SchedulerSpec)
    budget: BudgetSpec
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    max_concurrency: int | None = Field(
        None, ge=1, description="At most this many trials at once (default: as resources allow)."
    )
    max_retries: int = Field(2, ge=0, description="Retries of a failed trial from its checkpoint.")
    storage: str = Field(default_factory=default_storage, description="Local path or URI.")
    knowledge_base: KnowledgeBaseSpec = Field(default_factory=KnowledgeBaseSpec)
    seed: int = 0

    _check_name = field_validator("name")(lambda v: _valid_name(v))

    @model_validator(mode="after")
    def _check_together(self) -> JobSpec:
        problems = _cross_checks(self)
        if problems:
            raise ValueError("\n".join(f"{p}: {m}" for p, m in problems))
        return self

    # Resolved once. A job spec is frozen, so what follows from its fields is computed
    # on first use (the validation above uses every one of them) and kept; pydantic
    # leaves cached properties out of equality, dumps and the schema.
    @cached_property
    def search_space(self) -> SearchSpace:
        """The validated :class:`~warmtune.space.SearchSpace`."""
        return SearchSpace(self.space)

    @cached_property
    def trainable_info(self) -> TrainableInfo:
        """The trainable ``trainable.name`` names (built-in or ``module:function``)."""
        return resolve_trainable(self.trainable.name)

    @cached_property
    def trainable_settings(self) -> Any:
        """The trainable's settings model (a pydantic class), or ``None`` if it has none."""
        return self.trainable_info.load_settings()

    @cached_property
    def searcher_class(self) -> type[Searcher]:
        """The searcher class ``searcher.name`` names."""
        if self.searcher.name not in registered_searchers():
            raise ValueError(
                f"unknown searcher {self.searcher.name!r}; choose one of {registered_searchers()}"
            )
        return searcher_class(self.searcher.name)

    @cached_property
    def task_meta_features(self) -> dict[str, Any]:
        """Meta-features of the task: the trainable's computed ones, then the job file's."""
        computed = self.trainable_info.task_meta_features(self.trainable.params)
        return {**computed, **self.task.meta_features}

    def storage_uri(self) -> str:
        """``storage`` with ``~`` expanded and local paths made absolute."""
        return resolve_storage(self.storage)

    @cached_property
    def trainable_params(self) -> dict[str, Any]:
        """The fixed ``trainable.params`` as the trainable's settings model normalises
        them (data paths made absolute, say), so that trials on Ray workers, whose
        working directory is not the user's, see what was checked here.

        They are validated together with one draw from the space, since a settings
        model may require a searched field (the NAS trainables need a cell). Keys
        the model does not return keep their values.
        """
        params = dict(self.trainable.params)
        if self.trainable_settings is None:
            return params
        draw = self.search_space.sample(np.random.default_rng(0))
        checked = self.trainable_settings.model_validate({**params, **draw}).model_dump()
        return {k: checked.get(k, v) for k, v in params.items()}


def resolve_storage(storage: str) -> str:
    if "://" in storage:
        return storage
    return str(Path(storage).expanduser().resolve())


def _cross_checks(spec: JobSpec) -> list[tuple[str, str]]:
    """Checks that need several fields, each returned as (path, message)."""
    problems: list[tuple[str, str]] = []
    try:
        space = spec.search_space
    except ValueError as e:
        return [("space", _first_line(e))]

    try:
        info = spec.trainable_info
    except ValueError as e:
        return [("trainable.name", str(e))]

    if info.metrics is not None and spec.objective.metric not in info.metrics:
        problems.append(
            (
                "objective.metric",
                f"{spec.objective.metric!r} is not reported by trainable {info.name!r}; "
                f"choose one of: {', '.join(info.metrics)}",
            )
        )

    overlap = sorted(set(spec.trainable.params) & set(spec.space))
    if overlap:
        problems.append(
            (
                "trainable.params",
                f"{overlap} are both fixed and searched; remove them from trainable.params "
                "or from space",
            )
        )
    problems += _check_settings(spec, space, info)

    try:
        cls = spec.searcher_class
    except ValueError as e:
        problems.append(("searcher", str(e)))
        return problems
    # A searcher that takes a population size (PBT) takes the job's trials as that.
    takes_population = "population_size" in inspect.signature(cls.__init__).parameters
    if takes_population and "population_size" in spec.searcher.options:
        problems.append(
            (
                "searcher.options.population_size",
                "the population is the job's budget.trials; remove population_size",
            )
        )
        return problems
    if takes_population and spec.budget.trials is None:
        problems.append(
            (
                "budget.trials",
                f"searcher {spec.searcher.name!r} needs 'trials': the population size",
            )
        )
    try:
        # Checked, not built: the run builds the searcher once, warm from the knowledge
        # base, which is no business of a job file's validation.
        check_searcher(
            spec.searcher.name,
            space=space,
            seed=spec.seed,
            options=spec.searcher.options,
            max_budget=spec.budget.max_iterations,
            population_size=spec.budget.trials,
        )
    except ValueError as e:
        problems.append(("searcher", str(e)))
        return problems
    if cls.schedules_trials and spec.scheduler.name != "fifo":
        problems.append(
            (
                "scheduler",
                f"searcher {spec.searcher.name!r} decides itself when trials stop; "
                f"remove the {spec.scheduler.name!r} scheduler (or set name: fifo)",
            )
        )
    return problems


def _check_settings(spec: JobSpec, space: SearchSpace, info: Any) -> list[tuple[str, str]]:
    """Validate fixed params + every searched parameter against the trainable's model."""
    settings = spec.trainable_settings
    if settings is None:
        return []
    problems: list[tuple[str, str]] = []
    fields = getattr(settings, "model_fields", {})
    allows_extra = settings.model_config.get("extra") == "allow"
    for name in space:
        if name not in fields and not allows_extra:
            problems.append(
                (
                    f"space.{name}",
                    f"trainable {info.name!r} has no parameter {name!r}; "
                    f"it takes: {', '.join(fields)}",
                )
            )
    if problems:
        return problems
    # A few draws from the space exercise every parameter's type and range.
    rng = np.random.default_rng(0)
    for _ in range(8):
        config = space.sample(rng)
        try:
            settings.model_validate({**spec.trainable.params, **config})
        except ValidationError as e:
            for err in e.errors():
                key = str(err["loc"][0]) if err["loc"] else ""
                where = f"space.{key}" if key in config else f"trainable.params.{key}"
                problems.append((where.rstrip("."), _pydantic_msg(err, f"trainable {info.name}")))
            break
    return problems


def load_job(path: str | os.PathLike[str], *, overrides: dict[str, Any] | None = None) -> JobSpec:
    """Read and validate a job file.

    Args:
        path: the YAML file.
        overrides: top-level keys to replace (e.g. ``{"name": "other"}``).

    Raises:
        JobSpecError: the file is missing, not YAML, or invalid; the message lists
            each problem with its field path.
    """
    path = Path(path)
    if not path.is_file():
        raise JobSpecError(str(path), [("", f"no such file: {path}; check the path")])
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise JobSpecError(str(path), [("", f"not valid YAML: {e}")]) from None
    if not isinstance(data, dict):
        raise JobSpecError(str(path), [("", "expected a mapping of keys (name, task, ...)")])
    data.setdefault("name", path.stem)
    data.update(overrides or {})
    return job_from_dict(data, source=str(path))


def job_from_dict(data: dict[str, Any], *, source: str = "job spec") -> JobSpec:
    """Validate a job given as a dict; raises :class:`JobSpecError` listing every problem."""
    try:
        return JobSpec.model_validate(data)
    except ValidationError as e:
        raise JobSpecError(source, _problems(e)) from None


def dump_job(spec: JobSpec) -> str:
    """The spec as YAML text that :func:`load_job` reads back to an equal spec."""
    data = spec.model_dump(mode="json", exclude_none=True)
    return yaml.safe_dump(data, sort_keys=False)


def _problems(error: ValidationError) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for err in error.errors():
        loc = [str(x) for x in err["loc"]]
        # Drop the discriminator tag pydantic puts into space paths (space.lr.float.low).
        if len(loc) >= 3 and loc[0] == "space" and loc[2] in ("float", "int", "categorical"):
            del loc[2]
        path = ".".join(loc)
        if err["type"] == "value_error" and not loc:
            # Cross-field checks come back as "path: message" lines.
            for line in str(err["ctx"]["error"]).splitlines():
                p, _, m = line.partition(": ")
                problems.append((p, m))
            continue
        problems.append((path, _pydantic_msg(err, path)))
    return problems


def _pydantic_msg(err: Any, where: str) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key; remove it (check its spelling and indentation)"
    if kind == "missing":
        return "required; add it"
    if kind == "union_tag_not_found" or kind == "union_tag_invalid":
        return "each parameter needs 'type: float', 'type: int' or 'type: categorical'"
    if kind == "value_error":
        return str(err["ctx"]["error"])
    return f"{err['msg']} (got {err.get('input')!r})"


def _first_line(e: Exception) -> str:
    return str(e).splitlines()[0]
