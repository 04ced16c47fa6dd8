"""Checks that ask the running services over gRPC: health of every replica, the gate,
channel rates against the gateway's capacity, dead letters, compensation, recon."""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import datetime
from typing import TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mesh.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from mesh.payout.v1 import payout_pb2, payout_pb2_grpc
from mesh.recon.v1 import recon_pb2, recon_pb2_grpc
from mesh.withdraw.v1 import settings_pb2, settings_pb2_grpc, withdraw_pb2, withdraw_pb2_grpc
from meshkit.timeconv import from_ts
from meshkit.transport import dial
from tools.preflight.config import SERVICES, Config
from tools.preflight.timing import Window, window_of
from tools.preflight.verdict import Result, fail, judged

CALLER = "preflight"
T = TypeVar("T")


class Peers:
    """One channel per address, dialled once and shared by every check."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._channels: dict[str, grpc.aio.Channel] = {}

    def channel(self, address: str) -> grpc.aio.Channel:
        if address not in self._channels:
            self._channels[address] = dial(address, self.config.tls, CALLER)
        return self._channels[address]

    def primary(self, service: str) -> grpc.aio.Channel:
        return self.channel(self.config.addresses[service][0])

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()


def rpc_error(service: str, exc: grpc.aio.AioRpcError) -> str:
    code = exc.code()
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return f"{service} is {code.name}"  # gRPC's connection details add nothing here
    return f"{service} answered {code.name}: {exc.details()}"


class PeerDown(Exception):
    """A service (or store) a check asks did not answer; the message names it and how."""


async def ask(service: str, call: Awaitable[T]) -> T:
    try:
        return await call
    except grpc.aio.AioRpcError as exc:
        raise PeerDown(rpc_error(service, exc)) from exc


# -- 1. health -----------------------------------------------------------------------------


async def health_of(peers: Peers, address: str) -> str:
    stub = health_pb2_grpc.HealthStub(peers.channel(address))
    try:
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=peers.config.timeout_s)
    except grpc.aio.AioRpcError as exc:
        return "UNREACHABLE" if exc.code() is grpc.StatusCode.UNAVAILABLE else exc.code().name
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


async def check_health(peers: Peers) -> Result:
    problems, lines = [], []
    for service in SERVICES:
        for address in peers.config.addresses[service]:
            state = await health_of(peers, address)
            lines.append(f"{service} {address} {state}")
            if state != "SERVING":
                problems.append(f"{service} at {address} is {state}")
    return judged("health", problems, "\n".join(lines))


# -- 3. gate -------------------------------------------------------------------------------


def describe_window(window: Window | None, zone: str, now: datetime) -> str:
    if window is None:
        return f"no closed window ({zone}): open at all hours"
    opens = window.next_open(now).astimezone(window.zone)
    state = "closed now" if window.closed_at(now) else "open now"
    return (f"closed {window.start:%H:%M}-{window.end:%H:%M} {zone} ({state}); "
            f"next opens {opens:%Y-%m-%d %H:%M %Z} ({opens.isoformat()})")


async def gate_config(peers: Peers) -> withdraw_pb2.GateConfig:
    stub = withdraw_pb2_grpc.WithdrawAdminServiceStub(peers.primary("withdraw_svc"))
    call = stub.GetGate(withdraw_pb2.GetGateRequest(), timeout=peers.config.timeout_s)
    reply = await ask("withdraw_svc", call)
    return reply.config


def judge_gate(config: withdraw_pb2.GateConfig, expect_window: tuple[str, str] | None,
               expect_release: tuple[int, int] | None, now: datetime) -> Result:
    try:
        window = window_of(config.closed_start, config.closed_end, config.timezone)
    except (ValueError, KeyError) as exc:  # ZoneInfoNotFoundError is a KeyError
        return fail("gate", f"gate configuration unreadable: {exc}")
    k, m = config.release_k, config.release_modulus
    share = 100.0 * k / m if m else 0.0
    detail = (f"{describe_window(window, config.timezone, now)}\n"
              f"release cohorts: uid mod {m} < {k} ({share:.0f}% of users), version {config.version}")
    problems = []
    if window is None:
        problems.append("no closed window configured (the gate is open at all hours)")
    if expect_window and (config.closed_start, config.closed_end) != expect_window:
        problems.append(f"window is {config.closed_start or '-'}-{config.closed_end or '-'}, "
                        f"expected {expect_window[0]}-{expect_window[1]}")
    if expect_release and (k, m) != expect_release:
        problems.append(f"release is {k}/{m}, expected {expect_release[0]}/{expect_release[1]}")
    if k == 0 and not expect_release:
        problems.append(f"release k is 0 of {m}: nobody may withdraw once the window opens")
    return judged("gate", problems, detail)


# -- 4. rates and capacity -----------------------------------------------------------------


async def order_channels(peers: Peers) -> list[str]:
    """Channels orders can be placed on: withdraw_svc's WITHDRAW_CHANNELS, as it runs."""
    stub = settings_pb2_grpc.WithdrawSettingsServiceStub(peers.primary("withdraw_svc"))
    reply = await ask("withdraw_svc", stub.GetSettings(settings_pb2.GetSettingsRequest(),
                                                       timeout=peers.config.timeout_s))
    return list(reply.channels)


async def channel_stats(peers: Peers) -> dict[str, payout_pb2.ChannelStats]:
    stub = payout_pb2_grpc.PayoutAdminServiceStub(peers.primary("payout_svc"))
    reply = await ask("payout_svc", stub.GetChannelStats(payout_pb2.GetChannelStatsRequest(),
                                                         timeout=peers.config.timeout_s))
    return {s.channel: s for s in reply.channels}


def rate_text(stats: payout_pb2.ChannelStats) -> str:
    if stats.unlimited:
        return "unlimited"
    if stats.paused:
        return "paused (no rate)"
    return f"{stats.rate_limit_per_second:g}/s"


async def check_rates(peers: Peers) -> Result:
    used = await order_channels(peers)
    stats = await channel_stats(peers)
    problems, lines = [], []
    for channel in sorted(set(used) | set(stats)):
        s = stats.get(channel)
        in_use = channel in used
        lines.append(f"{channel}: {rate_text(s) if s else 'unknown to payout_svc'}"
                     f"{'' if in_use else ' (no orders use it)'}")
        if not in_use:
            continue
        if s is None:
            problems.append(f"channel {channel} is not served by payout_svc (PAYOUT_CHANNELS)")
        elif s.paused:
            problems.append(f"channel {channel} has no rate (paused: its orders are never paid)")
    return judged("rates", problems, "\n".join(lines))


async def gateway_capacity(peers: Peers, channel: str) -> int:
    """Payouts per second the gateway declares (and enforces) for a channel; 0: no limit."""
    stub = gateway_pb2_grpc.GatewayAdminServiceStub(peers.primary("gateway_mock"))
    call = stub.GetChannelFaults(gateway_pb2.GetChannelFaultsRequest(channel=channel),
                                 timeout=peers.config.timeout_s)
    reply = await ask("gateway_mock", call)
    return int(reply.faults.capacity_per_second)


async def check_capacity(peers: Peers) -> Result:
    stats = await channel_stats(peers)
    problems, lines = [], []
    for channel, s in sorted(stats.items()):
        if s.paused:
            lines.append(f"{channel}: paused, nothing to compare")
            continue
        try:
            capacity = await gateway_capacity(peers, channel)
        except PeerDown as exc:
            problems.append(f"channel {channel}: {exc}")
            continue
        declared = f"{capacity}/s" if capacity else "no limit"
        lines.append(f"{channel}: rate {rate_text(s)}, gateway capacity {declared}")
        if not capacity:
            continue
        if s.unlimited:
            problems.append(f"channel {channel} is unlimited but the gateway takes {capacity}/s")
        elif s.rate_limit_per_second > capacity:
            problems.append(f"channel {channel} rate {s.rate_limit_per_second:g}/s exceeds "
                            f"the gateway's capacity {capacity}/s")
    return judged("capacity", problems, "\n".join(lines))


# -- 5. dead letters -----------------------------------------------------------------------


async def check_dlq(peers: Peers) -> Result:
    stats = await channel_stats(peers)
    dead = {ch: s.dead_letters for ch, s in sorted(stats.items()) if s.dead_letters}
    detail = ", ".join(f"{ch}: {n}" for ch, n in dead.items()) or f"empty on {', '.join(sorted(stats))}"
    problems = [f"{n} dead letter(s) on {ch}" for ch, n in dead.items()]
    return judged("dlq", problems, detail)


# -- 6. compensation -----------------------------------------------------------------------


async def withdraw_settings(peers: Peers) -> list[tuple[str, settings_pb2.GetSettingsResponse | str]]:
    """Each withdraw_svc replica's settings, or why it did not say."""
    out: list[tuple[str, settings_pb2.GetSettingsResponse | str]] = []
    for address in peers.config.addresses["withdraw_svc"]:
        stub = settings_pb2_grpc.WithdrawSettingsServiceStub(peers.channel(address))
        try:
            out.append((address, await stub.GetSettings(settings_pb2.GetSettingsRequest(),
                                                        timeout=peers.config.timeout_s)))
        except grpc.aio.AioRpcError as exc:
            out.append((address, exc.code().name))
    return out


async def check_four_eyes(peers: Peers) -> Result:
    problems, lines = [], []
    for address, s in await withdraw_settings(peers):
        if isinstance(s, str):
            problems.append(f"withdraw_svc at {address}: {s}")
        elif s.four_eyes_required:
            lines.append(f"{address}: gate changes need a second operator")
        else:
            lines.append(f"{address}: off")
            problems.append(f"four-eyes is off on withdraw_svc at {address} (ADMIN_FOUR_EYES)")
    return judged("four-eyes", problems, "\n".join(lines))


async def check_compensation(peers: Peers) -> Result:
    problems, lines = [], []
    for address, s in await withdraw_settings(peers):
        if isinstance(s, str):
            problems.append(f"withdraw_svc at {address}: {s}")
            continue
        if s.compensation_enabled:
            lines.append(f"{address}: on, every {s.compensation_interval_seconds}s, "
                         f"orders older than {s.compensation_min_age_seconds}s")
        else:
            lines.append(f"{address}: off")
            problems.append(f"compensation is off on withdraw_svc at {address} "
                            "(WITHDRAW_COMPENSATION_ENABLED)")
    return judged("compensation", problems, "\n".join(lines))


# -- 7, 8. recon ---------------------------------------------------------------------------


async def recon_status(peers: Peers) -> recon_pb2.GetReconStatusResponse:
    stub = recon_pb2_grpc.ReconServiceStub(peers.primary("recon_svc"))
    reply: recon_pb2.GetReconStatusResponse = await ask("recon_svc", stub.GetReconStatus(
        recon_pb2.GetReconStatusRequest(), timeout=peers.config.timeout_s))
    return reply


def judge_feeds(status: recon_pb2.GetReconStatusResponse, feeds: tuple[str, ...], max_lag_s: float,
                now: datetime) -> Result:
    heads = {p.feed: from_ts(p.head_time) for p in status.positions}
    problems, lines = [], []
    for feed in feeds:
        head = heads.get(feed)
        if head is None:
            lines.append(f"{feed}: never read to its end")
            problems.append(f"recon has not read feed {feed} to its end")
            continue
        lag = (now - head).total_seconds()
        lines.append(f"{feed}: at the head {lag:.1f}s ago")
        if lag > max_lag_s:
            problems.append(f"recon is {lag:.1f}s behind feed {feed} (limit {max_lag_s:g}s)")
    return judged("recon-feeds", problems, "\n".join(lines))


def judge_discrepancies(status: recon_pb2.GetReconStatusResponse) -> Result:
    n = status.open_discrepancies
    detail = f"{n} open, {status.checked_orders} orders checked, {status.pending_checks} pending"
    return judged("discrepancies", [f"{n} open discrepanc{'y' if n == 1 else 'ies'}"] if n else [], detail)
