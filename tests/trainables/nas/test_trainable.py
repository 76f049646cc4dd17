"""NAS child training on Omniglot classification: data split, settings, training, checkpoints."""

from __future__ import annotations

import os
from pathlib import Path

import pydantic
import pytest
import torch

from warmtune.trainables import resolve_trainable
from warmtune.trainables.nas.data import load_classification, random_shift
from warmtune.trainables.nas.trainable import (
    CHECKPOINT_FILE,
    METRICS,
    ChildTraining,
    NASSettings,
    nas_meta_features,
    train_nas,
)

REPO_ROOT = Path(__file__).resolve().parents[3]
CELL = "|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|skip_connect~0|none~1|avg_pool_3x3~2|"
TINY = {
    "arch": CELL,
    "classes": 5,
    "channels": 4,
    "cells_per_stage": 1,
    "batch_size": 16,
    "device": "cpu",
}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def omniglot(need_data):
    return str(need_data("omniglot"))


def settings(omniglot, **overrides):
    return NASSettings(**{**TINY, "data": omniglot, **overrides})


def test_split_is_by_drawer_with_the_same_classes(omniglot):
    train = load_classification(omniglot, "train", classes=7)
    val = load_classification(omniglot, "val", classes=7)
    test = load_classification(omniglot, "test", classes=7)
    assert (len(train.y), len(val.y), len(test.y)) == (7 * 14, 7 * 3, 7 * 3)
    for split in (train, val, test):
        assert split.x.shape[1:] == (1, 28, 28)
        assert sorted(set(split.y.tolist())) == list(range(7))
    # Different drawers: no image is shared between the splits.
    flat = {tuple(x.flatten().tolist()) for x in train.x}
    assert not any(tuple(x.flatten().tolist()) in flat for x in val.x)
    with pytest.raises(ValueError, match="classes"):
        load_classification(omniglot, "train", classes=1)
    with pytest.raises(ValueError, match="split"):
        load_classification(omniglot, "dev", classes=3)  # type: ignore[arg-type]


def test_random_shift_translates_each_image_by_whole_pixels():
    x = torch.zeros(50, 1, 9, 9)
    x[:, 0, 4, 4] = 1.0
    generator = torch.Generator().manual_seed(0)
    shifted = random_shift(x, pixels=2, generator=generator)
    positions = shifted[:, 0].flatten(1).argmax(dim=1)
    rows, cols = positions // 9, positions % 9
    assert shifted.sum().item() == 50  # the dot never leaves a 9x9 image at 2 pixels
    assert set(rows.tolist()) == {2, 3, 4, 5, 6} and set(cols.tolist()) == {2, 3, 4, 5, 6}
    assert random_shift(x, pixels=0, generator=generator) is x


def test_settings_name_the_bad_field(omniglot):
    with pytest.raises(pydantic.ValidationError, match="no cell given"):
        NASSettings(data=omniglot)
    with pytest.raises(pydantic.ValidationError, match="edge_2_1"):
        NASSettings(data=omniglot, **{"edge_2_1": "conv_7x7"})
    with pytest.raises(pydantic.ValidationError, match="lacks"):
        NASSettings(data=omniglot, edge_1_0="none")
    with pytest.raises(pydantic.ValidationError, match="not both"):
        NASSettings(data=omniglot, arch=CELL, edge_1_0="none")
    with pytest.raises(pydantic.ValidationError, match="epochs"):
        NASSettings(data=omniglot, arch=CELL, epochs=3)
    edges = dict(
        zip(
            ["edge_1_0", "edge_2_0", "edge_2_1", "edge_3_0", "edge_3_1", "edge_3_2"],
            [
                "nor_conv_3x3",
                "nor_conv_1x1",
                "skip_connect",
                "skip_connect",
                "none",
                "avg_pool_3x3",
            ],
            strict=True,
        )
    )
    assert NASSettings(data=omniglot, **edges).cell() == CELL


def test_a_child_learns_and_reports_every_metric(omniglot):
    # 5 classes, 70 training images: enough steps for the running batch-norm statistics
    # to follow the weights takes a small batch.
    recipe = {"lr": 0.05, "batch_size": 8, "channels": 8}
    child = ChildTraining(settings=settings(omniglot, **recipe), seed=0, max_iterations=6)
    first = child.step()
    for _ in range(5):
        last = child.step()
    assert last["train_loss"] < first["train_loss"]
    assert last["train_accuracy"] > first["train_accuracy"]
    assert last["val_accuracy"] >= 2 * 0.2  # chance is 1/5
    assert set(first) | {"test_accuracy", "test_loss"} == set(METRICS) | {"epoch"}
    assert first["params"] == sum(p.numel() for p in child.model.parameters())
    assert first["latency_ms"] > 0 and first["images_per_second"] > 0
    test = child.test()
    assert 0 <= test["test_accuracy"] <= 1
    assert child.learning_rate(child.total_steps) == pytest.approx(0.0, abs=1e-12)
    assert child.learning_rate(0) == pytest.approx(0.05)
    assert child.steps_per_epoch == 9 and child.total_steps == 6 * 9


def test_checkpoint_round_trip_continues_bit_for_bit(omniglot):
    a = ChildTraining(settings=settings(omniglot), seed=3, max_iterations=3)
    a.step()
    state = a.state_dict()
    expected = a.step()
    b = ChildTraining(settings=settings(omniglot), seed=99, max_iterations=3)
    b.load_state_dict(state)
    got = b.step()
    keys = ("val_accuracy", "val_loss", "train_loss", "train_accuracy", "epoch")
    assert {k: got[k] for k in keys} == {k: expected[k] for k in keys}
    for (name, p), q in zip(
        a.model.state_dict().items(), b.model.state_dict().values(), strict=True
    ):
        assert torch.equal(p, q), name


def test_restore_rejects_another_network_and_takes_a_new_recipe(omniglot):
    a = ChildTraining(settings=settings(omniglot), seed=0, max_iterations=2)
    state = a.state_dict()
    other = ChildTraining(
        settings=settings(omniglot, arch=CELL.replace("avg_pool_3x3~2", "none~2")),
        seed=0,
        max_iterations=2,
    )
    with pytest.raises(ValueError, match="checkpoint holds cell"):
        other.load_state_dict(state)
    mutated = ChildTraining(settings=settings(omniglot, lr=0.02), seed=0, max_iterations=2)
    mutated.load_state_dict(state)
    assert mutated.learning_rate(0) == pytest.approx(0.02)


def test_bfloat16_autocast_trains(omniglot):
    child = ChildTraining(settings=settings(omniglot, amp="bf16"), seed=0, max_iterations=1)
    assert child.autocast
    metrics = child.step()
    assert torch.isfinite(torch.tensor(metrics["train_loss"]))
    assert not ChildTraining(settings=settings(omniglot), seed=0, max_iterations=1).autocast


def test_meta_features_and_registry(omniglot):
    info = resolve_trainable("nas-omniglot")
    assert info.load() is train_nas
    assert info.metrics is not None and info.metrics["val_accuracy"] == "max"
    features = info.task_meta_features({"data": omniglot, "classes": 50})
    assert features == nas_meta_features({"classes": 50})
    assert features["train_examples"] == 50 * 14


def test_example_validates(omniglot, monkeypatch):
    from warmtune.spec import load_job

    monkeypatch.chdir(REPO_ROOT)
    spec = load_job(REPO_ROOT / "examples" / "nas-omniglot.yaml")
    assert spec.trainable.name == "nas-omniglot"
    assert {f"edge_{j}_{i}" for j in (1, 2, 3) for i in range(j)} <= set(spec.space)


def test_train_nas_reports_and_checkpoints_under_tune(ray_session, omniglot, tmp_path):
    from ray import tune

    fixed = {**TINY, "data": omniglot}
    del fixed["arch"]
    edges = {
        "edge_1_0": "nor_conv_3x3",
        "edge_2_0": "skip_connect",
        "edge_2_1": "none",
        "edge_3_0": "skip_connect",
        "edge_3_1": "nor_conv_1x1",
        "edge_3_2": "avg_pool_3x3",
    }
    tuner = tune.Tuner(
        tune.with_parameters(train_nas, max_iterations=2, seed=0, **fixed),
        param_space=edges,
        tune_config=tune.TuneConfig(num_samples=1, metric="val_accuracy", mode="max"),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="t"),
    )
    results = tuner.fit()
    assert not results.errors
    result = results[0]
    assert result.metrics["training_iteration"] == 2
    assert {"val_accuracy", "test_accuracy", "params", "latency_ms"} <= set(result.metrics)
    with result.checkpoint.as_directory() as directory:
        state = torch.load(os.path.join(directory, CHECKPOINT_FILE), weights_only=True)
    assert state["iteration"] == 2 and state["arch"].startswith("|nor_conv_3x3~0|")


def test_compare_trains_given_and_random_cells(omniglot, tmp_path, capsys):
    import pandas as pd
    import yaml

    from warmtune.bench.tools.nas_compare import main

    job = {
        "name": "tiny-nas",
        "task": {"name": "tiny"},
        "trainable": {"name": "nas-omniglot", "params": {**TINY, "data": omniglot}},
        "objective": {"metric": "val_accuracy", "mode": "max"},
        "space": {"edge_1_0": {"type": "categorical", "choices": ["none", "skip_connect"]}},
        "budget": {"trials": 2, "max_iterations": 1},
    }
    del job["trainable"]["params"]["arch"]
    for edge in ("edge_2_0", "edge_2_1", "edge_3_0", "edge_3_1", "edge_3_2"):
        job["trainable"]["params"][edge] = "skip_connect"
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    out = tmp_path / "compare.csv"
    main([str(path), "--cell", CELL, "--random", "2", "--out", str(out)])
    table = pd.read_csv(out)
    assert list(table["kind"]) == ["given", "random", "random"]
    assert table.loc[0, "cell"] == CELL and table["cell"].nunique() == 3
    assert "median random cell" in capsys.readouterr().out
