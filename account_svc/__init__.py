"""account_svc: the activity income ledger (credits, debits, refunds, balances, bill)."""
