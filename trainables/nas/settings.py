"""The cell as settings: one ``arch`` string or six ``edge_*`` fields, shared by every trainable
that builds a :class:`~warmtune.trainables.nas.network.CellNetwork`.

A search space names the edges (``edge_1_0 ... edge_3_2``, each a categorical over the five
operations), exactly as the NAS-Bench-201 table backend does, so a table search and a real
training search share configurations; a job that trains one known cell gives ``arch``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from .network import EDGES, cell_string

Op = Literal["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]

_EDGE_HELP = "Operation on this edge of the cell (searched with the other five)."

__all__ = ["CellFields", "Op"]


class CellFields(BaseModel):
    """Pydantic fields naming a NAS-Bench-201 cell (a mixin for settings models)."""

    arch: str | None = Field(
        None,
        description="The cell as a NAS-Bench-201 string, e.g. "
        "'|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|...'; or give the six edges.",
    )
    edge_1_0: Op | None = Field(None, description=_EDGE_HELP)
    edge_2_0: Op | None = Field(None, description=_EDGE_HELP)
    edge_2_1: Op | None = Field(None, description=_EDGE_HELP)
    edge_3_0: Op | None = Field(None, description=_EDGE_HELP)
    edge_3_1: Op | None = Field(None, description=_EDGE_HELP)
    edge_3_2: Op | None = Field(None, description=_EDGE_HELP)
    cells_per_stage: int = Field(
        5, ge=1, le=10, description="Cells in each of the three stages (5 in NAS-Bench-201)."
    )

    def has_cell(self) -> bool:
        """Whether ``arch`` or any edge is set."""
        return self.arch is not None or any(getattr(self, e) is not None for e in EDGES)

    def cell(self) -> str:
        """The canonical cell string.

        Raises:
            ValueError: Neither ``arch`` nor all six edges are set, or both are.
        """
        return cell_string(self._cell_config())

    def _cell_config(self) -> dict[str, Any]:
        return {"arch": self.arch, **{e: getattr(self, e) for e in EDGES}}

    @model_validator(mode="after")
    def _valid_cell(self) -> Any:
        if self.has_cell():
            cell_string(self._cell_config())
        return self
