"""Drains one Redis Stream per payout channel under a shared per-channel rate limit."""
