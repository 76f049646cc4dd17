"""The NAS-Bench-201 cell and skeleton: encoding, every operation, the none-edge."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from warmtune.trainables.benchmarks.nb201 import EDGES, OPS, all_archs, arch_to_string
from warmtune.trainables.maml.algorithms import check_vmap_safe
from warmtune.trainables.nas.network import (
    Cell,
    CellNetwork,
    ReLUConvBN,
    cell_string,
    count_parameters,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BEST_CIFAR10 = (  # the best CIFAR-100 cell of NAS-Bench-201
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|"
    "+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
)


def cell_of(**edges: str) -> str:
    """A cell string with the given edges and ``none`` elsewhere."""
    return arch_to_string({e: edges.get(e, "none") for e in EDGES})


def test_encoding_round_trips_with_the_table_backend():
    for config in random.Random(0).sample(all_archs(), 200):
        text = arch_to_string(config)
        assert cell_string(config) == text
        assert cell_string({"arch": text}) == text
        assert CellNetwork(text, num_classes=3, channels=2, cells_per_stage=1).arch == text


def test_cell_string_names_what_is_wrong():
    with pytest.raises(ValueError, match="not both"):
        cell_string({"arch": BEST_CIFAR10, "edge_1_0": "none"})
    with pytest.raises(ValueError, match="lacks"):
        cell_string({"edge_1_0": "none"})
    with pytest.raises(ValueError, match="edge_2_1"):
        cell_string({e: "nor_conv_5x5" if e == "edge_2_1" else "none" for e in EDGES})
    with pytest.raises(ValueError, match="nodes"):
        cell_string({"arch": "|nor_conv_3x3~0|"})


def test_skip_connections_sum_along_every_path():
    cell = Cell(arch_to_string(dict.fromkeys(EDGES, "skip_connect")), 3, norm="running")
    x = torch.randn(2, 3, 5, 5)
    # node1 = x, node2 = x + node1 = 2x, node3 = x + node1 + node2 = 4x
    torch.testing.assert_close(cell(x), 4 * x)


def test_none_edges_hold_no_module_and_add_nothing():
    cell = Cell(cell_of(edge_3_0="skip_connect"), 3, norm="running")
    assert list(cell.edges) == ["edge_3_0"]
    x = torch.randn(2, 3, 5, 5)
    torch.testing.assert_close(cell(x), x)
    cut = Cell(cell_of(edge_1_0="skip_connect", edge_2_1="skip_connect"), 3, norm="running")
    assert torch.equal(cut(x), torch.zeros_like(x))  # nothing reaches node 3


def test_conv_edges_on_a_zero_node_add_their_batch_norm_shift():
    # As in NAS-Bench-201's code, an edge out of a node with no live input still runs.
    cell = Cell(cell_of(edge_3_0="skip_connect", edge_3_1="nor_conv_1x1"), 3, norm="running")
    with torch.no_grad():
        cell.edges["edge_3_1"].norm.bias.copy_(torch.tensor([1.0, 2.0, 3.0]))
    x = torch.randn(2, 3, 5, 5)
    expected = x + torch.tensor([1.0, 2.0, 3.0])[:, None, None]
    torch.testing.assert_close(cell(x), expected)


def test_average_pool_excludes_padding():
    cell = Cell(cell_of(edge_3_0="avg_pool_3x3"), 1, norm="running")
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    out = cell(x)
    torch.testing.assert_close(out, F.avg_pool2d(x, 3, 1, 1, count_include_pad=False))
    assert out[0, 0, 0, 0].item() == pytest.approx((0 + 1 + 4 + 5) / 4)


@pytest.mark.parametrize(("op", "kernel"), [("nor_conv_1x1", 1), ("nor_conv_3x3", 3)])
def test_conv_edges_are_relu_conv_bn(op, kernel):
    cell = Cell(cell_of(edge_3_0=op), 4, norm="running")
    edge = cell.edges["edge_3_0"]
    assert isinstance(edge, ReLUConvBN)
    assert edge.conv.kernel_size == (kernel, kernel) and edge.conv.bias is None
    x = torch.randn(3, 4, 6, 6)
    expected = F.batch_norm(
        F.conv2d(F.relu(x), edge.conv.weight, padding=kernel // 2),
        None,
        None,
        edge.norm.weight,
        edge.norm.bias,
        training=True,
    )
    torch.testing.assert_close(cell(x), expected)


def test_every_operation_appears_in_the_space():
    assert set(OPS) == {"none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"}


def test_skeleton_matches_the_benchmark_parameter_count():
    # NAS-Bench-201's largest CIFAR-10 network (every edge a 3x3 conv) has 1.53 M parameters.
    net = CellNetwork(
        arch_to_string(dict.fromkeys(EDGES, "nor_conv_3x3")), num_classes=10, in_channels=3
    )
    assert count_parameters(net) == 1_531_546
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_batch_statistics_norm_is_vmap_safe_and_matches_running_norm_in_training():
    running = CellNetwork(
        BEST_CIFAR10,
        num_classes=5,
        channels=4,
        cells_per_stage=1,
        in_channels=1,
        generator=torch.Generator().manual_seed(0),
    )
    batch = CellNetwork(
        BEST_CIFAR10,
        num_classes=5,
        channels=4,
        cells_per_stage=1,
        in_channels=1,
        norm="batch",
        generator=torch.Generator().manual_seed(0),
    )
    check_vmap_safe(batch)
    with pytest.raises(ValueError, match="BatchNorm"):
        check_vmap_safe(running)
    x = torch.randn(6, 1, 28, 28)
    torch.testing.assert_close(batch(x), running.train()(x), rtol=1e-4, atol=1e-5)
    assert all(not n.endswith("running_mean") for n, _ in batch.named_buffers())
    assert {"head.weight", "head.bias"} <= dict(batch.named_parameters()).keys()


def test_initialisation_is_a_function_of_the_generator():
    def build(seed):
        return CellNetwork(
            BEST_CIFAR10,
            num_classes=3,
            channels=2,
            cells_per_stage=1,
            generator=torch.Generator().manual_seed(seed),
        )

    a, b, c = build(1), build(1), build(2)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(a.stem.weight, c.stem.weight)


def test_network_rejects_bad_sizes():
    with pytest.raises(ValueError, match="channels"):
        CellNetwork(BEST_CIFAR10, num_classes=3, channels=0)
    with pytest.raises(ValueError, match="norm"):
        CellNetwork(BEST_CIFAR10, num_classes=3, norm="layer")  # type: ignore[arg-type]


def test_throughput_table_runs(capsys):
    from warmtune.bench.tools.nas_throughput import main

    main(["--channels", "2", "--cells-per-stage", "1", "--steps", "1", "--batch-size", "4"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-3].startswith("| all-conv3x3 |") and lines[-1].startswith("| pool-skip |")
    assert all(float(line.split("|")[3].replace(",", "")) > 0 for line in lines[-3:])
