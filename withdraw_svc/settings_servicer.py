"""Read-only view of this replica's settings (WithdrawSettingsService), for `make preflight`."""

from __future__ import annotations

import grpc

from mesh.withdraw.v1 import settings_pb2, settings_pb2_grpc
from withdraw_svc.settings import Settings


class WithdrawSettingsServicer(settings_pb2_grpc.WithdrawSettingsServiceServicer):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def GetSettings(
        self, request: settings_pb2.GetSettingsRequest, context: grpc.aio.ServicerContext
    ) -> settings_pb2.GetSettingsResponse:
        s = self.settings
        return settings_pb2.GetSettingsResponse(
            compensation_enabled=s.compensation_enabled,
            compensation_interval_seconds=int(s.compensation_interval_s),
            compensation_min_age_seconds=s.compensation_min_age_s,
            channels=list(s.limits.channels),
            four_eyes_required=s.four_eyes.required,
        )
