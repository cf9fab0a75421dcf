"""``videojob``: the command line client of the export service (submit, watch, get, list,
cancel) and of the gateway's download route."""

from videojob_cli.main import main, run

__all__ = ["main", "run"]
