"""Prepare search jobs for a Ray cluster's Jobs API: the submission and the code it carries.

A submission is one ``warmtune run JOB.yaml --address auto`` on the cluster's head
node, so the job shows in the dashboard's Jobs view with its logs, actors and
metrics, and with warmtune's metadata (version, job name, task, trainable,
searcher, storage). What travels with it:

- The job file, alone in a small ``working_dir`` (never the repository root: a
  ``platform/`` folder there would shadow the standard library on the cluster).
- warmtune itself, unless the cluster image already has it (``code="installed"``):
  a wheel built from this source checkout with ``pip wheel --no-deps`` and
  cached by the sources' hash. Ray would install a ``.whl`` in ``py_modules`` with
  ``pip install --target`` *and all its dependencies* (a second Ray, torch and
  CUDA libraries, from the network), so the wheel travels unpacked instead: its
  ``warmtune/`` package and its ``.dist-info`` as two ``py_modules`` folders, which
  the cluster's Python imports next to the Ray and torch it already has.

The cluster's Jobs API itself (the client, its token handling and errors) is
:mod:`warmtune.cluster.jobs_api`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata
import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from warmtune.cluster.jobs_api import ClusterError

__all__ = [
    "RESUME_HINT_VARIABLE",
    "CodeBundle",
    "Submission",
    "existing_job",
    "package_code",
    "prepare_submission",
]

RESUME_HINT_VARIABLE = "WARMTUNE_RESUME_HINT"
"""Set for a submitted job's driver: the command that continues it, which its log prints
when it is stopped (the driver itself runs ``warmtune run``, which users do not)."""
CodeMode = Literal["wheel", "installed"]

# Folders and files of the source checkout that make up the distribution (see
# pyproject.toml); a change to any of them means a new wheel.
_SOURCE_PARTS = ("pyproject.toml", "README.md", "platform", "searchers", "trainables", "examples")


# --------------------------------------------------------------------------- code


@dataclass(frozen=True)
class CodeBundle:
    """How warmtune reaches the cluster.

    Attributes:
        mode: ``"wheel"`` (shipped with the job) or ``"installed"`` (the image's).
        version: the warmtune version the job will run.
        py_modules: folders for the runtime environment's ``py_modules``.
        wheel: the wheel the folders were unpacked from (``None`` for ``installed``).
    """

    mode: CodeMode
    version: str
    py_modules: tuple[str, ...] = ()
    wheel: str | None = None


def source_checkout() -> Path | None:
    """The source checkout this warmtune runs from (an editable install), or ``None``."""
    root = Path(__file__).resolve().parents[2]
    if (root / "pyproject.toml").is_file() and (
        root / "platform" / "cluster" / "submit.py"
    ).is_file():
        return root
    return None


def package_code(mode: CodeMode = "wheel", *, cache_dir: Path | None = None) -> CodeBundle:
    """Prepare warmtune for the cluster.

    ``"wheel"`` builds a wheel of the source checkout (cached by the hash of its
    sources, so an unchanged checkout is built once) and unpacks it for
    ``py_modules``; ``"installed"`` ships nothing and relies on the cluster's own
    warmtune, which the job's entrypoint checks to be this version.

    Raises:
        ClusterError: ``"wheel"`` without a source checkout, or the build failed.
    """
    version = importlib.metadata.version("warmtune")
    if mode == "installed":
        return CodeBundle("installed", version)
    if mode != "wheel":
        raise ValueError(f"code mode must be 'wheel' or 'installed', got {mode!r}")
    root = source_checkout()
    if root is None:
        raise ClusterError(
            "--code wheel needs warmtune installed from a source checkout "
            "(pip install -e CHECKOUT), and this one is not; use --code installed with a "
            f"cluster image that has warmtune {version}"
        )
    cache = cache_dir or Path(
        os.environ.get("XDG_CACHE_HOME") or Path("~/.cache").expanduser(), "warmtune", "code"
    )
    digest = _source_digest(root)
    target = cache / digest[:16]
    wheels = sorted(target.glob("warmtune-*.whl"))
    if not (wheels and (target / "unpacked.ok").is_file()):
        wheels = [_build_wheel(root, target)]
    wheel = wheels[0]
    unpacked = target / "py_modules"
    dist_info = next(unpacked.glob("dist-info/*.dist-info"))
    wheel_version = dist_info.name.removeprefix("warmtune-").removesuffix(".dist-info")
    return CodeBundle(
        "wheel",
        wheel_version,
        (str(unpacked / "package" / "warmtune"), str(dist_info)),
        str(wheel),
    )


def _source_files(root: Path) -> Iterable[Path]:
    for part in _SOURCE_PARTS:
        path = root / part
        if path.is_file():
            yield path
        elif path.is_dir():
            for f in sorted(path.rglob("*")):
                if f.is_file() and "__pycache__" not in f.parts and f.suffix != ".pyc":
                    yield f


def _source_digest(root: Path) -> str:
    h = hashlib.sha256()
    for f in _source_files(root):
        h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def _build_wheel(root: Path, target: Path) -> Path:
    """Build the wheel from a copy of the distribution's files (so nothing is written
    into the checkout) and unpack it under ``target/py_modules``."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="warmtune-build-") as tmp:
        src = Path(tmp) / "src"
        for f in _source_files(root):
            dest = src / f.relative_to(root)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dest)
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(target)]
        # setuptools in this environment builds it offline; without it pip fetches one.
        if importlib.util.find_spec("setuptools") is not None:
            cmd.append("--no-build-isolation")
        done = subprocess.run([*cmd, str(src)], capture_output=True, text=True)
        if done.returncode != 0:
            raise ClusterError(
                f"building the warmtune wheel failed ({' '.join(cmd)}):\n"
                f"{done.stderr.strip() or done.stdout.strip()}"
            )
    (wheel,) = target.glob("warmtune-*.whl")
    with zipfile.ZipFile(wheel) as z:
        for member in z.namelist():
            top = member.split("/", 1)[0]
            where = "dist-info" if top.endswith(".dist-info") else "package"
            z.extract(member, target / "py_modules" / where)
    (target / "unpacked.ok").touch()
    return wheel


# --------------------------------------------------------------------- submission


@dataclass(frozen=True)
class Submission:
    """Everything one ``submit_job`` call sends (built without touching the cluster).

    Attributes:
        submission_id: ``warmtune-<job>-<yyyymmdd-hhmmss>``.
        job: the warmtune job name.
        job_text: the job file as it travels (``job.yaml`` in the working dir).
        entrypoint: the shell command the head node runs.
        metadata: shown in the dashboard and by ``warmtune jobs``.
        code: how warmtune travels.
        storage: where the results go on the cluster (``None``: the cluster's default).
    """

    submission_id: str
    job: str
    job_text: str
    entrypoint: str
    metadata: dict[str, str]
    code: CodeBundle
    storage: str | None = None
    env_vars: dict[str, str] = field(default_factory=dict)

    def runtime_env(self, working_dir: str) -> dict[str, Any]:
        env: dict[str, Any] = {"working_dir": working_dir}
        if self.code.py_modules:
            env["py_modules"] = list(self.code.py_modules)
        if self.env_vars:
            env["env_vars"] = dict(self.env_vars)
        return env


def _with_resolved_params(text: str, raw: dict[str, Any], resolved: dict[str, Any]) -> str:
    """The job file with the params the trainable normalised (relative data paths made
    absolute, where the user meant them) written in; unchanged when none changed.

    Dataset names (``scenario: lcbench``) travel as names: the cluster resolves them in
    its own data directory.
    """
    from warmtune.data import is_dataset_name

    changed = {
        k: v for k, v in resolved.items() if raw.get(k) != v and not is_dataset_name(raw.get(k))
    }
    if not changed:
        return text
    data = yaml.safe_load(text)
    data["trainable"]["params"].update(changed)
    header = (
        "# Submitted by warmtune submit; trainable.params "
        + ", ".join(sorted(changed))
        + " made absolute where it was submitted.\n"
    )
    return header + yaml.safe_dump(data, sort_keys=False)


def prepare_submission(
    job_file: Path,
    *,
    name: str | None = None,
    storage: str | None = None,
    resume: bool = False,
    code: CodeBundle,
    check: bool = True,
    now: dt.datetime | None = None,
    address: str | None = None,
) -> Submission:
    """Build the submission of ``job_file``.

    Args:
        job_file: the YAML job file. It travels as is, except that with ``check``
            the trainable's relative data paths are made absolute here (like
            ``storage``), since the job runs in the cluster's temporary directory.
            Dataset names stay names.
        name, storage: override the file's ``name`` / ``storage`` (a relative local
            storage path is made absolute: a cluster on this machine or one sharing
            the file system sees the same path).
        resume: continue the interrupted job of that name on the cluster.
        code: from :func:`package_code`.
        check: validate the job here first (skip it when the job's data paths exist
            only on the cluster; the cluster validates it anyway).
        now: the time in the submission id (default: now).
        address: the dashboard it goes to, for the resume command the job's log prints.

    Raises:
        JobSpecError: ``check`` and the job file is invalid.
    """
    from warmtune.spec import JobSpecError, load_job, resolve_storage

    if storage is not None:
        storage = resolve_storage(storage)
    text = job_file.read_text() if job_file.is_file() else ""
    if check:
        overrides = {k: v for k, v in (("name", name), ("storage", storage)) if v is not None}
        spec = load_job(job_file, overrides=overrides)
        job, task = spec.name, spec.task.name
        trainable, searcher = spec.trainable.name, spec.searcher.name
        text = _with_resolved_params(text, spec.trainable.params, spec.trainable_params)
    else:
        try:
            data = yaml.safe_load(text) if text else None
        except yaml.YAMLError as e:
            raise JobSpecError(str(job_file), [("", f"not valid YAML: {e}")]) from None
        if not isinstance(data, dict):
            raise JobSpecError(str(job_file), [("", "expected a mapping of keys (name, ...)")])
        job = name or str(data.get("name") or job_file.stem)
        task = str((data.get("task") or {}).get("name", ""))
        trainable = str((data.get("trainable") or {}).get("name", ""))
        searcher = str((data.get("searcher") or {}).get("name", "random"))
    if storage is None and text:
        # Made absolute here, as `warmtune run` would here, not in the cluster's temp dir.
        explicit = (yaml.safe_load(text) or {}).get("storage")
        storage = resolve_storage(str(explicit)) if explicit else None

    stamp = (now or dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
    args = ["-m", "warmtune", "run", "job.yaml", "--address", "auto", "--name", job]
    if storage is not None:
        args += ["--storage", storage]
    if resume:
        args.append("--resume")
    entrypoint = shlex.join(["python", *args])
    again = ["warmtune", "submit", "JOB.yaml", "--resume", "--name", job]
    if storage is not None:
        again += ["--storage", storage]
    if address is not None:
        again += ["--address", address]
    if code.mode == "installed":
        entrypoint = f"{_version_guard(code.version)} && {entrypoint}"
    metadata = {
        "job_name": job,
        "warmtune_version": code.version,
        "warmtune_job": job,
        "task": task,
        "trainable": trainable,
        "searcher": searcher,
        "storage": storage or "(the cluster's default)",
        "code": code.mode,
    }
    return Submission(
        submission_id=f"warmtune-{job}-{stamp}",
        job=job,
        job_text=text,
        entrypoint=entrypoint,
        metadata=metadata,
        code=code,
        storage=storage,
        env_vars={
            # Progress lines reach `warmtune logs` as they are printed.
            "PYTHONUNBUFFERED": "1",
            # `warmtune stop` is a Ctrl+C: Tune saves the experiment and the recorder
            # writes what it holds, so `--resume` continues; SIGKILL after 30 s.
            "RAY_JOB_STOP_SIGNAL": "SIGINT",
            "RAY_JOB_STOP_WAIT_TIME_S": "30",
            RESUME_HINT_VARIABLE: shlex.join(again),
        },
    )


def existing_job(storage: str | None, job: str) -> str | None:
    """Where ``job`` already has results in ``storage``, when this machine can see it.

    The cluster refuses such a submission anyway, but only after the upload, and then
    the refused submission is the job's latest; checking here first saves both. A
    storage this machine cannot read (the cluster's default, a bucket without
    credentials here) is left to the cluster.
    """
    from warmtune.jobdir import JobDir

    if storage is None:
        return None
    jobdir = JobDir.under(storage, job)
    try:
        return jobdir.root if jobdir.exists() else None
    except (OSError, ValueError):
        return None


def _version_guard(version: str) -> str:
    """A shell command that fails unless the cluster's warmtune is ``version``."""
    script = (
        "import importlib.metadata as m, sys\n"
        "try:\n"
        "    v = m.version('warmtune')\n"
        "except m.PackageNotFoundError:\n"
        "    v = None\n"
        f"if v != {version!r}:\n"
        f"    sys.exit('warmtune: the cluster has warmtune ' + str(v) + ', this job was "
        f"submitted by warmtune {version}: submit it with --code wheel, or install "
        f"warmtune {version} in the cluster image')\n"
    )
    return shlex.join(["python", "-c", script])
