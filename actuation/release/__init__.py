"""The signed release repository (TUF) and what publishes to it.

* :mod:`actuation.release.repository`: the repository's metadata and files (python-tuf's
  Metadata API), key rotation and renewal;
* :mod:`actuation.release.publish`: the checks a model version passes before it is
  published to a fleet (approved alias, guardrail attestation, policy, tenant), then the
  publish itself;
* :mod:`actuation.release.s3`: the production mirror of the repository in an S3 bucket;
* :mod:`actuation.release.cli`: ``fieldloop release``.

The stack's nginx (``fieldloop.stack.components.ReleaseComponent``) serves the directory;
devices read it with python-tuf's ngclient (``actuation.agent``).
"""
