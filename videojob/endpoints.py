"""Where each process is found when nobody says otherwise, the names of the gRPC services it
serves there, and what the export service says beside its messages.

The default addresses are part of the pinned contract (docs and design: render service
127.0.0.1:50051, export service 127.0.0.1:50052, gateway 127.0.0.1:8080): each process listens
there by default, and each client of it looks for it there. The service names (health checks,
service configs, reflection) come from the code generated from protos/.
"""

from __future__ import annotations

from typing import Final

from videojob.export.v1 import export_pb2
from videojob.render.v1 import render_pb2

DEFAULT_HOST: Final = "127.0.0.1"
RENDER_PORT: Final = 50051
EXPORT_PORT: Final = 50052
GATEWAY_PORT: Final = 8080

DEFAULT_RENDER_ADDRESS: Final = f"{DEFAULT_HOST}:{RENDER_PORT}"
DEFAULT_EXPORT_ADDRESS: Final = f"{DEFAULT_HOST}:{EXPORT_PORT}"
DEFAULT_GATEWAY_ADDRESS: Final = f"{DEFAULT_HOST}:{GATEWAY_PORT}"
DEFAULT_GATEWAY_URL: Final = f"http://{DEFAULT_GATEWAY_ADDRESS}"

RENDER_SERVICE: Final = render_pb2.DESCRIPTOR.services_by_name["RenderService"].full_name
EXPORT_SERVICE: Final = export_pb2.DESCRIPTOR.services_by_name["ExportService"].full_name

# CreateExport's trailing metadata on an answer that replays a known request id (the gateway
# turns it into the Idempotent-Replayed header).
IDEMPOTENT_REPLAYED_METADATA: Final = "idempotent-replayed"
