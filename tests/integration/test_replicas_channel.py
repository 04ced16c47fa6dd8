"""Two replicas of a real service (gateway_mock, in-process) behind one channel made as the
services make theirs (meshkit.transport.dial over `host:port,host:port`, mutual TLS):
round robin reaches both; a replica NOT_SERVING or stopped gets no calls while the other
answers; only UNAVAILABLE is retried by the transport (AIP-194)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2

from mesh.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from meshkit.dialer import Dialer
from meshkit.transport import dial
from tests.harness import new_uid
from tests.integration.replica_support import Faults, Replica, start_replica
from tests.waiting import eventually

LIST = "/mesh.gateway.v1.GatewayService/ListMethods"
ENV = {"GATEWAY_CHANNELS": "bank,alipay,balance"}


@pytest.fixture
async def replicas(mesh_env: dict[str, str]) -> AsyncIterator[list[Replica]]:
    started = [await start_replica("gateway_mock", ENV) for _ in range(2)]
    yield started
    for replica in started:
        await replica.running.stop(0.5)


@pytest.fixture
async def stub(replicas: list[Replica]) -> AsyncIterator[gateway_pb2_grpc.GatewayServiceStub]:
    # withdraw_svc's own certificate, as its peers.py dials (caller policy: it may ListMethods).
    channel = dial(",".join(r.address for r in replicas), Dialer.from_env().tls_for("withdraw_svc"),
                   caller="withdraw_svc")
    await channel.channel_ready()
    yield gateway_pb2_grpc.GatewayServiceStub(channel)
    await channel.close()


async def _list(stub: gateway_pb2_grpc.GatewayServiceStub, uid: int = 0) -> None:
    await stub.ListMethods(gateway_pb2.ListMethodsRequest(uid=uid or new_uid()), timeout=5)


async def _both_ready(stub: gateway_pb2_grpc.GatewayServiceStub, replicas: list[Replica]) -> None:
    """Round robin adds a replica once its connection and its health watch are up."""
    async def reached_both() -> bool:
        await _list(stub)
        return all(r.served(LIST) > 0 for r in replicas)
    await eventually(reached_both, timeout=10, what="calls reach both replicas")


async def test_calls_reach_both_replicas(replicas: list[Replica],
                                         stub: gateway_pb2_grpc.GatewayServiceStub) -> None:
    await _both_ready(stub, replicas)
    before = [r.served(LIST) for r in replicas]
    for _ in range(40):
        await _list(stub)
    served = [r.served(LIST) - b for r, b in zip(replicas, before, strict=True)]
    assert sum(served) == 40
    # Round robin over two ready subchannels alternates: each gets half, give or take one.
    assert all(abs(n - 20) <= 1 for n in served), served


async def test_not_serving_replica_is_skipped(replicas: list[Replica],
                                              stub: gateway_pb2_grpc.GatewayServiceStub) -> None:
    await _both_ready(stub, replicas)
    sick, well = replicas
    # What the health probe does when the replica's PostgreSQL or Redis stops answering.
    await sick.running.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    # The health watch stream tells the channel at once; poll until a run of calls all land
    # on the other replica.
    async def all_on_well() -> bool:
        sick_before = sick.served(LIST)
        for _ in range(10):
            await _list(stub)
        return sick.served(LIST) == sick_before
    await eventually(all_on_well, timeout=5, what="the NOT_SERVING replica gets no calls")
    sick_before, well_before = sick.served(LIST), well.served(LIST)
    for _ in range(20):
        await _list(stub)
    assert sick.served(LIST) == sick_before
    assert well.served(LIST) == well_before + 20
    # Back to SERVING, it gets calls again.
    await sick.running.health.set("", health_pb2.HealthCheckResponse.SERVING)
    async def sick_again() -> bool:
        before = sick.served(LIST)
        await _list(stub)
        await _list(stub)
        return sick.served(LIST) > before
    await eventually(sick_again, timeout=5, what="the replica SERVING again gets calls")


async def test_stopped_replica_calls_keep_succeeding(
        replicas: list[Replica], stub: gateway_pb2_grpc.GatewayServiceStub) -> None:
    await _both_ready(stub, replicas)
    gone, left = replicas
    await gone.running.stop(0.5)
    left_before = left.served(LIST)
    # Every call succeeds, from the moment the replica is gone: none is lost to it.
    for _ in range(30):
        await _list(stub)
    assert left.served(LIST) == left_before + 30


async def test_unavailable_is_retried_on_the_other_replica(
        replicas: list[Replica], stub: gateway_pb2_grpc.GatewayServiceStub) -> None:
    await _both_ready(stub, replicas)
    for replica in replicas:
        replica.counted.faults[LIST] = Faults(grpc.StatusCode.UNAVAILABLE, times=1)
    before = sum(r.served(LIST) for r in replicas)
    await _list(stub)
    # Each replica refused once UNAVAILABLE; the third attempt (the policy's maxAttempts)
    # succeeded: three attempts at the servers for one call, and the caller saw success.
    assert sum(r.served(LIST) for r in replicas) - before == 3
    assert [r.counted.faults[LIST].times for r in replicas] == [0, 0]


# DEADLINE_EXCEEDED answered by a replica (its own peer call ran out of time): the write
# behind it may have committed, so the transport must not send it again.
@pytest.mark.parametrize("code", [grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INTERNAL,
                                  grpc.StatusCode.ABORTED, grpc.StatusCode.RESOURCE_EXHAUSTED])
async def test_other_errors_are_not_retried(replicas: list[Replica],
                                            stub: gateway_pb2_grpc.GatewayServiceStub,
                                            code: grpc.StatusCode) -> None:
    await _both_ready(stub, replicas)
    for replica in replicas:
        replica.counted.faults[LIST] = Faults(code, times=5)
    before = sum(r.served(LIST) for r in replicas)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _list(stub)
    assert raised.value.code() == code
    assert sum(r.served(LIST) for r in replicas) - before == 1


async def test_bad_input_is_not_retried(replicas: list[Replica],
                                        stub: gateway_pb2_grpc.GatewayServiceStub) -> None:
    await _both_ready(stub, replicas)
    before = sum(r.served(LIST) for r in replicas)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ListMethods(gateway_pb2.ListMethodsRequest(uid=-1), timeout=5)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert sum(r.served(LIST) for r in replicas) - before == 1
