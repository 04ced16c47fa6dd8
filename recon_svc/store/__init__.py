"""recon_svc's PostgreSQL adapters (own schema only): one repository per job, bound either
to one transaction (a unit of work) or to the pool (each statement its own transaction)."""
