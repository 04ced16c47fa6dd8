"""Who may call what: every RPC of every service, and the identities (meshkit.identity)
or roles allowed to call it. Enforced by meshkit.interceptors before any handler runs;
an RPC missing here is refused to everyone (tests/unit/test_policy.py lists the gaps).
Health and reflection (/grpc.*) are open to any authenticated caller.

An identity's role is the prefix of its name: operator-alice is an operator,
approver-carol an approver, viewer-dave a viewer. Read-only admin RPCs take READERS,
changes take OPERATORS."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

ROLES = ("viewer", "operator", "approver")

OPERATORS = ("role:operator", "role:approver")
# Four-eyes: any second operator may approve (meshkit.four_eyes refuses the proposer);
# approvers are listed first, so tools holding every certificate approve as one.
APPROVERS = ("role:approver", "role:operator")
READERS = ("role:viewer", *OPERATORS)
APP_EDGE = "app-edge"

_A = "/mesh.account.v1.AccountService/"
_F = "/mesh.feed.v1.ChangeFeedService/"
_G = "/mesh.gateway.v1.GatewayService/"
_GA = "/mesh.gateway.v1.GatewayAdminService/"
_PA = "/mesh.payout.v1.PayoutAdminService/"
_R = "/mesh.recon.v1.ReconService/"
_W = "/mesh.withdraw.v1.WithdrawService/"
_WC = "/mesh.withdraw.v1.PayoutCoordinationService/"
_WA = "/mesh.withdraw.v1.WithdrawAdminService/"
_WS = "/mesh.withdraw.v1.WithdrawSettingsService/"

# Method -> who may call it, the usual caller first (tools holding several certificates
# present the first one they have: meshkit.dialer).
POLICY: Mapping[str, tuple[str, ...]] = {
    # The ledger: money moves only on withdraw_svc's word.
    _A + "ForceCredit": ("withdraw_svc",),
    _A + "Deduct": ("withdraw_svc",),
    _A + "DeductBatch": ("withdraw_svc",),
    _A + "Refund": ("withdraw_svc",),
    _A + "GetBalance": (APP_EDGE, "withdraw_svc", *READERS),
    _A + "ListEntries": (APP_EDGE, *READERS),
    _A + "GetOrderEntries": ("withdraw_svc", "recon_svc", *READERS),
    _A + "GetOrderEntriesBatch": ("recon_svc", *READERS),
    # Change feeds (account, withdraw, payout, gateway) feed recon alone.
    _F + "ReadChanges": ("recon_svc",),
    # The gateway pays only for payout_svc; withdraw_svc (compensation), recon and
    # operators only ask.
    _G + "Payout": ("payout_svc",),
    _G + "PayoutBatch": ("payout_svc",),
    _G + "QueryPayout": ("payout_svc", "withdraw_svc", "recon_svc", *READERS),
    _G + "QueryPayouts": ("payout_svc", "withdraw_svc", "recon_svc", *READERS),
    _G + "ListPayouts": READERS,
    _G + "ListMethods": (APP_EDGE, "withdraw_svc", *READERS),
    _G + "BindMethod": (APP_EDGE, *OPERATORS),
    _GA + "SetChannelFaults": OPERATORS,
    _GA + "GetChannelFaults": READERS,
    _GA + "ListAdminAudit": READERS,
    # payout_svc's admin service; withdraw_svc reads the stats for the automatic release.
    _PA + "GetChannelStats": (*READERS, "withdraw_svc"),
    _PA + "SetChannelRate": OPERATORS,
    _PA + "ListDeadLetters": READERS,
    _PA + "ReplayDeadLetters": OPERATORS,
    _PA + "ProposeRateChange": OPERATORS,
    _PA + "ApproveRateChange": APPROVERS,
    _PA + "RejectRateChange": APPROVERS,
    _PA + "ListRateChanges": READERS,
    _PA + "ListAdminAudit": READERS,
    _R + "ListDiscrepancies": READERS,
    _R + "ResolveDiscrepancy": OPERATORS,
    _R + "CheckOrder": READERS,
    _R + "GetReconStatus": READERS,
    _R + "RunDailyRecon": OPERATORS,
    _R + "GetDailyReport": READERS,
    _R + "ListAdminAudit": READERS,
    # User-facing: the app edge speaks for users; payout_svc and recon read orders.
    _W + "GetWithdrawPage": (APP_EDGE,),
    _W + "ConfirmWithdraw": (APP_EDGE,),
    _W + "GetOrder": (APP_EDGE, "payout_svc", "recon_svc", *READERS),
    _W + "ListOrders": (APP_EDGE, *READERS),
    _WC + "BeginPayout": ("payout_svc",),
    _WC + "SettlePayout": ("payout_svc",),
    _WC + "BeginPayoutBatch": ("payout_svc",),
    _WC + "SettlePayoutBatch": ("payout_svc",),
    # The ledger asks the order's owner before it refunds.
    _WC + "GetOrderStates": ("account_svc", *READERS),
    _WA + "GetGate": READERS,
    _WA + "SetGate": OPERATORS,
    _WA + "ListGateAudit": READERS,
    _WA + "RunCompensation": OPERATORS,
    _WA + "GetStuckOrders": READERS,
    _WA + "ProposeGateChange": OPERATORS,
    _WA + "ApproveGateChange": APPROVERS,
    _WA + "RejectGateChange": APPROVERS,
    _WA + "ListGateChanges": READERS,
    _WA + "ListAdminAudit": READERS,
    _WS + "GetSettings": READERS,
}

# Served on the admin listener (<SVC>_ADMIN_PORT) only, never on the main port.
ADMIN_SERVICES = frozenset({
    "mesh.withdraw.v1.WithdrawAdminService",
    "mesh.payout.v1.PayoutAdminService",
    "mesh.gateway.v1.GatewayAdminService",
})


def open_to_any_caller(method: str) -> bool:
    """gRPC's own services: health and reflection."""
    return method.startswith("/grpc.")


def role_of(identity: str) -> str | None:
    prefix = identity.split("-", 1)[0]
    return prefix if prefix in ROLES and "-" in identity else None


def principals_of(identity: str) -> frozenset[str]:
    role = role_of(identity)
    return frozenset({identity, f"role:{role}"} if role else {identity})


def allowed(identity: str, method: str, policy: Mapping[str, Iterable[str]] = POLICY) -> bool:
    if open_to_any_caller(method):
        return True
    return not principals_of(identity).isdisjoint(policy.get(method, ()))


def service_of(method: str) -> str:
    """"/pkg.Service/Method" -> "pkg.Service"."""
    return method.strip("/").split("/", 1)[0]


def is_admin(method: str) -> bool:
    return service_of(method) in ADMIN_SERVICES
