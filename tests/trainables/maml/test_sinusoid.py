"""MAML core (torch.func) and the sinusoid trainable: gradients, determinism, Ray wiring."""

from __future__ import annotations

import io
import os

import pydantic
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from warmtune.trainables.maml import functional as MF
from warmtune.trainables.maml.models import MLP
from warmtune.trainables.maml.sinusoid import sample_tasks
from warmtune.trainables.maml.trainable import (
    CHECKPOINT_FILE,
    METRICS,
    SinusoidMAML,
    SinusoidSettings,
    train_sinusoid,
)
from warmtune.trainables.runtime import make_generator

INNER_LR = 0.05


@pytest.fixture
def tiny_problem():
    """A small float64 net and meta-batch, so gradients can be compared to 1e-10."""
    model = MLP(hidden=6, layers=2, generator=make_generator(1), dtype=torch.float64)
    batch = sample_tasks(4, k_shot=5, k_query=7, generator=make_generator(2), dtype=torch.float64)
    params = {n: p.detach().clone().requires_grad_() for n, p in model.named_parameters()}
    data = (batch.support_x, batch.support_y, batch.query_x, batch.query_y)
    return model, params, data


def _meta_loss(model, params, data, *, steps, first_order=False):
    return MF.meta_loss(
        model,
        params,
        *data,
        loss_fn=F.mse_loss,
        inner_lr=INNER_LR,
        steps=steps,
        first_order=first_order,
    )


def _vmapped_meta_grad(model, params, data, *, steps, first_order, via):
    if via == "autograd":
        loss = _meta_loss(model, params, data, steps=steps, first_order=first_order)
        return dict(zip(params, torch.autograd.grad(loss, list(params.values())), strict=True))
    return torch.func.grad(
        lambda p: _meta_loss(model, p, data, steps=steps, first_order=first_order)
    )(params)


def _loop_meta_grad(model, params, data, *, steps, first_order):
    """Reference: one task at a time, plain autograd, no torch.func transforms but the call."""
    support_x, support_y, query_x, query_y = data
    losses = []
    for t in range(support_x.shape[0]):
        adapted = dict(params)
        for _ in range(steps):
            pred = functional_call(model, adapted, (support_x[t],))
            grads = torch.autograd.grad(
                F.mse_loss(pred, support_y[t]), list(adapted.values()), create_graph=not first_order
            )
            adapted = {
                n: w - INNER_LR * g for (n, w), g in zip(adapted.items(), grads, strict=True)
            }
        losses.append(F.mse_loss(functional_call(model, adapted, (query_x[t],)), query_y[t]))
    meta = torch.stack(losses).mean()
    return dict(zip(params, torch.autograd.grad(meta, list(params.values())), strict=True))


@pytest.mark.parametrize("via", ["autograd", "func_grad"])
@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("steps", [1, 3])
def test_vmapped_meta_gradient_matches_per_task_loop(tiny_problem, steps, first_order, via):
    model, params, data = tiny_problem
    got = _vmapped_meta_grad(model, params, data, steps=steps, first_order=first_order, via=via)
    want = _loop_meta_grad(model, params, data, steps=steps, first_order=first_order)
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-10, atol=1e-12)


def test_second_order_meta_gradient_matches_finite_differences(tiny_problem):
    model, params, data = tiny_problem
    steps = 2
    grads = _vmapped_meta_grad(model, params, data, steps=steps, first_order=False, via="autograd")
    base = MF.detached(params)
    rng = make_generator(3)
    eps = 1e-6
    for _ in range(3):
        direction = {n: torch.randn(p.shape, generator=rng, dtype=p.dtype) for n, p in base.items()}
        with torch.no_grad():
            plus = _meta_loss(
                model, {n: p + eps * direction[n] for n, p in base.items()}, data, steps=steps
            )
            minus = _meta_loss(
                model, {n: p - eps * direction[n] for n, p in base.items()}, data, steps=steps
            )
        numeric = (plus - minus) / (2 * eps)
        analytic = sum((grads[n] * direction[n]).sum() for n in base)
        torch.testing.assert_close(analytic, numeric, rtol=1e-6, atol=1e-9)


def test_first_order_changes_the_meta_gradient(tiny_problem):
    model, params, data = tiny_problem
    second = _vmapped_meta_grad(model, params, data, steps=1, first_order=False, via="autograd")
    first = _vmapped_meta_grad(model, params, data, steps=1, first_order=True, via="autograd")
    diff = sum((second[n] - first[n]).norm() for n in params)
    scale = sum(second[n].norm() for n in params)
    assert diff > 1e-3 * scale


def test_zero_steps_is_the_plain_query_loss_and_negative_steps_are_rejected(tiny_problem):
    model, params, data = tiny_problem
    _, _, query_x, query_y = data
    with torch.no_grad():
        got = MF.batched_query_losses(
            model, params, *data, loss_fn=F.mse_loss, inner_lr=INNER_LR, steps=0
        )
        want = torch.stack(
            [F.mse_loss(model(query_x[t]), query_y[t]) for t in range(query_x.shape[0])]
        )
    torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match="steps"):
        _meta_loss(model, params, data, steps=-1)


def test_sinusoid_sampling_is_owned_and_seeded():
    torch.manual_seed(0)
    a = sample_tasks(3, k_shot=4, generator=make_generator(7))
    torch.manual_seed(1)  # the global RNG must not matter
    b = sample_tasks(3, k_shot=4, generator=make_generator(7))
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)
    assert a.support_x.shape == (3, 4, 1) and a.query_y.shape == (3, 4, 1)
    assert a.amplitude.min() >= 0.1 and a.amplitude.max() <= 5.0
    assert a.support_x.abs().max() <= 5.0
    torch.testing.assert_close(
        a.support_y, a.amplitude[:, None, None] * torch.sin(a.support_x - a.phase[:, None, None])
    )


SMALL = {"meta_iters_per_report": 5, "eval_tasks": 10, "meta_batch_size": 5}


def test_checkpoint_round_trip_continues_bit_for_bit():
    settings = SinusoidSettings(**SMALL)
    straight = SinusoidMAML(settings=settings, seed=11)
    want = [straight.step() for _ in range(4)]

    first = SinusoidMAML(settings=settings, seed=11)
    got = [first.step() for _ in range(2)]
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = SinusoidMAML(settings=settings, seed=11)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert resumed.iteration == 2
    got += [resumed.step() for _ in range(2)]

    assert got == want
    for name, tensor in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], tensor)


def test_runs_are_a_function_of_the_seed():
    settings = SinusoidSettings(**SMALL)
    a = SinusoidMAML(settings=settings, seed=5).step()
    b = SinusoidMAML(settings=settings, seed=5).step()
    c = SinusoidMAML(settings=settings, seed=6).step()
    assert a == b
    assert a != c
    assert set(a) == set(METRICS)
    assert all(type(v) is float for v in a.values())


def test_learning_happens_with_default_settings():
    maml = SinusoidMAML(settings=SinusoidSettings(), seed=0)
    history = [maml.step() for _ in range(5)]
    assert history[-1]["loss"] < 0.8 * history[0]["loss"]
    assert history[-1]["loss"] < history[-1]["pre_loss"]


def test_settings_reject_unknown_keys_and_bad_values():
    with pytest.raises(pydantic.ValidationError, match="inner_lrr"):
        SinusoidSettings(inner_lrr=0.1)
    with pytest.raises(pydantic.ValidationError, match="inner_lr"):
        SinusoidSettings(inner_lr=-0.1)
    with pytest.raises(pydantic.ValidationError, match="meta_batch_size"):
        SinusoidSettings(meta_batch_size=0)
    settings = SinusoidSettings(inner_lr=0.1)
    with pytest.raises(pydantic.ValidationError):
        settings.inner_lr = 0.2  # frozen


def test_train_sinusoid_reports_and_checkpoints_under_tune(ray_session, tmp_path):
    from ray import tune

    tuner = tune.Tuner(
        tune.with_parameters(
            train_sinusoid, max_iterations=2, seed=0, meta_iters_per_report=5, eval_tasks=10
        ),
        param_space={"inner_lr": 0.01},
        tune_config=tune.TuneConfig(num_samples=1, metric="loss", mode="min", reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="t"),
    )
    results = tuner.fit()
    assert not results.errors
    result = results[0]
    assert result.metrics["training_iteration"] == 2
    assert len(result.metrics_dataframe) == 2
    assert set(METRICS) <= set(result.metrics)
    assert result.checkpoint is not None
    with result.checkpoint.as_directory() as directory:
        state = torch.load(os.path.join(directory, CHECKPOINT_FILE), weights_only=True)
    assert state["iteration"] == 2
