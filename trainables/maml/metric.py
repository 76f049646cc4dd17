"""Metric-based few-shot learners: Prototypical Networks and Matching Networks.

Where MAML and its relatives learn an initialisation that adapts by gradient steps, these
learn an embedding in which a query is classified by comparing it with the support set,
with no adaptation at all:

* Prototypical Networks (Snell et al. 2017): a class's prototype is the mean embedding of its
  support examples; a query's logits are its negative squared Euclidean distances to the
  prototypes (:func:`prototype_logits`).
* Matching Networks (Vinyals et al. 2016): a query attends to every support example with a
  softmax over cosine similarities; its class probabilities are the attention mass on each
  class's examples (:func:`matching_log_probs`). Full-context embeddings
  (:class:`FullContextEmbedding`, the paper's appendix) optionally re-embed the support set
  with a bidirectional LSTM and the query with an attention LSTM over it.

Both train on whole episodes with the cross-entropy of the query predictions. The
embedding network is the same backbone as the MAML algorithms' without its linear head.
Its batch norm uses batch statistics (see :mod:`.conv`); one episode's support and query
images go through it as one batch, so an episode's statistics are its own, as MAML's
adaptation uses its task's (the original Prototypical Networks code keeps running averages
instead).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .evaluation import Evaluation

MetricAlgorithm = Literal["protonet", "matching"]

METRIC_ALGORITHMS = frozenset({"protonet", "matching"})
"""Algorithms that classify by comparing embeddings (no inner loop, no linear head)."""

PROBABILITY_FLOOR = 1e-12
"""Matching Networks' class probabilities are floored here before the log, so a query with
no attention on its class costs a large finite loss instead of infinity."""


def class_prototypes(support: Tensor, support_y: Tensor, n_way: int) -> Tensor:
    """Mean embedding of each class's support examples.

    Args:
        support: ``[S, D]`` support embeddings.
        support_y: ``[S]`` labels in ``0..n_way-1``.
        n_way: Classes ``N``.

    Returns:
        ``[N, D]``; row ``c`` is the mean of the rows of ``support`` labelled ``c``.

    Raises:
        ValueError: If a class has no support example.
    """
    one_hot = F.one_hot(support_y, n_way).to(support.dtype)  # [S, N]
    counts = one_hot.sum(dim=0)
    if bool((counts == 0).any()):
        empty = [int(c) for c in torch.nonzero(counts == 0).flatten()]
        raise ValueError(f"classes {empty} have no support example; every class needs one")
    return (one_hot.T @ support) / counts[:, None]


def squared_distances(query: Tensor, prototypes: Tensor) -> Tensor:
    """``[Q, D]``, ``[N, D]`` -> ``[Q, N]`` squared Euclidean distances.

    Written as the difference's square, not ``cdist``, whose square root has no gradient
    where a query sits exactly on a prototype.
    """
    difference = query[:, None, :] - prototypes[None, :, :]
    return (difference * difference).sum(dim=-1)


def prototype_logits(support: Tensor, support_y: Tensor, query: Tensor, n_way: int) -> Tensor:
    """Prototypical Networks' query logits: minus the squared distance to each prototype.

    Args:
        support: ``[S, D]`` support embeddings.
        support_y: ``[S]`` labels.
        query: ``[Q, D]`` query embeddings.
        n_way: Classes ``N``.

    Returns:
        ``[Q, N]`` logits (a softmax over them is the paper's ``p(y = c | x)``).
    """
    return -squared_distances(query, class_prototypes(support, support_y, n_way))


def cosine_similarities(query: Tensor, support: Tensor) -> Tensor:
    """``[Q, D]``, ``[S, D]`` -> ``[Q, S]`` cosine similarities."""
    return F.normalize(query, dim=-1) @ F.normalize(support, dim=-1).T


def matching_log_probs(
    support: Tensor, support_y: Tensor, query: Tensor, n_way: int, *, scale: float = 1.0
) -> Tensor:
    """Matching Networks' query log-probabilities.

    ``a(q, i) = softmax_i(scale * cos(q, s_i))`` and ``p(c | q) = sum_{i: y_i = c} a(q, i)``
    (Vinyals et al. 2016, eq. 1 with the cosine attention of eq. 2; ``scale`` 1 is the
    paper's).

    Args:
        support: ``[S, D]`` support embeddings.
        support_y: ``[S]`` labels in ``0..n_way-1``.
        query: ``[Q, D]`` query embeddings.
        n_way: Classes ``N``.
        scale: Multiplies the cosines before the softmax (an inverse temperature).

    Returns:
        ``[Q, N]`` log-probabilities (floored at :data:`PROBABILITY_FLOOR`), usable as
        logits: their softmax is the probabilities themselves.
    """
    attention = torch.softmax(scale * cosine_similarities(query, support), dim=-1)
    probs = attention @ F.one_hot(support_y, n_way).to(attention.dtype)
    return torch.log(probs.clamp_min(PROBABILITY_FLOOR))


class FullContextEmbedding(nn.Module):
    """Matching Networks' full-context embeddings (Vinyals et al. 2016, appendix A.2).

    * Support: ``g(x_i, S) = g'(x_i) + h_fwd_i + h_bwd_i``, a bidirectional LSTM over the
      support embeddings in episode order, with a skip connection.
    * Query: ``steps`` read steps of an attention LSTM over ``g(S)``:
      ``h_hat, c = LSTM(f'(x), (h + r, c))``, ``h = h_hat + f'(x)``,
      ``r = sum_i softmax_i(h . g(x_i)) g(x_i)``, starting from zeros. The paper feeds the
      concatenation ``[h, r]`` as the hidden state; the sum keeps the cell as wide as the
      embedding, the form most reimplementations use.

    Args:
        dim: Embedding width ``D``.
        steps: Attention read steps ``K`` for each query.
        generator: RNG for the initial weights (PyTorch's LSTM scheme, off the global RNG).

    Raises:
        ValueError: If ``dim`` or ``steps`` is below 1.
    """

    def __init__(self, *, dim: int, steps: int, generator: torch.Generator | None = None) -> None:
        if dim < 1 or steps < 1:
            raise ValueError(f"dim and steps must be >= 1, got dim={dim}, steps={steps}")
        super().__init__()
        self.steps = steps
        self.support_lstm = nn.LSTM(dim, dim, bidirectional=True)
        self.query_cell = nn.LSTMCell(dim, dim)
        bound = 1.0 / math.sqrt(dim)
        with torch.no_grad():
            for parameter in self.parameters():
                nn.init.uniform_(parameter, -bound, bound, generator=generator)

    def embed_support(self, support: Tensor) -> Tensor:
        """``[S, D]`` -> ``[S, D]`` context embeddings ``g(x_i, S)``."""
        both, _ = self.support_lstm(support[:, None, :])  # [S, 1, 2D]
        forward, backward = both[:, 0].chunk(2, dim=-1)
        return support + forward + backward

    def embed_query(self, query: Tensor, support: Tensor) -> Tensor:
        """``[Q, D]`` query embeddings read against ``[S, D]`` context embeddings -> ``[Q, D]``."""
        h = torch.zeros_like(query)
        c = torch.zeros_like(query)
        readout = torch.zeros_like(query)
        for _ in range(self.steps):
            h_hat, c = self.query_cell(query, (h + readout, c))
            h = h_hat + query
            readout = torch.softmax(h @ support.T, dim=-1) @ support
        return h


class MetricLearner(nn.Module):
    """Scores episodes with an embedding network and one of the metric rules.

    Holds the parameters a rule adds to the backbone (only Matching Networks' full-context
    embeddings have any), so a trainer optimises and checkpoints ``backbone`` and this
    module together.

    Args:
        algorithm: ``"protonet"`` or ``"matching"``.
        embedding_dim: Width of the backbone's embeddings (needed for ``fce``).
        cosine_scale: Matching Networks' inverse temperature, see :func:`matching_log_probs`.
        fce: Matching Networks with full-context embeddings.
        fce_steps: Attention read steps of the full-context query embedding.
        generator: RNG for the full-context embedding's initial weights.

    Raises:
        ValueError: If the algorithm is unknown, or ``fce`` is asked of Prototypical Networks.
    """

    def __init__(
        self,
        *,
        algorithm: MetricAlgorithm,
        embedding_dim: int,
        cosine_scale: float = 1.0,
        fce: bool = False,
        fce_steps: int = 5,
        generator: torch.Generator | None = None,
    ) -> None:
        if algorithm not in METRIC_ALGORITHMS:
            raise ValueError(
                f"algorithm must be one of {sorted(METRIC_ALGORITHMS)}, got {algorithm!r}"
            )
        if fce and algorithm != "matching":
            raise ValueError("fce (full-context embeddings) belongs to matching; set fce: false")
        super().__init__()
        self.algorithm = algorithm
        self.cosine_scale = cosine_scale
        self.context = (
            FullContextEmbedding(dim=embedding_dim, steps=fce_steps, generator=generator)
            if fce
            else None
        )

    def episode_logits(
        self,
        backbone: nn.Module,
        support_x: Tensor,
        support_y: Tensor,
        query_x: Tensor,
        n_way: int,
    ) -> Tensor:
        """One episode's query logits (log-probabilities for Matching Networks).

        Args:
            backbone: Maps ``[B, 1, H, W]`` images to ``[B, D]`` embeddings.
            support_x: ``[S, 1, H, W]``.
            support_y: ``[S]``.
            query_x: ``[Q, 1, H, W]``.
            n_way: Classes ``N``.

        Returns:
            ``[Q, N]``.
        """
        embedded = backbone(torch.cat([support_x, query_x]))
        support, query = embedded[: support_x.shape[0]], embedded[support_x.shape[0] :]
        if self.algorithm == "protonet":
            return prototype_logits(support, support_y, query, n_way)
        if self.context is not None:
            support = self.context.embed_support(support)
            query = self.context.embed_query(query, support)
        return matching_log_probs(support, support_y, query, n_way, scale=self.cosine_scale)

    def scores(
        self,
        backbone: nn.Module,
        support_x: Tensor,
        support_y: Tensor,
        query_x: Tensor,
        query_y: Tensor,
        *,
        n_way: int,
    ) -> Evaluation:
        """Per-task query cross-entropy and accuracy of a meta-batch (losses with gradients).

        Args:
            backbone: The embedding network.
            support_x: ``[T, S, 1, H, W]``; each task is embedded as its own batch.
            support_y: ``[T, S]``.
            query_x: ``[T, Q, 1, H, W]``.
            query_y: ``[T, Q]``.
            n_way: Classes per task.

        Returns:
            ``[T]`` losses and accuracies.
        """
        losses, accuracies = [], []
        for sx, sy, qx, qy in zip(support_x, support_y, query_x, query_y, strict=True):
            logits = self.episode_logits(backbone, sx, sy, qx, n_way)
            losses.append(F.cross_entropy(logits, qy))
            accuracies.append((logits.argmax(dim=-1) == qy).to(logits.dtype).mean())
        return Evaluation(torch.stack(losses), torch.stack(accuracies))

    def loss(self, backbone: nn.Module, *batch: Tensor, n_way: int) -> Tensor:
        """Mean query cross-entropy over a meta-batch, with gradients (``batch`` as for
        :meth:`scores`)."""
        return self.scores(backbone, *batch, n_way=n_way).loss.mean()

    def evaluate(self, backbone: nn.Module, *batch: Tensor, n_way: int) -> Evaluation:
        """:meth:`scores` without gradients."""
        with torch.no_grad():
            return self.scores(backbone, *batch, n_way=n_way)


__all__ = [
    "METRIC_ALGORITHMS",
    "PROBABILITY_FLOOR",
    "FullContextEmbedding",
    "MetricAlgorithm",
    "MetricLearner",
    "class_prototypes",
    "cosine_similarities",
    "matching_log_probs",
    "prototype_logits",
    "squared_distances",
]
