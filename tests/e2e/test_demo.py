"""``trunkline up`` as a newcomer runs it: start, paste the two exports, use the OpenAI SDK."""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
from pathlib import Path

import httpx
import openai
import pytest

from support.processes import TRUNKLINE, Proc, trunkline_env
from support.raw_http import read_slowly
from support.servers import free_port
from trunkline.apps.request_context import CUT
from unit.metering.usage_support import a_month_of_usage, migrated

REPO = Path(__file__).resolve().parents[2]
EXPORT = b"GET /api/v1/billing/exports/2026-11 HTTP/1.1\r\nhost: t\r\nauthorization: Bearer "


def _start(
    workdir: Path, gateway_port: int, cp_port: int, log: str, time_scale: float = 0.02, **more: str
) -> Proc:
    env = trunkline_env(
        TRUNKLINE_GATEWAY__PORT=str(gateway_port),
        TRUNKLINE_CONTROLPLANE__PORT=str(cp_port),
        TRUNKLINE_GATEWAY__HEADER_TIMEOUT_S="1",
        TRUNKLINE_CONTROLPLANE__HEADER_TIMEOUT_S="1",
        **more,
    )
    command = [*TRUNKLINE, "up", "--time-scale", str(time_scale)]
    proc = Proc(command, env, workdir, workdir / log)
    proc.wait_until(lambda: "Press Ctrl-C to stop." in proc.output(), "the demo banner")
    return proc


def _exports(banner: str) -> dict[str, str]:
    found = dict(re.findall(r"^\s*export (OPENAI_BASE_URL|OPENAI_API_KEY)=(\S+)$", banner, re.M))
    assert set(found) == {"OPENAI_BASE_URL", "OPENAI_API_KEY"}, banner
    return found


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "tenants", tmp_path / "tenants")
    return tmp_path


def test_demo_serves_the_openai_sdk_and_restarts_on_the_same_database(workdir: Path) -> None:
    gateway_port, cp_port = free_port(), free_port()
    proc = _start(workdir, gateway_port, cp_port, "first.log")
    try:
        exports = _exports(proc.output())
        client = openai.OpenAI(
            base_url=exports["OPENAI_BASE_URL"], api_key=exports["OPENAI_API_KEY"], max_retries=0
        )
        assert {m.id for m in client.models.list()} == {"llama-3.1-8b", "bge-small"}
        messages = [{"role": "user", "content": "hello from the e2e test"}]
        reply = client.chat.completions.create(model="llama-3.1-8b", messages=messages)  # type: ignore[arg-type]
        assert reply.choices[0].message.content
        assert reply.usage is not None and reply.usage.prompt_tokens > 0
        assert reply.usage.completion_tokens > 0
        chunks = list(
            client.chat.completions.create(model="llama-3.1-8b", messages=messages, stream=True)  # type: ignore[arg-type]
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text and all(c.usage is None for c in chunks)
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(
                base_url=exports["OPENAI_BASE_URL"], api_key="tlk_wrong", max_retries=0
            ).models.list()
        _revoke_from_another_shell(workdir, exports["OPENAI_API_KEY"], proc, client)
    finally:
        assert proc.stop(signal.SIGINT) == 0, proc.output()
    assert "Trunkline stopped." in proc.output()
    db = sqlite3.connect(workdir / ".trunkline" / "trunkline.db")
    rows = db.execute(
        "select stream, status, prompt_tokens, completion_tokens from usage_events"
    ).fetchall()
    assert sorted(rows) == sorted(
        [(0, 200, rows[0][2], rows[0][3]), (1, 200, rows[1][2], rows[1][3])]
    )
    assert all(prompt > 0 and completion > 0 for _s, _st, prompt, completion in rows)

    again = _start(workdir, gateway_port, cp_port, "second.log")
    try:
        # The revoked demo key is replaced by a fresh one; everything else is reused.
        renewed = _exports(again.output())["OPENAI_API_KEY"]
        assert renewed != exports["OPENAI_API_KEY"]
        assert "manifests applied changes=0" in again.output()
        assert "Traceback" not in again.output()
        client = openai.OpenAI(base_url=exports["OPENAI_BASE_URL"], api_key=renewed, max_retries=0)
        assert client.models.list().data
        # Both servers close a connection that sends no request (the header timeout).
        assert _sent_before_closing(gateway_port) == _sent_before_closing(cp_port) == b""
    finally:
        assert again.stop(signal.SIGINT) == 0, again.output()


def test_ctrl_c_ends_a_long_stream_after_the_drain_timeout_and_meters_it(workdir: Path) -> None:
    """Ctrl-C waited for every stream in flight to end by itself (minutes for a long one, an
    engine gone silent up to the read timeout), saying nothing; a second Ctrl-C did not help.
    It now waits ``TRUNKLINE_GATEWAY__DRAIN_TIMEOUT_S`` as ``trunkline gateway`` does, then
    ends the stream and meters what it streamed."""
    proc = _start(
        workdir, free_port(), free_port(), "up.log", time_scale=1.0,
        TRUNKLINE_GATEWAY__DRAIN_TIMEOUT_S="1",
    )  # fmt: skip
    try:
        exports = _exports(proc.output())
        client = openai.OpenAI(
            base_url=exports["OPENAI_BASE_URL"], api_key=exports["OPENAI_API_KEY"], max_retries=0
        )
        stream = client.chat.completions.create(
            model="llama-3.1-8b",
            messages=[{"role": "user", "content": "a long story"}],
            max_tokens=20_000,  # minutes of decoding at the simulated engine's pace
            stream=True,
        )
        received = 0
        with contextlib.suppress(openai.APIError, httpx.HTTPError):
            for _chunk in stream:
                received += 1
                if received == 20:
                    proc.popen.send_signal(signal.SIGINT)
    finally:
        assert proc.stop(signal.SIGINT, timeout_s=60) == 0, proc.output()
    assert received >= 20
    db = sqlite3.connect(workdir / ".trunkline" / "trunkline.db")
    [(status, completion)] = db.execute(
        "select status, completion_tokens from usage_events where stream"
    ).fetchall()
    assert status == 499
    assert completion >= received - 2  # what it streamed (the role chunk has none)


def test_ctrl_c_cuts_a_control_plane_export_after_the_drain_timeout(workdir: Path) -> None:
    """The control plane of ``trunkline up`` waited for an export to a client reading slowly
    for as long as the client liked; it now waits ``TRUNKLINE_CONTROLPLANE__DRAIN_TIMEOUT_S``
    as ``trunkline controlplane`` does, then cuts it (its chunked body never ends) and logs so."""
    (workdir / ".trunkline").mkdir()
    a_month_of_usage(migrated(f"sqlite:///{workdir / '.trunkline' / 'trunkline.db'}"))
    cp_port = free_port()
    proc = _start(
        workdir, free_port(), cp_port, "up.log", TRUNKLINE_CONTROLPLANE__DRAIN_TIMEOUT_S="1"
    )
    try:
        issued = subprocess.run(
            [*TRUNKLINE, "tenants", "admin-token", "--email", "ops@example.com"],
            cwd=workdir, env=trunkline_env(), capture_output=True, check=True, timeout=60,
        )  # fmt: skip
        token = issued.stdout.strip()
        request = EXPORT + token + b"\r\n\r\n"
        with read_slowly(cp_port, request) as export:  # megabytes: more than sockets buffer
            assert export.head.startswith(b"HTTP/1.1 200 "), export.head
            proc.popen.send_signal(signal.SIGINT)
            assert proc.popen.wait(60) == 0, proc.output()
            body = export.until_closed()
    finally:
        proc.stop(signal.SIGINT)
    assert not body.endswith(b"\r\n0\r\n\r\n"), "the export ended as if it were whole"
    assert f"GET /api/v1/billing/exports/2026-11 200 {CUT}" in proc.output()


def _sent_before_closing(port: int) -> bytes:
    """What the server sends on a connection that sends nothing, up to closing it (within a
    generous 30 s: it fails on a timeout otherwise)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        return conn.recv(1024)


def _revoke_from_another_shell(workdir: Path, key: str, proc: Proc, client: openai.OpenAI) -> None:
    """``trunkline keys revoke`` in a second process reaches the running embedded gateway."""
    revoke = subprocess.run(
        [*TRUNKLINE, "keys", "revoke", key.split("_")[1]],
        cwd=workdir,
        env=trunkline_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert revoke.returncode == 0, revoke.stderr

    def refused() -> bool:
        try:
            client.models.list()
        except openai.AuthenticationError:
            return True
        return False

    proc.wait_until(refused, "the revoked key to be refused", timeout_s=10)
