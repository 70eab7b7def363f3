"""Actuation: guardrails, signed attestations, TUF release repository, rollout controller
and the edge agent. Nothing is built yet.
"""
