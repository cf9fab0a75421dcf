"""Contracts shared by every videojob process.

``videojob.render.v1`` and ``videojob.export.v1`` hold the code generated from ``protos/``
(regenerate with ``make proto``). The hand-written modules beside them are the rules that
more than one service must apply identically: spec validation, domain errors and their
mapping to gRPC and HTTP, the FFmpeg binary, gRPC server/channel settings, and the HTTP API's
JSON vocabulary (job_json, spec_schema), which the gateway and the CLI share.

Nothing here imports the services or their clients (the CLI, videojob_cli; the launcher,
videojob_launcher): tests/contracts/test_floors.py keeps every import pointing down.
"""
