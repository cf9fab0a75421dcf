"""The HTTP gateway: a stateless ASGI app that translates HTTP, Server-Sent Events and a small
live page to the export service's gRPC API."""
