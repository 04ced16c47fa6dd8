#!/usr/bin/env python3
"""The campaign night, rehearsed on the running mesh (`make up` first).

    make drill DRILL_ARGS="--users 300 --rate 20 --duration 40"

1. gate closed (a window around now): confirms are refused with the reopening time;
2. reopening in uid batches (uid mod M < k, k raised step by step): a released uid passes,
   a not-yet-released one is refused;
3. load (the `make load` driver), and during it: gateway faults (5% transient errors, 2%
   replies lost after commit, 1% definitive failures), SIGKILL + restart of payout_svc,
   withdraw_svc and account_svc once each (tools/meshctl.py), a PostgreSQL outage of a few
   seconds (every service's database connections run through a fault proxy of the drill's,
   which drops them all and refuses new ones), and two Redis wipes in a row (keys under
   MESH_KEY_PREFIX; FLUSHALL with --flushall);
4. stop the load, clear the faults, wait for every order of the drill to settle by itself
   (no compensation run: the normal paths must finish every order); only if some do not
   within the settle timeout, run the compensation job (short age threshold) and fail the
   drill for every order it had to move; wait for realtime recon, run the daily recon;
5. verdict, from the services' own answers over RPC only: every order terminal; per user,
   funding = balance + paid out; the gateway paid each SUCCEEDED order exactly once and no
   FAILED one; every FAILED order with a debit refunded exactly once; no open recon
   discrepancy for the drill's orders.

Ends with exactly one line `DRILL PASS orders=... succeeded=... failed=... lost_fen=0
double_payouts=0 discrepancies=0`, or `DRILL FAIL <what broke>` and exit status 1.
Addresses come from `<SVC>_ADDR`, the Redis namespace from MESH_KEY_PREFIX, and process
control goes through tools/meshctl.py with the same environment.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from mesh.account.v1 import account_pb2
from mesh.feed.v1 import feed_pb2
from mesh.gateway.v1 import gateway_pb2
from mesh.recon.v1 import recon_pb2
from mesh.withdraw.v1 import withdraw_pb2
from meshkit.redis_client import open_redis
from meshkit.redis_keys import Keys
from meshkit.settings import DEFAULT_REDIS_URL
from meshkit.status import reason_of
from tools import meshctl as mesh
from tools.drill_verdict import Answers, DrillResult, Run, state_of
from tools.drill_verdict import verdict as judge
from tools.loadlib import gate
from tools.loadlib.clients import MeshClients, retry_unavailable
from tools.loadlib.driver import Driver, DriverConfig, parse_mix
from tools.loadlib.pgdetour import PostgresDetour
from tools.loadlib.report import new_report_dir, summary_table, write_report
from tools.loadlib.runner import funding_per_user, rate_figures
from tools.loadlib.sampler import TERMINAL, OrderTracker, Sampler
from tools.loadlib.seeding import (
    TestUser,
    bounded_gather,
    channels_and_paused,
    new_run_slot,
    run_uids,
    seed_users,
)
from tools.loadlib.stats import Recorder

ROOT = Path(__file__).resolve().parent.parent

KILLED = ("payout_svc", "withdraw_svc", "account_svc")
OK_REFUNDS = frozenset({withdraw_pb2.REFUND_STATE_REFUNDED, withdraw_pb2.REFUND_STATE_VOIDED})


class DrillFailed(Exception):
    """A step of the scenario itself did not behave (the verdict is computed separately)."""


@dataclass
class DrillOptions:
    users: int = 300
    rate: float = 20.0
    duration_s: float = 40.0
    mix: str = "page=3,confirm=1,order=2"
    amount_min_fen: int = 100
    amount_max_fen: int = 500
    transient_rate: float = 0.05
    lost_reply_rate: float = 0.02
    definitive_rate: float = 0.01
    kill: tuple[str, ...] = KILLED
    wipe_redis: bool = True
    redis_wipes: int = 2
    flushall: bool = False
    pg_outage_s: float = 3.0
    release_modulus: int = 10
    release_steps: tuple[int, ...] = (3, 6, 10)
    compensation_min_age_s: int = 2
    settle_timeout_s: float = 180.0
    recon_timeout_s: float = 90.0
    gate_timeout_s: float = 15.0
    restart_timeout_s: float = 40.0
    run_slot: int = -1
    report_dir: Path | None = None
    environ: Mapping[str, str] | None = None
    layout: mesh.Layout = field(default_factory=mesh.Layout)
    progress: bool = True


class Timeline:
    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self.t0 = 0.0
        self.events: list[dict[str, Any]] = []

    def start(self) -> None:
        self.t0 = asyncio.get_running_loop().time()

    def note(self, what: str, mark: str = "") -> None:
        t = asyncio.get_running_loop().time() - self.t0
        event = {"t": round(t, 2), "at": datetime.now(UTC).isoformat(timespec="milliseconds"), "what": what}
        if mark:
            event["mark"] = mark
        self.events.append(event)
        self.say(f"drill [{t:6.1f}s] {what}")


def _code(err: grpc.aio.AioRpcError) -> str:
    return err.code().name


@dataclass(frozen=True)
class ConfirmAnswer:
    """One confirm's outcome: OK with its order, or the refusal's code and ErrorInfo reason
    (the message is only shown)."""

    code: grpc.StatusCode
    reason: str | None
    message: str
    order: withdraw_pb2.Order | None

    def refused_by_gate(self) -> bool:
        return self.code is grpc.StatusCode.FAILED_PRECONDITION and (self.reason or "").startswith("GATE_")


def _ts(dt: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(dt)
    return stamp


# -- the scenario ----------------------------------------------------------------------------


class Drill:
    def __init__(self, options: DrillOptions, say: Callable[[str], None]) -> None:
        self.o = options
        self.env: dict[str, str] = dict(os.environ if options.environ is None else options.environ)
        self.say = say
        self.timeline = Timeline(say)
        self.clients = MeshClients.from_env(caller="drill", environ=self.env)
        self.users: list[TestUser] = []
        self.gate_before: withdraw_pb2.GateConfig | None = None
        self.faults_before: dict[str, gateway_pb2.ChannelFaults] = {}
        self.channels: list[str] = []
        self.confirmed: set[str] = set()
        self.started_wall = datetime.now(UTC)
        self.pg = PostgresDetour(self.env, options.layout, self.timeline.note, options.restart_timeout_s)
        # Orders the compensation job had to move: the normal paths left them unfinished.
        self.compensated: set[str] = set()

    async def close(self) -> None:
        await self.clients.close()

    # 0. preflight and seeding

    async def prepare(self) -> None:
        m, steps = self.o.release_modulus, self.o.release_steps
        if not steps or list(steps) != sorted(set(steps)) or steps[0] < 1 or steps[-1] != m:
            raise DrillFailed(f"release steps {steps} must rise strictly from >= 1 to the modulus {m}")
        if self.o.users < m:
            raise DrillFailed(f"need at least {m} users, one per uid batch")
        missing = await self.clients.wait_serving(timeout=20.0)
        if missing:
            raise DrillFailed(f"not serving: {', '.join(missing)} (start the mesh with `make up`)")
        for service in self.o.kill:
            if mesh.running_pid(service, self.o.layout) is None:
                raise DrillFailed(f"{service} has no live pid in {self.o.layout.pid_file(service)}: "
                                  "the drill kills and restarts services started by tools/meshctl.py")
        self.channels, paused = await channels_and_paused(self.clients)
        if paused:
            raise DrillFailed(f"channels {', '.join(paused)} are paused (rate 0 or none configured): "
                              "their orders would never settle; give them a rate with SetChannelRate")
        self.gate_before = await gate.get_config(self.clients)
        for channel in self.channels:
            reply = await self.clients.gateway_admin.GetChannelFaults(
                gateway_pb2.GetChannelFaultsRequest(channel=channel), timeout=5.0,
                metadata=self.clients.metadata)
            self.faults_before[channel] = reply.faults
        if self.o.pg_outage_s > 0:
            await self.pg.install()
            missing = await self.clients.wait_serving(timeout=20.0)
            if missing:
                raise DrillFailed(f"not serving through the PostgreSQL proxy: {', '.join(missing)}")

    async def seed(self, run_slot: int, funding: int) -> None:
        uids = run_uids(run_slot, self.o.users)
        seeded = await seed_users(self.clients, uids, funding, run_slot=run_slot, channels=self.channels,
                                  fund_via="stream", say=self.say, environ=self.env)
        self.users = seeded.users
        self.timeline.note(f"seeded {len(self.users)} users uid {uids[0]}..{uids[-1]}, "
                           f"{funding} fen each ({seeded.credited_by_stream} via the ingest stream, "
                           f"{seeded.credited_by_force} via ForceCredit)")

    # 1-2. gate

    def _user_in_batch(self, lo: int, hi: int) -> TestUser:
        """A test user with money left whose uid falls in lo <= uid mod M < hi."""
        m = self.o.release_modulus
        for user in self.users:
            if lo <= user.uid % m < hi and user.remaining_fen >= 100:
                return user
        raise DrillFailed("no test user fits the gate probe; use more --users")

    async def _confirm(self, user: TestUser, tag: str) -> ConfirmAnswer:
        """One confirm of 100 fen."""
        request = withdraw_pb2.ConfirmWithdrawRequest(uid=user.uid, request_id=f"drill-{tag}-{user.uid}",
                                                      amount_fen=100, method_id=user.method_id)
        user.remaining_fen -= 100
        try:
            reply = await self.clients.withdraw.ConfirmWithdraw(request, timeout=5.0,
                                                                metadata=self.clients.user_metadata(user.uid))
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.FAILED_PRECONDITION:
                user.remaining_fen += 100
            return ConfirmAnswer(err.code(), reason_of(err), err.details() or "", None)
        self.confirmed.add(reply.order.order_id)
        return ConfirmAnswer(grpc.StatusCode.OK, None, "", reply.order)

    async def gate_closed(self) -> None:
        assert self.gate_before is not None
        tz_name = self.gate_before.timezone or "Asia/Shanghai"
        local = datetime.now(ZoneInfo(tz_name))
        start = (local - timedelta(minutes=30)).strftime("%H:%M")
        end = (local + timedelta(hours=2)).strftime("%H:%M")
        closed = withdraw_pb2.GateConfig(
            timezone=tz_name, closed_start=start, closed_end=end, release_modulus=self.o.release_modulus,
            release_k=self.o.release_modulus, bind_prompt=self.gate_before.bind_prompt)
        await gate.set_config(self.clients, closed, reason="drill: campaign window closed")
        self.timeline.note(f"gate closed {start}-{end} {tz_name}", mark="gate closed")
        probe = self.users[0]
        if not await gate.wait_gate(self.clients, [probe.uid], want_open=False,
                                    timeout_s=self.o.gate_timeout_s):
            raise DrillFailed(f"gate: the page still shows the gate open {self.o.gate_timeout_s:.0f}s "
                              "after closing it")
        page_gate = await gate.page_gate(self.clients, probe.uid)
        answer = await self._confirm(probe, "closed")
        code, message = answer.code.name, answer.message
        if not answer.refused_by_gate():
            raise DrillFailed(f"gate: a confirm during the closed window answered {code} {answer.reason} "
                              f"(order {answer.order.order_id if answer.order else '-'}), "
                              "expected FAILED_PRECONDITION GATE_*")
        # The message is read here as a user would: does it say when the gate reopens.
        if end not in message:
            raise DrillFailed(f"gate: the refusal does not name the reopening time {end}: {message!r}")
        if page_gate is None or not page_gate.HasField("open_time"):
            raise DrillFailed("gate: the withdraw page gives no reopening time while closed")
        shown = page_gate.open_time.ToDatetime(tzinfo=UTC).astimezone(ZoneInfo(tz_name)).strftime("%H:%M")
        if shown != end:
            raise DrillFailed(f"gate: the page says it reopens at {shown}, the window ends at {end}")
        self.timeline.note(f"closed gate refuses uid {probe.uid}: {code} {message[:90]!r}; "
                           f"page open_time {shown}")

    async def gate_reopen(self) -> None:
        assert self.gate_before is not None
        m = self.o.release_modulus
        previous_k = 0
        for k in self.o.release_steps:
            config = withdraw_pb2.GateConfig(
                timezone=self.gate_before.timezone, closed_start="", closed_end="", release_modulus=m,
                release_k=k, bind_prompt=self.gate_before.bind_prompt)
            await gate.set_config(self.clients, config, reason=f"drill: release uid mod {m} < {k}")
            self.timeline.note(f"gate reopening: uid mod {m} < {k}")
            # A uid this step releases (not one an earlier step did): waiting for it to open
            # proves every replica applies the new k.
            released = self._user_in_batch(previous_k, k)
            if not await gate.wait_gate(self.clients, [released.uid], want_open=True,
                                        timeout_s=self.o.gate_timeout_s):
                raise DrillFailed(f"gate: uid {released.uid} (mod {m} = {released.uid % m} < {k}) "
                                  f"not released within {self.o.gate_timeout_s:.0f}s")
            answer = await self._confirm(released, f"k{k}")
            if answer.code is not grpc.StatusCode.OK:
                raise DrillFailed(f"gate: released uid {released.uid} refused at k={k}: "
                                  f"{answer.code.name} {answer.reason} {answer.message}")
            note = f"k={k}: released uid {released.uid} (mod {m} = {released.uid % m}) passes"
            if k < m:
                held = self._user_in_batch(k, m)
                answer = await self._confirm(held, f"k{k}")
                if not answer.refused_by_gate():
                    raise DrillFailed(f"gate: uid {held.uid} (mod {m} = {held.uid % m} >= {k}) answered "
                                      f"{answer.code.name} {answer.reason} at k={k}, "
                                      "expected FAILED_PRECONDITION GATE_*")
                note += f", uid {held.uid} (mod {m} = {held.uid % m}) refused"
            self.timeline.note(note)
            previous_k = k
        if not await gate.wait_gate(self.clients, [u.uid for u in self.users[: m]], want_open=True,
                                    timeout_s=self.o.gate_timeout_s):
            raise DrillFailed("gate: not open for every test user after the last release step")

    # 3. load and chaos

    async def _set_faults(self, clear: bool) -> None:
        for channel in self.channels:
            before = self.faults_before.get(channel) or gateway_pb2.ChannelFaults(channel=channel)
            faults = gateway_pb2.ChannelFaults()
            faults.CopyFrom(before)
            faults.channel = channel
            if not clear:
                faults.transient_error_rate = self.o.transient_rate
                faults.lost_reply_rate = self.o.lost_reply_rate
                faults.definitive_failure_rate = self.o.definitive_rate
            request = gateway_pb2.SetChannelFaultsRequest(faults=faults)
            await retry_unavailable(functools.partial(
                self.clients.gateway_admin.SetChannelFaults, request, timeout=5.0,
                metadata=self.clients.metadata))

    async def _kill_restart(self, service: str) -> None:
        pid = await asyncio.to_thread(mesh.kill, service, self.o.layout)
        if pid is None:
            raise DrillFailed(f"chaos: {service} was not running when its kill was due")
        self.timeline.note(f"SIGKILL {service} (pid {pid})", mark=f"kill {service}")
        started = time.monotonic()
        address = self.clients.addresses[service]
        # tools/meshctl.py refuses to start on a port that still answers. A killed process can
        # hold it a moment longer; anything longer is another process on the same port
        # (gRPC binds with SO_REUSEPORT), which would get half the traffic of the new one.
        if not await _port_closed(address, timeout_s=10.0):
            raise DrillFailed(f"chaos: {address} still accepts connections 10s after SIGKILL of {service}: "
                              "another process serves that port")
        try:
            new_pid = await asyncio.to_thread(mesh.restart, service, self.env, self.o.layout,
                                              self.o.restart_timeout_s)
        except mesh.MeshError as exc:
            raise DrillFailed(f"chaos: {service} did not come back: {exc}") from exc
        waited = time.monotonic() - started
        self.timeline.note(f"{service} restarted (pid {new_pid}), SERVING after {waited:.1f}s")

    async def _wipe_redis(self) -> None:
        client = open_redis(self.env.get("REDIS_URL") or DEFAULT_REDIS_URL, env=self.env)
        try:
            if self.o.flushall:
                await client.flushall()
                self.timeline.note("Redis FLUSHALL", mark="redis wipe")
                return
            prefix = self.env.get("MESH_KEY_PREFIX") or "mesh"
            deleted = 0
            batch: list[bytes] = []
            async for key in client.scan_iter(match=f"{prefix}:*", count=1000):
                batch.append(key)
                if len(batch) >= 500:
                    deleted += await client.unlink(*batch)
                    batch = []
            if batch:
                deleted += await client.unlink(*batch)
        finally:
            await client.aclose()
        self.timeline.note(f"Redis wiped: {deleted} keys under '{prefix}:*' deleted", mark="redis wipe")

    async def _wipe_redis_again(self) -> None:
        """The next wipe only once the mesh has noticed the last one (the relay put its epoch
        key back and republished): two wipes a moment apart would be one wipe."""
        client = open_redis(self.env.get("REDIS_URL") or DEFAULT_REDIS_URL, env=self.env)
        epoch = Keys(self.env.get("MESH_KEY_PREFIX") or "mesh").epoch()
        try:
            for _ in range(150):  # 30 s at most
                if await client.exists(epoch):
                    break
                await asyncio.sleep(0.2)
        finally:
            await client.aclose()
        await asyncio.sleep(2.0)
        await self._wipe_redis()

    async def chaos(self, load_s: float) -> None:
        """Each fault once, spread over the load; a step waits for the previous one."""
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        steps: list[tuple[float, Callable[[], Any]]] = [(0.10, self._faults_on)]
        spread = [0.2, 0.45, 0.6]
        steps += [(spread[i] if i < len(spread) else 0.65, functools.partial(self._kill_restart, s))
                  for i, s in enumerate(self.o.kill)]
        if self.pg.installed:
            steps.append((0.3, functools.partial(self.pg.outage, self.o.pg_outage_s)))
        if self.o.wipe_redis:
            # The second wipe comes after the first one's republish went out: what that
            # re-opened must survive being wiped again.
            steps.append((0.7, self._wipe_redis))
            steps += [(0.85, self._wipe_redis_again)] * (max(1, self.o.redis_wipes) - 1)
        steps.sort(key=lambda step: step[0])
        for share, action in steps:
            delay = t0 + share * load_s - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await action()

    async def _faults_on(self) -> None:
        await self._set_faults(clear=False)
        self.timeline.note(f"gateway faults on every channel: {self.o.transient_rate:.0%} transient, "
                           f"{self.o.lost_reply_rate:.0%} lost replies after commit, "
                           f"{self.o.definitive_rate:.0%} definitive failures", mark="faults on")

    async def load(self, recorder: Recorder, sampler: Sampler, run_tag: str) -> tuple[Driver, float]:
        # The drill stops the driver itself, once the duration passed and every fault is in.
        config = DriverConfig(rate=self.o.rate, duration_s=self.o.duration_s + 600.0,
                              mix=parse_mix(self.o.mix),
                              amount_min_fen=self.o.amount_min_fen, amount_max_fen=self.o.amount_max_fen,
                              timeout_s=5.0, confirm_retries=3, run_tag=run_tag, seed=7)
        driver = Driver(self.clients, self.users, config, recorder)
        sampler.driver = driver
        sampler.phase = "load"
        self.timeline.note(f"load starts: {self.o.rate:g} confirms/s, mix {self.o.mix}", mark="load")
        run = asyncio.create_task(driver.run())
        chaos = asyncio.create_task(self.chaos(self.o.duration_s))
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            # The load runs its duration and at least until every fault has been injected.
            await asyncio.sleep(self.o.duration_s)
            await chaos
        finally:
            driver.stop()
            if not chaos.done():
                chaos.cancel()
                with contextlib.suppress(asyncio.CancelledError, DrillFailed):
                    await chaos
            await run
        seconds = loop.time() - started
        self.confirmed.update(driver.state.order_ids)
        self.timeline.note(f"load stopped after {seconds:.1f}s: {driver.state.issued} calls, "
                           f"{len(driver.state.order_ids)} confirms answered, "
                           f"{driver.state.unanswered_confirms} unanswered, "
                           f"{driver.state.shed_confirms} refused by admission (shed)", mark="load stop")
        return driver, seconds

    # 4. settle

    async def list_orders(self) -> dict[str, withdraw_pb2.Order]:
        orders: dict[str, withdraw_pb2.Order] = {}

        async def one(user: TestUser) -> None:
            token = ""
            while True:
                request = withdraw_pb2.ListOrdersRequest(uid=user.uid, page_size=200, page_token=token)
                reply = await retry_unavailable(functools.partial(
                    self.clients.withdraw.ListOrders, request, timeout=10.0,
                    metadata=self.clients.user_metadata(user.uid)))
                for order in reply.orders:
                    orders[order.order_id] = order
                token = reply.next_page_token
                if not token:
                    return

        await bounded_gather(self.users, one, 32)
        return orders

    async def settle(self) -> dict[str, withdraw_pb2.Order]:
        await self._set_faults(clear=True)
        self.timeline.note("gateway faults cleared", mark="faults off")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.o.settle_timeout_s
        while True:
            orders = await self.list_orders()
            open_orders, unrefunded = _unsettled(orders)
            if not open_orders and not unrefunded:
                self.timeline.note("every drill order terminal without any compensation run", mark="settled")
                return orders
            if loop.time() >= deadline:
                break
            await asyncio.sleep(1.0)
        states = Counter(_state(o) for o in open_orders)
        self.timeline.note(f"NOT settled by the normal paths after {self.o.settle_timeout_s:.0f}s: open "
                           f"{dict(states)}, {len(unrefunded)} failed orders without a confirmed refund; "
                           "running the compensation job")
        return await self._compensate()

    async def _compensate(self) -> dict[str, withdraw_pb2.Order]:
        """The fallback: the compensation job with a short age threshold until every order is
        terminal. Every order it moves is a finding (the night would have waited hours)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.o.settle_timeout_s
        runs = 0
        actions: Counter[str] = Counter()
        while True:
            try:
                reply = await self.clients.withdraw_admin.RunCompensation(
                    withdraw_pb2.RunCompensationRequest(min_age_seconds=self.o.compensation_min_age_s),
                    timeout=120.0, metadata=self.clients.metadata)
                runs += 1
                moved = [a for a in reply.actions if a.action.upper() != "WAIT"]
                actions.update(a.action for a in moved)
                self.compensated.update(a.order_id for a in moved)
            except grpc.aio.AioRpcError as err:
                self.say(f"drill: RunCompensation answered {_code(err)}: {err.details()}")
            orders = await self.list_orders()
            open_orders, unrefunded = _unsettled(orders)
            if not open_orders and not unrefunded:
                self.timeline.note(f"every drill order terminal after {runs} compensation runs "
                                   f"({dict(actions) or 'no actions'})", mark="settled")
                return orders
            if loop.time() >= deadline:
                states = Counter(_state(o) for o in open_orders)
                self.timeline.note(f"NOT settled after {runs} compensation runs: open {dict(states)}, "
                                   f"{len(unrefunded)} failed orders without a confirmed refund")
                return orders
            await asyncio.sleep(1.0)

    # 5. recon

    async def recon(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.o.recon_timeout_s
        calm = 0
        while True:
            caught_up = await self._recon_caught_up()
            status = None
            with contextlib.suppress(grpc.aio.AioRpcError):
                status = await self.clients.recon.GetReconStatus(
                    recon_pb2.GetReconStatusRequest(), timeout=5.0, metadata=self.clients.metadata)
            if caught_up and status is not None and status.pending_checks == 0:
                calm += 1
                if calm >= 2:
                    self.timeline.note(f"realtime recon settled: {status.checked_orders} orders checked, "
                                       f"{status.open_discrepancies} open discrepancies (whole mesh)",
                                       mark="recon")
                    break
            else:
                calm = 0
            if loop.time() >= deadline:
                pending = status.pending_checks if status is not None else "?"
                self.timeline.note(f"realtime recon NOT settled after {self.o.recon_timeout_s:.0f}s "
                                   f"(feeds caught up: {caught_up}, pending checks: {pending})")
                break
            await asyncio.sleep(0.5)
        tz = ZoneInfo(self.env.get("RECON_TIMEZONE") or "Asia/Shanghai")
        first = self.started_wall.astimezone(tz).date()
        last = datetime.now(tz).date()
        day = first
        while day <= last:
            reply = await retry_unavailable(functools.partial(
                self.clients.recon.RunDailyRecon, recon_pb2.RunDailyReconRequest(date=day.isoformat()),
                timeout=120.0, metadata=self.clients.metadata))
            self.timeline.note(f"daily recon {day}: {reply.report.orders} orders, "
                               f"{reply.report.discrepancies} discrepancies (whole day)", mark="daily recon")
            day += timedelta(days=1)

    async def _recon_caught_up(self) -> bool:
        """True when recon's stored position on every feed is at the feed's end."""
        try:
            status = await self.clients.recon.GetReconStatus(recon_pb2.GetReconStatusRequest(), timeout=5.0,
                                                             metadata=self.clients.metadata)
        except grpc.aio.AioRpcError:
            return False
        positions = {p.feed: p.cursor for p in status.positions}
        for feed, stub in self.clients.feeds.items():
            if feed not in positions:
                continue
            try:
                reply = await stub.ReadChanges(feed_pb2.ReadChangesRequest(cursor=positions[feed], limit=1),
                                               timeout=5.0, metadata=self.clients.metadata)
            except grpc.aio.AioRpcError:
                return False
            if reply.changes:
                return False
        return True

    # 6. verdict

    async def verdict(self, orders: dict[str, withdraw_pb2.Order]) -> DrillResult:
        return judge(orders, await self._answers(orders), Run(self.users, self.confirmed, self.compensated))

    async def _answers(self, orders: dict[str, withdraw_pb2.Order]) -> Answers:
        md = self.clients.metadata
        entries: dict[str, list[account_pb2.Entry]] = {}
        payouts: dict[str, gateway_pb2.Payout | None] = {}
        balances: dict[int, int] = {}

        async def per_order(order_id: str) -> None:
            reply = await retry_unavailable(lambda: self.clients.account.GetOrderEntries(
                account_pb2.GetOrderEntriesRequest(order_id=order_id), timeout=10.0, metadata=md))
            entries[order_id] = list(reply.entries)
            try:
                found = await retry_unavailable(lambda: self.clients.gateway.QueryPayout(
                    gateway_pb2.QueryPayoutRequest(order_id=order_id), timeout=10.0, metadata=md))
                payouts[order_id] = found.payout
            except grpc.aio.AioRpcError as err:
                if err.code() != grpc.StatusCode.NOT_FOUND:
                    raise
                payouts[order_id] = None

        async def per_user(user: TestUser) -> None:
            reply = await retry_unavailable(lambda: self.clients.account.GetBalance(
                account_pb2.GetBalanceRequest(uid=user.uid), timeout=10.0,
                metadata=self.clients.user_metadata(user.uid)))
            balances[user.uid] = reply.balance_fen

        await bounded_gather(sorted(orders), per_order, 32)
        await bounded_gather(self.users, per_user, 32)
        listed = await self._gateway_payouts()
        discrepancies, unattributed = await self._open_discrepancies(set(orders))
        return Answers(entries, payouts, balances, listed, discrepancies, unattributed)

    async def _gateway_payouts(self) -> list[gateway_pb2.Payout]:
        lo, hi = self.users[0].uid, self.users[-1].uid
        start = self.started_wall - timedelta(minutes=5)
        end = datetime.now(UTC) + timedelta(minutes=5)
        found: list[gateway_pb2.Payout] = []
        token = ""
        while True:
            request = gateway_pb2.ListPayoutsRequest(start_time=_ts(start), end_time=_ts(end), page_size=5000,
                                                     page_token=token)
            reply = await retry_unavailable(functools.partial(
                self.clients.gateway.ListPayouts, request, timeout=30.0, metadata=self.clients.metadata))
            found.extend(p for p in reply.payouts if lo <= p.uid <= hi)
            token = reply.next_page_token
            if not token:
                return found

    async def _open_discrepancies(
        self, order_ids: set[str]
    ) -> tuple[list[recon_pb2.Discrepancy], list[recon_pb2.Discrepancy]]:
        """Open discrepancies of the drill's orders, and open ones without an order raised
        since the drill started (conservation totals), reported but not attributed."""
        md = self.clients.metadata
        reply = await retry_unavailable(lambda: self.clients.recon.ListDiscrepancies(
            recon_pb2.ListDiscrepanciesRequest(status=recon_pb2.DISCREPANCY_STATUS_OPEN, page_size=1000),
            timeout=30.0, metadata=md))
        listed = list(reply.discrepancies)
        since = self.started_wall
        global_open = [d for d in listed if not d.order_id and d.create_time.ToDatetime(tzinfo=UTC) >= since]
        if len(listed) < 1000:
            return [d for d in listed if d.order_id in order_ids], global_open
        # More than one page of open discrepancies in the mesh: ask order by order.
        mine: list[recon_pb2.Discrepancy] = []

        async def one(order_id: str) -> None:
            found = await retry_unavailable(lambda: self.clients.recon.ListDiscrepancies(
                recon_pb2.ListDiscrepanciesRequest(status=recon_pb2.DISCREPANCY_STATUS_OPEN,
                                                   order_id=order_id),
                timeout=10.0, metadata=md))
            mine.extend(found.discrepancies)

        await bounded_gather(sorted(order_ids), one, 32)
        return mine, global_open

    # restore

    async def restore(self) -> None:
        try:
            await self.pg.remove()
        except (mesh.MeshError, OSError) as exc:
            self.timeline.note(f"could not move the services back to the real PostgreSQL address: {exc}")
        # A failed step may have left a killed service down: the mesh is left as found.
        for service in self.o.kill:
            if mesh.running_pid(service, self.o.layout) is not None:
                continue
            try:
                pid = await asyncio.to_thread(mesh.ensure, service, mesh.service_env(self.env), self.o.layout,
                                              self.o.restart_timeout_s)
                self.timeline.note(f"{service} was down after the drill: started again (pid {pid})")
            except mesh.MeshError as exc:
                self.timeline.note(f"{service} is DOWN and could not be started: {exc}")
        with contextlib.suppress(Exception):
            await self._set_faults(clear=True)
        if self.gate_before is not None:
            try:
                await gate.set_config(self.clients, self.gate_before, reason="drill: restore")
                self.timeline.note("gate configuration restored")
            except Exception as exc:
                self.say(f"drill: could not restore the gate configuration: {exc}")


async def _port_closed(address: str, timeout_s: float) -> bool:
    """Wait until nothing accepts connections at address; False if it still does at the end."""
    host, _, port = address.rpartition(":")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host.strip("[]"), int(port)), 1.0)
        except (OSError, TimeoutError):
            return True
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(0.1)


_state = state_of


Orders = list[withdraw_pb2.Order]


def _unsettled(orders: Mapping[str, withdraw_pb2.Order]) -> tuple[Orders, Orders]:
    """(orders not terminal, FAILED orders whose refund is not confirmed)."""
    open_orders = [o for o in orders.values() if _state(o) not in TERMINAL]
    unrefunded = [o for o in orders.values() if _state(o) == "FAILED" and o.refund not in OK_REFUNDS]
    return open_orders, unrefunded


async def run_drill(options: DrillOptions, say: Callable[[str], None] = print) -> DrillResult:
    """The whole drill; never raises for a failed check: the result says what broke."""
    drill = Drill(options, say)
    drill.timeline.start()
    run_slot = options.run_slot if options.run_slot >= 0 else new_run_slot()
    run_tag = f"drill-{run_slot}-{int(time.time())}"
    recorder = Recorder()
    uids = run_uids(run_slot, options.users)
    tracker = OrderTracker(drill.clients, uids[0], uids[-1] + 1)
    sampler = Sampler(drill.clients, recorder, tracker, say=say if options.progress else None, phase="seed")
    result = DrillResult(False, "DRILL FAIL did not run")
    driver: Driver | None = None
    load_seconds = 0.0
    orders: dict[str, withdraw_pb2.Order] = {}
    try:
        await drill.prepare()
        await tracker.skip_to_end()
        sampler.start(t0=drill.timeline.t0)
        config = DriverConfig(rate=options.rate, duration_s=options.duration_s, mix=parse_mix(options.mix),
                              amount_min_fen=options.amount_min_fen, amount_max_fen=options.amount_max_fen)
        # Funding covers the load plus the gate probes (100 fen each).
        funding = funding_per_user(config, options.users) + 1000
        await drill.seed(run_slot, funding)
        sampler.phase = "gate"
        await drill.gate_closed()
        await drill.gate_reopen()
        driver, load_seconds = await drill.load(recorder, sampler, run_tag)
        sampler.phase = "settle"
        orders = await drill.settle()
        sampler.phase = "recon"
        await drill.recon()
        result = await drill.verdict(orders)
    except DrillFailed as exc:
        drill.timeline.note(f"step failed: {exc}")
        result = DrillResult(False, f"DRILL FAIL {exc}")
    except (grpc.aio.AioRpcError, RuntimeError, mesh.MeshError, OSError) as exc:
        detail = f"{exc.code().name} {exc.details()}" if isinstance(exc, grpc.aio.AioRpcError) else str(exc)
        drill.timeline.note(f"step failed: {type(exc).__name__}: {detail}")
        result = DrillResult(False, f"DRILL FAIL {type(exc).__name__}: {detail}")
    finally:
        await sampler.stop()
        await drill.restore()
        try:
            result.report_dir = _write(drill, options, result, recorder, sampler, driver, load_seconds,
                                       run_tag, run_slot)
        finally:
            await drill.close()
    result.timeline = drill.timeline.events
    return result


def _write(drill: Drill, options: DrillOptions, result: DrillResult, recorder: Recorder, sampler: Sampler,
           driver: Driver | None, load_seconds: float, run_tag: str, run_slot: int) -> Path:
    out = new_report_dir("drill", options.report_dir)
    summary = recorder.summary(load_seconds) if load_seconds else {}
    users = drill.users
    report: dict[str, Any] = {
        "kind": "drill",
        "verdict_line": result.line,
        "passed": result.passed,
        "config": {
            "run": run_tag, "run_slot": run_slot, "users": options.users,
            "test_uids": f"{users[0].uid}..{users[-1].uid}" if users else "-",
            "rate_confirms_per_s": options.rate, "duration_s": options.duration_s, "mix": options.mix,
            "faults": (f"transient {options.transient_rate}, lost reply {options.lost_reply_rate}, "
                       f"definitive {options.definitive_rate}"),
            "killed": ", ".join(options.kill), "redis_wipe": "FLUSHALL" if options.flushall else
            (f"prefix keys x{options.redis_wipes}" if options.wipe_redis else "no"),
            "pg_outage_s": options.pg_outage_s,
            "key_prefix": drill.env.get("MESH_KEY_PREFIX") or "mesh",
            "started": drill.started_wall.isoformat(timespec="seconds"), "addresses": drill.clients.addresses,
        },
        "summary": summary,
        "results": {
            **(rate_figures(summary, load_seconds) if summary else {}),
            "orders": result.orders, "succeeded": result.succeeded, "failed": result.failed,
            "lost_fen": result.lost_fen, "double_payouts": result.double_payouts,
            "discrepancies": result.discrepancies,
            "unanswered_confirms": driver.state.unanswered_confirms if driver else 0,
            "shed_confirms": driver.state.shed_confirms if driver else 0,
        },
        "checks": result.checks,
    }
    write_report(out, report, sampler.rows, drill.timeline.events, title=f"Drill {run_tag}")
    if summary:
        drill.say("")
        drill.say(summary_table(summary))
        drill.say("")
    drill.say(f"report: {out / 'report.html'}")
    return out


def parser() -> argparse.ArgumentParser:
    d = DrillOptions()
    p = argparse.ArgumentParser(prog="tools/drill.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=d.users, help=f"test users (default {d.users})")
    p.add_argument("--rate", type=float, default=d.rate, help=f"confirms per second (default {d.rate:g})")
    p.add_argument("--duration", type=float, default=d.duration_s,
                   help=f"seconds of load (default {d.duration_s:g})")
    p.add_argument("--mix", default=d.mix, help=f"load mix (default {d.mix})")
    p.add_argument("--transient", type=float, default=d.transient_rate, help="gateway transient error rate")
    p.add_argument("--lost-reply", type=float, default=d.lost_reply_rate, help="gateway lost-reply rate")
    p.add_argument("--definitive", type=float, default=d.definitive_rate,
                   help="gateway definitive failure rate")
    p.add_argument("--kill", default=",".join(d.kill), help="services to SIGKILL and restart, in order "
                   "(empty: none)")
    p.add_argument("--no-wipe", action="store_true", help="skip the Redis wipes")
    p.add_argument("--wipes", type=int, default=d.redis_wipes,
                   help="Redis wipes in a row (default %(default)s)")
    p.add_argument("--pg-outage", type=float, default=d.pg_outage_s,
                   help="seconds of PostgreSQL outage through the fault proxy (0: none; default %(default)s)")
    p.add_argument("--flushall", action="store_true",
                   help="wipe with FLUSHALL (the whole Redis) instead of the MESH_KEY_PREFIX keys")
    p.add_argument("--release-modulus", type=int, default=d.release_modulus, help="M of uid mod M < k")
    p.add_argument("--release-steps", default=",".join(map(str, d.release_steps)),
                   help="the k of each reopening step, rising to M (default %(default)s)")
    p.add_argument("--settle-timeout", type=float, default=d.settle_timeout_s)
    p.add_argument("--recon-timeout", type=float, default=d.recon_timeout_s)
    p.add_argument("--run-slot", type=int, default=-1, help="uid block of this run (default: random)")
    p.add_argument("--report-dir", type=Path, default=None, help="parent of drill-<timestamp>/")
    p.add_argument("--run-dir", type=Path, default=mesh.RUN, help="the mesh's tools/meshctl.py run directory")
    p.add_argument("--quiet", action="store_true", help="no per-second progress lines")
    return p


def main() -> int:
    args = parser().parse_args()
    kill = tuple(s for s in (part.strip() for part in args.kill.split(",")) if s)
    unknown = [s for s in kill if s not in mesh.SERVICES]
    if unknown:
        raise SystemExit(f"--kill: unknown service(s) {unknown}")
    options = DrillOptions(
        users=args.users, rate=args.rate, duration_s=args.duration, mix=args.mix,
        transient_rate=args.transient, lost_reply_rate=args.lost_reply, definitive_rate=args.definitive,
        release_modulus=args.release_modulus,
        release_steps=tuple(int(k) for k in args.release_steps.split(",") if k.strip()),
        kill=kill, wipe_redis=not args.no_wipe, redis_wipes=args.wipes, flushall=args.flushall,
        pg_outage_s=args.pg_outage,
        settle_timeout_s=args.settle_timeout, recon_timeout_s=args.recon_timeout, run_slot=args.run_slot,
        report_dir=args.report_dir, layout=mesh.Layout(args.run_dir), progress=not args.quiet,
    )
    result = asyncio.run(run_drill(options, say=lambda line: print(line, flush=True)))
    print(result.line, flush=True)
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
