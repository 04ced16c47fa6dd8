"""The compensation job: pushes every old non-terminal order to a final state, and makes
sure every FAILED order's refund is settled. One runner across replicas (advisory lock);
safe beside payout_svc's workers because it takes the same Redis order lock and moves
orders only by the same compare-and-set transitions.

It never pays. A channel's quota (payout_svc's rate limiter, shared by its replicas)
must hold for every payout, and paying here, up to `compensation_concurrency` at a time,
went around it just when a backlog of overdue orders made it matter most. Taking permits
from the same limiter would split "who pays" over two services that must then keep its
keys, Lua and failure handling in step; instead an unpaid order is handed back to the
one path that pays: its PAYOUT outbox job is re-opened, the relay publishes it, and a
payout_svc worker pays it under the limiter (for a PAYING order, after asking the
gateway, and only on NOT_FOUND). Queries are not payouts: the job still asks the
gateway about PAYING orders and adopts a final answer itself."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from opentelemetry.metrics import CallbackOptions, Observation

from meshkit.background import sleep_or_stop
from meshkit.logs import log_context
from meshkit.outage import OutageLog
from meshkit.telemetry import meter
from withdraw_svc.domain import (
    Action,
    Facts,
    FailureReason,
    GatewayView,
    Order,
    OrderState,
    adopt_payout,
    decide,
)
from withdraw_svc.peers import GatewayPayout, PeerError
from withdraw_svc.ports import (
    CompensationOrders,
    JobLock,
    LedgerRecords,
    OrderLocks,
    PayoutRecords,
    PayoutRequeue,
    RefundSettler,
)
from withdraw_svc.records import StuckCount
from withdraw_svc.settings import Settings

log = logging.getLogger(__name__)
_outages = OutageLog(log)
_meter = meter("withdraw_svc")
_actions = _meter.create_counter("withdraw.compensation.actions",
                                 description="orders the compensation job pushed on, by action")
# The latest early-warning sample of each live job in this process (read by the exporter).
_samples: dict[int, list[StuckCount]] = {}


def _observe_open_orders(_options: CallbackOptions) -> list[Observation]:
    return [Observation(c.count, {"state": c.state.value, "older_than_s": c.older_than_s})
            for counts in list(_samples.values()) for c in counts]


_meter.create_observable_gauge(
    "withdraw.orders.open", callbacks=[_observe_open_orders],
    description="non-terminal orders by state and age band (0: all of them)",
)

PAGE = 500
MAX_REPORTED_ACTIONS = 10_000


@dataclass(frozen=True)
class CompensationAction:
    order_id: str
    from_state: OrderState
    action: Action
    detail: str


class Compensation:
    def __init__(
        self, settings: Settings, repo: CompensationOrders, locks: OrderLocks, account: LedgerRecords,
        gateway: PayoutRecords, refunds: RefundSettler, outbox: PayoutRequeue, runner: JobLock,
    ) -> None:
        self.settings = settings
        self.repo = repo
        self.locks = locks
        self.account = account
        self.gateway = gateway
        self.refunds = refunds
        self.outbox = outbox
        self.runner = runner  # one run at a time across replicas
        self.last_stuck: list[StuckCount] = []

    # -- loops -----------------------------------------------------------------------------

    async def loop(self, stopping: asyncio.Event) -> None:
        while not await sleep_or_stop(stopping, self.settings.compensation_interval_s):
            try:
                ran, actions = await self.run(dry_run=False, min_age_s=self.settings.compensation_min_age_s)
                if ran and actions:
                    log.info("compensation moved %d orders", len(actions))
            except Exception:
                log.exception("compensation run failed")

    async def deduct_resolve_loop(self, stopping: asyncio.Event) -> None:
        """Orders whose confirm died with its replica (SIGKILL, a crash) between the insert
        and the deduct's answer stay PENDING_DEDUCT; nobody else would move them before the
        compensation job's hours-long cut-off. Settled here the way that job settles them:
        FAILED, its refund job returning the debit if one landed or voiding the order id so
        a late one is refused. Compare-and-set, so replicas running it at once are safe."""
        after_s = self.settings.deduct_resolve_after_s
        if after_s <= 0:
            return
        while not await sleep_or_stop(stopping, self.settings.deduct_resolve_interval_s):
            try:
                moved = await self.resolve_unconfirmed_deducts(after_s)
                if moved:
                    log.warning("%d orders left PENDING_DEDUCT by a lost confirm: failed, refund jobs "
                                "settle them", moved)
            except Exception as exc:
                _outages.failed(exc, "resolving unconfirmed deducts failed; retrying")

    async def resolve_unconfirmed_deducts(self, min_age_s: int) -> int:
        moved = 0
        while orders := await self.repo.unconfirmed_deducts(min_age_s, PAGE):
            for order in orders:
                with log_context(order_id=order.order_id, uid=order.uid):
                    action = await self._pending_deduct(order, dry_run=False)
                moved += action.action is not Action.WAIT
            if len(orders) < PAGE:
                break
        return moved

    async def stuck_loop(self, stopping: asyncio.Event) -> None:
        """Early warning: orders past the age bands, reported long before the job's cut-off."""
        while not await sleep_or_stop(stopping, self.settings.stuck_check_interval_s):
            try:
                counts = await self.stuck_counts()
            except Exception:
                log.warning("stuck-order check failed", exc_info=True)
                continue
            for c in counts:
                if c.count and c.older_than_s > 0:
                    log.warning("%d orders in %s for over %ds", c.count, c.state, c.older_than_s,
                                extra={"stuck_state": c.state.value, "stuck_band_s": c.older_than_s,
                                       "stuck_count": c.count})

    async def stuck_counts(self) -> list[StuckCount]:
        # Band 0 counts every open order by state: the "orders by state" gauge.
        self.last_stuck = await self.repo.stuck_counts(sorted({0, *self.settings.stuck_bands_s}))
        _samples[id(self)] = self.last_stuck
        return self.last_stuck

    # -- one run ---------------------------------------------------------------------------

    async def run(self, *, dry_run: bool, min_age_s: int) -> tuple[bool, list[CompensationAction]]:
        """(ran, actions). ran is False when another replica holds the job."""
        async with self.runner.try_hold() as held:
            if not held:
                return False, []
            return True, await self._run(dry_run, max(0, min_age_s))

    async def _run(self, dry_run: bool, min_age_s: int) -> list[CompensationAction]:
        actions: list[CompensationAction] = []
        if not dry_run:
            missing = await self.repo.ensure_refund_jobs()
            if missing:
                log.error("%d FAILED orders had no refund job; written now", missing)
        gate = asyncio.Semaphore(max(1, self.settings.compensation_concurrency))

        async def bounded(order: Order) -> CompensationAction:
            async with gate:
                with log_context(order_id=order.order_id, uid=order.uid):
                    return await self.handle(order, dry_run)

        after = None
        while True:
            orders = await self.repo.open_orders_older_than(min_age_s, PAGE, after)
            if not orders:
                break
            done = await asyncio.gather(*(bounded(o) for o in orders))
            if not dry_run:
                for action in done:
                    _actions.add(1, {"action": action.action.value, "from_state": action.from_state.value})
            actions.extend(done)
            after = (orders[-1].created_at, orders[-1].order_id)
            if len(orders) < PAGE or dry_run:
                # A dry run moves nothing, so one page shows what the next run starts with.
                break
        actions.extend(await self._sweep_refunds(dry_run, min_age_s))
        for a in actions:
            if a.action is not Action.WAIT or a.detail:
                log.info("compensation %s %s: %s (%s)", "would" if dry_run else "did", a.action,
                         a.detail, a.order_id, extra={"order_id": a.order_id})
        return actions[:MAX_REPORTED_ACTIONS]

    async def _sweep_refunds(self, dry_run: bool, min_age_s: int) -> list[CompensationAction]:
        orders = await self.repo.failed_unrefunded(min_age_s, PAGE)
        if not orders:
            return []
        if dry_run:
            return [CompensationAction(o.order_id, OrderState.FAILED, Action.REFUND,
                                       "refund job not settled") for o in orders]
        await self.refunds.process([o.order_id for o in orders])
        return [
            CompensationAction(o.order_id, OrderState.FAILED, Action.REFUND,
                               await self._refund_detail(o.order_id))
            for o in orders
        ]

    async def handle(self, order: Order, dry_run: bool) -> CompensationAction:
        if order.state is OrderState.PENDING_DEDUCT:
            return await self._pending_deduct(order, dry_run)
        if dry_run:
            return await self._plan(order)
        token = await self.locks.lock_order(order.order_id, self.settings.order_lock_ms)
        if token is None:
            return self._act(order, Action.WAIT, "order locked by a payout worker")
        try:
            current = await self.repo.get_order(order.order_id)
            if current is None or current.state is not order.state:
                return self._act(order, Action.WAIT, "order moved on meanwhile")
            if order.state is OrderState.PENDING_PAYOUT:
                return await self._requeue(order, Action.REQUEUE_PAYOUT, dry_run=False)
            view = await self._query(order.order_id)
            action = decide(OrderState.PAYING, Facts(gateway=view.view))
            if action is Action.REQUEUE_UNPAID:
                return await self._requeue(order, action, dry_run=False)
            if action in (Action.ADOPT_SUCCEEDED, Action.ADOPT_FAILED):
                return await self._adopt(order, view, action)
            return self._act(order, Action.WAIT, f"gateway says {view.view}; left PAYING")
        finally:
            await self.locks.unlock_order(order.order_id, token)

    async def _plan(self, order: Order) -> CompensationAction:
        if order.state is OrderState.PENDING_PAYOUT:
            return await self._requeue(order, Action.REQUEUE_PAYOUT, dry_run=True)
        view = await self._query(order.order_id)
        action = decide(order.state, Facts(gateway=view.view))
        if action is Action.REQUEUE_UNPAID:
            return await self._requeue(order, action, dry_run=True)
        return self._act(order, action, f"gateway says {view.view}")

    async def _requeue(self, order: Order, action: Action, *, dry_run: bool) -> CompensationAction:
        """Hand an unpaid order back to payout_svc: re-open its PAYOUT job, unless the job's
        message still waits in the stream (a second copy would only lengthen the backlog
        the channel's rate is draining)."""
        job = await self.repo.payout_job(order.order_id)
        if job is None:
            log.error("order %s is %s without a PAYOUT job", order.order_id, order.state)
            return self._act(order, Action.WAIT, "no payout job to re-queue")
        if not job.done and not job.published:
            return self._act(order, Action.WAIT, "payout job waits for the outbox relay")
        if not job.done and await self.outbox.queued(order.channel, job.stream_id):
            return self._act(order, Action.WAIT, f"payout job still queued on {order.channel}")
        seen = "gateway has no record; " if action is Action.REQUEUE_UNPAID else ""
        if dry_run:
            return self._act(order, action, f"{seen}would re-queue its payout job on {order.channel}")
        if not await self.repo.requeue_payout(order.order_id, order.state):
            return self._act(order, Action.WAIT, "order moved on meanwhile")
        self.outbox.nudge()
        return self._act(order, action, f"{seen}payout job re-queued on {order.channel}; "
                                         "payout_svc pays it within the channel's rate")

    async def _pending_deduct(self, order: Order, dry_run: bool) -> CompensationAction:
        try:
            debit: bool | None = await self.account.debit_exists(order.order_id)
        except PeerError as err:
            log.warning("could not read the ledger for %s: %s", order.order_id, err)
            debit = None
        action = decide(OrderState.PENDING_DEDUCT, Facts(debit_exists=debit))
        seen = {True: "debit found", False: "no debit", None: "ledger did not answer"}[debit]
        if dry_run:
            return self._act(order, action, f"{seen}; would fail it and settle its refund job")
        failed = await self.repo.fail_order(
            order.order_id, [OrderState.PENDING_DEDUCT], FailureReason.DEDUCT_UNCONFIRMED,
            "compensation: deduct never confirmed",
        )
        if failed is None:
            return self._act(order, Action.WAIT, "order moved on meanwhile")
        await self.refunds.process([order.order_id])
        return self._act(order, action, f"{seen}; FAILED, {await self._refund_detail(order.order_id)}")

    async def _query(self, order_id: str) -> GatewayPayout:
        try:
            return await self.gateway.query(order_id)
        except PeerError as err:
            log.warning("could not query the gateway for %s: %s", order_id, err)
            return GatewayPayout(GatewayView.UNKNOWN)

    async def _adopt(self, order: Order, answer: GatewayPayout, action: Action) -> CompensationAction:
        target = adopt_payout(answer.view)
        if target is OrderState.SUCCEEDED:
            moved = await self.repo.transition(
                order.order_id, [OrderState.PAYING], OrderState.SUCCEEDED, "compensation: gateway succeeded"
            )
            return self._act(order, action, "SUCCEEDED" if moved else "order moved on meanwhile")
        if target is OrderState.FAILED:
            failed = await self.repo.fail_order(
                order.order_id, [OrderState.PAYING], FailureReason.PAYOUT_FAILED,
                answer.failure_reason[:200] or "gateway failed the payout",
            )
            if failed is None:
                return self._act(order, action, "order moved on meanwhile")
            await self.refunds.process([order.order_id])
            return self._act(order, action, f"FAILED, {await self._refund_detail(order.order_id)}")
        return self._act(order, Action.WAIT, f"gateway says {answer.view}; left PAYING")

    async def _refund_detail(self, order_id: str) -> str:
        job = await self.repo.refund_job(order_id)
        if job is None:
            return "no refund job"
        if job.done:
            return f"refund {job.outcome}"
        return f"refund pending ({job.last_error or 'queued'})"

    @staticmethod
    def _act(order: Order, action: Action, detail: str) -> CompensationAction:
        return CompensationAction(order.order_id, order.state, action, detail)
