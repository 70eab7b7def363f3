"""The guardrail checks, one module per kind; each returns :class:`actuation.contract.Check` objects
(a measured number against its limit) and, where a person wants to see it, the data for a plot."""
