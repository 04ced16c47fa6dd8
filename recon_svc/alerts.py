"""What happens when a discrepancy is found for the first time: a WARNING log line, a
metric by reason, and a POST to the webhook when one is configured. The webhook runs in a
thread, off the checker's path: a slow or dead receiver never holds reconciliation up."""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.request
from collections.abc import Sequence

from opentelemetry import metrics

from meshkit import redact
from meshkit.logs import log_context
from meshkit.telemetry import meter
from recon_svc.domain import Discrepancy

log = logging.getLogger(__name__)

COUNTER = "recon.discrepancies"
_default_counter: metrics.Counter | None = None


def _counter(source: metrics.Meter | None) -> metrics.Counter:
    global _default_counter
    if source is not None:
        return source.create_counter(COUNTER, description=_COUNTER_HELP)
    if _default_counter is None:  # one per process, however many apps a test starts
        _default_counter = meter("recon_svc").create_counter(COUNTER, description=_COUNTER_HELP)
    return _default_counter


_COUNTER_HELP = "Discrepancies found for the first time, by reason and source"


class Alerts:
    def __init__(self, webhook_url: str, timeout_s: float, meter: metrics.Meter | None = None) -> None:
        self.webhook_url = webhook_url
        self.timeout_s = timeout_s
        self._found = _counter(meter)
        self._posts: set[asyncio.Task[None]] = set()

    def publish(self, found: Sequence[Discrepancy]) -> None:
        for d in found:
            with log_context(order_id=d.order_id, uid=d.uid):
                log.warning("discrepancy %s: %s", d.reason, d.detail,
                            extra={"discrepancy_id": d.id, "reason": d.reason, "source": d.source,
                                   "subject": d.subject, "order_id": d.order_id, "uid": d.uid})
            self._found.add(1, {"reason": d.reason, "source": d.source})
            if self.webhook_url:
                task = asyncio.create_task(self._post(d))
                self._posts.add(task)
                task.add_done_callback(self._posts.discard)

    async def _post(self, d: Discrepancy) -> None:
        body = json.dumps({"event": "discrepancy", **d.as_dict()}).encode()
        try:
            await asyncio.to_thread(_post_json, self.webhook_url, body, self.timeout_s)
        except Exception as exc:
            log.warning("webhook %s failed for discrepancy %d: %s", redact.url(self.webhook_url), d.id, exc)

    async def close(self, timeout_s: float = 2.0) -> None:
        if self._posts:
            await asyncio.wait(set(self._posts), timeout=timeout_s)


def _post_json(url: str, body: bytes, timeout_s: float) -> None:
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout_s) as reply:
        reply.read()
