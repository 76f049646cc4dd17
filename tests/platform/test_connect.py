"""connect_ray's token handling, without a cluster: what it asks of Ray, and the
message when there is no token. tests/cluster/test_fault_tolerance.py connects
drivers to a real token cluster."""

from __future__ import annotations

import logging
import os

import pytest

from warmtune.connect import RayAuthError, connect_ray, find_token


class _Ctx:
    dashboard_url = None
    address_info = {"gcs_address": "10.0.0.1:6379"}


@pytest.fixture
def ray_init(monkeypatch, tmp_path):
    """ray.init replaced by a recorder of its arguments and of RAY_AUTH_MODE at the
    call; HOME without a token, and no Ray variables."""
    import ray

    for var in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    calls: list[dict] = []

    def init(**kwargs):
        calls.append({**kwargs, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE")})
        return _Ctx()

    monkeypatch.setattr(ray, "init", init)
    return calls


def test_a_cluster_without_a_token_is_refused_before_ray_is_asked(ray_init):
    assert find_token() is None
    for address in ("10.0.0.1:6379", "auto", "ray://10.0.0.1:10001"):
        with pytest.raises(RayAuthError) as e:
            connect_ray(address)
        assert f"the Ray cluster at {address} uses token authentication" in str(e.value)
        assert "RAY_AUTH_TOKEN" in str(e.value) and "~/.ray/auth_token" in str(e.value)
    assert ray_init == []


def test_ray_address_counts_as_a_cluster(ray_init, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    with pytest.raises(RayAuthError, match="10.0.0.1:6379"):
        connect_ray(None)


def test_an_embedded_instance_needs_no_token_and_is_left_to_ray(ray_init):
    assert connect_ray(None, num_cpus=1).startswith("Ray at 10.0.0.1:6379")
    connect_ray("local", num_cpus=2, dashboard=False)
    assert [(c["address"], c["num_cpus"], c["RAY_AUTH_MODE"]) for c in ray_init] == [
        (None, 1, None),
        ("local", 2, None),
    ]
    assert ray_init[1]["include_dashboard"] is False


def test_an_explicit_auth_mode_is_the_users_choice(ray_init, monkeypatch):
    # A cluster without authentication: no token needed, and the mode stays.
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    connect_ray("10.0.0.1:6379")
    assert ray_init == [
        {"address": "10.0.0.1:6379", "logging_level": logging.WARNING, "RAY_AUTH_MODE": "disabled"}
    ]


def test_a_token_file_is_found_where_ray_looks(ray_init, monkeypatch, tmp_path):
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("abc")
    assert find_token() == str(tmp_path / ".ray" / "auth_token")
    other = tmp_path / "token"
    other.write_text("def")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(other))
    assert find_token() == str(other)
    monkeypatch.setenv("RAY_AUTH_TOKEN", "ghi")
    assert find_token() == "$RAY_AUTH_TOKEN"


def test_token_files_others_can_read_are_made_private(ray_init, tmp_path, caplog, monkeypatch):
    """``ray get-auth-token --generate`` writes mode 0644; whoever reads the token can run
    code on the cluster, so warmtune makes every token file it finds 0600, and says so."""
    default = tmp_path / ".ray" / "auth_token"
    default.parent.mkdir()
    default.write_text("t0")
    default.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="warmtune.connect"):
        assert find_token() == str(default)
    assert default.stat().st_mode & 0o777 == 0o600
    assert "could be read by other users (mode 0o644)" in caplog.text
    assert "made it private (mode 0600)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="warmtune.connect"):
        find_token()  # already private: nothing to say
    assert caplog.text == ""

    elsewhere = tmp_path / "cluster-token"
    elsewhere.write_text("t1")
    elsewhere.chmod(0o640)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(elsewhere))
    assert find_token() == str(elsewhere)
    assert elsewhere.stat().st_mode & 0o777 == 0o600


def test_an_embedded_instance_s_new_token_is_made_private(ray_init, tmp_path, monkeypatch):
    import ray

    token = tmp_path / ".ray" / "auth_token"

    def init(**kwargs):  # what Ray does on first start: generate a token, mode 0644
        token.parent.mkdir(exist_ok=True)
        token.write_text("generated")
        token.chmod(0o644)
        return _Ctx()

    monkeypatch.setattr(ray, "init", init)
    connect_ray("local")
    assert token.stat().st_mode & 0o777 == 0o600
