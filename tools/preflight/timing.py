"""Time logic of the pre-flight: when the gate next opens, when the night ends, how far a
remote clock is from ours. Pure: the current time is always passed in."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

_HHMM = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")

# The night runs from the moment the gate opens through the whole day that follows.
NIGHT_LENGTH = timedelta(hours=24)


def parse_hhmm(value: str) -> time:
    match = _HHMM.fullmatch(value)
    if not match:
        raise ValueError(f"{value!r} is not HH:MM (00:00..23:59)")
    return time(int(match.group(1)), int(match.group(2)))


@dataclass(frozen=True)
class Window:
    """The gate's closed window: [start, end) in local time of `zone`; crosses midnight when
    end <= start (as the withdraw gate reads it)."""

    start: time
    end: time
    zone: ZoneInfo

    def _interval(self, day: date) -> tuple[datetime, datetime]:
        begins = datetime.combine(day, self.start, tzinfo=self.zone)
        end_day = day if self.end > self.start else day + timedelta(days=1)
        return begins, datetime.combine(end_day, self.end, tzinfo=self.zone)

    def _intervals(self, now: datetime) -> list[tuple[datetime, datetime]]:
        today = now.astimezone(self.zone).date()
        return [self._interval(today + timedelta(days=d)) for d in (-1, 0, 1, 2)]

    def closed_at(self, now: datetime) -> bool:
        return any(b <= now < e for b, e in self._intervals(now))

    def next_open(self, now: datetime) -> datetime:
        """When withdrawals next open: the end of the closed window `now` is in, else the end
        of the next closed window (the gate is open now and will close first)."""
        for begins, ends in self._intervals(now):
            if begins <= now < ends or begins > now:
                return ends
        raise AssertionError("four consecutive days always hold a window ahead")

    def next_close(self, now: datetime) -> datetime:
        return min(b for b, _ in self._intervals(now) if b > now)


def window_of(closed_start: str, closed_end: str, timezone: str) -> Window | None:
    """None when no window is configured (both empty)."""
    if not closed_start and not closed_end:
        return None
    return Window(parse_hhmm(closed_start), parse_hhmm(closed_end), ZoneInfo(timezone))


def default_night_end(window: Window | None, now: datetime) -> datetime:
    """Certificates must last until the night ends: by default the next opening of the gate
    plus 24 h; with no window configured, 24 h from now."""
    start = window.next_open(now) if window else now
    return start + NIGHT_LENGTH


def clock_offset(before: float, remote: float, after: float) -> float:
    """Remote clock minus ours, seconds: the remote time was read some time between our
    `before` and `after`, so it is compared with their midpoint (error at most half the
    round trip)."""
    return remote - (before + after) / 2.0
