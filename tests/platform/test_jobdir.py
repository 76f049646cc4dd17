"""The job directory: job.yaml is written whole or not at all."""

from __future__ import annotations

import os

import pytest

from warmtune.jobdir import JobDir
from warmtune.spec import job_from_dict


def _spec(storage: str):
    return job_from_dict(
        {
            "name": "bowl",
            "task": {"name": "bowl"},
            "trainable": {"name": "quadratic"},
            "space": {"x": {"type": "float", "low": 0, "high": 1}},
            "objective": {"metric": "loss", "mode": "min"},
            "budget": {"trials": 2, "max_iterations": 3},
            "storage": storage,
        }
    )


@pytest.mark.parametrize("as_uri", [False, True])
def test_spec_is_written_through_a_temporary_name(tmp_path, as_uri):
    storage = (tmp_path / "results").as_uri() if as_uri else str(tmp_path / "results")
    spec = _spec(storage)
    jobdir = JobDir.of(spec)
    assert not jobdir.exists()
    jobdir.write_spec(spec)
    assert jobdir.exists()
    assert jobdir.read_spec() == spec
    folder = tmp_path / "results" / "bowl" / "warmtune"
    assert sorted(os.listdir(folder)) == ["job.yaml"]  # no temporary file left behind


def test_a_second_writer_of_the_same_job_is_refused(tmp_path):
    spec = _spec(str(tmp_path / "results"))
    JobDir.of(spec).write_spec(spec)
    with pytest.raises(FileExistsError):
        JobDir.of(spec).write_spec(spec)
    folder = tmp_path / "results" / "bowl" / "warmtune"
    assert sorted(os.listdir(folder)) == ["job.yaml"]
    assert JobDir.of(spec).read_spec() == spec
