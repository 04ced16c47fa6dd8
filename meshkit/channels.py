"""Payout channels as requests name them: every service that is configured with a set of
channels (payout_svc, gateway_mock) refuses any other name the same way. Pure."""

from __future__ import annotations

from meshkit import validate
from meshkit.errors import InvalidArgument

MAX_CHANNEL_LEN = 32


class UnknownChannel(InvalidArgument):
    def __init__(self, channel: str) -> None:
        super().__init__(f"channel: unknown channel {channel!r}", reason="UNKNOWN_CHANNEL")


def check_channel(channel: str, channels: tuple[str, ...]) -> None:
    validate.identifier("channel", channel, max_len=MAX_CHANNEL_LEN, reason="UNKNOWN_CHANNEL")
    if channel not in channels:
        raise UnknownChannel(channel)
