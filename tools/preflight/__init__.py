"""Pre-flight go/no-go of a running mesh before the campaign night (`make preflight`,
`python -m tools.preflight`): one row per check, then `PREFLIGHT GO` or `PREFLIGHT NO-GO ...`."""
