"""Meta-NAS: NAS-Bench-201 cell networks as the backbone of the MAML trainable."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from warmtune.trainables.maml import algorithms as A
from warmtune.trainables.maml.omniglot_trainable import OmniglotMAML, OmniglotSettings
from warmtune.trainables.nas.network import CellNetwork
from warmtune.trainables.runtime import make_generator

REPO_ROOT = Path(__file__).resolve().parents[3]
# Every operation once, and a node (1) whose only input is cut.
CELL = "|none~0|+|nor_conv_3x3~0|nor_conv_1x1~1|+|skip_connect~0|avg_pool_3x3~1|nor_conv_3x3~2|"
TINY = {
    "backbone": "nb201",
    "arch": CELL,
    "filters": 4,
    "cells_per_stage": 1,
    "q_query": 2,
    "meta_batch_size": 2,
    "meta_iters_per_report": 2,
    "eval_tasks": 4,
    "test_tasks": 4,
    "device": "cpu",
}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def omniglot(need_data):
    return str(need_data("omniglot"))


def _loop_maml_grad(model, params, data, *, inner_lr, steps):
    """Reference: second-order MAML one task at a time with plain autograd."""
    support_x, support_y, query_x, query_y = data
    leaves = {n: p.clone().requires_grad_() for n, p in params.items()}
    losses = []
    for t in range(support_x.shape[0]):
        adapted = dict(leaves)
        for _ in range(steps):
            loss = F.cross_entropy(functional_call(model, adapted, (support_x[t],)), support_y[t])
            grads = torch.autograd.grad(loss, list(adapted.values()), create_graph=True)
            adapted = {
                n: p - inner_lr * g for (n, p), g in zip(adapted.items(), grads, strict=True)
            }
        losses.append(F.cross_entropy(functional_call(model, adapted, (query_x[t],)), query_y[t]))
    meta = torch.stack(losses).mean()
    return meta.detach(), dict(
        zip(leaves, torch.autograd.grad(meta, list(leaves.values())), strict=True)
    )


@pytest.mark.parametrize("steps", [1, 2])
def test_maml_meta_gradient_through_a_cell_network_matches_the_loop(steps):
    net = CellNetwork(
        CELL,
        num_classes=3,
        channels=2,
        cells_per_stage=1,
        in_channels=1,
        norm="batch",
        generator=make_generator(0),
    ).double()
    A.check_vmap_safe(net)
    with torch.no_grad():  # batch norm away from the identity, to exercise its gradient
        for name, p in net.named_parameters():
            if name.endswith(("scale", "shift")):
                p.uniform_(0.5, 1.5, generator=make_generator(len(name)))
    g = make_generator(1)
    tasks = 3
    data = (
        torch.rand(tasks, 6, 1, 8, 8, generator=g, dtype=torch.float64),
        torch.arange(3).repeat(2).expand(tasks, -1),
        torch.rand(tasks, 6, 1, 8, 8, generator=g, dtype=torch.float64),
        torch.arange(3).repeat(2).expand(tasks, -1),
    )
    params = {n: p.detach() for n, p in net.named_parameters()}
    got = A.maml(net, params, *data, inner_lr=0.3, steps=steps)
    want_loss, want = _loop_maml_grad(net, params, data, inner_lr=0.3, steps=steps)
    torch.testing.assert_close(got.loss, want_loss, rtol=1e-12, atol=0)
    assert list(got.grads) == list(want)
    for name in want:
        torch.testing.assert_close(got.grads[name], want[name], rtol=1e-9, atol=1e-12, msg=name)


def test_backbone_settings_name_the_fix(omniglot):
    with pytest.raises(pydantic.ValidationError, match="set backbone: nb201"):
        OmniglotSettings(data=omniglot, arch=CELL)
    with pytest.raises(pydantic.ValidationError, match="backbone nb201 needs a cell"):
        OmniglotSettings(data=omniglot, backbone="nb201")
    settings = OmniglotSettings(data=omniglot, **TINY)
    assert settings.cell() == CELL


@pytest.mark.parametrize("algorithm", ["maml", "anil", "metasgd"])
def test_meta_nas_trains_and_checkpoints_bit_for_bit(omniglot, algorithm):
    settings = OmniglotSettings(data=omniglot, **{**TINY, "algorithm": algorithm})
    a = OmniglotMAML(settings=settings, seed=0)
    assert isinstance(a.model, CellNetwork) and a.model.arch == CELL
    a.step()
    state = a.state_dict()
    expected = a.step()
    b = OmniglotMAML(settings=settings, seed=5)
    b.load_state_dict(state)
    assert b.step() == expected
    other = OmniglotSettings(
        data=omniglot, **{**TINY, "arch": CELL.replace("none~0", "skip_connect~0")}
    )
    with pytest.raises(ValueError, match="cell"):
        OmniglotMAML(settings=other, seed=0).load_state_dict(state)


def test_meta_nas_example_validates(omniglot, monkeypatch):
    from warmtune.spec import load_job

    monkeypatch.chdir(REPO_ROOT)
    spec = load_job(REPO_ROOT / "examples" / "meta-nas-omniglot.yaml")
    assert spec.trainable.name == "maml-omniglot"
    assert spec.trainable.params["backbone"] == "nb201"
