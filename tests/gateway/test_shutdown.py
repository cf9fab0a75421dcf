"""SIGTERM with event streams open: the gateway ends each stream cleanly at once (the client
then resumes elsewhere with Last-Event-ID) and exits 0, without a traceback."""

from __future__ import annotations

import signal
import time

import httpx

from tests.gateway.conftest import LONG_SPEC, TERMINAL, Stack, create_job, start_gateway, stop
from tests.gateway.sse_client import frames

# Only bounds the test when something hangs; the gateway is expected to be much faster.
EXIT_TIMEOUT_SECONDS = 30


def test_sigterm_ends_open_event_streams_and_exits_cleanly(
    stack: Stack, client: httpx.Client
) -> None:
    gateway = start_gateway(stack.export.address)
    job_id = ""
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{gateway.port}", timeout=30) as http:
            job_id = create_job(http, LONG_SPEC)["id"]
            with http.stream("GET", f"/api/jobs/{job_id}/events") as response:
                assert response.status_code == 200
                stream = frames(response)
                first_event = next(frame for frame in stream if frame.data)
                assert first_event.job["id"] == job_id
                assert first_event.job["status"] not in TERMINAL
                gateway.send_signal(signal.SIGTERM)
                # Read to the end: a cut stream (no final chunk) raises here instead.
                rest = list(stream)
        assert rest, "the stream ended without a word"
        assert "gateway shutting down" in rest[-1].comments
        assert all(frame.event in (None, "progress") for frame in rest)
        # Waits for the exit (and for its output to be read); SIGKILL past the deadline.
        assert gateway.wait_stopped(time.monotonic() + EXIT_TIMEOUT_SECONDS) == 0, gateway.log()
        output = gateway.log()
        assert "Traceback" not in output, output
        assert "graceful shutdown exceeded" not in output, output
    finally:
        stop(gateway)
        if job_id:
            # The session's own gateway, which is still up, cancels the long render.
            cancelled = client.post(f"/api/jobs/{job_id}/cancel")
            assert cancelled.status_code == 200, cancelled.text
