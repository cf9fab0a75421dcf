"""The tests' real SeaweedFS: the launcher's (``videojob_launcher.seaweedfs``), started in a
throwaway directory with its bucket created and credentials of its own. A store that cannot
start is an error, never a skip.

The session fixture ``seaweedfs`` (tests/conftest.py) shares one per test session (per xdist
worker); a test that kills the store starts its own (``private_seaweedfs``).
"""

from __future__ import annotations

from videojob_launcher.seaweedfs import BUCKET, SeaweedFS, SeaweedFSFailed

__all__ = ["BUCKET", "SeaweedFS", "SeaweedFSFailed"]
