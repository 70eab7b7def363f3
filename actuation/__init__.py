"""Actuation: from a registered candidate to a device that runs it.

* :mod:`actuation.contract`: what the cloud publishes and a device reads (repository
  layout, release pointer, the guardrail verdict, the fleets);
* :mod:`actuation.signing` and :mod:`actuation.attestation`: signing keys, and in-toto
  attestations in DSSE envelopes, made in the cloud and verified on both sides;
* ``actuation.guardrails``, ``actuation.release`` and ``actuation.agent`` (what runs on a
  device, installable with the edge extra) are being built (see README, "not built yet").
"""
