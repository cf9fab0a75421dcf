"""Contracts shared by every videojob process.

``videojob.render.v1`` and ``videojob.export.v1`` hold the code generated from ``protos/``
(regenerate with ``make proto``). The hand-written modules beside them are the rules that
more than one service must apply identically: spec validation, domain errors and their
mapping to gRPC and HTTP, the FFmpeg binary, and gRPC server/channel settings.
"""
