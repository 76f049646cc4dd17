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


def _imports(path: Path) -> set[str]:
    """The modules a file imports (anywhere in it, functions included)."""
    import ast

    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def _under(modules: set[str], *packages: str) -> set[str]:
    return {m for m in modules if any(m == p or m.startswith(p + ".") for p in packages)}


def test_searcher_cores_import_no_ray():
    """Searchers are ask/tell objects; only their Ray Tune adapter knows Ray."""
    cores = [p for p in (REPO / "searchers").glob("*.py") if p.name != "ray_adapter.py"]
    assert len(cores) > 10
    offenders = {p.name: _under(_imports(p), "ray") for p in cores}
    assert {name: found for name, found in offenders.items() if found} == {}


def test_the_wings_import_downward():
    """The job core never imports the command line, the report or the benchmark; the
    cluster wing never imports the command line (DESIGN.md: imports run downward)."""
    core = [p for p in (REPO / "platform").glob("*.py") if p.name != "__main__.py"]
    core += list((REPO / "platform" / "knowledge").glob("*.py"))  # part of the core
    cluster = list((REPO / "platform" / "cluster").glob("*.py"))
    assert core and cluster
    upward = {
        **{
            str(p.relative_to(REPO / "platform")): _under(
                _imports(p), "warmtune.cli", "warmtune.bench", "warmtune.report"
            )
            for p in core
        },
        **{f"cluster/{p.name}": _under(_imports(p), "warmtune.cli") for p in cluster},
    }
    assert {name: found for name, found in upward.items() if found} == {}


def test_searchers_import_only_the_space_from_the_platform():
    """Searchers and their Ray adapter stand on warmtune.space alone; what the platform
    wants measured reaches the adapter as a hook (DESIGN.md)."""
    searchers = list((REPO / "searchers").glob("*.py"))
    outside = {
        p.name: {
            m
            for m in _under(_imports(p), "warmtune")
            if not _under({m}, "warmtune.searchers", "warmtune.space")
        }
        for p in searchers
    }
    assert {name: found for name, found in outside.items() if found} == {}


def test_the_nas_trainables_do_not_reach_into_the_few_shot_learners():
    """The NAS child networks and the few-shot learners share the Omniglot data, the
    runtime helpers and the functional layers (trainables/omniglot.py, runtime.py,
    layers.py); only the few-shot side uses NAS cells (a searched backbone)."""
    nas = list((REPO / "trainables" / "nas").glob("*.py"))
    assert nas
    reached = {p.name: _under(_imports(p), "warmtune.trainables.maml") for p in nas}
    assert {name: found for name, found in reached.items() if found} == {}


def test_the_command_line_starts_without_ray_torch_or_matplotlib():
    """Imports inside functions are for the heavy libraries (and what is built on them):
    the command, the runner and the knowledge base load without them, so `warmtune
    --help`, `results` and `export` answer at once."""
    code = (
        "import sys, warmtune.cli, warmtune.runner, warmtune.knowledge, warmtune.warm; "
        "print(sorted(m for m in ('ray', 'torch', 'matplotlib', 'optuna', 'hyperopt') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert out.stdout.strip() == "[]"
