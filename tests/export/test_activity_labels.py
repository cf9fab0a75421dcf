"""The tracker's metric labels are operator names from fixed tables: every question and every
observation has one (a new class without one fails here), none is a class name, and the metrics
count under them."""

from __future__ import annotations

import re
from typing import get_args

import grpc

from export_service.tracking.actions import Question, Wait, WatchRender
from export_service.tracking.activity_labels import (
    OBSERVATION_LABELS,
    QUESTION_LABELS,
    TRACKER_START,
    observation_label,
)
from export_service.tracking.observations import Observation, RpcFailed, StreamSilent, TimerFired
from export_service.tracking.runner import count_question
from tests.support.prometheus_text import samples
from videojob import metrics

SNAKE_CASE = re.compile(r"^[a-z]+(_[a-z]+)*$")


def test_every_question_and_observation_has_an_operator_label() -> None:
    assert set(QUESTION_LABELS) == set(get_args(Question))
    assert set(OBSERVATION_LABELS) == set(get_args(Observation))


def test_labels_are_distinct_snake_case_names_not_class_names() -> None:
    for table in (QUESTION_LABELS, OBSERVATION_LABELS):
        labels = list(table.values())
        assert len(set(labels)) == len(labels), labels
        for kind, label in table.items():
            assert SNAKE_CASE.match(label), label
            assert label != kind.__name__
    assert SNAKE_CASE.match(TRACKER_START)
    assert TRACKER_START not in OBSERVATION_LABELS.values()


def test_a_failed_render_call_is_labelled_with_its_status_code() -> None:
    labels = {observation_label(RpcFailed(code, "")) for code in grpc.StatusCode}
    assert len(labels) == len(grpc.StatusCode)
    assert all(SNAKE_CASE.match(label) for label in labels), labels
    assert observation_label(RpcFailed(grpc.StatusCode.UNAVAILABLE, "")) == (
        "render_call_failed_unavailable"
    )
    assert observation_label(TimerFired()) == "retry_timer"


def test_questions_are_counted_under_their_labels_with_the_reason() -> None:
    def value(name: str, **labels: str) -> float:
        exposed = samples(metrics.exposition(metrics.EXPORT)[0].decode())
        return exposed.get((name, frozenset(labels.items())), 0.0)

    silent = observation_label(StreamSilent(5.0))
    before = (
        value("videojob_tracker_questions_total", question="watch_render"),
        value("videojob_render_reattaches_total", reason="stream_silent"),
        value("videojob_tracker_retries_total", reason="tracker_start"),
    )
    count_question(WatchRender(after_seq=3), silent)
    count_question(Wait(seconds=1.0, why="busy", then="asking again"), TRACKER_START)
    after = (
        value("videojob_tracker_questions_total", question="watch_render"),
        value("videojob_render_reattaches_total", reason="stream_silent"),
        value("videojob_tracker_retries_total", reason="tracker_start"),
    )
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 1]
