"""Where a job keeps its things: ``STORAGE/NAME/`` on a local path or a pyarrow URI.

::

    STORAGE/NAME/                  Ray Tune's experiment directory (trials, checkpoints)
    STORAGE/NAME/warmtune/job.yaml the validated job spec, written once at the start
    STORAGE/NAME/warmtune/results/ the ResultStore (append-only Parquet)
    STORAGE/NAME/warmtune/trial_ends/ how each trial ended (a ResultStore too)
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs

from warmtune.spec import JobSpec, dump_job, job_from_dict, resolve_storage

__all__ = ["JobDir", "JobNotFoundError", "filesystem"]


class JobNotFoundError(FileNotFoundError):
    """No job results where the user pointed."""


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and the path inside it, for a local path or a URI."""
    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), str(Path(uri).expanduser().resolve())


@dataclass(frozen=True)
class JobDir:
    """The storage location of one job.

    Args:
        root: ``STORAGE/NAME`` as a local path or URI.
    """

    root: str

    @classmethod
    def of(cls, spec: JobSpec, *, name: str | None = None) -> JobDir:
        return cls(_join(spec.storage_uri(), name or spec.name))

    @classmethod
    def under(cls, storage: str, name: str) -> JobDir:
        """The job ``name`` in ``storage`` (a path or URI, already resolved)."""
        return cls(_join(storage, name))

    @classmethod
    def find(cls, ref: str, *, storage: str | None = None) -> JobDir:
        """Find a job by result directory (path or URI) or by name under ``storage``.

        Raises:
            JobNotFoundError: neither is a job directory; the message says where it looked.
        """
        from warmtune.spec import default_storage

        candidates = []
        if "://" in ref or os.sep in ref or Path(ref).expanduser().is_dir():
            candidates.append(cls(resolve_storage(ref)))
        base = resolve_storage(storage or default_storage())
        candidates.append(cls(_join(base, ref)))
        for c in candidates:
            if c.exists():
                return c
        looked = ", ".join(c.root for c in candidates)
        raise JobNotFoundError(
            f"no warmtune job at {looked}; pass the job's result directory, or its name "
            "with --storage (or $WARMTUNE_STORAGE) pointing at where it ran"
        )

    @property
    def name(self) -> str:
        return self.root.rstrip("/").rsplit("/", 1)[-1]

    @property
    def storage(self) -> str:
        return self.root.rstrip("/").rsplit("/", 1)[0]

    @property
    def meta(self) -> str:
        return _join(self.root, "warmtune")

    @property
    def spec_path(self) -> str:
        return _join(self.meta, "job.yaml")

    @property
    def results(self) -> str:
        return _join(self.meta, "results")

    @property
    def trial_ends(self) -> str:
        """A store of one row per ended trial: ``status`` TERMINATED or ERROR, the
        last iteration, and the error's last line (see :class:`ResultRecorder`)."""
        return _join(self.meta, "trial_ends")

    def exists(self) -> bool:
        fs, path = filesystem(self.spec_path)
        return fs.get_file_info(path).type == pafs.FileType.File

    def read_spec(self) -> JobSpec:
        import yaml

        fs, path = filesystem(self.spec_path)
        with fs.open_input_stream(path) as f:
            data = yaml.safe_load(f.read().decode())
        return job_from_dict(data, source=self.spec_path)

    def write_spec(self, spec: JobSpec) -> None:
        """Write ``job.yaml`` (only ever once per job: it is the job's identity).

        Raises:
            FileExistsError: on a local file system, when another run wrote it first
                (two runs of one job name started at the same moment). Object stores
                have no exclusive create; there the last writer wins.
        """
        fs, path = filesystem(self.spec_path)
        folder = path.rsplit("/", 1)[0]
        fs.create_dir(folder, recursive=True)
        # Under a temporary name first, then renamed: a reader (warmtune results, a
        # resume) never sees a half-written job.yaml.
        temporary = f"{folder}/.job.yaml.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        with fs.open_output_stream(temporary) as f:
            f.write(dump_job(spec).encode())
        if isinstance(fs, pafs.LocalFileSystem):
            try:
                os.link(temporary, path)  # an exclusive create: fails if it exists
            except FileExistsError:
                os.unlink(temporary)
                raise
            except OSError:  # no hard links on this file system: a plain rename
                os.replace(temporary, path)
            else:
                os.unlink(temporary)
        else:
            fs.move(temporary, path)


def _join(base: str, name: str) -> str:
    return base.rstrip("/") + "/" + name
