"""``interlock mcp-proxy`` as a user runs it: the CLI in its own process, spoken to by the SDK's
real ``ClientSession`` over stdio and over streamable HTTP, in front of a real upstream.

In stdio mode stdout is the MCP channel: that these sessions work at all shows the CLI prints
nothing there.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import mcp.types as types
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from interlock.audit import open_for_audit
from tests.conftest import RESEARCHER
from tests.integration.test_mcp_proxy import (
    MCP_RIGHTS,
    UPSTREAM,
    decision_hash_in,
    http_upstream,
    permit_mcp,
    seen,
    text_of,
)

EXE = [sys.executable, "-m", "interlock.cli"]

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTERLOCK_")}
    env["INTERLOCK_HOME"] = str(home)
    env["INTERLOCK_PRINCIPAL"] = RESEARCHER
    env.update(extra)
    return env


def records(home: Path) -> list[dict[str, Any]]:
    with open_for_audit(home) as view:
        return [json.loads(d) for _i, _h, d in view.ledger.iter_entries(0)]


def cli(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EXE, *args],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        text=True,
        env=_env(home, **env),
        timeout=60,
        check=False,
    )


async def test_stdio_proxy_governs_a_real_client(home: Path, issue: Any, tmp_path: Path) -> None:
    permit_mcp(home)
    tok = issue(RESEARCHER, *MCP_RIGHTS)
    log = tmp_path / "upstream.log"
    params = StdioServerParameters(
        command=sys.executable,
        args=[*EXE[1:], "mcp-proxy", "--", sys.executable, UPSTREAM],
        # the proxy's environment holds the home, the principal, the token and an execution
        # id (as under `interlock exec`): none of it may reach the upstream
        env=_env(
            home,
            INTERLOCK_CAPABILITY=tok,
            INTERLOCK_EXECUTION_ID="",
            INTERLOCK_EXTRA="x",
            MCP_UPSTREAM_LOG=str(log),
        ),
    )
    errfile = tmp_path / "proxy.err"
    with errfile.open("w", encoding="utf-8") as errlog:
        async with (
            stdio_client(params, errlog=errlog) as (read, write),
            ClientSession(read, write) as client,
        ):
            init = await client.initialize()
            tools = await client.list_tools()
            ok = await client.call_tool("echo", {"text": "through the proxy"})
            denied = await client.call_tool("add", {"a": 1, "b": 2})
            env_keys = await client.call_tool("env_keys", {})

    assert init.server_info.name == "testsrv"
    assert [t.name for t in tools.tools] == ["echo", "add", "hang", "die", "env_keys"]
    assert not ok.is_error and text_of(ok) == "through the proxy"
    assert denied.is_error and "POLICY_FORBID" in text_of(denied)
    assert not env_keys.is_error and json.loads(text_of(env_keys)) == []
    assert [e["name"] for e in seen(log)] == ["echo", "env_keys"]
    err = errfile.read_text(encoding="utf-8")
    assert "serving MCP on stdio" in err and 'McpServer::"testsrv"' in err
    assert tok not in err

    recs = records(home)
    (sess,) = [
        r for r in recs if r["type"] == "decision" and r["request"]["action"] == "mcp.session"
    ]
    assert sess["effect"] == "allow"
    calls = [r for r in recs if r["type"] == "decision" and r["request"]["action"] != "mcp.session"]
    assert [r["parent"] for r in calls] == [sess["id"]] * 3
    deny = next(r for r in calls if r["effect"] == "deny")
    import hashlib

    with open_for_audit(home) as view:
        datas = {json.loads(d)["id"]: d for _i, _h, d in view.ledger.iter_entries(0)}
    assert hashlib.sha256(datas[deny["id"]]).hexdigest() == decision_hash_in(text_of(denied))
    # the client closed stdin: the session ended cleanly
    assert [r["type"] for r in recs if r.get("id") == sess["id"]] == [
        "decision",
        "exec.start",
        "exec.end",
    ]
    assert cli(home, "ledger", "verify").returncode == 0
    replay = cli(home, "ledger", "replay")
    assert replay.returncode == 0, replay.stdout + replay.stderr


def start(home: Path, tok: str, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*EXE, *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(home, INTERLOCK_CAPABILITY=tok),
    )


def _wait_for_url(proc: subprocess.Popen[bytes], timeout: float = 30) -> tuple[str, Path, bytes]:
    """Read the proxy's stderr until it says where it listens and where its token is."""
    assert proc.stderr is not None
    buf = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stderr], [], [], 0.1)
        if ready:
            chunk = os.read(proc.stderr.fileno(), 4096)
            if not chunk:
                break
            buf += chunk
            m = re.search(rb"listening on (http://\S+/mcp) \(bearer token in (\S+)\)", buf)
            if m:
                return m.group(1).decode(), Path(m.group(2).decode()), buf
        elif proc.poll() is not None:
            break
    raise AssertionError(f"the proxy did not start listening: {buf.decode(errors='replace')}")


async def test_listen_serves_streamable_http_in_front_of_an_http_upstream(
    home: Path, issue: Any, tmp_path: Path
) -> None:
    permit_mcp(home)
    tok = issue(RESEARCHER, *MCP_RIGHTS)
    log = tmp_path / "upstream.log"
    with (tmp_path / "upstream.err").open("w") as uperr, http_upstream(log, uperr) as up_url:
        proc = start(
            home,
            tok,
            "mcp-proxy",
            "--upstream-url",
            up_url,
            "--listen",
            "127.0.0.1:0",
            "--name",
            "testsrv",
            "--hide-denied",
        )
        try:
            url, token_path, said = _wait_for_url(proc)
            secret = token_path.read_text(encoding="ascii").strip()
            mode = token_path.stat().st_mode & 0o777
            async with httpx.AsyncClient() as http:
                # the MCP initialize a stranger would send: refused before anything is decided
                hello = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
                kinds = {"content-type": "application/json"}
                none = await http.post(url, json=hello, headers=kinds)
                wrong = await http.post(
                    url, json=hello, headers={**kinds, "authorization": "Bearer " + "A" * 43}
                )
            async with (
                httpx.AsyncClient(headers={"authorization": f"Bearer {secret}"}) as authed,
                streamable_http_client(url, http_client=authed) as (read, write),
                ClientSession(read, write) as client,
            ):
                await client.initialize()
                tools = await client.list_tools()
                ok = await client.call_tool("echo", {"text": "over http twice"})
                denied = await client.call_tool("add", {"a": 1, "b": 2})
        finally:
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=30)

    assert proc.returncode == 0, err.decode(errors="replace")
    assert out == b""
    assert none.status_code == 401 and wrong.status_code == 401
    assert mode == 0o600
    assert token_path.parent == home / "run"
    assert not token_path.exists()  # removed at exit
    assert secret.encode() not in said + err  # printed nowhere, only its path
    assert [t.name for t in tools.tools] == ["echo", "hang", "die", "env_keys"]  # add: hidden
    assert not ok.is_error and text_of(ok) == "over http twice"
    assert isinstance(denied, types.CallToolResult) and denied.is_error
    assert "POLICY_FORBID" in text_of(denied)
    assert [e["name"] for e in seen(log)] == ["echo"]
    recs = records(home)
    assert secret not in json.dumps(recs)
    (sess,) = [
        r for r in recs if r["type"] == "decision" and r["request"]["action"] == "mcp.session"
    ]
    # SIGTERM ended the session cleanly
    assert [r["type"] for r in recs if r.get("id") == sess["id"]][-1] == "exec.end"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead too
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        return fh.read().split(") ")[-1][:1] != "Z"


def test_sigterm_ends_a_stdio_session_cleanly(home: Path, issue: Any, tmp_path: Path) -> None:
    """SIGTERM while the client keeps stdin open: the session's exec.end is recorded and the
    upstream is stopped."""
    permit_mcp(home)
    tok = issue(RESEARCHER, *MCP_RIGHTS)
    proc = subprocess.Popen(
        [*EXE, "mcp-proxy", "--", sys.executable, UPSTREAM],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(home, INTERLOCK_CAPABILITY=tok),
    )
    try:
        assert proc.stderr is not None
        buf = b""
        deadline = time.monotonic() + 30
        while b"serving MCP on stdio" not in buf and time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stderr], [], [], 0.1)
            if ready:
                buf += os.read(proc.stderr.fileno(), 4096)
        assert b"serving MCP on stdio" in buf, buf
        with open(f"/proc/{proc.pid}/task/{proc.pid}/children", encoding="ascii") as fh:
            (upstream_pid,) = (int(p) for p in fh.read().split())
        proc.send_signal(signal.SIGTERM)
        out, _err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    assert out == b""
    deadline = time.monotonic() + 10
    while _alive(upstream_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(upstream_pid)
    recs = records(home)
    (sess,) = [
        r for r in recs if r["type"] == "decision" and r["request"]["action"] == "mcp.session"
    ]
    assert [r["type"] for r in recs if r.get("id") == sess["id"]] == [
        "decision",
        "exec.start",
        "exec.end",
    ]


def test_a_client_line_over_the_limit_ends_the_session(home: Path, issue: Any) -> None:
    """A client that sends more than MAX_LINE_BYTES without a newline does not grow the
    proxy's memory: the session ends at once (stdin still open), exec.end is recorded with the
    error, the reason is on stderr, and the exit status is 1."""
    from interlock.adapters.mcp_proxy import MAX_LINE_BYTES

    permit_mcp(home)
    tok = issue(RESEARCHER, *MCP_RIGHTS)
    proc = subprocess.Popen(
        [*EXE, "mcp-proxy", "--", sys.executable, UPSTREAM],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(home, INTERLOCK_CAPABILITY=tok),
    )
    try:
        assert proc.stdin is not None and proc.stderr is not None and proc.stdout is not None
        buf = b""
        deadline = time.monotonic() + 30
        while b"serving MCP on stdio" not in buf and time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stderr], [], [], 0.1)
            if ready:
                buf += os.read(proc.stderr.fileno(), 4096)
        assert b"serving MCP on stdio" in buf, buf
        proc.stdin.write(b"x" * (MAX_LINE_BYTES + 1))  # no newline, and stdin stays open
        proc.stdin.flush()
        proc.wait(timeout=30)
        err = buf + proc.stderr.read()
        out = proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    assert proc.returncode == 1, err
    assert out == b""
    text = " ".join(err.decode(errors="replace").split())
    assert f"the client sent a line longer than {MAX_LINE_BYTES} bytes" in text, text
    recs = records(home)
    (sess,) = [
        r for r in recs if r["type"] == "decision" and r["request"]["action"] == "mcp.session"
    ]
    mine = [r for r in recs if r.get("id") == sess["id"]]
    assert [r["type"] for r in mine] == ["decision", "exec.start", "exec.end"]
    assert (mine[-1]["outcome"], mine[-1]["error_type"]) == ("error", "ClientLineTooLong")


def test_denied_session_exits_1_and_serves_nothing(home: Path, issue: Any, tmp_path: Path) -> None:
    """The default policy permits no MCP session."""
    tok = issue(RESEARCHER, *MCP_RIGHTS)
    log = tmp_path / "upstream.log"
    res = cli(
        home,
        "mcp-proxy",
        "--name",
        "testsrv",
        "--",
        sys.executable,
        UPSTREAM,
        INTERLOCK_CAPABILITY=tok,
        MCP_UPSTREAM_LOG=str(log),
    )
    assert res.returncode == 1
    assert res.stdout == ""
    assert "session denied" in res.stderr and "POLICY_NO_PERMIT" in res.stderr
    assert seen(log) == []


def test_upstream_that_cannot_start_exits_1(home: Path, issue: Any) -> None:
    permit_mcp(home)
    tok = issue(RESEARCHER, *MCP_RIGHTS)
    res = cli(home, "mcp-proxy", "--", "/nonexistent/server", INTERLOCK_CAPABILITY=tok)
    assert res.returncode == 1
    assert res.stdout == ""
    assert "upstream failed" in res.stderr and "cannot start the upstream" in res.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["mcp-proxy"], "exactly one"),
        (["mcp-proxy", "--upstream-url", "http://127.0.0.1:9/mcp", "--", "x"], "exactly one"),
        (["mcp-proxy", "--upstream-url", "ftp://host/mcp"], "not an http(s) URL"),
        (["mcp-proxy", "--listen", "0.0.0.0:0", "--", "x"], "refusing to listen"),
        (["mcp-proxy", "--listen", "nope", "--", "x"], "HOST:PORT"),
        (["mcp-proxy", "--capability", "-", "--", "x"], "stdin is the MCP channel"),
        (["mcp-proxy", "--name", "a/b", "--", "x"], "cannot name an MCP server"),
        (["mcp-proxy", "--timeout", "0s", "--", "x"], "must be positive"),
    ],
)
def test_usage_errors_exit_2(home: Path, args: list[str], message: str) -> None:
    from typer.testing import CliRunner

    from interlock.cli import app

    runner = CliRunner()
    res = runner.invoke(app, args, env=_env(home, INTERLOCK_CAPABILITY="not-a-token"))
    assert res.exit_code == 2, res.output
    assert res.stdout == ""
    assert message in " ".join(res.stderr.split()), res.stderr


def test_p7_benchmark_smoke() -> None:
    """``bench_mcp_proxy`` measures both arms and reports in the ``interlock bench`` shape."""
    from interlock.bench.mcp import bench_mcp_proxy

    p7 = bench_mcp_proxy(quick=True)["P7"]
    assert p7["unit"] == "ms" and p7["calls"] == 200
    assert p7["value"] > 0 and p7["baseline"] > 0
    assert p7["added_p50_ms"] == pytest.approx(p7["value"] - p7["baseline"], abs=0.002)
    assert p7["goal"] == "p50 <= 1 ms and p99 <= 3 ms over a direct call"
    assert p7["met"] == (p7["added_p50_ms"] <= 1.0 and p7["added_p99_ms"] <= 3.0)
