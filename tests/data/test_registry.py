"""The registry, the one data directory, and names resolved through it."""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

import pytest
from click.testing import CliRunner

from warmtune.cli import main
from warmtune.data import (
    DatasetMissingError,
    UnknownDatasetError,
    all_datasets,
    data_dir,
    dataset_path,
    get_dataset,
    is_dataset_name,
    is_present,
    names,
    require,
    resolve,
)
from warmtune.data.registry import YAHPO_COMMIT
from warmtune.trainables.benchmarks.yahpo import SCENARIOS


def test_every_yahpo_scenario_is_registered_at_the_pinned_commit():
    assert set(names("yahpo")) == set(SCENARIOS)
    for name in SCENARIOS:
        entry = get_dataset(name)
        assert entry.folder == f"yahpo/{name}" and entry.downloadable
        stored = {f.name for f in entry.files}
        assert {"config_space.json", "encoding.json", "model.onnx"} <= stored
        for f in entry.files:
            assert f.url == (
                f"https://raw.githubusercontent.com/slds-lmu/yahpo_data/{YAHPO_COMMIT}/"
                f"{f.path.removeprefix('yahpo/')}"
            )
        # Only surrogates can lack a hash, and an entry without one says so.
        assert all(f.name == "model.onnx" for f in entry.unpinned)
        assert bool(entry.unpinned) == any("not known to warmtune" in n for n in entry.notes)
    unpinned = sorted(n for n in SCENARIOS if get_dataset(n).unpinned)
    assert len(unpinned) == 10 and "lcbench" not in unpinned and "iaml_glmnet" not in unpinned


def test_the_shipped_manifest_is_the_reference_one():
    text = resources.files("warmtune.data").joinpath("yahpo-v1.0.2.tsv").read_bytes()
    # The SHA-256 of MANIFEST-v1.0.2.tsv in the reference data's SHA256SUMS.
    assert hashlib.sha256(text).hexdigest() == (
        "61f0f0ee18ddbfb151b1dfe4d7acdb6a8884afcb165320299cbe4d7e9551730e"
    )


def test_every_entry_names_source_licence_and_checksums():
    for entry in all_datasets():
        assert entry.source and entry.licence and entry.title, entry.name
        assert entry.files and all(f.path.startswith(entry.folder + "/") for f in entry.files)
        if not entry.downloadable:
            assert entry.notes, f"{entry.name} must say why it cannot be downloaded"
    omniglot = get_dataset("omniglot")
    assert [s.git_blob for s in omniglot.sources] == [
        "71fd167eb6fdd312049395fbd247147a4b234231",
        "8ccde0ed1565641f1fa8c57cdc6ff634e15fc5c1",
    ]
    assert all(f.sha256 and f.npz_sha256 for f in omniglot.files)
    assert not get_dataset("nb201").downloadable


def test_unknown_names_list_the_known_ones():
    with pytest.raises(UnknownDatasetError, match="unknown dataset 'lcbenc'; known: .*lcbench"):
        get_dataset("lcbenc")


def test_the_data_directory_is_explicit_then_env_then_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("WARMTUNE_DATA", raising=False)
    assert data_dir() == tmp_path / "home" / ".cache" / "warmtune" / "data"
    monkeypatch.setenv("WARMTUNE_DATA", str(tmp_path / "env"))
    assert data_dir() == tmp_path / "env"
    assert data_dir(tmp_path / "explicit") == tmp_path / "explicit"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WARMTUNE_DATA", "relative/data")
    assert data_dir() == tmp_path / "relative" / "data"  # absolute, for Ray workers
    assert dataset_path("lcbench") == tmp_path / "relative/data/yahpo/lcbench"
    assert dataset_path("nb201") == tmp_path / "relative/data/nas-bench-201"


def test_a_missing_dataset_says_exactly_what_to_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WARMTUNE_DATA", str(tmp_path))
    assert not is_present("lcbench")
    with pytest.raises(DatasetMissingError) as info:
        require("lcbench")
    assert info.value.name == "lcbench" and "yahpo/lcbench/model.onnx" in info.value.missing
    assert f"not in the data directory {tmp_path}" in str(info.value)
    assert "run `warmtune data fetch lcbench`" in str(info.value)
    with pytest.raises(DatasetMissingError, match="`warmtune data import nb201 --from DIR`"):
        require("nb201")


def test_names_resolve_through_the_data_directory_and_paths_stay_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("WARMTUNE_DATA", str(tmp_path / "data"))
    folder = tmp_path / "data" / "nas-bench-201"
    folder.mkdir(parents=True)
    (folder / "nats_bench.csv").write_text("x\n")
    assert resolve("nb201", kind="nb201") == folder
    with pytest.raises(DatasetMissingError, match="warmtune data fetch omniglot"):
        resolve("omniglot", kind="omniglot")
    monkeypatch.chdir(tmp_path)
    # A name of another kind, a path with a slash and a Path object are paths.
    assert resolve("omniglot", kind="yahpo") == tmp_path / "omniglot"
    assert resolve("./lcbench", kind="yahpo") == tmp_path / "lcbench"
    assert resolve(Path("lcbench"), kind="yahpo") == tmp_path / "lcbench"
    monkeypatch.setenv("SOMEWHERE", str(tmp_path / "x"))
    assert resolve("$SOMEWHERE/omniglot", kind="omniglot") == tmp_path / "x" / "omniglot"
    assert is_dataset_name("lcbench", kind="yahpo") and not is_dataset_name("3945")


def test_data_list_path_verify_on_the_command_line(tmp_path, monkeypatch):
    monkeypatch.setenv("WARMTUNE_DATA", str(tmp_path))
    runner = CliRunner()
    listed = runner.invoke(main, ["data", "list"])
    assert listed.exit_code == 0 and f"data directory: {tmp_path}" in listed.output
    table = listed.output.split("\n\n")[0].splitlines()[2:]
    rows = {line.split()[0]: line.split()[1:] for line in table}
    assert set(rows) == {d.name for d in all_datasets()}
    assert rows["nb201"] == ["nb201", "3.0", "MB", "no", "import"]
    assert rows["omniglot"][-1] == "fetch+convert" and rows["lcbench"][-2:] == ["no", "fetch"]
    missing = runner.invoke(main, ["data", "path", "omniglot"])
    assert missing.exit_code == 1
    assert missing.stdout.strip() == str(tmp_path / "omniglot")
    assert "`warmtune data fetch omniglot`" in missing.stderr
    assert runner.invoke(main, ["data", "verify"]).output.startswith("no datasets in")
    bad = runner.invoke(main, ["data", "fetch", "lcbenc"])
    assert bad.exit_code == 2 and "unknown dataset 'lcbenc'" in bad.stderr
    long = runner.invoke(main, ["data", "list", "--long"])
    assert "sha256 b45c0d85ae39abf8820c8bea5ac82f415763afcbaf3b725e36af452b09cb6dcd" in long.output
    assert "licence:  MIT" in long.output and "NATS-Bench" in long.output


def test_verify_names_the_corrupted_file_and_exits_1(tmp_path, monkeypatch):
    monkeypatch.setenv("WARMTUNE_DATA", str(tmp_path))
    entry = get_dataset("nb201")
    (tmp_path / "nas-bench-201").mkdir()
    (tmp_path / entry.files[0].path).write_text("a truncated table\n")
    result = CliRunner().invoke(main, ["data", "verify"])
    assert result.exit_code == 1
    assert f"nb201: CORRUPTED: {tmp_path / 'nas-bench-201/nats_bench.csv'}: SHA-256 is" in (
        result.output
    )
    assert "1 file(s) missing or corrupted: nas-bench-201/nats_bench.csv" in result.stderr


def test_present_datasets_verify(need_data):
    """The reference data passes the registry's checks (skips without it)."""
    for name in ("lcbench", "iaml_glmnet", "omniglot", "nb201", "kuberay-crds"):
        folder = need_data(name)
        result = CliRunner().invoke(main, ["data", "verify", name])
        assert result.exit_code == 0, result.output
        assert folder == dataset_path(name)
