"""Traces leave the process: the services run as processes (tools/meshctl.py, as `make up`
does) with `OTEL_TRACES_EXPORTER=otlp` pointed at an OTLP/gRPC receiver in this test
process, and one confirm must arrive there as one trace running withdraw_svc → account_svc
→ the outbox relay → the payout stream's consumer in payout_svc → gateway_mock, each span
under the service.name of the process that made it. The same private mesh shows the
metrics endpoint binding where `<SVC>_METRICS_HOST` says."""

from __future__ import annotations

import asyncio
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

from mesh.withdraw.v1 import withdraw_pb2
from tests.harness import create_database, database_env, drop_database
from tests.waiting import poll
from tools import demo
from tools import meshctl as mesh

pytestmark = pytest.mark.e2e

SERVICES = ("gateway_mock", "account_svc", "withdraw_svc", "payout_svc")
GRACE_S = 3.0
SPANS_TIMEOUT_S = 30.0
METRICS_HOST = "127.0.0.2"  # loopback too, but not 127.0.0.1: binding there is a choice

CONFIRM = "/mesh.withdraw.v1.WithdrawService/ConfirmWithdraw"
SERVER = trace_pb2.Span.SPAN_KIND_SERVER
CLIENT = trace_pb2.Span.SPAN_KIND_CLIENT
PRODUCER = trace_pb2.Span.SPAN_KIND_PRODUCER
CONSUMER = trace_pb2.Span.SPAN_KIND_CONSUMER


@dataclass(frozen=True)
class Received:
    service: str  # the resource's service.name
    span: trace_pb2.Span


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """What an OpenTelemetry collector's OTLP/gRPC receiver does, minus everything after."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: list[Received] = []

    def Export(self, request: trace_service_pb2.ExportTraceServiceRequest,
               context: grpc.ServicerContext) -> trace_service_pb2.ExportTraceServiceResponse:
        with self._lock:
            for resource_spans in request.resource_spans:
                service = next((a.value.string_value for a in resource_spans.resource.attributes
                                if a.key == "service.name"), "")
                for scope in resource_spans.scope_spans:
                    self._spans.extend(Received(service, span) for span in scope.spans)
        return trace_service_pb2.ExportTraceServiceResponse()

    def spans(self) -> list[Received]:
        with self._lock:
            return list(self._spans)


@dataclass(frozen=True)
class TracedMesh:
    env: dict[str, str]
    layout: mesh.Layout
    receiver: Receiver
    metrics_port: int

    def log_tails(self) -> str:
        return "\n".join(f"--- {s} ---\n{mesh.log_tail(s, self.layout, 12)}" for s in SERVICES)


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[Receiver, int]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    servicer = Receiver()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, port
    server.stop(grace=None)


@pytest.fixture(scope="module")
async def traced_mesh(mesh_env: dict[str, str], receiver: tuple[Receiver, int],
                      tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[TracedMesh]:
    servicer, otlp_port = receiver
    # Its own database and key prefix: its payout workers must not take the session mesh's jobs.
    database_url = await create_database(mesh_env["DATABASE_URL"])
    env = {
        **database_env(database_url),
        "REDIS_URL": mesh_env["REDIS_URL"],
        "MESH_KEY_PREFIX": f"otlp-{uuid.uuid4().hex[:10]}",
        "REWARD_TOKEN_KEYS": mesh_env["REWARD_TOKEN_KEYS"],
        "REWARD_TOKEN_ACTIVE_KEY": mesh_env["REWARD_TOKEN_ACTIVE_KEY"],
        "SESSION_TOKEN_KEYS": mesh_env["SESSION_TOKEN_KEYS"],
        "SESSION_TOKEN_ACTIVE_KEY": mesh_env["SESSION_TOKEN_ACTIVE_KEY"],
        "MESH_ADMISSION_ENABLED": "false",
        "MESH_SHUTDOWN_GRACE_S": str(GRACE_S),
        "WITHDRAW_RELAY_INTERVAL_MS": "100",
        "WITHDRAW_PAGE_CREDIT_DEADLINE_MS": "3000",
        "PAYOUT_BATCH_SIZE": "1",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{otlp_port}",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    for name in ("ACCOUNT", "WITHDRAW", "GATEWAY", "PAYOUT"):
        env[f"{name}_DB_POOL_SIZE"] = "3"
    mesh.on_free_ports(env, SERVICES)
    for service in SERVICES:
        env[f"{service.upper()}_METRICS_PORT"] = "0"
    env["GATEWAY_MOCK_METRICS_PORT"] = str(mesh.free_ports(1)[0])
    env["GATEWAY_MOCK_METRICS_HOST"] = METRICS_HOST
    layout = mesh.Layout(Path(tmp_path_factory.mktemp("otlp-mesh")))
    try:
        await asyncio.to_thread(mesh.up, env, layout, SERVICES, 30.0)
    except mesh.MeshError as exc:
        await asyncio.to_thread(mesh.down, layout, SERVICES, 2.0)
        await drop_database(mesh_env["DATABASE_URL"], database_url)
        pytest.fail(f"the traced mesh did not come up: {exc}")
    try:
        yield TracedMesh(mesh.service_env(env), layout, servicer, int(env["GATEWAY_MOCK_METRICS_PORT"]))
    finally:
        await asyncio.to_thread(mesh.down, layout, SERVICES, GRACE_S + 2.0)
        await drop_database(mesh_env["DATABASE_URL"], database_url)


def _ancestors(span: Received, by_id: dict[bytes, Received]) -> list[Received]:
    chain = []
    while span.span.parent_span_id and span.span.parent_span_id in by_id:
        span = by_id[span.span.parent_span_id]
        chain.append(span)
    return chain


@dataclass
class Chain:
    """The spans of one confirm's trace, checked hop by hop; `problems` says what is missing."""

    confirm: Received | None = None
    deduct: Received | None = None
    producer: Received | None = None
    consumer: Received | None = None
    payout: Received | None = None
    settle: Received | None = None
    trace: tuple[Received, ...] = ()
    problems: tuple[str, ...] = ("nothing checked yet",)


def _follow(spans: list[Received]) -> Chain:
    chain = Chain()
    problems: list[str] = []
    confirms = [r for r in spans if r.span.name == CONFIRM and r.span.kind == SERVER]
    if len(confirms) != 1:
        chain.problems = (f"expected one ConfirmWithdraw server span, got {len(confirms)}",)
        return chain
    chain.confirm = confirm = confirms[0]
    in_trace = [r for r in spans if r.span.trace_id == confirm.span.trace_id]
    chain.trace = tuple(in_trace)
    by_id = {r.span.span_id: r for r in in_trace}

    def under(r: Received, ancestor: Received) -> bool:
        return ancestor in _ancestors(r, by_id)

    def one(service: str, kind: int, name: str, prefix: bool = False) -> Received | None:
        found = [r for r in in_trace if r.span.kind == kind
                 and (r.span.name.startswith(name) if prefix else r.span.name == name)]
        if len(found) != 1:
            problems.append(f"{len(found)} spans {name} ({trace_pb2.Span.SpanKind.Name(kind)}) "
                            "in the confirm's trace, expected one")
            return None
        if found[0].service != service:
            problems.append(f"{name} came from service.name {found[0].service!r}, not {service}")
        return found[0]

    def parent_is_client_of(r: Received, service: str) -> None:
        parent = by_id.get(r.span.parent_span_id)
        if parent is None or parent.span.kind != CLIENT or parent.service != service:
            problems.append(f"{r.span.name} in {r.service} has no {service} CLIENT span as parent")

    if confirm.service != "withdraw_svc":
        problems.append(f"ConfirmWithdraw came from {confirm.service!r}")
    chain.deduct = one("account_svc", SERVER, "/mesh.account.v1.AccountService/Deduct", prefix=True)
    if chain.deduct is not None:
        parent_is_client_of(chain.deduct, "withdraw_svc")
        if not under(chain.deduct, confirm):
            problems.append("the ledger's deduct is not a descendant of the confirm")
    chain.producer = one("withdraw_svc", PRODUCER, "payout publish")
    if chain.producer is not None and not under(chain.producer, confirm):
        problems.append("the relay's publish is not a descendant of the confirm")
    chain.consumer = one("payout_svc", CONSUMER, "payout process")
    if chain.consumer is not None and chain.producer is not None \
            and chain.consumer.span.parent_span_id != chain.producer.span.span_id:
        problems.append("the payout worker's span does not continue from the stream entry's producer span")
    chain.payout = one("gateway_mock", SERVER, "/mesh.gateway.v1.GatewayService/Payout")
    chain.settle = one("withdraw_svc", SERVER, "/mesh.withdraw.v1.PayoutCoordinationService/SettlePayout")
    for hop in (chain.payout, chain.settle):
        if hop is not None and chain.consumer is not None:
            parent_is_client_of(hop, "payout_svc")
            if not under(hop, chain.consumer):
                problems.append(f"{hop.span.name} is not under the payout worker's span")
    chain.problems = tuple(problems)
    return chain


async def test_one_confirm_is_one_trace_across_the_mesh_processes(traced_mesh: TracedMesh) -> None:
    addresses = {peer: mesh.addr_of(peer, traced_mesh.env) for peer in demo.PEERS}
    done = await demo.run_withdrawal(addresses, environ=traced_mesh.env, amount_fen=100, reward_fen=500)
    assert done.order.state == withdraw_pb2.ORDER_STATE_SUCCEEDED, \
        f"the order did not succeed: {demo.report(done)}\n{traced_mesh.log_tails()}"

    # The batch processors flush every 200 ms; the consumer span ends after the settle.
    chain = await poll(lambda: _follow(traced_mesh.receiver.spans()), lambda c: not c.problems,
                       timeout=SPANS_TIMEOUT_S, interval=0.2)
    assert not chain.problems, (
        f"{list(chain.problems)}\nspans in the confirm's trace: "
        f"{sorted((r.service, r.span.name) for r in chain.trace)}\n{traced_mesh.log_tails()}"
    )
    services = {r.service for r in chain.trace}
    assert set(SERVICES) <= services, f"services in the trace: {services}"
    assert all(len(r.span.trace_id) == 16 and r.span.trace_id == chain.trace[0].span.trace_id
               for r in chain.trace)
    assert chain.deduct is not None and chain.deduct.span.name in (
        "/mesh.account.v1.AccountService/Deduct", "/mesh.account.v1.AccountService/DeductBatch")


def _get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as reply:
        return int(reply.status)


async def test_a_service_serves_metrics_on_the_host_it_is_told(traced_mesh: TracedMesh) -> None:
    port = traced_mesh.metrics_port
    assert await asyncio.to_thread(_get, f"http://{METRICS_HOST}:{port}/metrics") == 200
    with pytest.raises(urllib.error.URLError) as refused:
        await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/metrics")
    assert isinstance(refused.value.reason, ConnectionRefusedError), refused.value
