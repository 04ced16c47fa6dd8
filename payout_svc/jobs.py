"""The entry of a payout job on a channel stream: the PayoutJob message under "job", and the
trace context of the code that queued it. Read and written by the stream, the awaiting
set and the dead letters alike."""

from __future__ import annotations

from typing import Any

from google.protobuf.message import DecodeError

from mesh.payout.v1 import payout_pb2
from meshkit.streams import text, trace_fields
from meshkit.timeconv import from_ts, to_ts
from payout_svc.domain import Delivery, Job

JOB = "job"
TRACEPARENT = "traceparent"


def encode_job(job: Job) -> bytes:
    return payout_pb2.PayoutJob(
        order_id=job.order_id, uid=job.uid, channel=job.channel, method_id=job.method_id,
        amount_fen=job.amount_fen, attempt=job.attempt, enqueue_time=to_ts(job.enqueue_time),
        last_error=job.last_error,
    ).SerializeToString()


def decode_job(raw: bytes) -> Job | None:
    try:
        pb = payout_pb2.PayoutJob.FromString(raw)
    except DecodeError:
        return None
    if not pb.order_id:
        return None
    return Job(pb.order_id, pb.uid, pb.channel, pb.method_id, pb.amount_fen, pb.attempt,
               from_ts(pb.enqueue_time), pb.last_error)


def delivery_of(channel: str, entry_id: Any, fields: dict[Any, Any]) -> Delivery:
    raw = fields.get(b"job", b"")
    return Delivery(channel, text(entry_id), decode_job(raw), raw, text(fields.get(b"traceparent", b"")))


def entry_fields(job: Job) -> dict[Any, Any]:
    """A stream entry for a job, carrying the trace context of the code that queues it."""
    return {JOB: encode_job(job), **trace_fields()}
