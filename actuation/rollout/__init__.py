"""Staged rollout: a fleet's policy, the controller that moves a version through its stages by
what the devices report, and the audit table every decision lands in (``fleet/rollouts``)."""
