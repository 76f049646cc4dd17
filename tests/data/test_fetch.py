"""fetch, import and verify: fixture datasets over a real HTTP server on 127.0.0.1, and
the real registry against mirrors (a local folder of the reference data when present)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from click.testing import CliRunner

from warmtune.cli.data import data as data_cli
from warmtune.data import (
    DataError,
    DataFile,
    Dataset,
    Source,
    fetch,
    get_dataset,
    import_dataset,
    verify,
)

CONFIG = b'{"hyperparameters": []}\n'
MODEL = bytes(range(256)) * 64


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _toy(server, *, model_sha: str | None = None) -> Dataset:
    """Two files: one with a published SHA-256, one without (like 10 YAHPO surrogates)."""
    return Dataset(
        name="toy",
        kind="yahpo",
        folder="yahpo/toy",
        title="a toy scenario",
        files=(
            DataFile(
                "yahpo/toy/config_space.json",
                _sha(CONFIG),
                len(CONFIG),
                server.serve("up/toy/config_space.json", CONFIG),
            ),
            DataFile(
                "yahpo/toy/model.onnx", model_sha, None, server.serve("up/toy/model.onnx", MODEL)
            ),
        ),
        source="a test",
        licence="none",
        citation="",
    )


def test_fetch_downloads_checks_and_records_unpublished_hashes(http_server, tmp_path, no_leftovers):
    lines = []
    folder = fetch(_toy(http_server), root=tmp_path, progress=False, report=lines.append)
    assert folder == tmp_path / "yahpo" / "toy"
    assert (folder / "config_space.json").read_bytes() == CONFIG
    assert (folder / "model.onnx").read_bytes() == MODEL
    assert any(
        "NOT checked: no published SHA-256" in line and _sha(MODEL) in line for line in lines
    )
    assert any(
        line.endswith(
            "config_space.json (24 B) from "
            + http_server.url("up/toy/config_space.json")
            + ", checked"
        )
        for line in lines
    )
    verdicts = {c.file.name: c.status for c in verify(_toy(http_server), root=tmp_path)}
    assert verdicts == {"config_space.json": "ok", "model.onnx": "recorded"}
    assert no_leftovers(tmp_path) == []
    # A second fetch downloads nothing: what is there is intact.
    before = dict(http_server.requests)
    fetch(_toy(http_server), root=tmp_path, progress=False, report=lines.append)
    assert dict(http_server.requests) == before and "already in" in lines[-1]


def test_verify_names_a_corrupted_file_and_fetch_replaces_it(http_server, tmp_path):
    toy = _toy(http_server)
    fetch(toy, root=tmp_path, progress=False)
    (tmp_path / "yahpo/toy/config_space.json").write_bytes(b"{}")
    (tmp_path / "yahpo/toy/model.onnx").write_bytes(MODEL[:-1])
    bad = {c.file.path: c for c in verify(toy, root=tmp_path) if not c.good}
    assert set(bad) == {"yahpo/toy/config_space.json", "yahpo/toy/model.onnx"}
    assert bad["yahpo/toy/config_space.json"].detail.endswith(f"expected {_sha(CONFIG)}")
    assert "was recorded when it arrived" in bad["yahpo/toy/model.onnx"].detail
    lines = []
    fetch(toy, root=tmp_path, progress=False, report=lines.append)
    assert any(line.startswith("toy: replacing yahpo/toy/config_space.json") for line in lines)
    assert all(c.good for c in verify(toy, root=tmp_path))


def test_a_checksum_mismatch_keeps_nothing_and_says_what_was_expected(
    http_server, tmp_path, no_leftovers
):
    toy = _toy(http_server, model_sha=_sha(b"another model"))
    with pytest.raises(DataError) as info:
        fetch(toy, root=tmp_path, progress=False, retry_wait=0)
    message = str(info.value)
    assert http_server.url("up/toy/model.onnx") in message
    assert f"yahpo/toy/model.onnx (SHA-256 {_sha(b'another model')})" in message
    assert "Nothing was kept" in message and "`warmtune data import toy --from DIR`" in message
    assert not (tmp_path / "yahpo/toy/model.onnx").exists()
    assert no_leftovers(tmp_path) == []


def test_offline_the_error_names_url_file_checksum_and_the_import_command(
    closed_port_url, tmp_path, no_leftovers
):
    url = f"{closed_port_url}/lcbench/config_space.json"
    toy = Dataset(
        "toy",
        "yahpo",
        "yahpo/toy",
        "t",
        (DataFile("yahpo/toy/config_space.json", _sha(CONFIG), None, url),),
        "s",
        "l",
        "",
    )
    with pytest.raises(DataError) as info:
        fetch(toy, root=tmp_path, progress=False, attempts=2, retry_wait=0)
    message = str(info.value)
    assert url in message and "Connection refused" in message and "2 attempts" in message
    assert f"yahpo/toy/config_space.json (SHA-256 {_sha(CONFIG)})" in message
    assert "`warmtune data import toy --from DIR`" in message
    assert not (tmp_path / "yahpo/toy/config_space.json").exists()
    assert no_leftovers(tmp_path) == []


def test_a_404_and_a_dropped_connection_fail_cleanly(http_server, tmp_path, no_leftovers):
    gone = Dataset(
        "gone",
        "yahpo",
        "yahpo/gone",
        "t",
        (DataFile("yahpo/gone/x", None, None, http_server.url("nowhere")),),
        "s",
        "l",
        "",
    )
    with pytest.raises(DataError, match="HTTP 404"):
        fetch(gone, root=tmp_path, progress=False, retry_wait=0)
    assert http_server.requests["/nowhere"] == 1
    url = http_server.serve("half", MODEL, drop=-1)
    half = Dataset(
        "half",
        "yahpo",
        "yahpo/half",
        "t",
        (DataFile("yahpo/half/m", _sha(MODEL), None, url),),
        "s",
        "l",
        "",
    )
    with pytest.raises(DataError, match="connection closed after .* bytes; 3 attempts"):
        fetch(half, root=tmp_path, progress=False, retry_wait=0)
    assert not (tmp_path / "yahpo/half/m").exists() and no_leftovers(tmp_path) == []


def test_a_mirror_serves_the_data_directory_layout(http_server, tmp_path, monkeypatch):
    toy = _toy(http_server, model_sha=_sha(MODEL))
    http_server.serve("mirror/yahpo/toy/config_space.json", CONFIG)
    http_server.serve("mirror/yahpo/toy/model.onnx", MODEL)
    monkeypatch.setenv("WARMTUNE_DATA_MIRROR", http_server.url("mirror/"))
    fetch(toy, root=tmp_path, progress=False)
    assert http_server.requests["/mirror/yahpo/toy/model.onnx"] == 1
    assert http_server.requests["/up/toy/model.onnx"] == 0
    assert all(c.status == "ok" for c in verify(toy, root=tmp_path))


def _blob(data: bytes) -> str:
    """What ``git hash-object`` prints for a file holding ``data``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _omniglot_like(server, make_omniglot_zip, npy_digest, *, blob=None, images_sha=None):
    """The real Omniglot converter behind a fixture dataset of two tiny public-format zips.

    Returns the dataset and, per part, the images the converter must produce.
    """
    rng = np.random.default_rng(0)
    expected, files, sources = {}, [], []
    for part, ids in (("images_background", [12, 4]), ("images_evaluation", [2])):
        images = rng.random((len(ids), 20, 105, 105)) > 0.2
        chars = [("Latin", f"character{i + 1:02d}", cid, images[i]) for i, cid in enumerate(ids)]
        zipped = make_omniglot_zip(part, chars)
        url = server.serve(f"python/{part}.zip", zipped)
        sources.append(Source(f"{part}.zip", url, git_blob=blob or _blob(zipped)))
        expected[part] = images[np.argsort(ids)]
        labels = np.repeat(np.arange(len(ids))[:, None], 20, axis=1)
        members = {
            "images.npy": images_sha or npy_digest(expected[part]),
            "labels.npy": npy_digest(labels),
        }
        files.append(DataFile(f"omniglot/{part}.npz", None, npz_sha256=members))
    dataset = Dataset(
        "omniglot-like",
        "omniglot",
        "omniglot",
        "t",
        tuple(files),
        "s",
        "MIT",
        "",
        sources=tuple(sources),
        convert=get_dataset("omniglot").convert,
    )
    return dataset, expected


def test_fetch_converts_public_sources_checked_by_git_blob(
    http_server, tmp_path, make_omniglot_zip, npy_digest, no_leftovers
):
    dataset, expected = _omniglot_like(http_server, make_omniglot_zip, npy_digest)
    lines = []
    folder = fetch(dataset, root=tmp_path, progress=False, report=lines.append)
    for part, images in expected.items():
        with np.load(folder / f"{part}.npz") as npz:
            np.testing.assert_array_equal(npz["images"], images)
    assert any("checked (git blob" in line for line in lines)
    assert all(c.status == "ok" for c in verify(dataset, root=tmp_path))
    assert sorted(p.name for p in tmp_path.rglob("*")) == [
        "images_background.npz",
        "images_evaluation.npz",
        "omniglot",
    ]
    assert no_leftovers(tmp_path) == []


def test_a_source_with_the_wrong_git_blob_is_refused(
    http_server, tmp_path, make_omniglot_zip, npy_digest, no_leftovers
):
    dataset, _ = _omniglot_like(http_server, make_omniglot_zip, npy_digest, blob="0" * 40)
    with pytest.raises(DataError, match=f"git blob id is [0-9a-f]{{40}}, expected {'0' * 40}"):
        fetch(dataset, root=tmp_path, progress=False)
    assert not list((tmp_path).rglob("*.npz")) and no_leftovers(tmp_path) == []


def test_a_conversion_that_does_not_match_keeps_nothing(
    http_server, tmp_path, make_omniglot_zip, npy_digest, no_leftovers
):
    dataset, _ = _omniglot_like(http_server, make_omniglot_zip, npy_digest, images_sha="1" * 64)
    with pytest.raises(DataError, match="the converted omniglot/images_background.npz is not"):
        fetch(dataset, root=tmp_path, progress=False)
    assert not list(tmp_path.rglob("*.npz")) and no_leftovers(tmp_path) == []


def test_import_copies_from_a_data_directory_or_the_dataset_folder(http_server, tmp_path):
    toy = _toy(http_server, model_sha=_sha(MODEL))
    fetch(toy, root=tmp_path / "share", progress=False)
    import_dataset(toy, tmp_path / "share", root=tmp_path / "a")
    import_dataset(toy, tmp_path / "share" / "yahpo" / "toy", root=tmp_path / "b")
    for root in ("a", "b"):
        assert all(c.status == "ok" for c in verify(toy, root=tmp_path / root))


def test_import_refuses_a_corrupted_or_incomplete_source_naming_the_file(http_server, tmp_path):
    toy = _toy(http_server, model_sha=_sha(MODEL))
    share = tmp_path / "share"
    fetch(toy, root=share, progress=False)
    (share / "yahpo/toy/model.onnx").write_bytes(b"bad")
    with pytest.raises(DataError, match=r"model.onnx is corrupted: SHA-256 is .*it was not copied"):
        import_dataset(toy, share, root=tmp_path / "data")
    assert not (tmp_path / "data/yahpo/toy/model.onnx").exists()
    (share / "yahpo/toy/model.onnx").unlink()
    with pytest.raises(DataError, match="missing model.onnx"):
        import_dataset(toy, share, root=tmp_path / "data")


def test_the_real_registry_refuses_a_wrong_mirror_and_keeps_nothing(
    http_server, tmp_path, no_leftovers
):
    http_server.serve("yahpo/lcbench/config_space.json", b"not the real file")
    with pytest.raises(DataError) as info:
        fetch("lcbench", root=tmp_path, mirror=http_server.base_url, progress=False)
    message = str(info.value)
    assert "yahpo/lcbench/config_space.json (SHA-256 4d1c78a91429b4a3" in message
    assert "`warmtune data import lcbench --from DIR`" in message
    assert not list(tmp_path.rglob("config_space.json")) and no_leftovers(tmp_path) == []


def test_nb201_has_no_public_download_and_says_so(tmp_path, monkeypatch):
    monkeypatch.delenv("WARMTUNE_DATA_MIRROR", raising=False)
    with pytest.raises(DataError) as info:
        fetch("nb201", root=tmp_path, progress=False)
    message = str(info.value)
    assert "no public download" in message and "NATS-Bench" in message
    assert "`warmtune data import nb201 --from DIR`" in message
    assert "--mirror URL" in message
    assert list(tmp_path.iterdir()) == []


def test_fetch_lcbench_omniglot_nb201_from_a_local_mirror(need_data, directory_server, tmp_path):
    """What a user behind a company mirror runs; the mirror here is the reference data."""
    for name in ("lcbench", "omniglot", "nb201"):
        need_data(name)
    from warmtune.data import data_dir

    mirror = directory_server(data_dir())
    target = tmp_path / "data"
    runner = CliRunner()
    result = runner.invoke(
        data_cli,
        ["fetch", "lcbench", "omniglot", "nb201", "--mirror", mirror, "--data-dir", str(target)],
    )
    assert result.exit_code == 0, result.output
    assert "lcbench: ready in" in result.output and "nb201: ready in" in result.output
    result = runner.invoke(data_cli, ["verify", "--data-dir", str(target)])
    assert result.exit_code == 0, result.output
    assert {"lcbench: ok (6 files)", "omniglot: ok (2 files)", "nb201: ok (1 file)"} <= set(
        result.output.splitlines()
    )


def test_import_from_the_reference_data(need_data, tmp_path):
    """What CI does with ../shared/data: import into an empty data directory, checked."""
    names = ["lcbench", "iaml_glmnet", "omniglot", "nb201", "kuberay-crds"]
    for name in names:
        need_data(name)
    from warmtune.data import data_dir

    result = CliRunner().invoke(
        data_cli, ["import", *names, "--from", str(data_dir()), "--data-dir", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    for name in names:
        assert all(c.status == "ok" for c in verify(name, root=tmp_path)), name
