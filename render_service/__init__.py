"""The render service: runs FFmpeg renders and streams their progress over gRPC."""
