"""Refinement: bronze -> silver -> gold Spark jobs, and the secret stream's release at the edge.

Per stream: quality rules (:mod:`refinement.quality`), the privacy policy
(:mod:`refinement.policy`: keyed pseudonyms, generalization, k-anonymity, scrubbed notes),
a privacy report per table and run (:mod:`refinement.report`); gold datasets as the
contracts declare them (:mod:`refinement.gold`), DP releases charged to a budget ledger
(:mod:`refinement.dp`, :mod:`refinement.ledger`). Entry points: ``fieldloop refine``
(:mod:`refinement.cli`, :func:`refinement.run.refine`) and ``dags/fieldloop_refine.py``.
"""
