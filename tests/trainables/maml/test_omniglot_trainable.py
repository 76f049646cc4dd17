"""The Omniglot meta-learning trainable: settings, exact resume, metrics, registry, examples."""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import pydantic
import pytest
import torch

from warmtune.trainables import resolve_trainable
from warmtune.trainables.maml.omniglot_trainable import (
    CHECKPOINT_FILE,
    METRICS,
    OmniglotMAML,
    OmniglotSettings,
    omniglot_meta_features,
    resolve_device,
    train_omniglot,
)

REPO_ROOT = Path(__file__).resolve().parents[3]
NB201_ARCH = (
    "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_3x3~1|+|skip_connect~0|none~1|nor_conv_3x3~2|"
)

TINY = {
    "n_way": 5,
    "k_shot": 1,
    "q_query": 2,
    "filters": 4,
    "blocks": 2,
    "meta_batch_size": 2,
    "meta_iters_per_report": 2,
    "eval_tasks": 6,
    "test_tasks": 7,
    "device": "cpu",
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def omniglot(need_data):
    return str(need_data("omniglot"))


def test_settings_name_the_bad_field(omniglot, tmp_path, monkeypatch):
    with pytest.raises(pydantic.ValidationError, match="inner_lrr"):
        OmniglotSettings(data=omniglot, inner_lrr=0.1)
    with pytest.raises(pydantic.ValidationError, match="inner_lr"):
        OmniglotSettings(data=omniglot, inner_lr=-0.1)
    with pytest.raises(pydantic.ValidationError, match="algorithm"):
        OmniglotSettings(data=omniglot, algorithm="protonets")
    with pytest.raises(pydantic.ValidationError, match="meta_batch_size"):
        OmniglotSettings(data=omniglot, meta_batch_size=0)
    with pytest.raises(pydantic.ValidationError, match="lower q_query"):
        OmniglotSettings(data=omniglot, k_shot=5, q_query=16)
    with pytest.raises(pydantic.ValidationError, match=r"data[\s\S]*images_background.npz"):
        OmniglotSettings(data=str(tmp_path))
    with pytest.raises(pydantic.ValidationError, match="data"):
        OmniglotSettings()  # type: ignore[call-arg]
    settings = OmniglotSettings(data=omniglot)
    with pytest.raises(pydantic.ValidationError):
        settings.inner_lr = 0.2  # frozen
    assert OmniglotSettings(data=omniglot, algorithm="metasgd").algorithm == "metasgd"
    # Relative paths become absolute: trials run in Ray workers with another cwd.
    monkeypatch.chdir(Path(omniglot).parent)
    assert OmniglotSettings(data="omniglot").data == str(Path(omniglot).resolve())


def test_devices_resolve():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="request a GPU"):
            resolve_device("cuda")


def _restored_after_one_step(
    settings: OmniglotSettings, *, seed: int
) -> tuple[dict[str, float], OmniglotMAML]:
    """One step's metrics, and a new learner restored from the checkpoint taken after it
    (through bytes, as Tune stores it)."""
    first = OmniglotMAML(settings=settings, seed=seed)
    metrics = first.step()
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = OmniglotMAML(settings=settings, seed=seed)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    return metrics, resumed


@pytest.mark.parametrize("algorithm", ["maml", "anil", "reptile", "metasgd"])
def test_checkpoint_round_trip_continues_bit_for_bit(omniglot, algorithm):
    settings = OmniglotSettings(data=omniglot, algorithm=algorithm, inner_steps=2, **TINY)
    straight = OmniglotMAML(settings=settings, seed=11)
    want = [straight.step() for _ in range(3)]

    first_metrics, resumed = _restored_after_one_step(settings, seed=11)
    assert resumed.iteration == 1
    got = [first_metrics] + [resumed.step() for _ in range(2)]

    assert got == want
    for name, tensor in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], tensor)
    if algorithm == "metasgd":
        assert straight.inner_lrs is not None and resumed.inner_lrs is not None
        for name, rate in straight.inner_lrs.items():
            assert torch.equal(resumed.inner_lrs[name], rate)
        # The step sizes are learned: they left their initial value.
        assert any((rate != settings.inner_lr).any() for rate in straight.inner_lrs.values())
    else:
        assert straight.inner_lrs is None and "inner_lr" not in straight.state_dict()
    assert set(want[0]) == {"val_accuracy", "val_loss", "train_loss"} <= set(METRICS)
    assert all(type(v) is float and math.isfinite(v) for v in want[-1].values())


@pytest.mark.slow
def test_compiled_meta_update_resumes_bit_for_bit_and_tracks_eager(omniglot):
    """``compile: true`` keeps the exact-resume guarantee (compiled CPU kernels are
    deterministic) and trains like eager: float32 sums in another order, nothing else."""
    settings = OmniglotSettings(data=omniglot, compile=True, **TINY)
    torch._dynamo.utils.counters.clear()
    straight = OmniglotMAML(settings=settings, seed=11)
    want = [straight.step() for _ in range(3)]
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0  # it did compile

    first_metrics, resumed = _restored_after_one_step(settings, seed=11)
    got = [first_metrics] + [resumed.step() for _ in range(2)]
    assert got == want

    eager = OmniglotMAML(settings=settings.model_copy(update={"compile": False}), seed=11)
    reference = [eager.step() for _ in range(3)]
    for compiled_metrics, eager_metrics in zip(want, reference, strict=True):
        assert compiled_metrics["train_loss"] == pytest.approx(
            eager_metrics["train_loss"], rel=1e-4
        )


def test_compile_without_a_cpp_compiler_names_the_setting(omniglot, monkeypatch):
    monkeypatch.setenv("PATH", "")
    monkeypatch.delenv("CXX", raising=False)
    settings = OmniglotSettings(data=omniglot, compile=True, **TINY)
    with pytest.raises(ValueError, match="'g\\+\\+' is not on the PATH[\\s\\S]*set compile: false"):
        OmniglotMAML(settings=settings, seed=0)
    monkeypatch.setenv("CXX", "no-such-compiler")
    with pytest.raises(ValueError, match="'no-such-compiler' is not on the PATH"):
        OmniglotMAML(settings=settings, seed=0)
    OmniglotMAML(settings=settings.model_copy(update={"compile": False}), seed=0)


def test_restore_rejects_another_architecture_and_takes_new_hyperparameters(omniglot):
    settings = OmniglotSettings(data=omniglot, **TINY)
    donor = OmniglotMAML(settings=settings, seed=1)
    donor.step()
    wider = OmniglotMAML(settings=settings.model_copy(update={"filters": 6}), seed=1)
    with pytest.raises(ValueError, match="filters=4"):
        wider.load_state_dict(donor.state_dict())
    mutated = OmniglotMAML(settings=settings.model_copy(update={"meta_lr": 0.01}), seed=2)
    mutated.load_state_dict(donor.state_dict())
    assert mutated.optimizer.param_groups[0]["lr"] == 0.01
    assert mutated.iteration == 1
    # Meta-SGD's learned step sizes have no counterpart in another algorithm's checkpoint.
    meta_sgd = OmniglotMAML(settings=settings.model_copy(update={"algorithm": "metasgd"}), seed=1)
    with pytest.raises(ValueError, match="only metasgd learns step sizes"):
        meta_sgd.load_state_dict(donor.state_dict())
    with pytest.raises(ValueError, match="only metasgd learns step sizes"):
        donor.load_state_dict(meta_sgd.state_dict())


def test_runs_are_a_function_of_the_seed_and_test_metrics(omniglot):
    settings = OmniglotSettings(data=omniglot, **TINY)
    a = OmniglotMAML(settings=settings, seed=5)
    b = OmniglotMAML(settings=settings, seed=5)
    c = OmniglotMAML(settings=settings, seed=6)
    assert a.step() == b.step() != c.step()
    test = a.test()
    assert set(test) == {"test_accuracy", "test_accuracy_ci95", "test_loss"}
    assert 0 <= test["test_accuracy"] <= 1 and test["test_accuracy_ci95"] >= 0
    assert a.test() == test  # fixed meta-test episodes


def test_meta_training_beats_chance_quickly(omniglot):
    tiny = {**TINY, "filters": 8, "blocks": 3, "meta_batch_size": 4, "meta_iters_per_report": 25}
    settings = OmniglotSettings(
        data=omniglot, **{**tiny, "q_query": 5, "eval_tasks": 50, "meta_lr": 0.01}
    )
    maml = OmniglotMAML(settings=settings, seed=0)
    before = maml.evaluate()["val_accuracy"]
    after = maml.step()["val_accuracy"]
    # Measured: 0.24 -> 0.34 (5-way: chance is 0.2).
    assert after > max(before, 0.2) + 0.05, (before, after)


def test_meta_features_and_registry(omniglot):
    features = omniglot_meta_features({"data": omniglot, "k_shot": 5, "algorithm": "fomaml"})
    assert features["dataset"] == "omniglot" and features["n_way"] == 5
    assert features["k_shot"] == 5 and features["image_size"] == 28
    assert features["algorithm"] == "fomaml" and features["second_order"] is False
    assert omniglot_meta_features({"algorithm": "metasgd"})["second_order"] is True
    info = resolve_trainable("maml-omniglot")
    assert info.load() is train_omniglot
    assert info.load_settings() is OmniglotSettings
    assert info.metrics is not None
    assert info.metrics["val_accuracy"] == "max" and info.metrics["test_accuracy"] == "max"
    assert info.task_meta_features({"data": omniglot})["k_shot"] == 1


@pytest.mark.parametrize("name", ["maml-omniglot.yaml", "maml-omniglot-pbt.yaml"])
def test_examples_validate(name, omniglot, tmp_path, monkeypatch):
    from warmtune.spec import load_job

    monkeypatch.chdir(tmp_path)  # the name resolves in the data directory, from anywhere
    spec = load_job(REPO_ROOT / "examples" / name)
    assert spec.trainable.name == "maml-omniglot"
    assert spec.objective.metric == "val_accuracy"
    assert spec.trainable.params["data"] == "omniglot"
    assert spec.trainable_params["data"] == omniglot


@pytest.mark.slow
def test_train_omniglot_reports_and_checkpoints_under_tune(ray_session, omniglot, tmp_path):
    from ray import tune

    fixed = {**TINY, "data": omniglot}
    tuner = tune.Tuner(
        tune.with_parameters(train_omniglot, max_iterations=2, seed=0, **fixed),
        param_space={"inner_lr": 0.4},
        tune_config=tune.TuneConfig(num_samples=1, metric="val_accuracy", mode="max"),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="t"),
    )
    results = tuner.fit()
    assert not results.errors
    result = results[0]
    assert result.metrics["training_iteration"] == 2
    assert {"val_accuracy", "test_accuracy", "test_accuracy_ci95"} <= set(result.metrics)
    with result.checkpoint.as_directory() as directory:
        state = torch.load(os.path.join(directory, CHECKPOINT_FILE), weights_only=True)
    assert state["iteration"] == 2


# ------------------------------------------------------------- metric-based learners


@pytest.mark.parametrize(
    "overrides",
    [
        {"algorithm": "protonet", "train_n_way": 8, "meta_lr_halving": 3},
        {"algorithm": "matching", "fce": True, "fce_steps": 2, "cosine_scale": 4.0},
    ],
    ids=["protonet", "matching-fce"],
)
def test_metric_learners_resume_bit_for_bit(omniglot, overrides):
    settings = OmniglotSettings(data=omniglot, **{**TINY, **overrides})
    straight = OmniglotMAML(settings=settings, seed=11)
    assert straight.model.head is None and straight.metric is not None
    want = [straight.step() for _ in range(3)]

    first_metrics, resumed = _restored_after_one_step(settings, seed=11)
    got = [first_metrics] + [resumed.step() for _ in range(2)]
    assert got == want
    for name, tensor in straight.state_dict()["learner"].items():
        assert torch.equal(resumed.metric.state_dict()[name], tensor)  # type: ignore[union-attr]
    assert bool(straight.state_dict()["learner"]) == settings.fce
    assert all(type(v) is float and math.isfinite(v) for v in want[-1].values())


def test_meta_lr_halves_on_schedule_and_across_a_resume(omniglot):
    settings = OmniglotSettings(
        data=omniglot, **{**TINY, "meta_iters_per_report": 3, "meta_lr_halving": 2}
    )
    learner = OmniglotMAML(settings=settings, seed=0)
    rates = []
    for _ in range(5):
        learner.meta_step()
        rates.append(learner.optimizer.param_groups[0]["lr"])
    # The rate of update u (counting from 0) is meta_lr / 2 ** (u // 2).
    assert rates == [0.001, 0.001, 0.0005, 0.0005, 0.00025]
    _, resumed = _restored_after_one_step(settings, seed=0)  # 3 updates done
    resumed.meta_step()
    assert resumed.optimizer.param_groups[0]["lr"] == 0.0005


def test_family_settings_name_the_fix(omniglot):
    with pytest.raises(pydantic.ValidationError, match="train_n_way=20 differs from n_way=5"):
        OmniglotSettings(data=omniglot, algorithm="maml", train_n_way=20)
    OmniglotSettings(data=omniglot, algorithm="maml", train_n_way=5, train_k_shot=3)
    with pytest.raises(pydantic.ValidationError, match="set fce: false or algorithm: matching"):
        OmniglotSettings(data=omniglot, algorithm="protonet", fce=True)
    with pytest.raises(pydantic.ValidationError, match="lower train_q_query"):
        OmniglotSettings(data=omniglot, algorithm="protonet", train_k_shot=5, train_q_query=16)
    settings = OmniglotSettings(data=omniglot, algorithm="protonet", train_n_way=60)
    assert settings.train_shape() == (60, 1, 15)
    with pytest.raises(pydantic.ValidationError, match="use at most 4 blocks"):
        OmniglotSettings(data=omniglot, downsample="maxpool", blocks=5)
    with pytest.raises(pydantic.ValidationError, match="maxpool is a conv4 setting"):
        OmniglotSettings(data=omniglot, downsample="maxpool", backbone="nb201", arch=NB201_ARCH)


def test_checkpoints_restore_only_within_their_family(omniglot):
    protonet = OmniglotMAML(
        settings=OmniglotSettings(data=omniglot, **{**TINY, "algorithm": "protonet"}), seed=1
    )
    maml = OmniglotMAML(settings=OmniglotSettings(data=omniglot, **TINY), seed=1)
    with pytest.raises(ValueError, match="keep no classifier head"):
        maml.load_state_dict(protonet.state_dict())
    with pytest.raises(ValueError, match="keep no classifier head"):
        protonet.load_state_dict(maml.state_dict())
    # An embedding network serves any episode shape: a 5-way ProtoNet restores into 20-way.
    wide = OmniglotMAML(
        settings=protonet.settings.model_copy(update={"n_way": 20, "q_query": 1}), seed=1
    )
    wide.load_state_dict(protonet.state_dict())
    matching = OmniglotMAML(
        settings=OmniglotSettings(data=omniglot, **{**TINY, "algorithm": "matching"}), seed=1
    )
    matching.load_state_dict(protonet.state_dict())  # same embedding network, no context
    with_context = OmniglotMAML(settings=matching.settings.model_copy(update={"fce": True}), seed=1)
    with pytest.raises(ValueError, match="fce=False"):
        with_context.load_state_dict(matching.state_dict())


@pytest.mark.parametrize("algorithm", ["protonet", "matching"])
def test_metric_learners_beat_chance_in_seconds(omniglot, algorithm):
    settings = OmniglotSettings(
        data=omniglot,
        **{
            **TINY,
            "algorithm": algorithm,
            "filters": 16,
            "blocks": 3,
            "q_query": 5,
            "train_n_way": 20,
            "meta_batch_size": 1,
            "meta_iters_per_report": 40,
            "eval_tasks": 50,
            "meta_lr": 0.003,
            "cosine_scale": 10.0,
        },
    )
    learner = OmniglotMAML(settings=settings, seed=0)
    before = learner.evaluate()["val_accuracy"]
    after = learner.step()["val_accuracy"]
    # Measured: 0.28 -> 0.47 (protonet) and 0.28 -> 0.48 (matching) after 40 episodes;
    # 5-way chance is 0.2.
    assert after > max(before, 0.2) + 0.12, (before, after)


def test_family_search_example_validates_for_every_algorithm(omniglot, tmp_path, monkeypatch):
    import numpy as np

    from warmtune.spec import load_job

    monkeypatch.chdir(tmp_path)
    spec = load_job(REPO_ROOT / "examples" / "fewshot-families.yaml")
    space = spec.search_space
    assert space.is_conditional
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(200):
        config = space.sample(rng)
        settings = OmniglotSettings(**{**spec.trainable_params, **config})
        seen.add(settings.algorithm)
        if settings.algorithm in ("protonet", "matching"):
            assert "inner_lr" not in config
        else:
            assert "train_n_way" not in config and "cosine_scale" not in config
    assert seen == set(space["algorithm"].choices)  # type: ignore[union-attr]
    assert {"maml", "protonet", "matching"} <= seen
