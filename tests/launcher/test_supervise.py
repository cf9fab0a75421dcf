"""scripts/run_stack.py supervises what it started, as systemd's Restart=on-failure does: a
service that dies is started again on its port while the others keep running, and one that keeps
dying ends the launcher with a non-zero status. The Stack itself restarts nothing unless its
configuration asks (the tests and benchmarks built on it keep a dead process dead)."""

from __future__ import annotations

import os
import re
import signal
import threading
from pathlib import Path

import pytest

from tests.launcher.launched import QUICK_RESTARTS, run_stack
from tests.support.polling import poll_until
from videojob_launcher import RestartPolicy, Role, Stack, StackConfig


def test_a_killed_service_is_restarted_on_its_port_and_the_others_keep_running(
    tmp_path: Path,
) -> None:
    with run_stack(tmp_path, *QUICK_RESTARTS) as launched:
        before = launched.wait_healthy()
        for module in ("export_service", "render_service"):
            killed = before[module]
            os.kill(killed, signal.SIGKILL)

            def restarted(module: str = module, killed: int = killed) -> dict[str, int] | None:
                services = launched.healthy()  # fails at once if the launcher gave up
                return services if services and services[module] != killed else None

            after = poll_until(restarted, f"a new {module} serving on its port")
            others = {name: pid for name, pid in after.items() if name != module}
            assert others == {name: pid for name, pid in before.items() if name != module}
            before = after
        # One line for each: the process, its exit status, when it is started again.
        errors = launched.stderr.read_text()
        for name in ("export", "render"):
            line = rf"^{name} \(pid \d+\) exited with status -9 .*; restarting it in \d"
            assert re.search(line, errors, re.M), errors

        launched.popen.send_signal(signal.SIGINT)
        assert launched.popen.wait(timeout=60) == 0, launched.stderr.read_text()
        assert launched.everything() == []
        assert launched.ports_free()


def test_a_crash_loop_stops_everything_with_a_non_zero_status(tmp_path: Path) -> None:
    burst = ("--restart-burst", "2", "--restart-interval", "600")
    with run_stack(tmp_path, *QUICK_RESTARTS, *burst) as launched:
        render = launched.wait_healthy()["render_service"]
        # The running render service does not notice; every new one exits at once ("cannot
        # start: File exists"), as one given a bad flag or a taken port would.
        renders = tmp_path / "var" / "renders"
        renders.rename(tmp_path / "renders.moved")
        renders.write_text("not a directory")
        os.kill(render, signal.SIGKILL)
        status = launched.popen.wait(timeout=90)
        errors = launched.stderr.read_text()
        assert status != 0, errors
        assert launched.everything() == []
        assert launched.ports_free()
        restarts = re.findall(r"^render \(pid \d+\) exited .*; restarting it in ", errors, re.M)
        assert len(restarts) == 2, errors
        assert re.search(r"^render .* exited with status 2 .*giving up", errors, re.M), errors


def test_the_stack_restarts_nothing_unless_asked(tmp_path: Path) -> None:
    with Stack(StackConfig(tmp_path, gateway=Role(count=0))) as stack:
        assert stack.config.restart == RestartPolicy(when="no")
        stack.render.kill()
        assert stack.supervise(threading.Event()) is stack.render
        assert len(stack.render.runs) == 1
        assert stack.export.alive()


def test_supervision_ends_when_asked(tmp_path: Path) -> None:
    config = StackConfig(tmp_path, gateway=Role(count=0), restart=RestartPolicy())
    with Stack(config) as stack:
        stop = threading.Event()
        stop.set()
        assert stack.supervise(stop) is None
        assert all(process.alive() for process in stack.processes)


def test_restart_delays_double_up_to_their_maximum() -> None:
    policy = RestartPolicy(backoff=0.5, max_backoff=3.0, burst=5, interval=60.0)
    assert [policy.delay(restarts) for restarts in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert RestartPolicy(backoff=0.0).delay(3) == 0.0


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"when": "sometimes"}, "no, on-failure or always"),
        ({"backoff": -1.0}, "backoff"),
        ({"backoff": 2.0, "max_backoff": 1.0}, "max_backoff"),
        ({"burst": 0}, "burst"),
        ({"interval": 0.0}, "interval"),
    ],
)
def test_a_restart_policy_that_cannot_work_is_refused(
    fields: dict[str, object], problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        RestartPolicy(**fields)  # type: ignore[arg-type]
