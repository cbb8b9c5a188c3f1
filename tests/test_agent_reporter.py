"""The reporter: numbering, acknowledgement, the outbox, and the socket-only HTTP client."""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_until
from test_agent_harness import (
    TOKEN,
    ControlPlane,
    control_fixture,  # noqa: F401 - the fixture "control"
)

from trainforge.agent.reporter import Reporter
from trainforge.agent.transport import Connection, _read_chunked


def spec_for(url: str) -> dict:
    return {"control_url": url, "token": TOKEN, "host": "algo-1", "attempt": 1}


@pytest.fixture
def dead_url() -> Iterator[str]:
    """A URL where nothing answers: its port stays bound for the test (no one else can take it) but
    never listens (every connection is refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


def test_events_are_numbered_batched_and_acknowledged(control: ControlPlane, tmp_path: Path) -> None:
    r = Reporter(spec_for(control.url), str(tmp_path / "outbox.jsonl"))
    for i in range(1000):
        r.log(f"line {i}")
    r.start()
    assert r.close(time.time() + 20)
    assert control.logs() == [f"line {i}" for i in range(1000)]
    assert control.next_seq["algo-1"] == 1000
    assert all(req["host"] == "algo-1" and req["attempt"] == 1 for req in control.requests)
    assert r.unacknowledged() == 0


def test_stop_answer_is_handed_over(control: ControlPlane) -> None:
    got: list[str] = []
    r = Reporter(spec_for(control.url), None, on_stop=got.append)
    control.stop = "MaxRuntimeExceeded"
    r.start()
    wait_until(lambda: got, message="the stop answer (a heartbeat carries it)")
    assert got == ["MaxRuntimeExceeded"] and r.stop_reason == "MaxRuntimeExceeded"
    r.close(time.time() + 5)


@pytest.mark.parametrize("status", [401, 403, 404])
def test_gone_answer(control: ControlPlane, status: int) -> None:
    """The job is gone (401, 404), or the control plane refuses this agent's reports (403): it stops."""
    gone = threading.Event()
    control.answer_status = status
    r = Reporter(spec_for(control.url), None, on_gone=gone.set)
    r.log("x")
    r.start()
    wait_until(gone.is_set, message="the job to be gone")
    assert r.gone and not r.close(time.time() + 1)


def test_unacknowledged_events_survive_an_agent_restart(control: ControlPlane, tmp_path: Path, dead_url: str) -> None:
    outbox = tmp_path / "outbox.jsonl"
    first = Reporter(spec_for(dead_url), str(outbox))
    first.status("Downloading", "Downloading input data")
    for i in range(5):
        first.log(f"line {i}")
    first.start()
    assert not first.close(time.time() + 0.3)  # nobody listening
    records = [json.loads(line) for line in outbox.read_text().splitlines()]
    assert [r["seq"] for r in records if "seq" in r] == list(range(6))
    second = Reporter(spec_for(control.url), str(outbox))  # a new agent on the same instance
    second.log("after restart")
    second.start()
    assert second.close(time.time() + 10)
    events = control.host_events()
    assert [e.get("message") for e in events] == ["Downloading input data"] + [f"line {i}" for i in range(5)] + [
        "after restart"]
    assert control.requests[0]["seq"] == 0
    # acknowledged now: a third start resends nothing
    third = Reporter(spec_for(control.url), str(outbox))
    assert third.unacknowledged() == 0


def test_an_unreachable_control_plane_is_not_waited_for_once_the_instance_directory_is_gone(
        tmp_path: Path, dead_url: str) -> None:
    """A removed data directory: nothing will read the outbox again, so the agent stops waiting to
    deliver (it would have waited until the job's deadline, holding its volume and processes)."""
    instance_dir = tmp_path / "algo-1"
    instance_dir.mkdir()
    r = Reporter(spec_for(dead_url), str(instance_dir / "outbox.jsonl"))
    r.status("Completed", "exited")
    r.start()
    box: list[bool] = []
    closing = threading.Thread(target=lambda: box.append(r.close(time.time() + 600)))
    closing.start()
    wait_until(lambda: (instance_dir / "outbox.jsonl").exists(), timeout=30, message="the outbox written")
    assert closing.is_alive()  # still trying to deliver while the directory is there
    for f in instance_dir.iterdir():
        f.unlink()
    instance_dir.rmdir()
    closing.join(30)
    assert not closing.is_alive() and box == [False]


def test_control_plane_restart_on_the_same_port(control: ControlPlane) -> None:
    r = Reporter(spec_for(control.url), None)
    r.log("before")
    r.start()
    wait_until(lambda: control.logs() == ["before"], message="the first line")
    control.down()
    r.log("during")
    wait_until(lambda: r.last_error is not None, message="a report to fail")
    control.up()
    r.log("after")
    assert r.close(time.time() + 10)
    assert control.logs() == ["before", "during", "after"]


def test_chunked_and_closing_answers() -> None:
    assert _read_chunked(io.BytesIO(b"4\r\nWiki\r\n6;ext=1\r\npedia \r\n0\r\nX-Trailer: 1\r\n\r\n")) == b"Wikipedia "
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]

    def serve() -> None:
        for answer in (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
                       b"HTTP/1.0 200 OK\r\n\r\n{\"next_seq\": 3}"):
            conn, _ = srv.accept()
            conn.recv(65536)
            conn.sendall(answer)
            if b"chunked" in answer:  # keep-alive: the second request comes on the same socket
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    c = Connection(f"http://127.0.0.1:{port}", 5)
    assert c.post("/x", b"{}", {}) == (200, b"{}")
    assert c.post("/x", b"{}", {}) == (200, b"ok")
    assert c.post("/x", b"{}", {}) == (200, b'{"next_seq": 3}')
    c.close()
    srv.close()


def test_a_flood_during_an_outage_is_held_back_not_lost(control: ControlPlane, monkeypatch: Any) -> None:
    import trainforge.agent.reporter as reporter_module

    monkeypatch.setattr(reporter_module, "MAX_PENDING_BYTES", 50 * 1024)
    control.down()
    r = Reporter(spec_for(control.url), None)
    r.start()
    done = threading.Event()

    def flood() -> None:
        for i in range(2000):
            r.log(f"line {i}")
        done.set()

    threading.Thread(target=flood, daemon=True).start()
    wait_until(lambda: r.unacknowledged() >= 400, message="the buffer to fill")
    assert not done.wait(0.2)  # the producer is held back at the limit (about 50 KiB of lines)
    assert r.unacknowledged() < 600
    control.up()
    wait_until(done.is_set, message="the flood to get through")
    assert r.close(time.time() + 20)
    assert control.logs() == [f"line {i}" for i in range(2000)]


def test_connects_at_once_and_posts_nothing_before_news(control: ControlPlane) -> None:
    """The connection is made as the reporter starts; its first report carries the first event (an
    empty report would cost the control plane a transaction for nothing)."""
    r = Reporter(spec_for(control.url), None)
    r.start()
    wait_until(lambda: control.connections, message="the reporter's connection")
    r.status("Downloading", "Downloading input data")
    assert r.close(time.time() + 10)
    assert [req["events"][0]["status"] for req in control.requests] == ["Downloading"]
    assert len(control.connections) == 1


def test_log_lines_wait_for_the_next_report_other_events_do_not(control: ControlPlane, monkeypatch: Any) -> None:
    """Log lines printed soon after a report go together with the next one (a line every 20 ms is
    not a report every 20 ms); a status sends them at once, and so does the end."""
    monkeypatch.setattr("trainforge.agent.reporter.LOG_LINGER_SECONDS", 30.0)  # longer than any load
    r = Reporter(spec_for(control.url), None)
    r.start()
    r.status("Training", "Training in progress")
    wait_until(lambda: r.unacknowledged() == 0, message="the status acknowledged")
    for i in range(5):  # a process printing a line every 20 ms
        r.log(f"round {i}")
        time.sleep(0.02)
    r.status("Uploading", "Uploading generated training model")  # not a log line: goes at once
    wait_until(lambda: r.unacknowledged() == 0, timeout=10, message="the lines and the status delivered")
    kinds = [[e.get("status") or e["message"] for e in req["events"]] for req in control.requests]
    assert kinds == [["Training"], ["round 0", "round 1", "round 2", "round 3", "round 4", "Uploading"]]
    r.log("last line")
    assert r.close(time.time() + 10)  # the end sends what waits, however recent the last report
    assert control.logs()[-1] == "last line"


def test_a_waiting_log_line_is_in_the_outbox_before_it_is_sent(control: ControlPlane, tmp_path: Path,
                                                               monkeypatch: Any) -> None:
    """A line waiting for the next report is written to the outbox at once: an agent killed while
    it waits loses nothing (its successor, or the control plane, reads the outbox)."""
    monkeypatch.setattr("trainforge.agent.reporter.LOG_LINGER_SECONDS", 30.0)
    outbox = tmp_path / "outbox.jsonl"
    r = Reporter(spec_for(control.url), str(outbox))
    r.start()
    r.status("Training", "Training in progress")
    wait_until(lambda: r.unacknowledged() == 0, message="the status acknowledged")
    r.log("waiting line")
    wait_until(lambda: "waiting line" in outbox.read_text(), timeout=10, message="the line in the outbox")
    assert "waiting line" not in control.logs()  # not posted: it waits for the next report
    assert r.close(time.time() + 10)
    assert control.logs()[-1] == "waiting line"
