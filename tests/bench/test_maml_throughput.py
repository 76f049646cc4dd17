"""The MAML throughput benchmark: it checks every implementation before timing it."""

from __future__ import annotations

import pytest

from warmtune.bench.tools import maml_throughput as T
from warmtune.trainables.maml import algorithms as AL

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = ["--meta-batch", "2", "--filters", "4", "--seconds", "0.01", "--no-profile"]


def test_times_each_checked_implementation(capsys):
    rates = T.main([*TINY, "--chunks", "1", "--compile-chunks", ""])
    assert set(rates) == {T.WHOLE, "vmap, 1/call", T.LOOP}
    assert all(rate > 0 for rate in rates.values())
    out = capsys.readouterr().out
    assert out.count("float32 meta-gradient vs the float64 loop") == 3
    assert "per-task loop" in out and "vs loop" in out


def test_refuses_to_time_a_wrong_meta_gradient(monkeypatch):
    def off_by_two_percent(problem):
        right = T.loop_maml(problem.model, problem.params, *problem.data, inner_lr=0.4, steps=1)
        return AL.MetaGradient(right.loss, {n: 1.02 * g for n, g in right.grads.items()})

    monkeypatch.setattr(
        T, "make_methods", lambda chunks, compile_chunks: {T.WHOLE: off_by_two_percent}
    )
    with pytest.raises(SystemExit, match="not timing a wrong result"):
        T.main([*TINY, "--compile-chunks", ""])


def test_bad_chunk_lists_name_the_flag(capsys):
    with pytest.raises(SystemExit):
        T.main([*TINY, "--compile-chunks", "0"])
    assert "--compile-chunks values must be >= 1" in capsys.readouterr().err


@pytest.mark.parametrize("meta_batch", ["2", "32"])
def test_first_order_maml_fails_the_check(monkeypatch, meta_batch):
    """The limit is tight enough to catch a gradient that lacks only the second-order terms,
    on the tiny problem and on the paper's meta-batch."""

    def first_order(problem):
        return AL.first_order_maml(
            problem.model, problem.params, *problem.data, inner_lr=0.4, steps=1
        )

    monkeypatch.setattr(T, "make_methods", lambda chunks, compile_chunks: {T.WHOLE: first_order})
    with pytest.raises(SystemExit, match="not timing a wrong result"):
        T.main([*TINY, "--meta-batch", meta_batch, "--compile-chunks", ""])
