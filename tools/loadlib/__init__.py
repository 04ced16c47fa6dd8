"""Shared pieces of `make load` and `make drill`: clients for the running mesh, test-user
seeding, the open-loop driver, the once-a-second sampler and the report writer."""
