"""Celery 5 + Redis as the peer that bench.bench_versus_celery measures videojob against: a
Celery app with one task that runs a given ffmpeg argv and reports its progress blocks with
``update_state`` (``app``), and a worker process started and stopped around a benchmark
(``worker``)."""
