"""A job's record as the API shows it: the store's Job as a VideoJob proto (what every gRPC
answer carries) and as the HTTP API's JSON (videojob.job_json, what a webhook event carries)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from google.protobuf.timestamp_pb2 import Timestamp

from export_service.store.outbox import Delivery, DeliveryState
from export_service.store.records import STAGE_WAITING_FOR_OWNER, HistoryEntry, Job, JobStatus
from export_service.store.split_record import PartState
from videojob.export.v1 import export_pb2
from videojob.job_json import job_to_json
from videojob.render.v1 import spec_pb2

if TYPE_CHECKING:
    from export_service.queue_line import QueuePlace

STATUS_TO_PROTO = {
    JobStatus.QUEUED: export_pb2.QUEUED,
    JobStatus.RUNNING: export_pb2.RUNNING,
    JobStatus.COMPLETED: export_pb2.COMPLETED,
    JobStatus.FAILED: export_pb2.FAILED,
    JobStatus.CANCELLED: export_pb2.CANCELLED,
}
STATUS_FROM_PROTO = {value: key for key, value in STATUS_TO_PROTO.items()}
# How the API shows a part whose render is placed but waits for a slot on its render service
# (the record's state is "rendering": see PartRecord.waiting_for_slot).
PART_QUEUED = "queued"


def _timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def job_to_proto(
    job: Job, *, awaiting_owner: bool = False, queue_place: QueuePlace | None = None
) -> export_pb2.VideoJob:
    """``awaiting_owner``: no export replica drives the job now (derived on reading it): it is
    shown waiting for one, with no ETA (nor estimated start); the record itself is untouched.
    ``queue_place``: where the job waits for a render slot (derived on reading it)."""
    message = export_pb2.VideoJob(
        id=job.id,
        status=STATUS_TO_PROTO[job.status],
        progress=job.progress,
        stage=job.stage,
        output_path=job.output_path,
        attempt=job.attempt,
        version=job.version,
        spec=spec_pb2.RenderSpec.FromString(job.spec),
        created_at=_timestamp(job.created_at),
        updated_at=_timestamp(job.updated_at),
        started_at=_timestamp(job.started_at),
        finished_at=_timestamp(job.finished_at),
        request_id=job.request_id,
        eta_seconds=job.eta_seconds,
        output_size_bytes=job.output_size_bytes,
        output_duration_seconds=job.output_duration_seconds,
        retrying=job.retrying,
        attempt_progress=job.attempt_progress if job.attempt > 1 else job.progress,
        output_sha256=job.output_sha256,
        stage_progress=0.0 if job.terminal else job.stage_progress,
    )
    for attempt in job.attempts:
        recorded = message.attempts.add(
            attempt=attempt.attempt,
            render_id=attempt.render_id,
            render_service=export_pb2.RenderService(
                instance_id=attempt.instance_id, address=attempt.address
            ),
            started_at=_timestamp(attempt.started_at),
            outcome=attempt.shown_outcome,
        )
        finished = attempt.finished_at
        if finished is None and attempt.attempt == job.attempt and job.terminal:
            recorded.outcome = job.status.value
            finished = job.finished_at
        if finished is not None:
            recorded.finished_at.FromDatetime(finished)
    _add_parts(message, job)
    current = job.current_attempt
    if current is not None:
        message.render_service.instance_id = current.instance_id
        message.render_service.address = current.address
    if queue_place is not None and not job.terminal:
        message.queue_position = queue_place.position
        if queue_place.estimated_start is not None and not awaiting_owner:
            message.estimated_start_at.FromDatetime(queue_place.estimated_start)
    if awaiting_owner and not job.terminal:
        message.awaiting_owner = True
        message.stage = STAGE_WAITING_FOR_OWNER
        message.eta_seconds = 0
    if job.error_code or job.error_message:
        message.error.code = job.error_code
        message.error.message = job.error_message
        message.error.field = job.error_field
        message.error.log_tail = job.error_log_tail
    return message


def _add_parts(message: export_pb2.VideoJob, job: Job) -> None:
    """A split job's parts, then its join; each running part's frames as its progress wrote."""
    message.split_reason = job.split_reason
    if job.split is None:
        return
    completed = job.status is JobStatus.COMPLETED
    for part in job.split.renders:
        frames = part.frames_done
        state = part.state.value
        if part.is_join and completed:  # the join's output is the job's, recorded by COMPLETE
            state, frames = PartState.DONE.value, part.frame_count
        elif part.state is PartState.RENDERING and 0 <= part.index < len(job.split_frames):
            frames = min(job.split_frames[part.index], part.frame_count)
        if part.state is PartState.RENDERING and part.waiting_for_slot and not frames:
            state = PART_QUEUED
        index = part.index
        if part.is_audio:
            index = len(job.split.parts)
        elif part.is_join:
            index = len(job.split.parts) + (0 if job.split.audio is None else 1)
        message.parts.add(
            index=index,
            join=part.is_join,
            audio=part.is_audio,
            first_frame=part.first_frame,
            frame_count=part.frame_count,
            state=state,
            render_id=part.render_id,
            render_service=export_pb2.RenderService(
                instance_id=part.instance_id, address=part.address
            ),
            frames_done=frames,
            attempts=part.attempts,
            note=part.note,
        )


def history_entry_to_proto(entry: HistoryEntry) -> export_pb2.JobHistoryEntry:
    message = export_pb2.JobHistoryEntry(
        version=entry.version,
        change=entry.change.value,
        status=STATUS_TO_PROTO[entry.status],
        progress=entry.progress,
        stage=entry.stage,
        attempt=entry.attempt,
        render_seq=entry.render_seq,
        error_code=entry.error_code,
        time=_timestamp(entry.recorded_at),
        writer=entry.writer,
    )
    if entry.owner is not None:
        message.owner = entry.owner
    if entry.lease_epoch is not None:
        message.lease_epoch = entry.lease_epoch
    return message


_DELIVERY_STATE_TO_PROTO = {
    DeliveryState.PENDING: export_pb2.DELIVERY_PENDING,
    DeliveryState.DELIVERED: export_pb2.DELIVERY_DELIVERED,
    DeliveryState.GAVE_UP: export_pb2.DELIVERY_GAVE_UP,
}


def delivery_to_proto(delivery: Delivery) -> export_pb2.WebhookDelivery:
    pending = delivery.state is DeliveryState.PENDING
    return export_pb2.WebhookDelivery(
        id=delivery.id,
        type=delivery.type,
        url=delivery.url,
        state=_DELIVERY_STATE_TO_PROTO[delivery.state],
        attempts=delivery.attempts,
        last_status_code=delivery.last_status,
        last_error=delivery.last_error,
        last_response=delivery.last_response,
        created_at=_timestamp(delivery.created_at),
        last_attempt_at=_timestamp(delivery.last_attempt_at),
        next_attempt_at=_timestamp(delivery.next_attempt_at) if pending else None,
        finished_at=_timestamp(delivery.finished_at),
        job_version=delivery.job_version,
    )


def job_to_api_json(job: Job) -> dict[str, Any]:
    """The job as the HTTP API shows it (as read, nothing derived)."""
    return job_to_json(job_to_proto(job))
