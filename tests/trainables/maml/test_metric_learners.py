"""Prototypical and Matching Networks: the rules against hand-computed values, and the
embedding backbone they train."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from warmtune.trainables.maml import metric as M
from warmtune.trainables.maml.conv import ConvNet
from warmtune.trainables.runtime import make_generator

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Two classes in two dimensions: class 0 at (1, 0) and (3, 0), class 1 at (0, 2); one
# query at (2, 1). Prototypes (2, 0) and (0, 2); squared distances 1 and 5.
SUPPORT = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]], dtype=torch.float64)
SUPPORT_Y = torch.tensor([0, 1, 0])
QUERY = torch.tensor([[2.0, 1.0]], dtype=torch.float64)


def test_prototypes_and_logits_match_the_hand_computed_example():
    prototypes = M.class_prototypes(SUPPORT, SUPPORT_Y, 2)
    assert prototypes.tolist() == [[2.0, 0.0], [0.0, 2.0]]
    assert M.squared_distances(QUERY, prototypes).tolist() == [[1.0, 5.0]]
    logits = M.prototype_logits(SUPPORT, SUPPORT_Y, QUERY, 2)
    assert logits.tolist() == [[-1.0, -5.0]]
    # p(class 0) = e^-1 / (e^-1 + e^-5)
    expected = math.exp(-1) / (math.exp(-1) + math.exp(-5))
    assert torch.softmax(logits, dim=-1)[0, 0].item() == pytest.approx(expected, rel=1e-12)


def test_a_class_without_support_is_refused():
    with pytest.raises(ValueError, match=r"classes \[2\] have no support example"):
        M.class_prototypes(SUPPORT, SUPPORT_Y, 3)


def test_matching_attention_matches_the_hand_computed_example():
    # cos((2,1), (1,0)) = cos((2,1), (3,0)) = 2/sqrt(5); cos((2,1), (0,2)) = 1/sqrt(5).
    same, other = 2 / math.sqrt(5), 1 / math.sqrt(5)
    cosines = M.cosine_similarities(QUERY, SUPPORT)
    assert cosines[0].tolist() == pytest.approx([same, other, same], rel=1e-12)
    for scale in (1.0, 5.0):
        weights = [math.exp(scale * same), math.exp(scale * other), math.exp(scale * same)]
        p0 = (weights[0] + weights[2]) / sum(weights)
        log_probs = M.matching_log_probs(SUPPORT, SUPPORT_Y, QUERY, 2, scale=scale)
        assert log_probs.exp()[0].tolist() == pytest.approx([p0, 1 - p0], rel=1e-12)
    # A class the query attends to not at all costs a large finite loss, not infinity.
    far = M.matching_log_probs(SUPPORT, SUPPORT_Y, QUERY, 2, scale=1e4)
    assert far[0, 1].item() == pytest.approx(math.log(M.PROBABILITY_FLOOR))


def test_full_context_embeddings_keep_shapes_and_use_the_whole_support_set():
    generator = make_generator(0)
    context = M.FullContextEmbedding(dim=4, steps=3, generator=generator)
    support = torch.randn(6, 4, generator=generator)
    query = torch.randn(5, 4, generator=generator)
    g = context.embed_support(support)
    f = context.embed_query(query, g)
    assert g.shape == (6, 4) and f.shape == (5, 4)
    # Context: changing one support example changes every other one's embedding.
    changed = support.clone()
    changed[-1] += 1.0
    moved = (context.embed_support(changed)[:-1] - g[:-1]).abs().amax(dim=1)
    assert bool((moved > 0).all())
    # Same generator state, same weights: initialisation is off the global RNG.
    again = M.FullContextEmbedding(dim=4, steps=3, generator=make_generator(0))
    for a, b in zip(context.parameters(), again.parameters(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="steps"):
        M.FullContextEmbedding(dim=4, steps=0)


@pytest.mark.parametrize(("algorithm", "fce"), [("protonet", False), ("matching", True)])
def test_episode_loss_trains_the_backbone_and_the_context(algorithm, fce):
    backbone = ConvNet(n_way=None, filters=4, blocks=2, generator=make_generator(1))
    assert backbone.head is None and backbone.embedding_dim == 4
    learner = M.MetricLearner(
        algorithm=algorithm, embedding_dim=4, fce=fce, generator=make_generator(2)
    )
    generator = make_generator(3)
    support_x = torch.randn(2, 6, 1, 8, 8, generator=generator)
    support_y = torch.tensor([[0, 1, 2, 0, 1, 2], [2, 2, 1, 1, 0, 0]])
    query_x = torch.randn(2, 3, 1, 8, 8, generator=generator)
    query_y = torch.tensor([[0, 1, 2], [1, 0, 2]])
    assert backbone(support_x[0]).shape == (6, 4)
    loss = learner.loss(backbone, support_x, support_y, query_x, query_y, n_way=3)
    loss.backward()
    assert all(p.grad is not None for p in backbone.parameters())
    assert all(p.grad is not None for p in learner.parameters())
    assert (len(list(learner.parameters())) > 0) == fce
    # The meta-batch loss is the mean of the episodes' losses, each its own batch.
    scores = learner.evaluate(backbone, support_x, support_y, query_x, query_y, n_way=3)
    assert scores.loss.mean().item() == pytest.approx(loss.item(), rel=1e-6)
    one = learner.episode_logits(backbone, support_x[1], support_y[1], query_x[1], 3)
    accuracy = (one.argmax(dim=-1) == query_y[1]).float().mean()
    assert scores.accuracy[1].item() == accuracy.item()
    assert F.cross_entropy(one, query_y[1]).item() == pytest.approx(scores.loss[1].item())


def test_fce_is_a_matching_option():
    with pytest.raises(ValueError, match="belongs to matching"):
        M.MetricLearner(algorithm="protonet", embedding_dim=4, fce=True)
    with pytest.raises(ValueError, match="algorithm must be one of"):
        M.MetricLearner(algorithm="maml", embedding_dim=4)  # type: ignore[arg-type]
