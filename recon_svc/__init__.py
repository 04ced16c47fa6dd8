"""recon_svc: reconciliation of orders, ledger and gateway from their change feeds."""
