"""The bare stack: the pinned topology at its floor. The three processes of the design
(gateway, export service, render service) speak the same protocols (HTTP + SSE, ExportService,
RenderService) on the same libraries (uvicorn + Starlette, grpc.aio, sqlite3), each doing only
what its place in the topology cannot skip, and nothing videojob adds for robustness. The
side-by-side benchmark (bench.bench_versus_celery) runs it as a third side, so that a latency
figure splits into what the three-process shape costs on this machine and what videojob's code
adds to it.

What each one keeps: the render process builds the render service's argv, starts FFmpeg with
the render service's own start (its own session, setpriv's parent-death signal), parses the
progress blocks with its parser and maps them to the same percent, verifies the file as it
does and publishes it under its final name. The export process validates the spec, inserts
the job durably (``synchronous=FULL``), calls Render, writes each progress event
(``synchronous=NORMAL``) and the completion (the file checked, ``synchronous=FULL``) on one
store thread, and hands each committed row to the job's watchers. The gateway turns
``POST /api/jobs`` into CreateExport and a job's WatchExport into SSE frames.

What each one leaves out: leases, history, retries, the render pool's placement and polling,
the request-id lookup, the stall watchdog, cancellation, metrics, tracing, logging. It is a
benchmark's yardstick, not a second implementation: it handles none of the failures videojob
exists for.

``python -m bench.bare_stack.render|export|gateway`` take the launcher's flags (the real
services' names), so videojob_launcher runs them as ``Role(module=...)``
(bench.stack.running_bare_stack)."""
