"""connect_ray's token handling, without a cluster: what it asks of Ray, and the
message when there is no token. tests/cluster/test_fault_tolerance.py connects
drivers to a real token cluster."""

from __future__ import annotations

import logging
import os

import pytest

from warmtune.cluster.connect import RayAuthError, connect_ray, find_token


class _Ctx:
    dashboard_url = None
    address_info = {"gcs_address": "10.0.0.1:6379"}


@pytest.fixture
def ray_init(monkeypatch, tmp_path):
    """ray.init replaced by a recorder of its arguments and of RAY_AUTH_MODE at the
    call; HOME without a token, and no Ray variables."""
    import ray
    import ray._private.ray_constants as ray_constants

    for var in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(var, raising=False)
    # connect_ray may set these for a loopback node; restored after each test.
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "1")
    monkeypatch.delenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", ray_constants.ENABLE_RAY_CLUSTER)
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
    with caplog.at_level(logging.WARNING, logger="warmtune.cluster.connect"):
        assert find_token() == str(default)
    assert default.stat().st_mode & 0o777 == 0o600
    assert "could be read by other users (mode 0o644)" in caplog.text
    assert "made it private (mode 0600)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="warmtune.cluster.connect"):
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


def test_a_loopback_cluster_keeps_this_process_on_loopback(ray_init, monkeypatch):
    """Ray turns 127.0.0.1 into the machine's network address, where a loopback cluster
    (cluster/local/start.sh's default) does not listen; connect_ray keeps it."""
    import ray._private.ray_constants as ray_constants
    import ray._private.worker
    from ray._private.services import get_node_ip_address, resolve_ip_for_localhost

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # no token needed for this test
    monkeypatch.delenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", raising=False)
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", True)  # restored afterwards
    # As in a fresh process (the session's embedded Ray would answer for its own node).
    monkeypatch.setattr(ray._private.worker, "_global_node", None)
    for address in ("10.0.0.1:6379", "ray://10.0.0.1:10001", "cluster.example:6379"):
        connect_ray(address)
    assert ray_constants.ENABLE_RAY_CLUSTER
    assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in os.environ

    for address in ("127.0.0.1:6390", "localhost:6390", "ray://127.0.0.1:10001", "[::1]:6390"):
        monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", True)
        connect_ray(address)
        assert not ray_constants.ENABLE_RAY_CLUSTER, address
        assert resolve_ip_for_localhost("127.0.0.1") == get_node_ip_address() == "127.0.0.1"
    # The job's child processes (Ray's workers read it on import) as well.
    assert os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"


def test_auto_follows_ray_address_to_a_loopback_cluster(ray_init, monkeypatch):
    import ray._private.ray_constants as ray_constants

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.delenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", raising=False)
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", True)
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    connect_ray("auto")
    assert ray_constants.ENABLE_RAY_CLUSTER
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6390")  # how a submitted job's driver runs
    connect_ray("auto")
    assert not ray_constants.ENABLE_RAY_CLUSTER


def test_a_new_embedded_instance_listens_on_loopback(ray_init, monkeypatch):
    import ray._private.ray_constants as ray_constants
    import ray._private.services as services

    # No `ray start` cluster on this machine, whatever /tmp/ray holds.
    monkeypatch.setattr(services, "find_gcs_addresses", lambda: [])
    monkeypatch.setattr(services, "find_bootstrap_address", lambda temp_dir: None)

    monkeypatch.delenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", raising=False)
    for address in ("local", None):
        monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", True)
        connect_ray(address)  # no RAY_ADDRESS, no `ray start` cluster on this machine
        assert not ray_constants.ENABLE_RAY_CLUSTER, address
