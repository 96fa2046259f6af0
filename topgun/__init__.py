"""TopGun for Python: an offline-first client for the TopGun reactive data grid.

The implementation lives in :mod:`libs.client`; its public names (its ``__all__``) are exactly
this package's, so applications write ``import topgun``.
"""

from libs.client import *  # noqa: F403
from libs.client import __all__ as __all__
