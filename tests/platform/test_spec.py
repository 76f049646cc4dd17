"""Job files: every bad input fails at load, naming the field and the fix."""

import copy
import re
import warnings
from pathlib import Path

import pytest
import yaml

from warmtune.data import is_present
from warmtune.spec import JobSpecError, dump_job, job_from_dict, load_job, parse_duration

REPO = Path(__file__).resolve().parents[2]

GOOD = {
    "name": "t",
    "task": {"name": "bowl", "meta_features": {"dim": 2}},
    "trainable": {"name": "quadratic", "params": {"sleep_s": 0.0}},
    "space": {
        "x": {"type": "float", "low": 0, "high": 1},
        "opt": {"type": "categorical", "choices": ["a", "b"]},
        "z": {"type": "int", "low": 1, "high": 5, "when": {"opt": ["b"]}},
    },
    "objective": {"metric": "loss", "mode": "min"},
    "searcher": {"name": "random"},
    "scheduler": {"name": "fifo"},
    "budget": {"trials": 4, "max_iterations": 3},
    "storage": "/tmp/unused",
}


def with_change(path: str, value):
    data = copy.deepcopy(GOOD)
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node[key]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return data


DELETE = object()


def problems(data) -> dict[str, str]:
    with pytest.raises(JobSpecError) as info:
        job_from_dict(data)
    return dict(info.value.problems)


def test_good_spec_loads_and_round_trips_through_yaml(tmp_path):
    spec = job_from_dict(GOOD)
    assert spec.search_space["z"].when == {"opt": ["b"]}
    f = tmp_path / "job.yaml"
    f.write_text(dump_job(spec))
    assert load_job(f) == spec


_MISSING_DATASET = re.compile(
    r"^dataset '(?P<name>[\w-]+)' is not in the data directory .*?"
    r"(?P<command>`warmtune data (fetch|import) (?P=name)( --from DIR)?`)"
)


def test_the_shipped_examples_are_valid():
    """Every example validates, except that one whose dataset is not in the data directory
    (a fresh clone has none) may fail with exactly that problem, naming the `warmtune data`
    command to run; each such example is reported as a warning, not as invalid."""
    examples = sorted((REPO / "examples").glob("*.yaml"))
    assert examples, f"no example job files in {REPO / 'examples'}"
    assert REPO / "examples" / "quickstart.yaml" in examples  # what `warmtune demo` runs
    invalid, needs = [], []
    for f in examples:
        try:
            load_job(f)
        except JobSpecError as e:
            found = [_MISSING_DATASET.match(message) for _, message in e.problems]
            if None in found or any(is_present(m["name"]) for m in found if m is not None):
                invalid.append(str(e))
            else:
                needs += [f"{f.relative_to(REPO)} needs {m['command']}" for m in found if m]
    assert not invalid, "\n".join(invalid)
    for line in needs:
        warnings.warn(line, UserWarning, stacklevel=1)


def test_every_example_validates_once_its_data_is_present(need_data):
    for name in ("lcbench", "omniglot", "nb201"):
        need_data(name)
    for f in sorted((REPO / "examples").glob("*.yaml")):
        spec = load_job(f)
        for key in ("scenario", "data", "path"):
            if key in spec.trainable.params:
                assert Path(spec.trainable_params[key]).is_absolute(), f


@pytest.mark.parametrize(
    "path, value, field, message",
    [
        ("colour", "blue", "colour", "unknown key"),
        ("budget.trails", 3, "budget.trails", "unknown key"),
        ("space.x.low", "abc", "space.x.low", "valid number"),
        ("space.x.low", 2, "space.x", "must be smaller than high"),
        ("space.x", {"type": "float", "low": 0, "high": 1, "log": True}, "space.x", "low > 0"),
        ("space.x", {"low": 0, "high": 1}, "space.x", "needs 'type"),
        ("space.x", {"type": "float", "low": 0}, "space.x.high", "required"),
        ("space", {}, "space", "empty"),
        ("space.z.when", {"nope": [1]}, "space", "not defined"),
        ("trainable.name", "no-such-trainable", "trainable.name", "unknown trainable"),
        ("trainable.name", "no_such_module:f", "trainable.name", "cannot import module"),
        ("trainable.params", {"sleep_s": -1}, "trainable.params.sleep_s", "greater than"),
        ("trainable.params", {"x": 0.5}, "trainable.params", "both fixed and searched"),
        ("objective.metric", "accuracy", "objective.metric", "choose one of: loss"),
        ("objective.mode", "minimize", "objective.mode", "'min' or 'max'"),
        ("searcher.name", "gradient-descent", "searcher", "unknown searcher"),
        ("searcher.options", {"warp": 9}, "searcher", "warp"),
        ("scheduler.name", "median", "scheduler", "unknown scheduler"),
        ("scheduler", {"name": "asha", "options": {"reduction_factor": 1}}, "scheduler", "greater"),
        ("budget", {"max_iterations": 3}, "budget", "set 'trials', 'time'"),
        ("budget.trials", 0, "budget.trials", "greater than or equal to 1"),
        ("budget.time", "soon", "budget.time", "not a duration"),
        ("budget.max_iterations", 0, "budget.max_iterations", "greater than or equal to 1"),
        ("resources", {"cpu": 0}, "resources.cpu", "greater than 0"),
        ("resources", {"gpu": 1.5}, "resources.gpu", "whole GPUs"),
        ("resources", {"gpu": -0.5}, "resources.gpu", "greater than or equal to 0"),
        ("max_concurrency", 0, "max_concurrency", "greater than or equal to 1"),
        ("task.name", "two words", "task.name", "not a valid name"),
        ("task", DELETE, "task", "required"),
        ("seed", "zero", "seed", "valid integer"),
    ],
)
def test_bad_input_names_field_and_fix(path, value, field, message):
    found = problems(with_change(path, value))
    assert field in found, f"expected a problem at {field}, got {found}"
    assert message in found[field], found[field]


def test_fractional_gpu_is_allowed():
    spec = job_from_dict(with_change("resources", {"cpu": 1, "gpu": 0.25}))
    assert spec.resources.gpu == 0.25


def test_unknown_space_parameter_of_a_strict_trainable(tmp_path):
    data = copy.deepcopy(GOOD)
    data["trainable"] = {"name": "maml-sinusoid"}
    data["space"] = {
        "inner_lr": {"type": "float", "low": 1e-3, "high": 0.1, "log": True},
        "learning_rate": {"type": "float", "low": 1e-3, "high": 0.1},
    }
    found = problems(data)
    assert "space.learning_rate" in found and "inner_lr" in found["space.learning_rate"]


def test_space_values_the_trainable_rejects_point_at_the_space(tmp_path):
    data = copy.deepcopy(GOOD)
    data["trainable"] = {"name": "maml-sinusoid"}
    data["space"] = {"inner_steps": {"type": "int", "low": 0, "high": 3}}
    found = problems(data)
    assert "space.inner_steps" in found


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(JobSpecError, match="no such file"):
        load_job(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(JobSpecError, match="not valid YAML"):
        load_job(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(JobSpecError, match="mapping"):
        load_job(listy)


def test_name_defaults_to_the_file_stem_and_overrides_apply(tmp_path):
    data = copy.deepcopy(GOOD)
    del data["name"]
    f = tmp_path / "my-search.yaml"
    f.write_text(yaml.safe_dump(data))
    assert load_job(f).name == "my-search"
    assert load_job(f, overrides={"name": "other"}).name == "other"


def test_all_problems_are_reported_at_once():
    data = with_change("objective.mode", "up")
    data["colour"] = "blue"
    data["budget"]["trials"] = -1
    assert len(problems(data)) == 3


@pytest.mark.parametrize(
    "text, seconds", [(90, 90.0), ("90s", 90.0), ("5m", 300.0), ("1.5h", 5400.0), ("2d", 172800.0)]
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_storage_defaults_to_env(monkeypatch):
    monkeypatch.setenv("WARMTUNE_STORAGE", "/tmp/somewhere")
    data = copy.deepcopy(GOOD)
    del data["storage"]
    assert job_from_dict(data).storage == "/tmp/somewhere"


def test_spec_is_frozen():
    spec = job_from_dict(GOOD)
    with pytest.raises(Exception, match="frozen"):
        spec.seed = 3


def test_searchers_that_schedule_refuse_a_second_scheduler():
    data = copy.deepcopy(GOOD)
    data["space"] = {"x": {"type": "float", "low": 0, "high": 1}}
    data["searcher"] = {"name": "pbt"}
    data["scheduler"] = {"name": "asha"}
    assert "decides itself when trials stop" in problems(data)["scheduler"]


def test_the_spec_resolves_its_trainable_space_and_searcher_once(monkeypatch):
    """Validation resolves the trainable, its settings, the space and the searcher class;
    everything after reads those values, and they take no part in equality."""
    import pickle

    import warmtune.spec

    calls = []
    real = warmtune.spec.resolve_trainable
    monkeypatch.setattr(
        warmtune.spec, "resolve_trainable", lambda ref: calls.append(ref) or real(ref)
    )
    spec = job_from_dict(copy.deepcopy(GOOD))
    space, info, cls = spec.search_space, spec.trainable_info, spec.searcher_class
    for _ in range(3):
        assert spec.search_space is space
        assert spec.trainable_info is info and spec.searcher_class is cls
        assert spec.trainable_params == {"sleep_s": 0.0}
        assert spec.task_meta_features["dim"] == 2
    assert calls == ["quadratic"]
    assert cls.name == "random"
    assert spec == job_from_dict(copy.deepcopy(GOOD)) == pickle.loads(pickle.dumps(spec))
    assert "search_space" not in spec.model_dump()
