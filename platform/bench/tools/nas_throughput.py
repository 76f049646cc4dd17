"""Child-network training throughput in images per second, per cell, skeleton and device.

::

    python -m warmtune.bench.tools.nas_throughput --channels 16 --cells-per-stage 5 \\
        --image-size 28 --in-channels 1 --batch-size 64 --threads 1,2

Times SGD training steps (forward, backward, update) of :class:`~.network.CellNetwork`
on batches of the given shape, after warm-up steps; the numbers hold for any data of that
shape (the content of an image does not change the work). Cells default to three that
span the space: every edge a 3x3 convolution (the most work), the best NAS-Bench-201
CIFAR-100 cell, and a cell of pooling and skips (the least work besides cut cells).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from warmtune.trainables.nas.network import CellNetwork, count_parameters

CELLS = {
    "all-conv3x3": "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|"
    "+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|",
    "best-cifar100": "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|"
    "+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|",
    "pool-skip": "|avg_pool_3x3~0|+|skip_connect~0|avg_pool_3x3~1|"
    "+|skip_connect~0|avg_pool_3x3~1|avg_pool_3x3~2|",
}

__all__ = ["CELLS", "images_per_second", "main"]


def images_per_second(
    cell: str,
    *,
    channels: int,
    cells_per_stage: int,
    image_size: int,
    in_channels: int,
    num_classes: int,
    batch_size: int,
    steps: int,
    device: torch.device,
    amp: bool,
) -> float:
    """Training images per second of one child after 3 warm-up steps."""
    generator = torch.Generator().manual_seed(0)
    model = CellNetwork(
        cell,
        num_classes=num_classes,
        channels=channels,
        cells_per_stage=cells_per_stage,
        in_channels=in_channels,
        generator=generator,
    ).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    x = torch.rand(batch_size, in_channels, image_size, image_size, generator=generator)
    y = torch.randint(0, num_classes, (batch_size,), generator=generator)
    x, y = x.to(device), y.to(device)

    def step() -> None:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return steps * batch_size / (time.perf_counter() - start)


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point (see the module docstring); prints a Markdown table."""
    parser = argparse.ArgumentParser(
        prog="warmtune bench throughput nas", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--cells-per-stage", type=int, default=5)
    parser.add_argument("--image-size", type=int, default=28)
    parser.add_argument("--in-channels", type=int, default=1)
    parser.add_argument("--num-classes", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", default="1", help="comma-separated torch thread counts")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast")
    parser.add_argument("--cell", action="append", help="cell strings (default: three)")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    cells = {c: c for c in args.cell} if args.cell else CELLS
    threads = [int(t) for t in args.threads.split(",")]
    print(
        f"device {device}, C={args.channels}, N={args.cells_per_stage}, "
        f"{args.in_channels}x{args.image_size}x{args.image_size} images, batch "
        f"{args.batch_size}, amp {'bf16' if args.amp else 'off'}, torch {torch.__version__}\n"
    )
    print("| cell | params | " + " | ".join(f"{t} thread(s), img/s" for t in threads) + " |")
    print("|---|---|" + "---|" * len(threads))
    for name, cell in cells.items():
        rates = []
        for count in threads:
            torch.set_num_threads(count)
            rates.append(
                images_per_second(
                    cell,
                    channels=args.channels,
                    cells_per_stage=args.cells_per_stage,
                    image_size=args.image_size,
                    in_channels=args.in_channels,
                    num_classes=args.num_classes,
                    batch_size=args.batch_size,
                    steps=args.steps,
                    device=device,
                    amp=args.amp,
                )
            )
        params = count_parameters(
            CellNetwork(
                cell,
                num_classes=args.num_classes,
                channels=args.channels,
                cells_per_stage=args.cells_per_stage,
                in_channels=args.in_channels,
            )
        )
        print(f"| {name} | {params:,} | " + " | ".join(f"{r:,.0f}" for r in rates) + " |")


if __name__ == "__main__":
    main()
