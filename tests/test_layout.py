"""Guardrails of the repository layout (see DESIGN.md)."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_platform_folder_is_not_a_regular_package():
    assert not (REPO / "platform" / "__init__.py").exists()


def test_stdlib_platform_works_from_the_repository_root():
    # Run a fresh interpreter with the repository root first on sys.path, as
    # `python -c` from the root does; the stdlib module must still win.
    code = "import platform; print(platform.system()); import ray, torch, pandas"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() in {"Linux", "Darwin", "Windows"}


def test_warmtune_modules_come_from_the_mapped_folders():
    import warmtune.searchers
    import warmtune.spec
    import warmtune.trainables

    assert Path(warmtune.spec.__file__).parent.name == "platform"
    assert Path(warmtune.searchers.__file__).parent.name == "searchers"
    assert Path(warmtune.trainables.__file__).parent.name == "trainables"
