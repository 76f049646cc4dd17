"""Networks for MAML regression."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class MLP(nn.Sequential):
    """Fully connected ReLU network, the MAML paper's sinusoid regressor.

    ``in_features -> [hidden -> ReLU] * layers -> out_features``; the paper uses two hidden
    layers of 40 units.

    Args:
        hidden: Width of every hidden layer.
        layers: Number of hidden layers (0 gives a linear model).
        in_features: Input size.
        out_features: Output size.
        generator: RNG for the initial weights. Passing one keeps initialisation off the
            global torch RNG, so a seeded trial is reproducible whatever else ran before it.
        dtype: Parameter dtype.

    Raises:
        ValueError: If a size is not positive or ``layers`` is negative.
    """

    def __init__(
        self,
        *,
        hidden: int = 40,
        layers: int = 2,
        in_features: int = 1,
        out_features: int = 1,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        for name, value in (
            ("hidden", hidden),
            ("in_features", in_features),
            ("out_features", out_features),
        ):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if layers < 0:
            raise ValueError(f"layers must be >= 0 (0 gives a linear model), got {layers}")
        modules: list[nn.Module] = []
        width = in_features
        for _ in range(layers):
            modules += [nn.Linear(width, hidden, dtype=dtype), nn.ReLU()]
            width = hidden
        modules.append(nn.Linear(width, out_features, dtype=dtype))
        super().__init__(*modules)
        if generator is not None:
            self.reset_parameters(generator=generator)

    @torch.no_grad()
    def reset_parameters(self, *, generator: torch.Generator | None = None) -> None:
        """Re-draws every weight with ``nn.Linear``'s default scheme from ``generator``.

        Args:
            generator: RNG to draw from; the global torch RNG when None.
        """
        for module in self:
            if isinstance(module, nn.Linear):
                _init_linear(module.weight, module.bias, generator)


def _init_linear(weight: Tensor, bias: Tensor | None, generator: torch.Generator | None) -> None:
    # Same distribution as nn.Linear.reset_parameters, which takes no generator argument.
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=generator)
    if bias is not None:
        bound = 1.0 / math.sqrt(weight.shape[1])
        nn.init.uniform_(bias, -bound, bound, generator=generator)
