"""Stand-in for the payment middle platform: idempotent payouts, bound methods, injected faults."""
