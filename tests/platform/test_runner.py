"""The runner end to end on the shared Ray instance, with the quadratic trainable."""

from __future__ import annotations

import copy
import json

import pytest

from warmtune.jobdir import JobDir
from warmtune.report import load_report, searcher_state
from warmtune.runner import JobExistsError, run_job
from warmtune.spec import job_from_dict
from warmtune.store import ResultStore, configs

JOB = {
    "name": "bowl",
    "task": {"name": "bowl"},
    "trainable": {"name": "quadratic"},
    "space": {
        "x": {"type": "float", "low": 0, "high": 1},
        "opt": {"type": "categorical", "choices": ["a", "b"]},
        "z": {"type": "int", "low": 0, "high": 2, "when": {"opt": ["b"]}},
    },
    "objective": {"metric": "loss", "mode": "min"},
    "budget": {"trials": 6, "max_iterations": 4},
    "seed": 3,
}


def job(tmp_path, **changes):
    data = copy.deepcopy(JOB)
    data["storage"] = str(tmp_path / "results")
    data.update(changes)
    return job_from_dict(data)


def test_a_search_runs_and_every_row_reaches_the_store(ray_session, tmp_path, capsys):
    spec = job(tmp_path)
    summary = run_job(spec)
    df = ResultStore(JobDir.of(spec).results).read()
    assert summary.n_trials == 6 and summary.n_errors == 0
    assert len(df) == 6 * 4
    assert sorted(df.groupby("trial_id")["training_iteration"].max()) == [4] * 6
    for config in configs(df):
        assert spec.search_space.validate(config) == config
    assert summary.best["loss"] == pytest.approx(df["loss"].min())
    out = capsys.readouterr().out
    assert "trials:" in out and "best loss" in out


def test_asha_stops_weak_trials_early(ray_session, tmp_path):
    spec = job(
        tmp_path,
        budget={"trials": 9, "max_iterations": 9},
        scheduler={"name": "asha", "options": {"grace_period": 1, "reduction_factor": 3}},
        max_concurrency=1,
    )
    run_job(spec, progress=False)
    df = ResultStore(JobDir.of(spec).results).read()
    reached = df.groupby("trial_id")["training_iteration"].max()
    # Every trial ended; the report tells the stopped ones from those that finished.
    states = load_report(JobDir.of(spec)).trial_states()
    assert states.to_dict() == {
        t: "finished" if r == 9 else "stopped early" for t, r in reached.items()
    }
    assert len(reached) == 9 and (reached < 9).sum() >= 3


def test_same_seed_same_configurations(ray_session, tmp_path):
    a = job(tmp_path, name="a")
    b = job(tmp_path, name="b")
    run_job(a, progress=False)
    run_job(b, progress=False)

    def config_set(spec):
        df = ResultStore(JobDir.of(spec).results).read()
        return sorted(map(str, configs(df.drop_duplicates("trial_id"))))

    assert config_set(a) == config_set(b)


def test_max_metric_mode_picks_the_largest(ray_session, tmp_path):
    spec = job(
        tmp_path,
        objective={"metric": "loss", "mode": "max"},
        budget={"trials": 4, "max_iterations": 2},
    )
    summary = run_job(spec, progress=False)
    df = ResultStore(JobDir.of(spec).results).read()
    last = df[df.training_iteration == 2]
    assert summary.best["loss"] == pytest.approx(last["loss"].max())


def test_an_existing_job_is_never_overwritten(ray_session, tmp_path):
    spec = job(tmp_path, budget={"trials": 1, "max_iterations": 1})
    run_job(spec, progress=False)
    files_before = ResultStore(JobDir.of(spec).results).files()
    with pytest.raises(JobExistsError, match="--resume"):
        run_job(spec, progress=False)
    assert ResultStore(JobDir.of(spec).results).files() == files_before


def test_resume_refuses_a_missing_or_changed_job(ray_session, tmp_path):
    spec = job(tmp_path, budget={"trials": 1, "max_iterations": 1})
    with pytest.raises(ValueError, match="nothing to resume"):
        run_job(spec, resume=True, progress=False)
    run_job(spec, progress=False)
    changed = job(tmp_path, budget={"trials": 1, "max_iterations": 1}, seed=99)
    with pytest.raises(ValueError, match=r"changed since .* \(fields: \['seed'\]\)"):
        run_job(changed, resume=True, progress=False)


def test_fixed_config_runs_one_trial_at_full_budget(ray_session, tmp_path):
    spec = job(tmp_path)
    summary = run_job(spec, config={"x": 0.5, "opt": "b", "z": 1}, progress=False)
    assert summary.job.startswith("bowl-config-")
    df = ResultStore(summary.root + "/warmtune/results").read()
    assert df["trial_id"].nunique() == 1 and df["training_iteration"].max() == 4
    assert configs(df)[0] == {"x": 0.5, "opt": "b", "z": 1}
    with pytest.raises(ValueError, match="'z' is inactive"):
        run_job(spec, config={"x": 0.5, "opt": "a", "z": 1}, progress=False)


def test_failed_trials_are_retried_then_reported(ray_session, tmp_path):
    spec = job(
        tmp_path,
        trainable={"name": "quadratic", "params": {"fail_at": 2}},
        budget={"trials": 1, "max_iterations": 3},
        max_retries=1,
    )
    summary = run_job(spec, progress=False)
    assert summary.n_errors == 1
    df = ResultStore(JobDir.of(spec).results).read()
    # Iteration 1 was reported before the failure and is kept.
    assert list(df["training_iteration"]) == [1]
    # How it ended is recorded beside the results, with the exception's last line.
    ends = ResultStore(JobDir.of(spec).trial_ends).read()
    assert ends[["trial_id", "status", "training_iteration"]].values.tolist() == [
        [df["trial_id"][0], "ERROR", 1]
    ]
    assert ends["error"][0].endswith("quadratic: fail_at=2 reached (as configured)")
    report = load_report(JobDir.of(spec))
    assert report.trial_states().to_dict() == {df["trial_id"][0]: "failed"}


def test_pbt_exploits_checkpoints_and_explores_inside_the_space(ray_session, tmp_path):
    spec = job(
        tmp_path,
        space={
            "x": {"type": "float", "low": 0, "high": 1},
            "y": {"type": "float", "low": 0.01, "high": 1, "log": True},
        },
        trainable={"name": "quadratic", "params": {"sleep_s": 0.2}},
        searcher={
            "name": "pbt",
            "options": {"perturbation_interval": 2, "quantile_fraction": 0.5},
        },
        budget={"trials": 4, "max_iterations": 8},
        resources={"cpu": 0.5},  # the whole population at once, as PBT intends
    )
    run_job(spec, progress=False)
    df = ResultStore(JobDir.of(spec).results).read()
    assert df["trial_id"].nunique() == 4
    for config in configs(df):
        assert spec.search_space.validate(config) == config
    changed = df.groupby("trial_id")["config_json"].nunique()
    assert (changed > 1).any(), "no trial ever took a new configuration (no exploit)"
    # Ray carried out exactly the exploits the searcher decided: each trial's later
    # configurations are the ones decided for it, each first reported one iteration
    # after the source's checkpoint it continued from.
    exploits = searcher_state(JobDir.of(spec))["searcher"]["exploits"]
    assert exploits
    for tid, rows in df.sort_values("timestamp", kind="stable").groupby("trial_id"):
        seen = list(dict.fromkeys(rows["config_json"]))[1:]
        decided = [e for e in exploits if e[0] == tid]
        assert [json.loads(c) for c in seen] == [e[4] for e in decided][: len(seen)]
        for e in decided[: len(seen)]:
            first = rows[rows["config_json"].map(json.loads) == e[4]].iloc[0]
            assert first["training_iteration"] == e[3] + 1


def test_pbt_on_ray_is_the_pbt_of_the_simulator(ray_session, tmp_path):
    """One worker, so nothing is left to timing: Ray (carrying out the searcher's
    decisions) reports the same iterations, losses and configurations, in the same
    order, as the population simulator of `warmtune bench` on the same NQM task."""
    from warmtune.bench.backends import NQMBackend
    from warmtune.bench.simulator import simulate
    from warmtune.searchers import make_searcher
    from warmtune.trainables.nqm import NoisyQuadratic

    space = {
        "lr": {"type": "float", "low": 1e-3, "high": 4.0, "log": True},
        "batch_size": {"type": "int", "low": 4, "high": 1024, "log": True},
    }
    options = {"perturbation_interval": 2, "quantile_fraction": 0.25}
    spec = job(
        tmp_path,
        space=space,
        trainable={"name": "nqm", "params": {"dims": 100}},
        searcher={"name": "pbt", "options": options},
        budget={"trials": 5, "max_iterations": 8},
        max_concurrency=1,
    )
    run_job(spec, progress=False)
    # Every row in the order written, the iterations re-run after an exploit included.
    df = ResultStore(JobDir.of(spec).results).read(dedupe=False)
    exploits = searcher_state(JobDir.of(spec))["searcher"]["exploits"]
    ray_rows = [
        (r.trial_id, int(r.training_iteration), round(float(r.loss), 12), r.config_json)
        for r in df.itertuples()
    ]

    pbt = make_searcher(
        "pbt", space=spec.search_space, seed=spec.seed, options={**options, "population_size": 5}
    )
    result = simulate(pbt, NQMBackend(NoisyQuadratic(dims=100), 8), workers=1, max_time=1e9)
    # Trial ids differ (Ray's against t0, t1, ...): map them by first appearance.
    first = list(dict.fromkeys(r[0] for r in ray_rows))
    names = dict(zip(dict.fromkeys(result.evaluations["trial_id"]), first, strict=True))
    sim_rows = [
        (names[r.trial_id], int(r.budget), round(float(r.value), 12), r.config_json)
        for r in result.evaluations.itertuples()
    ]
    assert exploits
    assert exploits == [[names[m], i, names[src], j, c] for m, i, src, j, c in pbt.exploits]
    assert [(t, i, v) for t, i, v, _ in ray_rows] == [(t, i, v) for t, i, v, _ in sim_rows]
    assert [json.loads(c) for *_, c in ray_rows] == [json.loads(c) for *_, c in sim_rows]


def test_pbt_takes_its_population_from_the_trials(tmp_path):
    from warmtune.spec import JobSpecError

    # A conditional space is fine: the explore step re-completes children.
    assert job(tmp_path, searcher={"name": "pbt"}).searcher_class.name == "pbt"
    with pytest.raises(JobSpecError, match="budget.trials; remove population_size"):
        job(tmp_path, searcher={"name": "pbt", "options": {"population_size": 3}})
    with pytest.raises(JobSpecError, match="population"):
        job(
            tmp_path,
            searcher={"name": "pbt"},
            space={"x": JOB["space"]["x"]},
            budget={"time": 10, "max_iterations": 2},
        )


def test_a_finished_job_joins_the_knowledge_base_unless_opted_out(ray_session, tmp_path):
    from warmtune.knowledge import KnowledgeBase

    kb_path = str(tmp_path / "kb")
    spec = job(
        tmp_path, budget={"trials": 2, "max_iterations": 2}, knowledge_base={"path": kb_path}
    )
    summary = run_job(spec, progress=False)
    assert summary.kb_rows == 2 * 2
    kb = KnowledgeBase(kb_path)
    obs = kb.observations("bowl")
    assert len(obs) == 4 and set(obs["job"]) == {"bowl"}
    assert set(obs["space_signature"]) == {spec.search_space.signature()}

    quiet = job(
        tmp_path,
        name="quiet",
        budget={"trials": 1, "max_iterations": 1},
        knowledge_base={"path": kb_path, "add": False},
    )
    assert run_job(quiet, progress=False).kb_rows == 0
    assert set(kb.observations("bowl")["job"]) == {"bowl"}


@pytest.mark.parametrize(
    "searcher",
    [
        {"name": "hyperband", "options": {"eta": 3}},
        {"name": "asha", "options": {"eta": 3}},
        {"name": "bohb", "options": {"eta": 3}},
    ],
    ids=lambda s: s["name"],
)
def test_successive_halving_searchers_pause_and_promote_on_ray(ray_session, tmp_path, searcher):
    spec = job(
        tmp_path,
        searcher=searcher,
        budget={"trials": 12, "max_iterations": 9},
        max_concurrency=2,
    )
    summary = run_job(spec, progress=False)
    assert not summary.interrupted and summary.n_errors == 0
    df = ResultStore(JobDir.of(spec).results).read()
    reached = df.groupby("trial_id")["training_iteration"].max()
    assert len(reached) == 12
    # Rungs at 1, 3 and 9 iterations: most trials stop at a rung, the best reach 9.
    assert set(reached) <= {1, 3, 9} and (reached == 9).any() and (reached < 9).sum() >= 6
    # A promoted trial continued from its checkpoint: no iteration reported twice.
    raw = ResultStore(JobDir.of(spec).results).read(dedupe=False)
    assert not raw.duplicated(["trial_id", "training_iteration"]).any()
    for config in configs(df):
        assert spec.search_space.validate(config) == config


def test_bohb_starts_warm_from_the_knowledge_base(ray_session, tmp_path):
    from warmtune.knowledge import KnowledgeBase

    kb_path = str(tmp_path / "kb")
    space = {
        "x": {"type": "float", "low": 0, "high": 1},
        "y": {"type": "float", "low": 0.01, "high": 1, "log": True},
    }
    for k in range(2):  # two past tasks, so the similarity model can calibrate
        past = job(
            tmp_path,
            name=f"past{k}",
            task={"name": f"bowl-{k}"},
            space=space,
            budget={"trials": 20, "max_iterations": 1},
            knowledge_base={"path": kb_path},
            seed=k,
        )
        run_job(past, progress=False)
    assert len(KnowledgeBase(kb_path).tasks()) == 2

    new = job(
        tmp_path,
        name="new",
        task={"name": "bowl-new"},
        space=space,
        searcher={"name": "bohb"},
        budget={"trials": 3, "max_iterations": 3},
        knowledge_base={"path": kb_path, "add": False},
        max_concurrency=1,
    )
    run_job(new, progress=False)
    df = ResultStore(JobDir.of(new).results).read()
    first = configs(df.sort_values("timestamp").drop_duplicates("trial_id"))[0]
    # The first configuration tried is one of the past's good ones: a config of a
    # past task that ranked in that task's top fifth.
    obs = KnowledgeBase(kb_path).observations()
    obs["rank"] = obs.groupby("task")["value"].rank(pct=True)
    match = obs[obs["config_json"].map(json.loads) == first]
    assert len(match) and match["rank"].min() <= 0.2

    cold = job(
        tmp_path,
        name="cold",
        task={"name": "bowl-new"},
        space=space,
        searcher={"name": "bohb", "options": {"warm_start": False}},
        budget={"trials": 3, "max_iterations": 3},
        knowledge_base={"path": kb_path, "add": False},
        max_concurrency=1,
    )
    run_job(cold, progress=False)
    cold_df = ResultStore(JobDir.of(cold).results).read()
    assert configs(cold_df.sort_values("timestamp").drop_duplicates("trial_id"))[0] != first


@pytest.mark.parametrize("name", ["optuna", "hyperopt"])
def test_library_baselines_run_on_ray(ray_session, tmp_path, name):
    spec = job(
        tmp_path,
        searcher={"name": name},
        budget={"trials": 5, "max_iterations": 2},
        scheduler={"name": "asha", "options": {"grace_period": 1}},
    )
    summary = run_job(spec, progress=False)
    df = ResultStore(JobDir.of(spec).results).read()
    assert summary.n_errors == 0 and df["trial_id"].nunique() == 5
    for config in configs(df):
        assert spec.search_space.validate(config) == config


def test_trainable_meta_features_reach_the_knowledge_base(tmp_path):
    from warmtune.spec import job_from_dict

    spec = job_from_dict(
        {
            "name": "m",
            "task": {"name": "sine", "meta_features": {"k_shot": 5, "note": "mine"}},
            "trainable": {"name": "maml-sinusoid", "params": {"k_shot": 5}},
            "space": {"inner_lr": {"type": "float", "low": 0.001, "high": 0.1, "log": True}},
            "objective": {"metric": "loss", "mode": "min"},
            "budget": {"trials": 1},
            "storage": str(tmp_path),
        }
    )
    meta = spec.task_meta_features
    assert meta["family"] == "sinusoid" and meta["k_shot"] == 5 and meta["note"] == "mine"


def test_a_run_builds_its_searcher_once(ray_session, tmp_path, monkeypatch):
    """Validation checks the searcher's options without building it; the run builds it."""
    import functools

    from warmtune.searchers import BOHB

    built = []
    real = BOHB.__init__

    @functools.wraps(real)
    def counting(self, *args, **kwargs):
        built.append(kwargs.get("warm_start"))
        real(self, *args, **kwargs)

    monkeypatch.setattr(BOHB, "__init__", counting)
    spec = job(tmp_path, searcher={"name": "bohb"}, budget={"trials": 3, "max_iterations": 3})
    assert built == []
    run_job(spec, progress=False)
    assert len(built) == 1
