"""NAS-Bench-201 (NATS-Bench topology) as a lookup table.

The cell is a DAG over 4 nodes (0 = input, 3 = output); every node ``j`` sums one
operation applied to each earlier node ``i``, so there are 6 edges, each one of 5
operations: 5**6 = 15,625 cells. The standard string lists, per target node, the
operations on its incoming edges, separated by ``+``::

    |op~0|+|op~0|op~1|+|op~0|op~1|op~2|
     node 1   node 2        node 3

The search space names edge ``i -> j`` ``edge_{j}_{i}``, in string order:
``edge_1_0, edge_2_0, edge_2_1, edge_3_0, edge_3_1, edge_3_2`` (:data:`EDGES`).

The table holds 200-epoch test accuracy (percent) for three datasets: a single
fidelity. For simulated wall-clock, :func:`evaluation_cost` gives a deliberately
simple cost proxy (see there); it is not measured training time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from warmtune.space import SearchSpace

__all__ = [
    "DATASETS",
    "EDGES",
    "OPS",
    "NB201Table",
    "all_archs",
    "arch_to_string",
    "evaluation_cost",
    "search_space",
    "string_to_arch",
]

OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
#: (target node, source node) of each edge, in the order of the cell string.
_EDGE_NODES: tuple[tuple[int, int], ...] = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
EDGES: tuple[str, ...] = tuple(f"edge_{j}_{i}" for j, i in _EDGE_NODES)

Dataset = Literal["cifar10", "cifar100", "imagenet16-120"]
#: dataset -> column of ``nats_bench.csv``.
DATASETS: dict[str, str] = {
    "cifar10": "CIFAR10TestAccuracy200Epochs",
    "cifar100": "CIFAR100TestAccuracy200Epochs",
    "imagenet16-120": "ImageNetTestAccuracy200Epochs",
}

# Cost proxy weights: multiply-adds per channel^2 and pixel of one edge's op (a 3x3
# conv does 9x the work of a 1x1; pooling, skip and none are negligible next to them).
_OP_COST = {
    "none": 0.0,
    "skip_connect": 0.0,
    "nor_conv_1x1": 1.0,
    "nor_conv_3x3": 9.0,
    "avg_pool_3x3": 0.0,
}
_BASE_COST = 1.0  # stem, reduction blocks and classifier: the same for every cell


def search_space() -> SearchSpace:
    """The 6 edges, each a categorical over :data:`OPS`."""
    return SearchSpace({e: {"type": "categorical", "choices": list(OPS)} for e in EDGES})


def arch_to_string(config: Mapping[str, Any]) -> str:
    """The standard cell string of a configuration of :func:`search_space`.

    Raises:
        ValueError: an edge is missing or has an unknown operation.
    """
    ops = []
    for edge in EDGES:
        op = config.get(edge)
        if op not in OPS:
            raise ValueError(f"{edge}={op!r}: every edge needs one of {list(OPS)}")
        ops.append(op)
    nodes, k = [], 0
    for j in (1, 2, 3):
        nodes.append("|" + "|".join(f"{ops[k + i]}~{i}" for i in range(j)) + "|")
        k += j
    return "+".join(nodes)


def string_to_arch(text: str) -> dict[str, str]:
    """Parse a cell string (``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``) into a config.

    Raises:
        ValueError: the string is not a 4-node NAS-Bench-201 cell.
    """
    nodes = text.strip().split("+")
    if len(nodes) != 3:
        raise ValueError(f"{text!r} has {len(nodes)} nodes; expected '|op~0|+|op~0|op~1|+...'")
    config: dict[str, str] = {}
    for j, node in enumerate(nodes, start=1):
        parts = [p for p in node.split("|") if p]
        if len(parts) != j:
            raise ValueError(f"node {j} of {text!r} must list {j} input edge(s), got {parts}")
        for part in parts:
            op, _, src = part.partition("~")
            if op not in OPS or not src.isdigit() or int(src) >= j:
                raise ValueError(f"bad edge {part!r} in {text!r}; use op~i with op in {list(OPS)}")
            config[f"edge_{j}_{src}"] = op
    if len(config) != len(EDGES):
        raise ValueError(f"{text!r} repeats an input edge; each node takes each earlier node once")
    return {e: config[e] for e in EDGES}


def all_archs() -> list[dict[str, str]]:
    """All 15,625 cells as configurations."""
    grid = np.array(np.meshgrid(*[range(len(OPS))] * len(EDGES), indexing="ij"))
    codes = grid.reshape(len(EDGES), -1).T
    return [{e: OPS[c] for e, c in zip(EDGES, row, strict=True)} for row in codes]


def evaluation_cost(config: Mapping[str, Any]) -> float:
    """A simple, documented cost of one evaluation, for simulated wall-clock.

    ``1 + n_conv1x1 + 9 * n_conv3x3``: a fixed part for the network outside the cells,
    plus the convolutions' multiply-adds relative to a 1x1 conv (3x3 = 9x). It ignores
    that ``none`` edges can cut whole paths; it is a proxy, not measured time.
    """
    arch_to_string(config)  # validates the edges
    return _BASE_COST + sum(_OP_COST[config[e]] for e in EDGES)


class NB201Table:
    """The NAS-Bench-201 accuracy table (``nats_bench.csv``).

    Args:
        path: the CSV file, the folder holding ``nats_bench.csv``, or ``"nb201"``: the
            table in the data directory (:func:`warmtune.data.require`).

    Raises:
        ValueError: the file is missing, lacks a column, or does not hold 15,625 cells.
    """

    def __init__(self, path: str | Path) -> None:
        import pandas as pd

        from warmtune.data import is_dataset_name, require

        path = require(path) if is_dataset_name(path, kind="nb201") else Path(path)
        if path.is_dir():
            path = path / "nats_bench.csv"
        if not path.is_file():
            raise ValueError(f"{path} not found; pass the NAS-Bench-201 nats_bench.csv")
        df = pd.read_csv(path)
        need = ["ArchitectureString", *DATASETS.values()]
        missing = [c for c in need if c not in df.columns]
        if missing:
            raise ValueError(f"{path} lacks columns {missing}; is it the NATS-Bench CSV?")
        df = df.set_index("ArchitectureString")
        if len(df) != len(OPS) ** len(EDGES) or not df.index.is_unique:
            raise ValueError(
                f"{path} holds {len(df)} rows ({df.index.nunique()} distinct cells); "
                f"expected all {len(OPS) ** len(EDGES)} once"
            )
        self._acc = {d: df[col].astype(float).to_dict() for d, col in DATASETS.items()}

    def accuracy(self, config: Mapping[str, Any], dataset: Dataset) -> float:
        """200-epoch test accuracy (percent) of a cell on ``dataset``."""
        return self._acc[_check_dataset(dataset)][arch_to_string(config)]

    def accuracies(self, configs: Sequence[Mapping[str, Any]], dataset: Dataset) -> np.ndarray:
        """:meth:`accuracy` for many cells."""
        table = self._acc[_check_dataset(dataset)]
        return np.array([table[arch_to_string(c)] for c in configs], dtype=float)

    def optimum(self, dataset: Dataset) -> tuple[float, dict[str, str]]:
        """The best accuracy on ``dataset`` and its cell."""
        table = self._acc[_check_dataset(dataset)]
        best = max(table, key=table.__getitem__)
        return table[best], string_to_arch(best)


def _check_dataset(dataset: str) -> str:
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; use one of {list(DATASETS)}")
    return dataset
