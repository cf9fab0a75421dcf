"""The JSON log format: each record carries the fields bound to the task that logged it (and to
the tasks it started), never another task's."""

from __future__ import annotations

import asyncio
import json
import logging

from videojob.logging_setup import bind_log_context, json_formatter


class Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict[str, object]] = []
        self.setFormatter(json_formatter())

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


async def test_a_record_carries_its_own_tasks_fields_and_its_parents() -> None:
    logger = logging.getLogger("tests.log_records")
    kept = Kept()
    logger.addHandler(kept)
    logger.setLevel(logging.INFO)
    try:

        async def job(job_id: str) -> None:
            bind_log_context(job_id=job_id)

            async def attempt() -> None:
                bind_log_context(attempt=2)
                logger.info("attempt of %s", job_id)

            await asyncio.create_task(attempt())
            logger.info("job %s", job_id, extra={"log_tail": "last line"})

        await asyncio.gather(job("one"), job("two"))
        logger.info("outside")
    finally:
        logger.removeHandler(kept)
    by_message = {line["message"]: line for line in kept.lines}
    assert by_message["attempt of one"]["job_id"] == "one"
    assert by_message["attempt of one"]["attempt"] == 2
    assert by_message["job two"]["job_id"] == "two"
    assert "attempt" not in by_message["job two"]  # bound in the task it started, not in its own
    assert by_message["job two"]["log_tail"] == "last line"
    assert "job_id" not in by_message["outside"]
    assert {"time", "level", "logger"} <= by_message["outside"].keys()
