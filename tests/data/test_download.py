"""Atomic, verified downloads against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import shutil
import subprocess

import pytest

from warmtune.data.checks import git_blob_id, sha256_file
from warmtune.data.download import ChecksumMismatchError, DownloadError, download

BODY = bytes(range(256)) * 400  # 100 KiB, several read chunks
SHA = hashlib.sha256(BODY).hexdigest()


def _expect(sha256):
    return lambda _tmp, got: None if got == sha256 else f"SHA-256 is {got}, expected {sha256}"


def test_a_good_download_is_checked_and_renamed_into_place(http_server, tmp_path, no_leftovers):
    url = http_server.serve("files/model.onnx", BODY)
    dest = tmp_path / "yahpo" / "lcbench" / "model.onnx"
    assert download(url, dest, check=_expect(SHA), progress=False) == SHA
    assert dest.read_bytes() == BODY
    assert sha256_file(dest) == SHA
    assert no_leftovers(tmp_path) == []


def test_a_checksum_mismatch_keeps_nothing_and_is_not_retried(http_server, tmp_path, no_leftovers):
    url = http_server.serve("model.onnx", BODY[:-1] + b"x")
    dest = tmp_path / "model.onnx"
    with pytest.raises(ChecksumMismatchError, match=f"expected {SHA}") as info:
        download(url, dest, check=_expect(SHA), attempts=3, retry_wait=0, progress=False)
    assert info.value.url == url and info.value.permanent
    assert not dest.exists() and no_leftovers(tmp_path) == []
    assert http_server.requests["/model.onnx"] == 1  # the same bytes would come again


def test_a_connection_dropped_halfway_is_retried(http_server, tmp_path, no_leftovers):
    url = http_server.serve("model.onnx", BODY, drop=1)
    dest = tmp_path / "model.onnx"
    download(url, dest, check=_expect(SHA), attempts=3, retry_wait=0, progress=False)
    assert dest.read_bytes() == BODY
    assert http_server.requests["/model.onnx"] == 2
    assert no_leftovers(tmp_path) == []


def test_a_connection_that_always_drops_fails_after_bounded_retries(
    http_server, tmp_path, no_leftovers
):
    url = http_server.serve("model.onnx", BODY, drop=-1)
    dest = tmp_path / "model.onnx"
    with pytest.raises(DownloadError, match=f"closed after {len(BODY) // 2} of {len(BODY)} bytes"):
        download(url, dest, attempts=3, retry_wait=0, progress=False)
    assert http_server.requests["/model.onnx"] == 3
    # Half a file under its real name would look complete to a loader: none is left.
    assert not dest.exists() and no_leftovers(tmp_path) == []


def test_a_404_fails_at_once(http_server, tmp_path, no_leftovers):
    url = http_server.url("missing.onnx")
    with pytest.raises(DownloadError, match="HTTP 404") as info:
        download(url, tmp_path / "m.onnx", attempts=3, retry_wait=0, progress=False)
    assert info.value.permanent and info.value.attempts == 1
    assert http_server.requests["/missing.onnx"] == 1
    assert no_leftovers(tmp_path) == []


def test_a_server_error_is_retried(http_server, tmp_path):
    url = http_server.fail("busy", 503)
    with pytest.raises(DownloadError, match="HTTP 503") as info:
        download(url, tmp_path / "f", attempts=2, retry_wait=0, progress=False)
    assert not info.value.permanent and http_server.requests["/busy"] == 2


def test_no_network_fails_after_bounded_retries_and_keeps_the_old_file(
    closed_port_url, tmp_path, no_leftovers
):
    dest = tmp_path / "model.onnx"
    dest.write_bytes(b"what was there before")
    with pytest.raises(DownloadError, match="Connection refused") as info:
        download(f"{closed_port_url}/model.onnx", dest, attempts=2, retry_wait=0, progress=False)
    assert info.value.attempts == 2 and not info.value.permanent
    assert dest.read_bytes() == b"what was there before"
    assert no_leftovers(tmp_path) == []


def test_file_urls_work_for_mirrors_on_a_shared_drive(tmp_path):
    source = tmp_path / "share" / "model.onnx"
    source.parent.mkdir()
    source.write_bytes(BODY)
    dest = tmp_path / "data" / "model.onnx"
    assert download(source.as_uri(), dest, check=_expect(SHA), progress=False) == SHA
    assert dest.read_bytes() == BODY


def test_bad_arguments_say_what_to_fix(tmp_path):
    with pytest.raises(ValueError, match="attempts must be >= 1"):
        download("http://127.0.0.1:9/x", tmp_path / "x", attempts=0)


def test_git_blob_ids_are_what_git_hash_object_prints(tmp_path):
    empty, hello = tmp_path / "empty", tmp_path / "hello"
    empty.write_bytes(b"")
    hello.write_bytes(b"hello\n")
    # Well-known ids: git's empty blob, and `echo hello | git hash-object --stdin`.
    assert git_blob_id(empty) == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
    assert git_blob_id(hello) == "ce013625030ba8dba906f756967f9e9ca394464a"
    if shutil.which("git"):
        blob = tmp_path / "blob"
        blob.write_bytes(BODY)
        out = subprocess.run(["git", "hash-object", str(blob)], capture_output=True, text=True)
        assert git_blob_id(blob) == out.stdout.strip()
