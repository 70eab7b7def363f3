"""Actuation: from a registered candidate to a device that runs it.

* :mod:`actuation.contract`: what the cloud publishes and a device reads (repository
  layout, release pointer, the guardrail verdict, the fleets, runtime limits);
* :mod:`actuation.signing` and :mod:`actuation.attestation`: signing keys, and in-toto
  attestations in DSSE envelopes, made in the cloud and verified on both sides;
* :mod:`actuation.guardrails`: judges a candidate's edge build and sets ``approved``;
* :mod:`actuation.release`: the TUF repository approved versions are signed into;
* :mod:`actuation.agent`: what runs on a device (installable with the edge extra).

The staged rollout across a fleet is not built yet.
"""
