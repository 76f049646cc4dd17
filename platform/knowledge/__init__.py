"""The knowledge base: every past search's observations, keyed by task.

:mod:`~warmtune.knowledge.base` holds :class:`KnowledgeBase` (writing, the read rules,
the queries); :mod:`~warmtune.knowledge.rows` the rows' schema, rows built from a job
or an import, and rows grouped into the past tasks searchers read.
"""

from warmtune.knowledge.base import KnowledgeBase, KnowledgeBaseWarning, default_kb_path
from warmtune.knowledge.rows import KB_COLUMNS, past_tasks
from warmtune.store import configs

__all__ = [
    "KB_COLUMNS",
    "KnowledgeBase",
    "KnowledgeBaseWarning",
    "configs",
    "default_kb_path",
    "past_tasks",
]
