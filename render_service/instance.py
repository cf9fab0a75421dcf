"""Which render service this is: an instance id that survives restarts and that no other render
service sharing the output directory has. It prefixes this service's partial file names, so a
service removes only partial files it owns.

Without ``--instance-id`` the id is generated once and kept in ``<output-dir>/.render-instances/``
in a file keyed by the host name and the bound address (after binding, so that a service told
to listen on port 0 and started again on the port it got, as the launcher does, keeps its id).
Two live services cannot have the same key on one host (one port, one process) and services on
different machines differ by host name, so services sharing an output directory get different
ids. A service whose host name changes on every start (a container without a stable name) gets
a new id each time; its previous partial files are then no one's, and the export service removes
the partial file of an attempt it gives up: give such services ``--instance-id``.

Whatever the source, the id is locked (``flock`` on a file beside it) for as long as the service
runs: a second live service with the same id, which would remove the first's partial files, is
refused at start instead.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path

from render_service.file_lock import try_lock
from videojob.limits import MAX_INSTANCE_ID_LENGTH

INSTANCES_DIR = ".render-instances"
INSTANCE_ID = re.compile(f"[A-Za-z0-9][A-Za-z0-9_-]{{0,{MAX_INSTANCE_ID_LENGTH - 1}}}")
INSTANCE_ID_RULE = (
    f"1-{MAX_INSTANCE_ID_LENGTH} letters, digits, '_' or '-', starting with a letter or digit"
)
_UNSAFE_IN_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def is_instance_id(value: str) -> bool:
    return INSTANCE_ID.fullmatch(value) is not None


def address_key(host: str, port: int) -> str:
    """The file name part that tells this service's generated id from the others'."""
    return _UNSAFE_IN_NAME.sub("_", f"{socket.gethostname()}_{host}_{port}").strip("_")


def generated_instance_id(output_dir: Path, key: str) -> str:
    """The id kept for ``key``, created (atomically: two services starting at once agree) the
    first time."""
    folder = output_dir / INSTANCES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    kept = folder / f"{key}.id"
    if not kept.exists():
        draft = folder / f".{key}.{secrets.token_hex(4)}.tmp"
        draft.write_text(secrets.token_hex(6) + "\n")
        try:
            os.link(draft, kept)  # fails when another start got there first: its id wins
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    instance_id = kept.read_text().strip()
    if not is_instance_id(instance_id):
        raise ValueError(f"{kept} does not hold an instance id ({INSTANCE_ID_RULE})")
    return instance_id


@dataclass
class InstanceLock:
    """Held while the service runs; ``release`` when it stops (the kernel releases it if the
    process dies)."""

    instance_id: str
    fd: int

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def lock_instance(output_dir: Path, instance_id: str) -> InstanceLock:
    """Raises ValueError when a live render service already holds ``instance_id`` here."""
    folder = output_dir / INSTANCES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    fd = try_lock(folder / f"{instance_id}.lock", os.O_RDWR | os.O_CREAT)
    if fd is None:
        raise ValueError(
            f"instance id {instance_id!r} is in use by another render service sharing "
            f"{output_dir}; give each one its own --instance-id"
        )
    return InstanceLock(instance_id, fd)


def claim_instance(output_dir: Path, given: str, host: str, port: int) -> InstanceLock:
    """The id to run as (``given``, else the one kept for this host and address), locked."""
    instance_id = given or generated_instance_id(output_dir, address_key(host, port))
    return lock_instance(output_dir, instance_id)
