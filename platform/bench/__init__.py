"""``warmtune bench``: searchers replayed on real benchmarks, leave one task out.

The wing holds the discrete-event simulator (:mod:`~warmtune.bench.simulator`), the
benchmark backends and their loader (:mod:`~warmtune.bench.backends`,
:mod:`~warmtune.bench.benchmarks`), the reference values (:mod:`~warmtune.bench.reference`),
the simulated pasts (:mod:`~warmtune.bench.pasts`), the compared methods
(:mod:`~warmtune.bench.methods`), the protocol (:mod:`~warmtune.bench.protocol`), its
tables and plots (:mod:`~warmtune.bench.summary`) and their task-level statistics
(:mod:`~warmtune.bench.stats`).
"""

from warmtune.bench.backends import NB201Backend, YahpoBackend, YahpoFloatBackend
from warmtune.bench.benchmarks import Benchmark, load_benchmark
from warmtune.bench.methods import (
    ABLATIONS,
    ALL_METHODS,
    DEFAULT_METHODS,
    WARM_METHODS,
    expand_methods,
    make_method,
)
from warmtune.bench.pasts import KB_CONFIGS, KB_SEED, PASTS, knowledge_base, past_search
from warmtune.bench.protocol import BUDGET_GRID, budget_grid, run_bench, run_one
from warmtune.bench.reference import REFERENCE_CONFIGS, normalized_regret, reference
from warmtune.bench.summary import markdown_table, plot_regret
from warmtune.searchers.zeroshot import ZeroShot

__all__ = [
    "ABLATIONS",
    "ALL_METHODS",
    "DEFAULT_METHODS",
    "expand_methods",
    "BUDGET_GRID",
    "KB_CONFIGS",
    "KB_SEED",
    "PASTS",
    "REFERENCE_CONFIGS",
    "WARM_METHODS",
    "Benchmark",
    "NB201Backend",
    "YahpoBackend",
    "YahpoFloatBackend",
    "ZeroShot",
    "budget_grid",
    "knowledge_base",
    "load_benchmark",
    "make_method",
    "markdown_table",
    "normalized_regret",
    "past_search",
    "plot_regret",
    "reference",
    "run_bench",
    "run_one",
]
