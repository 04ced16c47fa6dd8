"""Channel gauges for the Prometheus endpoint: backlog, pending, dead letters, configured
and current payout rate per channel.

Gauges are read synchronously by the exporter while the numbers live in Redis, so a loop
samples them (the same figures as GetChannelStats) and the gauge callbacks report the
latest sample of every live sampler in this process."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from opentelemetry.metrics import CallbackOptions, Observation

from meshkit.background import sleep_or_stop
from meshkit.telemetry import meter
from payout_svc.domain import ChannelStats
from payout_svc.service import PayoutAdmin

log = logging.getLogger(__name__)

_live: set[ChannelSampler] = set()


def _observe(field: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def callback(_options: CallbackOptions) -> Iterable[Observation]:
        for sampler in list(_live):
            for stats in sampler.latest.values():
                yield Observation(float(getattr(stats, field)),
                                  {"channel": stats.channel, "deployment": sampler.deployment})
    return callback


_meter = meter("payout_svc")
for _name, _field, _help in [
    ("payout.channel.backlog", "backlog", "stream entries not yet delivered to the consumer group"),
    ("payout.channel.pending", "pending", "entries delivered and not yet acknowledged"),
    ("payout.channel.dead_letters", "dead_letters", "entries in the channel's dead-letter stream"),
    ("payout.channel.rate_limit", "rate_limit_per_second",
     "configured payouts per second (0 with unlimited: no limit; 0 otherwise: paused)"),
    ("payout.channel.unlimited", "unlimited", "1 when the channel was explicitly set unlimited"),
    ("payout.channel.paused", "paused", "1 when the channel is paused (rate 0 or none configured)"),
    ("payout.channel.rate_current", "current_rate_per_second", "gateway payout calls in the last second"),
]:
    _meter.create_observable_gauge(_name, callbacks=[_observe(_field)], description=_help)


class ChannelSampler:
    def __init__(self, admin: PayoutAdmin, deployment: str, interval_s: float) -> None:
        self.admin = admin
        self.deployment = deployment
        self.interval_s = interval_s
        self.latest: dict[str, ChannelStats] = {}

    async def run(self, stopping: asyncio.Event) -> None:
        _live.add(self)
        try:
            while True:
                try:
                    self.latest = {s.channel: s for s in await self.admin.stats("")}
                except Exception as exc:  # Redis may be down or wiped; keep the last sample
                    log.warning("channel stats sample failed: %s", exc)
                if await sleep_or_stop(stopping, self.interval_s):
                    return
        finally:
            _live.discard(self)
