"""Funded benchmark users with a bound payout method, shared by the confirm and recon-lag
benchmarks: one BindMethod and one ForceCredit of a signed reward per user."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

from campaign.tokens import KeyRing, RewardGrant
from mesh.account.v1 import account_pb2, account_pb2_grpc
from mesh.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from tools.loadlib.clients import open_channel

CHANNELS = ("bank", "alipay", "balance")


@dataclass(frozen=True)
class User:
    uid: int
    method_id: str


async def seed_users(addresses: dict[str, str], keyring: KeyRing, users: int, per_user_fen: int,
                     *, tag: str, concurrency: int) -> list[User]:
    """`users` fresh uids (time-based, so runs don't collide) spread over the channels."""
    base = int(time.time() * 1000) % 10**9 * 10**5
    async with open_channel(addresses["gateway_mock"]) as gw_channel, \
            open_channel(addresses["account_svc"]) as acc_channel:
        gateway = gateway_pb2_grpc.GatewayServiceStub(gw_channel)
        account = account_pb2_grpc.AccountServiceStub(acc_channel)
        gate = asyncio.Semaphore(concurrency)

        async def one(i: int) -> User:
            uid = base + i
            method_id = f"{tag}-m-{uid}"
            async with gate:
                await gateway.BindMethod(gateway_pb2.BindMethodRequest(
                    uid=uid, channel=CHANNELS[i % len(CHANNELS)], account=f"6222{uid:015d}",
                    method_id=method_id), timeout=30)
                token = keyring.sign(RewardGrant(f"{tag}-{uuid.uuid4().hex}", uid, per_user_fen,
                                                 "red_packet", int(time.time())))
                await account.ForceCredit(account_pb2.ForceCreditRequest(uid=uid, tokens=[token]), timeout=30)
            return User(uid, method_id)

        return list(await asyncio.gather(*(one(i) for i in range(users))))
