"""One trace from the app's confirm to the gateway's payout, across every gRPC hop and the
Redis Stream hop; and the Prometheus endpoint reporting a channel's backlog as Redis has it."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from mesh.payout.v1 import payout_pb2, payout_pb2_grpc
from meshkit.metrics import setup_metrics
from tests.harness import new_id, new_uid
from tests.integration.withdraw_support import WdMesh, start_mesh
from tests.tracing import captured_spans
from tests.waiting import eventually
from tools.meshctl import free_ports

CONFIRM = "/mesh.withdraw.v1.WithdrawService/ConfirmWithdraw"


@pytest.fixture(scope="module")
async def mesh(mesh_env: dict[str, str]) -> AsyncIterator[WdMesh]:
    # One message per worker: the backlog test counts what the workers took that way.
    running = await start_mesh(mesh_env, payout=True, extra={"PAYOUT_METRICS_INTERVAL_S": "0.2",
                                                             "PAYOUT_BATCH_SIZE": "1"})
    yield running
    await running.stop()


def _ancestors(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[ReadableSpan]:
    chain = []
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
        chain.append(span)
    return chain


def _one(spans: list[ReadableSpan], name: str, kind: SpanKind) -> ReadableSpan:
    found = [s for s in spans if s.name == name and s.kind == kind]
    assert len(found) == 1, f"expected one {kind.name} span {name}, got {[s.name for s in spans]}"
    return found[0]


async def test_one_trace_runs_from_confirm_through_the_stream_to_the_gateway(mesh: WdMesh) -> None:
    uid, method_id = await mesh.user(balance_fen=500)
    with captured_spans() as spans:
        reply = await mesh.confirm(uid, method_id, 100)
        order_id = reply.order.order_id
        await eventually(lambda: _settled(mesh, order_id), timeout=20, what="order SUCCEEDED")
        # The consumer span closes after the settle commits; give it a moment to end.
        await eventually(lambda: _has_consumer_span(spans), timeout=5, what="consumer span")

    confirm = _one([s for s in spans if s.name == CONFIRM], CONFIRM, SpanKind.SERVER)
    trace_id = confirm.context.trace_id
    in_trace = [s for s in spans if s.context.trace_id == trace_id]
    by_id = {s.context.span_id: s for s in in_trace}

    def under(span: ReadableSpan, ancestor: ReadableSpan) -> bool:
        return ancestor in _ancestors(span, by_id)

    deduct = [s for s in in_trace if s.kind == SpanKind.SERVER
              and s.name.startswith("/mesh.account.v1.AccountService/Deduct")]
    assert deduct, f"no ledger deduct in the confirm's trace: {sorted({s.name for s in in_trace})}"
    assert under(deduct[0], confirm), "the ledger's deduct is not a descendant of the confirm"
    assert any(s.attributes and s.attributes.get("db.system") == "postgresql" and under(s, deduct[0])
               for s in in_trace), "no asyncpg span under the ledger's deduct"

    producer = _one(in_trace, "payout publish", SpanKind.PRODUCER)
    assert under(producer, confirm), "the outbox relay's publish is not in the confirm's trace"
    consumer = _one(in_trace, "payout process", SpanKind.CONSUMER)
    assert consumer.parent is not None and consumer.parent.span_id == producer.context.span_id, \
        "the payout worker does not continue from the stream entry's producer span"

    pay_server = _one(in_trace, "/mesh.gateway.v1.GatewayService/Payout", SpanKind.SERVER)
    assert under(pay_server, consumer), "the gateway payout is not under the payout worker's span"
    settle = _one(in_trace, "/mesh.withdraw.v1.PayoutCoordinationService/SettlePayout", SpanKind.SERVER)
    assert under(settle, consumer)
    assert any(s.name.startswith("XADD") or (s.attributes or {}).get("db.system") == "redis"
               for s in in_trace if under(s, producer) or s is producer), "no Redis span for the XADD"


async def _settled(mesh: WdMesh, order_id: str) -> bool:
    return await mesh.order_state(order_id) == "SUCCEEDED"


async def _has_consumer_span(spans: list[ReadableSpan]) -> bool:
    return any(s.name == "payout process" for s in spans)


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        return str(reply.read().decode())


def _gauge(text: str, name: str, channel: str, deployment: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + "{") and f'channel="{channel}"' in line \
                and f'deployment="{deployment}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_metrics_endpoint_reports_a_channels_backlog(mesh: WdMesh) -> None:
    port = await asyncio.to_thread(setup_metrics, "tests", free_ports(1)[0])
    assert port
    channel, prefix = "alipay", mesh.env["MESH_KEY_PREFIX"]
    admin = payout_pb2_grpc.PayoutAdminServiceStub(mesh._channel(mesh.payout_srv.address))  # type: ignore[union-attr]
    # Nearly closed: workers take one message each and wait for a slot, the rest stays queued.
    await admin.SetChannelRate(payout_pb2.SetChannelRateRequest(channel=channel, rate_per_second=0.0001),
                               timeout=10)

    async def rate_in_force() -> float:
        stats = await admin.GetChannelStats(payout_pb2.GetChannelStatsRequest(channel=channel), timeout=10)
        return float(stats.channels[0].rate_limit_per_second)
    # The workers read the rate from the process's table, the one GetChannelStats reports.
    await eventually(rate_in_force, lambda rate: abs(rate - 0.0001) < 1e-9, timeout=10,
                     what="the new rate in force")
    stream = mesh.keys.payout_stream(channel)
    for _ in range(40):
        job = payout_pb2.PayoutJob(order_id=new_id("ghost"), uid=new_uid(), channel=channel,
                                   method_id="m", amount_fen=100)
        await mesh.redis.xadd(stream, {"job": job.SerializeToString()})

    async def matches() -> tuple[float, int] | None:
        expected = await _backlog_in_redis(mesh, stream)
        reported = _gauge(await asyncio.to_thread(_scrape, port), "payout_channel_backlog", channel, prefix)
        return (reported, expected) if reported == expected and expected > 0 else None

    reported, expected = await eventually(matches, timeout=10, what="metric backlog == Redis backlog")
    assert 40 - 9 <= expected <= 40, f"backlog {expected}: workers took more than one message each"
    assert reported == expected
    await admin.SetChannelRate(payout_pb2.SetChannelRateRequest(channel=channel, unlimited=True),
                               timeout=10)


async def _backlog_in_redis(mesh: WdMesh, stream: str) -> int:
    """Entries after the group's last delivered id: what XINFO's lag says on Redis 7."""
    groups = await mesh.redis.xinfo_groups(stream)
    last = next(g["last-delivered-id"] for g in groups)
    last = last.decode() if isinstance(last, bytes) else str(last)
    return len(await mesh.redis.xrange(stream, min=f"({last}", max="+"))
