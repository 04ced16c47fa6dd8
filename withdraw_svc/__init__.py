"""withdraw_svc: the withdraw orchestrator (page, confirm, orders, gate, payout coordination,
outbox and refund relays, compensation job)."""
