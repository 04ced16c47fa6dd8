"""Bulk crediting: drain the reward ingest stream (all its partitions, account_svc.streams)
in batches, one database statement per batch part. Idempotent with forced credit through
the same unique index on reward id, so it does not matter which consumer, of this process
or another, sees a reward, nor how often.

Stages, so Python, PostgreSQL and Redis work at the same time: the reader takes a batch off
the stream and checks its tokens; the batch is split by uid % writers into parts, each for
the lane (one held connection) of its uid partition; lanes touch disjoint accounts, so they
never wait on each other's row locks, and each starts its next part as soon as its last
one commits. A batch is acknowledged, in a task of its own, only once all its parts are
committed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind

from account_svc.domain import CreditOutcome
from account_svc.ports import LedgerStatements
from account_svc.service import Ledger
from account_svc.streams import IngestStream, Message, Rejection
from campaign.tokens import RewardGrant, TokenError
from meshkit.streams import context_of

log = logging.getLogger(__name__)
_tracer = trace.get_tracer(__name__)

TRIM_INTERVAL_S = 10.0
# At most this many producer spans are linked from one batch span.
MAX_LINKS = 32
# Batches checked and waiting for the writer; more only delays acknowledgement.
QUEUE_DEPTH = 2
# Batches committed whose acknowledgement is still on its way to Redis.
MAX_SETTLING = 4
# Parts of batches waiting for each lane's connection.
LANE_DEPTH = 2


@dataclass
class Prepared:
    """A batch read and checked, ready to credit."""

    messages: list[Message]
    grants: list[RewardGrant] = field(default_factory=list)
    owners: list[tuple[Message, str]] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)


@dataclass
class InFlight:
    """A batch handed to the lanes: the outcome of each grant so far, and how many of its
    parts have not committed yet."""

    prepared: Prepared
    outcomes: list[tuple[CreditOutcome, str]]
    left: int = 0


@dataclass
class Settlement:
    """A batch whose credits have committed: its entries to acknowledge, its refusals."""

    messages: list[Message]
    rejections: list[Rejection]
    credited: int


class BulkCreditor:
    def __init__(
        self,
        ledger: Ledger,
        stream: IngestStream,
        *,
        batch: int,
        block_ms: int,
        claim_idle_ms: int,
        writers: int = 1,
        trim: bool = True,
    ) -> None:
        self.ledger = ledger
        self.stream = stream
        self.batch = batch
        self.block_ms = block_ms
        self.claim_idle_ms = claim_idle_ms
        self.writers = max(1, writers)
        self.trim_enabled = trim
        self.credited = 0
        self.rejected = 0
        self._tokens_per_entry = 1.0

    async def run(self, stopping: asyncio.Event) -> None:
        """Until asked to stop. Batches in hand are finished (credited and acknowledged)
        before the loop exits; nothing is acknowledged before its credits commit."""
        await self.stream.ensure()
        # Our own pending list first, one batch at a time (re-reading it while a batch is
        # still in the writer's hands would return that batch again): what a failed
        # commit or ack left before this loop restarted is still ours to finish.
        while not stopping.is_set():
            mine = await self.stream.read(self._read_count, 0, own_pending=True)
            if not mine:
                break
            await self.write(self.prepare(mine))

        queue: asyncio.Queue[Prepared | None] = asyncio.Queue(maxsize=QUEUE_DEPTH)
        writer = asyncio.create_task(self._write_all(queue), name=f"{self.stream.consumer}-writer")
        try:
            await self._read_all(stopping, queue, writer)
        except BaseException:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer
            raise
        await self._hand_over(queue, None, writer)
        await writer

    async def _read_all(
        self, stopping: asyncio.Event, queue: asyncio.Queue[Prepared | None], writer: asyncio.Task[None]
    ) -> None:
        next_claim = time.monotonic()
        next_trim = time.monotonic() + TRIM_INTERVAL_S
        while not stopping.is_set():
            now = time.monotonic()
            if now >= next_claim:
                stale = await self.stream.claim_stale(self.claim_idle_ms, self._read_count)
                if stale:
                    log.info("took over %d ingest entries left pending by another consumer", len(stale))
                    await self._hand_over(queue, self.prepare(stale), writer)
                if not self.stream.claim_scan_done:
                    continue
                next_claim = now + max(self.claim_idle_ms / 2000.0, 0.5)
            if self.trim_enabled and now >= next_trim:
                await self.stream.trim()
                next_trim = now + TRIM_INTERVAL_S
            # Up to a batch from each partition: handed over a batch at a time, so a
            # statement credits a full batch whether one partition has entries or all do.
            count = self._read_count
            messages = await self.stream.read(count, self.block_ms)
            for start in range(0, len(messages), count):
                await self._hand_over(queue, self.prepare(messages[start:start + count]), writer)

    @staticmethod
    async def _hand_over(
        queue: asyncio.Queue[Prepared | None], item: Prepared | None, writer: asyncio.Task[None]
    ) -> None:
        """Queue `item` for the writer; if the writer has died, raise what killed it (its
        batches stay pending and are taken up again when the loop restarts)."""
        put = asyncio.ensure_future(queue.put(item))
        await asyncio.wait([put, writer], return_when=asyncio.FIRST_COMPLETED)
        if writer.done():
            put.cancel()
            writer.result()
            if item is not None:
                raise RuntimeError("bulk credit writer stopped before the end of the stream")

    async def _write_all(self, queue: asyncio.Queue[Prepared | None]) -> None:
        """Credit the reader's batches through `writers` lanes, one held connection each (a
        pooled statement costs a second round trip: the pool resets the connection on
        release). Each batch is split by uid % writers and each part goes to its lane's
        queue: lanes touch disjoint accounts, so they never wait on each other's row locks,
        and none waits for another to finish a batch: while one lane's statement commits,
        the next part of another is already in the database. A batch is acknowledged, in a
        task of its own, once its last part has committed; at most MAX_SETTLING batches are
        committed and not yet acknowledged (if the process dies then, they are redelivered
        and credit nothing twice). The first failed statement or acknowledgement stops the
        writer."""
        settling: set[asyncio.Task[None]] = set()
        lanes: list[asyncio.Queue[tuple[InFlight, list[int]] | None]] = [
            asyncio.Queue(maxsize=LANE_DEPTH) for _ in range(self.writers)]
        workers: list[asyncio.Task[None]] = []
        try:
            async with contextlib.AsyncExitStack() as held:
                conns = [await held.enter_async_context(self.ledger.store.connection()) for _ in lanes]
                workers += [asyncio.create_task(self._lane(conn, lane, settling))
                            for conn, lane in zip(conns, lanes, strict=True)]
                try:
                    while (item := await self._next(queue, workers)) is not None:
                        await self._reap(settling)
                        flight = InFlight(item, [(CreditOutcome.CREDITED, "")] * len(item.grants))
                        parts = self._parts(item)
                        flight.left = len(parts)
                        if not parts:  # every token refused: nothing to commit first
                            settling.add(asyncio.create_task(self._settle(self._settlement(flight))))
                        for lane_no, part in parts:
                            await self._feed(lanes[lane_no], (flight, part), workers)
                    for lane in lanes:
                        await self._feed(lane, None, workers)
                    for worker in workers:
                        await worker
                finally:
                    # Before the connections go back to the pool.
                    for worker in workers:
                        worker.cancel()
                    await asyncio.gather(*workers, return_exceptions=True)
        finally:
            # Whatever happened above, what has committed is acknowledged if Redis lets us.
            results = await asyncio.gather(*settling, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    def _parts(self, prepared: Prepared) -> list[tuple[int, list[int]]]:
        """(lane, indexes of grants) of a batch: chunks of at most `batch` grants, each split
        by uid % writers; empty parts left out."""
        grants = prepared.grants
        writers = self.writers
        out: list[tuple[int, list[int]]] = []
        for start in range(0, len(grants), self.batch):
            parts: list[list[int]] = [[] for _ in range(writers)]
            for i in range(start, min(start + self.batch, len(grants))):
                parts[grants[i].uid % writers].append(i)
            out += [(lane, part) for lane, part in enumerate(parts) if part]
        return out

    async def _reap(self, settling: set[asyncio.Task[None]]) -> None:
        """Raise the first failed acknowledgement; wait while MAX_SETTLING are on their way."""
        while True:
            for task in [t for t in settling if t.done()]:
                settling.discard(task)
                task.result()
            if len(settling) < MAX_SETTLING:
                return
            await asyncio.wait(settling, return_when=asyncio.FIRST_COMPLETED)

    @staticmethod
    async def _next(queue: asyncio.Queue[Prepared | None],
                    workers: list[asyncio.Task[None]]) -> Prepared | None:
        """The reader's next batch; a lane that dies meanwhile (its statement failed) stops
        the writer now, not when the next batch comes."""
        get = asyncio.ensure_future(queue.get())
        await asyncio.wait([get, *workers], return_when=asyncio.FIRST_COMPLETED)
        if not get.done():
            get.cancel()
            for worker in workers:
                if worker.done():
                    worker.result()
            raise RuntimeError("bulk credit lane stopped before the end of the stream")
        return get.result()

    @staticmethod
    async def _feed(lane: asyncio.Queue[tuple[InFlight, list[int]] | None],
                    job: tuple[InFlight, list[int]] | None, workers: list[asyncio.Task[None]]) -> None:
        """Queue a part for its lane (None: the end); if a lane has died, raise what killed it."""
        put = asyncio.ensure_future(lane.put(job))
        while not put.done():
            await asyncio.wait([put, *[w for w in workers if not w.done()]],
                               return_when=asyncio.FIRST_COMPLETED)
            for worker in workers:
                # A lane ends cleanly only on its end marker, which comes after every part.
                if worker.done() and (job is not None or worker.cancelled() or worker.exception()):
                    put.cancel()
                    worker.result()
                    raise RuntimeError("bulk credit lane stopped before the end of the stream")

    async def _lane(self, conn: LedgerStatements, lane: asyncio.Queue[tuple[InFlight, list[int]] | None],
                    settling: set[asyncio.Task[None]]) -> None:
        while (job := await lane.get()) is not None:
            flight, part = job
            prepared = flight.prepared
            with _tracer.start_as_current_span(
                "rewards.ingest process", kind=SpanKind.CONSUMER, links=prepared.links,
                attributes={"messaging.system": "redis",
                            "messaging.batch.message_count": len(prepared.messages)},
            ):
                batch = await self.ledger.credit([prepared.grants[i] for i in part], all_or_nothing=False,
                                                 on=conn, expect_fresh=True)
            for i, result in zip(part, batch.results, strict=True):
                if result.outcome is not CreditOutcome.CREDITED:
                    flight.outcomes[i] = (result.outcome, result.message)
            flight.left -= 1
            if flight.left == 0:
                settling.add(asyncio.create_task(self._settle(self._settlement(flight))))

    @property
    def _read_count(self) -> int:
        # Entries may carry many tokens each: read about one batch of tokens at a time.
        return max(1, round(self.batch / self._tokens_per_entry))

    def prepare(self, messages: Sequence[Message]) -> Prepared:
        """Check every token of the batch (CPU only: runs while the writer waits on PostgreSQL)."""
        prepared = Prepared(list(messages))
        prepared.links = [Link(trace.get_current_span(context_of(m.fields)).get_span_context())
                          for m in messages[:MAX_LINKS]]
        owners: list[tuple[Message, str]] = []
        tokens: list[str] = []
        for message in messages:
            mine = message.tokens
            tokens += mine
            owners += [(message, token) for token in mine]
        grants = prepared.grants
        for owner, checked in zip(owners, self.ledger.verify_tokens(tokens), strict=True):
            if isinstance(checked, TokenError):
                prepared.rejections.append(Rejection(owner[0], owner[1], checked.reason, checked.message))
            else:
                grants.append(checked)
                prepared.owners.append(owner)
        self._tokens_per_entry = max(1.0, 0.5 * self._tokens_per_entry + 0.5 * len(tokens) / len(messages))
        return prepared

    async def write(self, prepared: Prepared) -> None:
        """Credit a batch on pooled statements, then record its refusals and acknowledge it:
        the consumer's own pending entries at start, one batch at a time (redeliveries: the
        statement with the look-up of stored credits)."""
        await self._settle(await self._credit(prepared))

    async def _credit(self, prepared: Prepared) -> Settlement:
        """Credit the batch's grants (committed when this returns); what to acknowledge."""
        with _tracer.start_as_current_span(
            "rewards.ingest process", kind=SpanKind.CONSUMER, links=prepared.links,
            attributes={"messaging.system": "redis",
                        "messaging.batch.message_count": len(prepared.messages)},
        ):
            outcomes = [(CreditOutcome.CREDITED, "")] * len(prepared.grants)
            # Entries are acknowledged only once every one of their tokens is committed; a
            # crash between chunks redelivers them, and the replay credits nothing twice.
            for start in range(0, len(prepared.grants), self.batch):
                chunk = range(start, min(start + self.batch, len(prepared.grants)))
                parts: list[list[int]] = [[] for _ in range(self.writers)]
                for i in chunk:
                    parts[prepared.grants[i].uid % self.writers].append(i)
                batches = await asyncio.gather(*(
                    self.ledger.credit([prepared.grants[i] for i in part], all_or_nothing=False)
                    for part in parts
                ))
                for part, batch in zip(parts, batches, strict=True):
                    for i, result in zip(part, batch.results, strict=True):
                        if result.outcome is not CreditOutcome.CREDITED:
                            outcomes[i] = (result.outcome, result.message)
        return self._settlement(InFlight(prepared, outcomes))

    @staticmethod
    def _settlement(flight: InFlight) -> Settlement:
        """What to acknowledge and refuse once every grant of the batch has its outcome."""
        prepared = flight.prepared
        rejections = list(prepared.rejections)
        credited = 0
        for (owner, token), (outcome, message) in zip(prepared.owners, flight.outcomes, strict=True):
            if outcome is CreditOutcome.CONFLICT:
                rejections.append(Rejection(owner, token, "CONFLICT", message))
            elif outcome is CreditOutcome.CREDITED:
                credited += 1
        return Settlement(prepared.messages, rejections, credited)

    async def _settle(self, settlement: Settlement) -> None:
        """Record the refusals and acknowledge the entries of a batch whose credits have
        committed."""
        await self.stream.settle(settlement.messages, settlement.rejections)
        self.credited += settlement.credited
        self.rejected += len(settlement.rejections)
        for rejection in settlement.rejections:
            log.warning("refused reward from ingest entry %s: %s (%s)", rejection.message.id,
                        rejection.reason, rejection.detail)
