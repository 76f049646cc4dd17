"""The ``warmtune`` command: the group and the job commands (``commands``), one module per
command group (``jobs``, ``kb``, ``bench``, ``report``, ``data``)."""

from warmtune.cli.commands import main

__all__ = ["main"]
