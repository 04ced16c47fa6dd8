"""withdraw_svc, asked by the ledger about an order before it refunds it: the order's owner
says whether it failed, not the caller of Refund."""

from __future__ import annotations

import grpc

from mesh.withdraw.v1 import withdraw_pb2, withdraw_pb2_grpc
from meshkit.settings import TlsSettings
from meshkit.transport import dial


class OrdersUnavailable(Exception):
    """withdraw_svc did not answer: the order's state is unknown."""


class OrderStates:
    def __init__(self, address: str, tls: TlsSettings, deadline_s: float) -> None:
        self.channel = dial(address, tls, caller="account_svc")
        # The coordination RPC, not the user's GetOrder: it has no owner check (a session
        # token would be the user's) and admission never sheds it behind page views.
        self.stub = withdraw_pb2_grpc.PayoutCoordinationServiceStub(self.channel)
        self.deadline_s = deadline_s

    async def state_of(self, order_id: str) -> str | None:
        """The order's state name (FAILED, SUCCEEDED...), None when withdraw_svc has no such order."""
        try:
            reply = await self.stub.GetOrderStates(withdraw_pb2.GetOrderStatesRequest(order_ids=[order_id]),
                                                   timeout=self.deadline_s)
        except grpc.aio.AioRpcError as err:
            raise OrdersUnavailable(f"withdraw_svc: {err.code().name}: {err.details()}") from err
        if order_id not in reply.states:
            return None
        return withdraw_pb2.OrderState.Name(reply.states[order_id]).removeprefix("ORDER_STATE_")

    async def close(self) -> None:
        await self.channel.close()
