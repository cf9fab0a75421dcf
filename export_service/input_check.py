"""The input check CreateExport makes before accepting a job: a render service (it owns the
media root) answers CheckInputs. A refusal naming a field becomes the create's refusal; when no
render service answers in time (or one too old to know the call), the job is accepted and the
render's own check decides. An object store holding the inputs that did not answer the render
service is the create's refusal too (UNAVAILABLE): nothing could render the job. The answer
carries the source's facts (duration, frame rate...), which a split's planner works from."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import grpc

from export_service.split_plan import SourceFacts, facts_from_spec, source_facts
from videojob.errors import InvalidArgument, ObjectStoreUnavailable, Reason
from videojob.grpc_errors import error_info, field_violation
from videojob.limits import CHECK_INPUTS_TIMEOUT_SECONDS
from videojob.render.v1 import render_pb2, spec_pb2

if TYPE_CHECKING:
    from videojob.render.v1.render_pb2_grpc import RenderServiceAsyncStub

logger = logging.getLogger(__name__)


def has_input_files(spec: spec_pb2.RenderSpec) -> bool:
    return spec.source.WhichOneof("kind") in ("transcode", "slideshow")


async def check_inputs(
    stub: RenderServiceAsyncStub,
    spec: spec_pb2.RenderSpec,
    deadline_seconds: float = CHECK_INPUTS_TIMEOUT_SECONDS,
) -> render_pb2.CheckInputsResponse | None:
    """InvalidArgument naming the field of an input that is missing, outside the media root or
    unreadable; the render service's answer (the source's facts) when the inputs are fine,
    None when the spec has no input files or nobody could tell."""
    if not has_input_files(spec):
        return None
    try:
        return await stub.CheckInputs(
            render_pb2.CheckInputsRequest(spec=spec), timeout=deadline_seconds
        )
    except grpc.aio.AioRpcError as error:
        violation = field_violation(error)
        if error.code() == grpc.StatusCode.INVALID_ARGUMENT and violation is not None:
            raise InvalidArgument(violation.field, violation.description) from None
        info = error_info(error)
        if info is not None and info.reason == Reason.OBJECT_STORE_UNAVAILABLE:
            # The inputs' store is down: no render could read them either.
            raise ObjectStoreUnavailable(
                error.details() or "the object store did not answer",
                endpoint=info.metadata.get("endpoint", ""),
            ) from None
        logger.info(
            "input check not answered (%s): the render will check the inputs",
            error.code().name,
        )
        return None


async def planning_facts(
    stub: RenderServiceAsyncStub,
    spec: spec_pb2.RenderSpec,
    deadline_seconds: float = CHECK_INPUTS_TIMEOUT_SECONDS,
) -> SourceFacts | None:
    """The facts a split's planner works from when a job starts: the spec's own (a test
    pattern, no call), else as a render service answers CheckInputs; None when it does not
    answer or refuses the inputs (the job then renders whole, and its render's own check says
    what is wrong)."""
    own = facts_from_spec(spec)
    if own is not None or not has_input_files(spec):
        return own
    try:
        answer = await check_inputs(stub, spec, deadline_seconds)
    except (InvalidArgument, ObjectStoreUnavailable) as error:
        logger.info("no source facts to plan a split from: %s", error.message)
        return None
    return source_facts(spec, answer) if answer is not None else None
