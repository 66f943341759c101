"""Secrets (issue 12, items 14 and 15): planted in the environment and in base_url, then searched
for in every file the harness writes (run folder, report, cache) and everything it prints.

Real runs of ``harness run`` against the fault server on 127.0.0.1; the server is set up to be
careless (it repeats the Authorization header it was sent, in error messages and in answers).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from harness.cli import main
from harness.config import load_judge
from harness.credentials import endpoint, redact_url, scrub, without_userinfo
from harness.engine.runner import bind_judges
from harness.testing.fault_server import RunningServer, start_fault_server
from tests.helpers import write_tiny_suite

KEY = "sk-planted-key-7Hq2Lr9Zx4Vb"
PASSWORD = "pw-planted-3Jk8Tn"
QUERY_SECRET = "qs-planted-5Wd1Mc"
BASIC = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
PLANTED = (KEY, PASSWORD, QUERY_SECRET, BASIC)


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with start_fault_server(api_key=KEY, echo_auth=True, seed=3) as running:
        yield running


def judge_file(folder: Path, judge_id: str, base_url: str, key_env: str | None) -> Path:
    options = {"base_url": base_url, "model": "fault-judge", "timeout_s": 5}
    if key_env:
        options["api_key_env"] = key_env
    body = {"id": judge_id, "backend": "openai", "options": options, "retries": 0}
    path = folder / f"{judge_id}.yaml"
    path.write_text(yaml.safe_dump(body), encoding="utf-8")
    return path


def suite_naming(folder: Path, judge: Path) -> Path:
    """The tiny suite, listing ``judge`` in its own ``judges:``."""
    suite = write_tiny_suite(folder)
    text = suite.read_text(encoding="utf-8").replace("judges: [rules]", f"judges: [{judge.name}]")
    suite.write_text(text, encoding="utf-8")
    return suite


def every_written_byte(*roots: Path) -> list[tuple[Path, bytes]]:
    return [(p, p.read_bytes()) for root in roots for p in sorted(root.rglob("*")) if p.is_file()]


def test_a_suites_own_judge_may_not_read_a_secret(
    server: RunningServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("PLANTED_AWS_SECRET", KEY)
    judge = judge_file(tmp_path, "evil", server.base_url, "PLANTED_AWS_SECRET")
    suite = suite_naming(tmp_path, judge)
    server.reset()
    code = main(["run", str(suite), "--out", str(tmp_path / "out"), "--quiet", "--no-cache"])
    err = capsys.readouterr().err
    assert code == 2 and server.stats()["requests"] == 0
    assert "PLANTED_AWS_SECRET" in err and "127.0.0.1" in err and str(judge) in err
    assert "--judge" in err and "--trust-suite-judges" in err and KEY not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("how", ["trust flag", "named with --judge"])
def test_a_judge_the_user_chose_may_and_says_where_the_secret_goes(
    how: str,
    server: RunningServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("PLANTED_KEY", KEY)
    judge = judge_file(tmp_path, "mine", server.base_url, "PLANTED_KEY")
    suite = suite_naming(tmp_path, judge)
    extra = ["--trust-suite-judges"] if how == "trust flag" else ["-j", str(judge)]
    out = tmp_path / "out"
    server.reset()
    code = main(["run", str(suite), "--out", str(out), "--quiet", "--no-cache", *extra])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "judge 'mine' sends $PLANTED_KEY to 127.0.0.1 (http)" in captured.err
    assert "warning" not in captured.err  # plain http, but to this machine
    assert server.stats()["ok"] > 0 and server.stats()["unauthorized"] == 0
    for path, data in every_written_byte(out):
        assert KEY.encode() not in data, path  # echoed in every answer, scrubbed from all


def test_planted_secrets_never_reach_any_file_or_output(
    server: RunningServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A key from the environment, a query secret, and user:password in base_url; the server echoes
    what it was sent in answers and in its 401 errors. None of it may be written or printed."""
    monkeypatch.setenv("PLANTED_KEY", KEY)
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    root = server.base_url
    keyed = judge_file(
        tmp_path, "keyed", f"{root}?api-version=2024-02-01&sig={QUERY_SECRET}", "PLANTED_KEY"
    )
    basic = judge_file(tmp_path, "basic", root.replace("://", f"://alice:{PASSWORD}@"), None)
    suite = write_tiny_suite(tmp_path)
    out = tmp_path / "out"
    server.reset()
    code = main(["run", str(suite), "-j", str(keyed), "-j", str(basic), "--out", str(out)])
    printed = capsys.readouterr()
    assert code == 1  # the "basic" judge is refused by the server: error verdicts, exit 1
    stats = server.stats()
    assert stats["ok"] > 0 and stats["unauthorized"] > 0
    targets = server.targets()
    assert {"path_qs": f"/v1/chat/completions?api-version=2024-02-01&sig={QUERY_SECRET}",
            "auth": "Bearer"} in targets  # fmt: skip
    assert {"path_qs": "/v1/chat/completions", "auth": "Basic"} in targets
    written = every_written_byte(out, tmp_path / "cache")
    assert any(p.name == "report.html" for p, _ in written)
    assert any(p.name.startswith("judge-cache") for p, _ in written)
    for secret in PLANTED:
        for path, data in written:
            assert secret.encode() not in data, (secret, path)
        assert secret not in printed.out + printed.err, secret
    manifest = next(data for p, data in written if p.name == "manifest.json").decode()
    assert "http://***@127.0.0.1" in manifest and "api-version=2024-02-01" in manifest


def test_a_key_over_plain_http_to_another_machine_is_warned_about(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PLANTED_KEY", KEY)
    for url in ("http://192.0.2.7:8000/v1", "https://192.0.2.7/v1", "http://localhost:1/v1"):
        path = judge_file(tmp_path, "far", url, "PLANTED_KEY")
        body = yaml.safe_load(path.read_text(encoding="utf-8"))
        body["options"]["fingerprint"] = False  # no probe: the address does not answer
        path.write_text(yaml.safe_dump(body), encoding="utf-8")
        bind_judges([load_judge(str(path))])
        err = capsys.readouterr().err
        assert "sends $PLANTED_KEY to" in err
        assert ("warning" in err) == url.startswith("http://192"), (url, err)


def test_urls_keep_their_query_after_the_endpoint_path_and_redact_credentials() -> None:
    azure = "https://x.openai.azure.com/openai/deployments/gpt4?api-version=2024-02-01"
    assert endpoint(azure, "chat/completions") == (
        "https://x.openai.azure.com/openai/deployments/gpt4/chat/completions?api-version=2024-02-01"
    )
    assert endpoint("http://127.0.0.1:8000/v1/", "models") == "http://127.0.0.1:8000/v1/models"
    url = f"https://alice:{PASSWORD}@h.example:8443/v1?api-key={QUERY_SECRET}&api-version=1#frag"
    shown = redact_url(url)
    assert shown == "https://***@h.example:8443/v1?api-key=***&api-version=1#***"
    assert without_userinfo(url).startswith("https://h.example:8443/v1?")
    assert redact_url("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000/v1"
    assert scrub(f"a {PASSWORD} b pw-planted-3Jk8Tn%21", [PASSWORD]) == "a *** b ***%21"
