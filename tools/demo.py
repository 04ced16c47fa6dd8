#!/usr/bin/env python3
"""One real withdrawal end to end through the running mesh.

    python tools/demo.py [--amount-fen 100] [--channel bank]

A fresh uid binds a payout method at the gateway, signs in (a session token as the app edge
issues it: SESSION_TOKEN_KEYS / SESSION_TOKEN_ACTIVE_KEY, or with MESH_ENV=dev the dev key),
the campaign signs it a reward token
(REWARD_TOKEN_KEYS / REWARD_TOKEN_ACTIVE_KEY, else the dev key), the withdraw page
force-credits it, the user confirms a withdrawal, and the order is followed until it is
terminal. Prints the order, its history, its ledger entries and the gateway payout.
Exits 1 unless the order ends SUCCEEDED. Services are found at <SVC>_ADDR, else
127.0.0.1:<SVC>_PORT (default 5005N), as tools/meshctl.py starts them; mutual TLS with the
app-edge certificate of MESH_CERTS_DIR (default .run/certs), unless MESH_INSECURE=1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

from campaign.tokens import RewardGrant, keyring_from_env
from edge.client import UserSessions
from mesh.account.v1 import account_pb2, account_pb2_grpc
from mesh.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from mesh.withdraw.v1 import withdraw_pb2, withdraw_pb2_grpc
from meshkit.dialer import Dialer
from tools.loadlib.clients import address_of

ROOT = Path(__file__).resolve().parent.parent

RPC_TIMEOUT_S = 5.0
SETTLE_TIMEOUT_S = 30.0
TERMINAL = {withdraw_pb2.ORDER_STATE_SUCCEEDED, withdraw_pb2.ORDER_STATE_FAILED}
PEERS = ("gateway_mock", "account_svc", "withdraw_svc")


@dataclass(frozen=True)
class Withdrawal:
    """Everything one demo withdrawal produced, as the services report it."""

    uid: int
    reward_fen: int
    method: gateway_pb2.PayoutMethod
    page: withdraw_pb2.GetWithdrawPageResponse
    confirmed: withdraw_pb2.Order
    order: withdraw_pb2.Order
    entries: list[account_pb2.Entry]
    payout: gateway_pb2.Payout | None
    balance_fen: int
    seconds: float

    @property
    def succeeded(self) -> bool:
        return self.order.state == withdraw_pb2.ORDER_STATE_SUCCEEDED


class StepFailed(Exception):
    """An RPC of the walk-through failed; says which one, and the status it got."""

    def __init__(self, step: str, exc: grpc.aio.AioRpcError) -> None:
        super().__init__(f"{step} failed: {exc.code().name}: {exc.details()}")
        self.step = step
        self.code = exc.code()


def default_addresses() -> dict[str, str]:
    """As tools/meshctl.py places them: <SVC>_ADDR, else 127.0.0.1:<SVC>_PORT or the default,
    and the replicas of <SVC>_ADDRS."""
    return {peer: address_of(peer, os.environ) for peer in PEERS}


async def run_withdrawal(
    addresses: Mapping[str, str],
    *,
    environ: Mapping[str, str] | None = None,
    uid: int = 0,
    amount_fen: int = 100,
    reward_fen: int = 500,
    channel: str = "bank",
    settle_timeout_s: float = SETTLE_TIMEOUT_S,
) -> Withdrawal:
    """Bind, credit, confirm, and wait until the order is terminal (or the timeout)."""
    environ = os.environ if environ is None else environ
    uid = uid or random.randint(10**9, 10**15)
    # The demo is the app (binding, page, confirm, order) and a viewer looking at the
    # ledger and the gateway afterwards.
    dialer = Dialer.from_env(environ, only={"app-edge", "viewer-dave"})
    channels = {peer: dialer.routed(addresses[peer], env=environ) for peer in PEERS}
    # The user's session, as the app holds it after sign-in (refuses without keys unless dev).
    signed_in = UserSessions.from_env(environ).metadata(uid)
    step = "BindMethod"
    try:
        gateway = gateway_pb2_grpc.GatewayServiceStub(channels["gateway_mock"])
        account = account_pb2_grpc.AccountServiceStub(channels["account_svc"])
        withdraw = withdraw_pb2_grpc.WithdrawServiceStub(channels["withdraw_svc"])
        started = time.monotonic()

        bound = await gateway.BindMethod(
            gateway_pb2.BindMethodRequest(uid=uid, channel=channel, account=f"6222{uid % 10**12:012d}"),
            timeout=RPC_TIMEOUT_S,
        )
        grant = RewardGrant(
            reward_id=f"demo-{uuid.uuid4().hex[:16]}", uid=uid, amount_fen=reward_fen,
            source="red_packet", issued_at=int(time.time()),
        )
        token = keyring_from_env(environ).sign(grant)
        step = "GetWithdrawPage"
        page = await withdraw.GetWithdrawPage(
            withdraw_pb2.GetWithdrawPageRequest(uid=uid, tokens=[token]), timeout=RPC_TIMEOUT_S,
            metadata=signed_in,
        )
        step = "ConfirmWithdraw"
        confirmed = await withdraw.ConfirmWithdraw(
            withdraw_pb2.ConfirmWithdrawRequest(
                uid=uid, request_id=f"demo-{uuid.uuid4().hex}", amount_fen=amount_fen,
                method_id=bound.method.method_id, tokens=[token],
            ),
            timeout=RPC_TIMEOUT_S, metadata=signed_in,
        )
        step = "GetOrder"
        order = await _settled(withdraw, confirmed.order, signed_in, settle_timeout_s)
        seconds = time.monotonic() - started
        step = "GetOrderEntries"
        entries = await account.GetOrderEntries(
            account_pb2.GetOrderEntriesRequest(order_id=order.order_id), timeout=RPC_TIMEOUT_S
        )
        step = "GetBalance"
        balance = await account.GetBalance(account_pb2.GetBalanceRequest(uid=uid), timeout=RPC_TIMEOUT_S,
                                           metadata=signed_in)
        step = "QueryPayout"
        payout = await _payout_of(gateway, order.order_id)
        return Withdrawal(
            uid=uid, reward_fen=reward_fen, method=bound.method, page=page, confirmed=confirmed.order,
            order=order, entries=list(entries.entries), payout=payout,
            balance_fen=balance.balance_fen, seconds=seconds,
        )
    except grpc.aio.AioRpcError as exc:
        raise StepFailed(step, exc) from exc
    finally:
        for ch in channels.values():
            await ch.close()


async def _settled(withdraw: withdraw_pb2_grpc.WithdrawServiceStub, order: withdraw_pb2.Order,
                   signed_in: tuple[tuple[str, str], ...], timeout_s: float) -> withdraw_pb2.Order:
    """The order once terminal, or as it stands when timeout_s has passed."""
    deadline = time.monotonic() + timeout_s
    while order.state not in TERMINAL and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        reply = await withdraw.GetOrder(withdraw_pb2.GetOrderRequest(order_id=order.order_id),
                                        timeout=RPC_TIMEOUT_S, metadata=signed_in)
        order = reply.order
    return order


async def _payout_of(gateway: gateway_pb2_grpc.GatewayServiceStub,
                     order_id: str) -> gateway_pb2.Payout | None:
    """The gateway's record of the order's payout; None when it has none."""
    try:
        queried = await gateway.QueryPayout(gateway_pb2.QueryPayoutRequest(order_id=order_id),
                                            timeout=RPC_TIMEOUT_S)
    except grpc.aio.AioRpcError as exc:
        if exc.code() != grpc.StatusCode.NOT_FOUND:
            raise
        return None
    return queried.payout


def _state(value: int) -> str:
    if value == withdraw_pb2.ORDER_STATE_UNSPECIFIED:
        return "(new)"
    return withdraw_pb2.OrderState.Name(value).removeprefix("ORDER_STATE_")


def report(w: Withdrawal) -> str:
    o = w.order
    lines = [
        f"uid            {w.uid}  (method {w.method.method_id}, {w.method.channel} {w.method.display})",
        f"reward         {w.reward_fen} fen credited via the withdraw page "
        f"(page balance {w.page.balance_fen} fen{', stale' if w.page.balance_stale else ''})",
        f"confirm        {o.amount_fen} fen -> answered {_state(w.confirmed.state)}",
        f"order id       {o.order_id}",
        f"final state    {_state(o.state)}" + (f"  ({o.failure_reason})" if o.failure_reason else "")
        + f"  after {w.seconds:.2f}s",
        "history",
        *(f"  {_state(h.from_state):<15} -> {_state(h.to_state):<15} {h.reason}" for h in o.history),
        "ledger entries for the order",
        *(f"  #{e.entry_id:<6} {account_pb2.EntryKind.Name(e.kind).removeprefix('ENTRY_KIND_'):<7} "
          f"{e.amount_fen:>6} fen  balance after {e.balance_after_fen} fen" for e in w.entries),
        f"balance now    {w.balance_fen} fen",
    ]
    if w.payout is None:
        lines.append("gateway payout none")
    else:
        p = w.payout
        state = gateway_pb2.PayoutState.Name(p.state).removeprefix("PAYOUT_STATE_")
        lines.append(f"gateway payout {state} {p.amount_fen} fen on {p.channel} to {p.method_id}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--amount-fen", type=int, default=100)
    parser.add_argument("--channel", default="bank")
    parser.add_argument(
        "--timeout", type=float, default=SETTLE_TIMEOUT_S, help="seconds to wait for a final state"
    )
    args = parser.parse_args()
    try:
        result = asyncio.run(run_withdrawal(
            default_addresses(), amount_fen=args.amount_fen, channel=args.channel,
            reward_fen=max(500, args.amount_fen), settle_timeout_s=args.timeout,
        ))
    except StepFailed as exc:
        sys.exit(f"demo: {exc}")
    except ValueError as exc:  # no session keys outside MESH_ENV=dev, or bad ones
        sys.exit(f"demo: {exc}")
    print("demo withdrawal")
    print(report(result))
    if not result.succeeded:
        sys.exit(f"demo: order {result.order.order_id} ended {_state(result.order.state)}, not SUCCEEDED")


if __name__ == "__main__":
    main()
