"""The serve hardening that needs no socket: Host names, the Host check, Retry-After, feedback file mode,
the default adapter roots and the trust_remote_code refusal.

    OMP_NUM_THREADS=1 pytest -q tests/unit/test_serve_guard.py

Stalled and abandoned uploads need a real socket: tests/e2e/test_serve_hardening.py.
"""

from __future__ import annotations

import stat

import pytest
import yaml
from fastapi.testclient import TestClient

from seektune.runs import RunDir
from seektune.serve.app import build_app
from seektune.serve.catalog import RemoteCodeNotAllowed, check_remote_code, default_allowed_run_dirs
from seektune.serve.feedback import FeedbackStore
from seektune.serve.guard import default_allowed_hosts, host_name
from seektune.serve.routes import completions, health
from tests.unit.test_serve_routes import chat, make_state


@pytest.mark.parametrize(("header", "name"), [
    ("127.0.0.1:8000", "127.0.0.1"), ("LocalHost", "localhost"), ("[::1]:8000", "[::1]"), ("[::1]", "[::1]"),
    ("::1", "[::1]"), ("evil.example:80", "evil.example"), ("", "")])
def test_host_name_drops_the_port_and_case(header, name):
    assert host_name(header) == name


def test_default_hosts_are_the_bound_host_and_loopback():
    assert default_allowed_hosts("127.0.0.1") == ["127.0.0.1", "localhost", "[::1]"]
    assert default_allowed_hosts("10.0.0.5") == ["10.0.0.5", "localhost", "127.0.0.1", "[::1]"]


def test_a_foreign_host_gets_a_400_in_openais_shape(tmp_path):
    state = make_state(tmp_path, allowed_hosts=default_allowed_hosts("127.0.0.1"))
    with TestClient(build_app(state, [completions.router, health.router]), base_url="http://localhost:8000") as client:
        assert client.get("/health").status_code == 200
        assert chat(client).status_code == 200
        assert client.get("/health", headers={"Host": "127.0.0.1:1234"}).status_code == 200
        refused = client.get("/health", headers={"Host": "rebind.evil.example:8000"})
    assert refused.status_code == 400
    assert refused.json()["error"] == {
        "message": "Host 'rebind.evil.example' is not served here; start the server with "
                   "--allowed-host rebind.evil.example to accept it.",
        "type": "invalid_request_error", "param": "Host", "code": "host_not_allowed"}
    assert state.metrics.registry.get_sample_value(
        "seektune_requests_total", {"route": "/health", "status": "400"}) == 1


def test_allowed_host_star_and_no_setting_accept_any_host(tmp_path):
    for hosts in (["*"], None):
        with TestClient(build_app(make_state(tmp_path, allowed_hosts=hosts), [health.router]),
                        base_url="http://anything.example") as client:
            assert client.get("/health").status_code == 200


def test_429_carries_retry_after(tmp_path):
    with TestClient(build_app(make_state(tmp_path, max_concurrency=0), [completions.router])) as client:
        refused = chat(client)
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"


def test_the_feedback_file_is_readable_by_its_owner_only(tmp_path):
    store = FeedbackStore(tmp_path / "fb" / "feedback.sqlite")
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600


def _run(path, trust_remote_code: bool) -> RunDir:
    run = RunDir(path)
    run.path.mkdir(parents=True)
    run.resolved_recipe.write_text(yaml.safe_dump({
        "model": {"name": "smollm2-135m-instruct", "trust_remote_code": trust_remote_code},
        "data": {"paths": ["faq.jsonl"]}, "output_dir": str(path)}), encoding="utf-8")
    return run


def test_adapters_default_to_the_served_runs_siblings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _run(tmp_path / "runs" / "shop", trust_remote_code=False)
    assert default_allowed_run_dirs(str(tmp_path / "runs" / "shop")) == [(tmp_path / "runs").resolve()]
    assert default_allowed_run_dirs("runs/shop") == [(tmp_path / "runs").resolve()]
    assert default_allowed_run_dirs("smollm2-135m-instruct") == [tmp_path]  # a model, not a run: the cwd


def test_a_run_asking_for_remote_code_needs_the_flag(tmp_path):
    check_remote_code(_run(tmp_path / "plain", trust_remote_code=False), trust_remote_code=False)
    remote = _run(tmp_path / "remote", trust_remote_code=True)
    with pytest.raises(RemoteCodeNotAllowed, match="pass --trust-remote-code to seektune serve"):
        check_remote_code(remote, trust_remote_code=False)
    check_remote_code(remote, trust_remote_code=True)


def test_serve_refuses_a_remote_code_run_in_one_line_naming_the_flag(tmp_path):
    from typer.testing import CliRunner

    from seektune.cli import app

    _run(tmp_path / "remote", trust_remote_code=True)
    result = CliRunner().invoke(app, ["serve", str(tmp_path / "remote"), "--port", "1"])
    assert result.exit_code != 0
    assert "pass --trust-remote-code to seektune serve" in result.output
    assert "Traceback" not in result.output
