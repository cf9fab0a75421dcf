"""The one mapping of domain errors to gRPC statuses (videojob.grpc_errors), on a real gRPC
server: unary and server-streaming methods, before and after a stream has yielded, and what it
must leave alone (a servicer's own abort, a bug)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest

from videojob.errors import (
    FailedPrecondition,
    InvalidArgument,
    MalformedArgument,
    NotFound,
    Reason,
    ViolationKind,
    http_status_for,
)
from videojob.grpc_errors import error_info, field_violation
from videojob.grpc_setup import bind, create_channel, create_server

SERVICE = "videojob.test.Errors"
Handler = Callable[[bytes, grpc.aio.ServicerContext[bytes, bytes]], Any]


async def bad_field(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    raise InvalidArgument("spec.output.fps", "must be at most 240")


async def bad_token(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    raise MalformedArgument("page_token", "is not a token this service issued")


async def unknown(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    raise NotFound("job 'x' not found")


async def own_abort(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    await context.abort(grpc.StatusCode.PERMISSION_DENIED, "not yours")


async def bug(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    raise RuntimeError("a bug")


async def refuse_before_yielding(
    request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
) -> AsyncIterator[bytes]:
    raise InvalidArgument("id", "is required")
    yield b""  # makes this an async generator, as the services' streaming methods are


async def fail_after_yielding(
    request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
) -> AsyncIterator[bytes]:
    yield b"first"
    raise FailedPrecondition(
        "job j1 is COMPLETED; only QUEUED or RUNNING jobs can be cancelled",
        reason=Reason.JOB_FINISHED,
        metadata={"job_id": "j1", "status": "COMPLETED"},
    )


UNARY: dict[str, Handler] = {
    "BadField": bad_field,
    "BadToken": bad_token,
    "Unknown": unknown,
    "OwnAbort": own_abort,
    "Bug": bug,
}
STREAMING: dict[str, Handler] = {
    "RefuseBeforeYielding": refuse_before_yielding,
    "FailAfterYielding": fail_after_yielding,
}


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    server = create_server()
    handlers = {
        **{name: grpc.unary_unary_rpc_method_handler(h) for name, h in UNARY.items()},
        **{name: grpc.unary_stream_rpc_method_handler(h) for name, h in STREAMING.items()},
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = bind(server, "127.0.0.1:0")
    await server.start()
    async with create_channel(f"127.0.0.1:{port}") as open_channel:
        yield open_channel
    await server.stop(None)


async def call(channel: grpc.aio.Channel, method: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await channel.unary_unary(f"/{SERVICE}/{method}", None, None)(b"", timeout=10)
    return caught.value


async def test_invalid_argument_carries_a_bad_request_field_violation(
    channel: grpc.aio.Channel,
) -> None:
    error = await call(channel, "BadField")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "spec.output.fps: must be at most 240"
    violation = field_violation(error)
    assert violation is not None
    assert (violation.field, violation.description, violation.reason) == (
        "spec.output.fps",
        "must be at most 240",
        ViolationKind.INVALID,
    )
    assert error_info(error) is None


async def test_a_malformed_value_says_so_in_its_violation(channel: grpc.aio.Channel) -> None:
    error = await call(channel, "BadToken")
    violation = field_violation(error)
    assert violation is not None
    assert (violation.field, violation.reason) == ("page_token", ViolationKind.MALFORMED)
    assert http_status_for(error.code(), ViolationKind(violation.reason)) == 400


async def test_other_domain_errors_keep_their_code_and_message(channel: grpc.aio.Channel) -> None:
    error = await call(channel, "Unknown")
    assert (error.code(), error.details()) == (grpc.StatusCode.NOT_FOUND, "job 'x' not found")
    assert field_violation(error) is None


async def test_a_servicers_own_abort_and_a_bug_pass_through(channel: grpc.aio.Channel) -> None:
    aborted = await call(channel, "OwnAbort")
    assert (aborted.code(), aborted.details()) == (grpc.StatusCode.PERMISSION_DENIED, "not yours")
    crashed = await call(channel, "Bug")
    assert crashed.code() == grpc.StatusCode.UNKNOWN
    assert field_violation(crashed) is None


async def test_a_stream_refused_before_its_first_message(channel: grpc.aio.Channel) -> None:
    stream = channel.unary_stream(f"/{SERVICE}/RefuseBeforeYielding", None, None)(b"", timeout=10)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in stream:
            pass
    violation = field_violation(caught.value)
    assert violation is not None and violation.field == "id"


async def test_a_stream_that_fails_after_yielding_ends_with_the_rich_status(
    channel: grpc.aio.Channel,
) -> None:
    received: list[bytes] = []
    stream = channel.unary_stream(f"/{SERVICE}/FailAfterYielding", None, None)(b"", timeout=10)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for message in stream:
            received.append(message)
    assert received == [b"first"]
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = error_info(caught.value)
    assert info is not None
    assert info.reason == Reason.JOB_FINISHED
    assert dict(info.metadata) == {"job_id": "j1", "status": "COMPLETED"}


def test_the_http_status_table() -> None:
    assert http_status_for(grpc.StatusCode.INVALID_ARGUMENT) == 422
    assert http_status_for(grpc.StatusCode.INVALID_ARGUMENT, ViolationKind.MALFORMED) == 400
    assert http_status_for(grpc.StatusCode.NOT_FOUND) == 404
    assert http_status_for(grpc.StatusCode.FAILED_PRECONDITION) == 409
    assert http_status_for(grpc.StatusCode.ALREADY_EXISTS) == 409
    assert http_status_for(grpc.StatusCode.RESOURCE_EXHAUSTED) == 429
    assert http_status_for(grpc.StatusCode.UNAVAILABLE) == 503
    assert http_status_for(grpc.StatusCode.DATA_LOSS) == 500
    assert MalformedArgument("x", "y").http_status == 400
    assert InvalidArgument("x", "y").http_status == 422


async def test_cancellation_reaches_the_servicer() -> None:
    """A client that leaves cancels the servicer's coroutine; the interceptor lets it through."""
    seen = asyncio.Event()

    async def wait_forever(
        request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> AsyncIterator[bytes]:
        yield b"started"
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            seen.set()
            raise

    server = create_server()
    handler = grpc.unary_stream_rpc_method_handler(wait_forever)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, {"Wait": handler}),)
    )
    port = bind(server, "127.0.0.1:0")
    await server.start()
    try:
        async with create_channel(f"127.0.0.1:{port}") as own:
            stream = own.unary_stream(f"/{SERVICE}/Wait", None, None)(b"", timeout=30)
            assert await stream.read() == b"started"
            stream.cancel()
            await asyncio.wait_for(seen.wait(), 10)
    finally:
        await server.stop(None)
