"""The face: the ``fieldloop`` command (root group, ``demo``, the kernel's commands).

The only part of the kernel that imports stages; it registers each stage's command group.
"""

from fieldloop.cli.main import main

__all__ = ["main"]
