"""fieldloop: the shared kernel of the edge-to-cloud data loop for physical AI.

The kernel holds what every stage shares: typed config (:mod:`fieldloop.config`),
data classes and the training rule (:mod:`fieldloop.classes`), data contracts
(:mod:`fieldloop.contracts`), the residency guard (:mod:`fieldloop.residency`),
lineage records (:mod:`fieldloop.lineage`), the Spark session factory
(:mod:`fieldloop.spark`), the local stack manager (:mod:`fieldloop.stack`) and the
CLI face (:mod:`fieldloop.cli`, the only kernel package that imports stages).
"""

__version__ = "0.1.0"
