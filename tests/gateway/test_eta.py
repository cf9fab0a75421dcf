"""A running job's ETA is an estimate shown to a tenth of a second in every view: the job JSON,
its event stream and the export service's gRPC API (never 111.26728971962618)."""

from __future__ import annotations

from typing import Any

import grpc
import httpx

from tests.gateway.conftest import LONG_SPEC, Stack, create_job, wait_terminal
from tests.gateway.sse_client import events
from tests.support.polling import poll_until
from videojob.export.v1 import export_pb2, export_pb2_grpc

ESTIMATES = 3


def rounded(eta: float) -> bool:
    return eta == round(eta, 1)


def test_eta_is_rounded_in_json_sse_and_grpc(client: httpx.Client, stack: Stack) -> None:
    job = create_job(client, LONG_SPEC)
    try:
        # The job JSON.
        def estimating() -> Any:
            current = client.get(f"/api/jobs/{job['id']}").json()
            return current if current["etaSeconds"] is not None else None

        seen = [poll_until(estimating, "an ETA in the job JSON", 60, 0.1)["etaSeconds"]]
        # The event stream.
        with client.stream("GET", f"/api/jobs/{job['id']}/events") as response:
            streamed = (frame.job["etaSeconds"] for frame in events(response))
            for eta in streamed:
                if eta is not None:
                    seen.append(eta)
                if len(seen) > ESTIMATES:
                    break
        # The export service's gRPC API.
        with grpc.insecure_channel(stack.export.address) as channel:
            stub = export_pb2_grpc.ExportServiceStub(channel)
            updates = stub.WatchExport(export_pb2.WatchExportRequest(id=job["id"]), timeout=60)
            from_grpc = []
            for update in updates:
                if update.eta_seconds > 0:
                    from_grpc.append(update.eta_seconds)
                if len(from_grpc) >= ESTIMATES:
                    break  # closing the channel ends the call
    finally:
        client.post(f"/api/jobs/{job['id']}/cancel")
        wait_terminal(client, job["id"])
    assert all(rounded(eta) for eta in seen), seen
    assert all(rounded(eta) for eta in from_grpc), from_grpc
