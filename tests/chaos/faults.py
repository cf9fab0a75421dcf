"""The fault scheduler: injects one fault at a time at seeded random moments, and undoes it.

About half the faults are aimed at a job near its end: the harness slows that job's ffmpeg
(short SIGSTOP/SIGCONT cycles from a thread, like a loaded machine would) until its watcher has
seen progress >= 90 or the Finalizing / Verifying stage, then strikes.

On a cluster the faults that strike one service pick one of its replicas: an aimed one the
replica that owns the target job (its ``owner`` names the replica's pid), else a seeded pick.

With the outputs in an object store (s3 mode) the store's faults replace the unwritable output
directory: the store killed and started again, paused (SIGSTOP: connections accepted, nothing
answered) and resumed, and a completed job's object deleted behind the services.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from tests.chaos.client import Client, JobTrack
from tests.chaos.procfs import ffmpeg_processes, parent_pid, process_state
from tests.chaos.stack import Stack
from tests.support.throttle import Throttle, signal_all
from videojob.storage.object_store import ObjectStore
from videojob_launcher import ServiceProcess

FAULT_TYPES = (
    "kill_render",
    "kill_export",
    "kill_gateway",
    "stop_ffmpeg",
    "render_down",
    "proxy_cut",
    "proxy_stall",
    "output_unwritable",
    "cancel",
)
# Only on a cluster (3 export replicas on PostgreSQL, 2 render services).
CLUSTER_FAULT_TYPES = (
    "pause_export",  # SIGSTOP a replica past its lease, then SIGCONT
    "restart_export",  # SIGTERM a replica (it hands its jobs back), start it again
    "drain_render",  # SIGTERM a render service (it drains), start it again
)
# Only when the database is the run's own throwaway cluster.
DATABASE_FAULT_TYPES = ("restart_database",)
# Only with the outputs in the run's object store (s3 mode), instead of output_unwritable.
STORE_FAULT_TYPES = (
    "kill_store",  # SIGKILL the store, start it again on its ports over its data
    "pause_store",  # SIGSTOP the store, then SIGCONT
    "delete_object",  # delete a completed job's object behind the services
)
LOCAL_OUTPUT_FAULT_TYPES = ("output_unwritable",)
ALL_FAULT_TYPES = (*FAULT_TYPES, *CLUSTER_FAULT_TYPES, *DATABASE_FAULT_TYPES, *STORE_FAULT_TYPES)
# Injected by the workload itself rather than by the scheduler.
WORKLOAD_FAULTS = ("duplicate_submit", "corrupt_input")
TARGETABLE = frozenset(ALL_FAULT_TYPES) - {"render_down", "restart_database", "delete_object"}
_REPLICA_PID = re.compile(r":(\d+):[0-9a-f]+$")


def fault_types(cluster: bool, database_restarts: bool, s3: bool = False) -> tuple[str, ...]:
    kinds: tuple[str, ...] = FAULT_TYPES
    if s3:
        kinds = tuple(kind for kind in kinds if kind not in LOCAL_OUTPUT_FAULT_TYPES)
        kinds += STORE_FAULT_TYPES
    if cluster:
        kinds += CLUSTER_FAULT_TYPES
    if database_restarts:
        kinds += DATABASE_FAULT_TYPES
    return kinds


# How long a fault waits, at most, for the job supplied to give it a target to start (a safety
# net: it waits on that job's state, which normally settles in seconds).
SUPPLY_WAIT_SECONDS = 60.0
LONG_KINDS = (
    "pattern_long",
    "faststart",
    "webm",
    "transcode",
    "split",
    "split_transcode",
    "split_long",
)


@dataclass
class FaultRecord:
    kind: str
    at: float
    targeted: bool = False
    target_job: str = ""
    target_hit: bool = False
    target_state: str = ""
    detail: str = ""
    began: float = 0.0  # monotonic, including the time spent aiming
    ended: float = 0.0


@dataclass
class FaultScheduler:
    rng: random.Random
    stack: Stack
    client: Client
    tracks: dict[str, JobTrack]
    burst: Callable[[int], Awaitable[None]]
    supply_long: Callable[[], Awaitable[None]]
    started_at: float
    pick_rng: random.Random = field(default_factory=random.Random)
    kinds: tuple[str, ...] = FAULT_TYPES
    records: list[FaultRecord] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    _stopped: set[int] = field(default_factory=set)
    frng: random.Random = field(default_factory=random.Random)
    supplied: int = 0
    _supplied_at: float = 0.0
    _supplies: set[asyncio.Future[None]] = field(default_factory=set)
    # s3 mode: the objects deleted behind the services (delete_object), by job id.
    deleted_objects: dict[str, str] = field(default_factory=dict)

    @property
    def output_dir(self) -> Path:
        """Where the ffmpegs of the run write (the output directory, or in s3 mode the render
        services' scratch directories)."""
        return self.stack.ffmpeg_dir

    def plan(self, count: int) -> list[str]:
        """Every fault type at least once (in seeded order), then seeded random picks."""
        kinds = list(self.kinds)
        self.rng.shuffle(kinds)
        kinds += [self.rng.choice(self.kinds) for _ in range(max(0, count - len(kinds)))]
        return kinds

    async def run(self, kinds: list[str], gap: tuple[float, float]) -> None:
        queue = list(kinds)
        retries: dict[str, int] = {}
        while queue:
            # Each fault draws its parameters from its own generator, seeded in plan order, so
            # the schedule does not depend on how the system happened to behave.
            fault_rng = random.Random(self.rng.getrandbits(64))
            await asyncio.sleep(fault_rng.uniform(*gap))
            kind = queue.pop(0)
            targeted = kind in TARGETABLE and fault_rng.random() < 0.5
            self.frng = fault_rng
            record = FaultRecord(kind, round(time.monotonic() - self.started_at, 2))
            record.began = time.monotonic()
            injected = await self._inject(kind, targeted, record)
            record.ended = time.monotonic()
            if injected:
                self.records.append(record)
                print(f"  fault {len(self.records):3d} t={record.at:7.2f}s {_describe(record)}")
            elif retries.get(kind, 0) < 3:
                retries[kind] = retries.get(kind, 0) + 1
                queue.append(kind)
            else:
                self.skipped.append(kind)
            await self.stack.ensure_up()

    async def _inject(self, kind: str, targeted: bool, record: FaultRecord) -> bool:
        track = None
        if targeted:
            track = await self._running_job(within=8.0, long_only=True)
            if track is not None:
                record.targeted, record.target_job = True, track.job_id
                record.target_hit = await self._slow_until_near_end(track)
                if not record.target_hit and os.environ.get("CHAOS_DEBUG_AIM"):
                    seen = [(o.status, round(o.progress, 1), o.stage) for o in track.observations]
                    print(f"  aim missed {track.job_id} {track.planned.kind}: {seen}")
                latest = track.latest
                if latest is not None:
                    record.target_state = f"{latest.status} {latest.progress:.1f}% {latest.stage}"
        try:
            inject: Callable[[JobTrack | None, FaultRecord], Awaitable[bool]]
            inject = getattr(self, f"_{kind}")
            return await inject(track, record)
        finally:
            self._continue_all()

    async def _running_job(self, within: float, long_only: bool = False) -> JobTrack | None:
        """A running job with an ffmpeg of its own, looked for during ``within`` seconds; when
        none is there soon, one more job is supplied, and then waited for until it runs, or
        ends without ever being seen running (a slow start, when the render slots are taken or
        a fault holds the stack, is no reason to skip the fault)."""
        deadline = time.monotonic() + within
        supply_at = time.monotonic() + (0.1 if long_only else 1.5)
        supply: asyncio.Future[None] | None = None
        known: set[str] = set()
        while time.monotonic() < deadline or self._supply_may_start(supply, known):
            running = [
                track
                for track in self.tracks.values()
                if track.latest is not None
                and track.latest.status == "running"
                and ffmpeg_processes(self.output_dir, track.job_id)
            ]
            if long_only:
                running = [
                    track
                    for track in running
                    if track.planned.kind in LONG_KINDS and not track.near_end()
                ]
            if running:
                # Half the time a running split job when there is one: faults must reach the
                # jobs whose parts render apart (a part's render service, the join, the cancel
                # of every part), not only the mix's more numerous whole jobs.
                split = [track for track in running if track.split]
                if split and self.pick_rng.random() < 0.5:
                    running = split
                return self.pick_rng.choice(sorted(running, key=lambda track: track.planned.index))
            if supply is None and time.monotonic() > supply_at:
                # Nothing to strike: submit one more job rather than skip the fault. An aimed
                # fault gets a fresh long job, so that it can be slowed into its last tenth.
                self.supplied += 1
                known = set(self.tracks)
                supply = asyncio.ensure_future(self.supply_long() if long_only else self.burst(1))
                self._supplies.add(supply)
                supply.add_done_callback(self._supplies.discard)
                self._supplied_at = time.monotonic()
            await asyncio.sleep(0.02)
        return None

    def _supply_may_start(self, supply: asyncio.Future[None] | None, known: set[str]) -> bool:
        """Whether the job supplied for this fault may still start: it is being submitted, or
        submitted and not ended yet (within SUPPLY_WAIT_SECONDS of its supply)."""
        if supply is None or time.monotonic() > self._supplied_at + SUPPLY_WAIT_SECONDS:
            return False
        if not supply.done():
            return True
        supplied = [track for job_id, track in self.tracks.items() if job_id not in known]
        return any(not track.terminal_seen for track in supplied)

    async def _slow_until_near_end(self, track: JobTrack, within: float = 15.0) -> bool:
        deadline = time.monotonic() + within
        targets = _job_ffmpeg(self.output_dir, track.job_id)
        with Throttle(targets, pause=0.2, run=_run_slice(track)) as throttle:
            while time.monotonic() < deadline:
                if track.near_end():
                    return True
                if track.terminal_seen:
                    return False
                throttle.run = _run_slice(track)
                await asyncio.sleep(0.02)
        return track.near_end()

    def _stop(self, pids: list[int]) -> None:
        self._stopped.update(pids)
        signal_all(pids, signal.SIGSTOP)

    def _continue_all(self) -> None:
        signal_all(sorted(self._stopped), signal.SIGCONT)
        self._stopped.clear()

    async def _owner_pid(self, job_id: str) -> int | None:
        """The pid of the replica that owns ``job_id`` now (None on SQLite, or when the
        database does not answer)."""
        if not self.stack.database:
            return None
        try:
            connection = await asyncpg.connect(self.stack.database, timeout=2)
        except (OSError, asyncpg.PostgresError, TimeoutError):
            return None
        try:
            owner = await connection.fetchval("SELECT owner FROM jobs WHERE id = $1", job_id)
        except (OSError, asyncpg.PostgresError):
            return None
        finally:
            await connection.close()
        match = _REPLICA_PID.search(owner or "")
        return int(match[1]) if match else None

    async def _pick(
        self, processes: list[ServiceProcess], track: JobTrack | None, record: FaultRecord
    ) -> ServiceProcess:
        """The owner of the target job among ``processes`` when there is one, else a seeded
        pick."""
        pick = processes[self.frng.randrange(len(processes))]
        if track is not None and len(processes) > 1:
            owner = await self._owner_pid(track.job_id)
            owned = [p for p in processes if p.alive() and p.pid == owner]
            if owned:
                pick = owned[0]
                record.detail += "owner "
        record.detail += f"{pick.name}"
        return pick

    def _render_holding(self, track: JobTrack | None, record: FaultRecord) -> ServiceProcess:
        """The render service running one of the target job's ffmpegs (a split job's: one of
        its parts, mid-part) when the fault is aimed and one is, else a seeded pick."""
        renders = self.stack.renders
        pick = renders[self.frng.randrange(len(renders))]
        if track is not None:
            parents = {parent_pid(pid) for pid in self._ffmpeg_pids(track)}
            holding = [render for render in renders if render.alive() and render.pid in parents]
            if holding:
                pick = holding[self.frng.randrange(len(holding))]
                record.detail += "holder "
        record.detail += pick.name
        return pick

    async def _bounce(self, process: ServiceProcess, record: FaultRecord, down: float) -> bool:
        await self.stack.kill(process.name)
        await asyncio.sleep(down)
        await self.stack.launch(process.name)
        record.detail += f" down {down:.1f}s"
        return True

    async def _kill_render(self, track: JobTrack | None, record: FaultRecord) -> bool:
        render = self._render_holding(track, record)
        return await self._bounce(render, record, self.frng.uniform(0.0, 1.5))

    async def _kill_export(self, track: JobTrack | None, record: FaultRecord) -> bool:
        export = await self._pick(self.stack.exports, track, record)
        return await self._bounce(export, record, self.frng.uniform(0.0, 1.5))

    async def _kill_gateway(self, track: JobTrack | None, record: FaultRecord) -> bool:
        return await self._bounce(self.stack.gateway, record, self.frng.uniform(0.0, 1.5))

    async def _render_down(self, track: JobTrack | None, record: FaultRecord) -> bool:
        """Every render service down at once while jobs are submitted."""
        down = self.frng.uniform(2.0, 6.0)
        burst = self.frng.randint(2, 4)
        for render in self.stack.renders:
            await self.stack.kill(render.name)
        submitted = asyncio.ensure_future(self.burst(burst))
        await asyncio.sleep(down)
        for render in self.stack.renders:
            await self.stack.launch(render.name)
        await submitted
        record.detail = f"down {down:.1f}s, {burst} jobs submitted meanwhile"
        return True

    async def _pause_export(self, track: JobTrack | None, record: FaultRecord) -> bool:
        """SIGSTOP a replica past its lease: another takes its jobs; after SIGCONT its writes
        are refused and it must leave those jobs and their renders to the new owner."""
        export = await self._pick(self.stack.exports, track, record)
        hold = self.stack.settings.lease_ttl + self.frng.uniform(1.0, 3.0)
        export.pause()
        try:
            await asyncio.sleep(hold)
        finally:
            export.resume()
        record.detail += f" paused {hold:.1f}s"
        return True

    async def _restart_export(self, track: JobTrack | None, record: FaultRecord) -> bool:
        export = await self._pick(self.stack.exports, track, record)
        await self.stack.graceful_stop(export.name)
        await self.stack.launch(export.name)
        record.detail += " stopped gracefully and started again"
        return True

    async def _drain_render(self, track: JobTrack | None, record: FaultRecord) -> bool:
        render = self._render_holding(track, record)
        began = time.monotonic()
        await self.stack.graceful_stop(render.name)
        drained = time.monotonic() - began
        await self.stack.launch(render.name)
        record.detail += f" drained in {drained:.1f}s, started again"
        return True

    async def _restart_database(self, track: JobTrack | None, record: FaultRecord) -> bool:
        down = self.frng.uniform(0.5, 4.0)
        await self.stack.stop_database()
        try:
            await asyncio.sleep(down)
        finally:
            await self.stack.start_database()
        record.detail = f"down {down:.1f}s"
        return True

    async def _stop_ffmpeg(self, track: JobTrack | None, record: FaultRecord) -> bool:
        if track is None:
            track = await self._running_job(within=6.0)
        pids = await self._stopped_ffmpeg(track)
        # The job found may have ended (a short render, or one aimed at and slowed into its last
        # tenth) or be between two ffmpegs (a faststart pass) by the time its ffmpeg is
        # stopped: then a long one, supplied if none runs, until one is caught stopped.
        deadline = time.monotonic() + SUPPLY_WAIT_SECONDS
        while not pids and time.monotonic() < deadline:
            track = await self._running_job(within=6.0, long_only=True)
            pids = await self._stopped_ffmpeg(track)
        if track is None or not pids:
            return False
        record.target_job = track.job_id
        stall = self.stack.settings.stall_timeout
        hold = self.frng.choice(
            [self.frng.uniform(0.3, 1.5), self.frng.uniform(stall + 0.5, 2 * stall + 1)]
        )
        await asyncio.sleep(hold)
        self._continue_all()
        record.detail = f"pids {pids} stopped {hold:.1f}s"
        return True

    async def _stopped_ffmpeg(self, track: JobTrack | None) -> list[int]:
        """The job's ffmpeg processes, SIGSTOPped, once each has stopped or ended; those that
        ended left out (an empty list: nothing of the job's was stopped)."""
        pids = self._ffmpeg_pids(track)
        self._stop(pids)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            states = {pid: process_state(pid) for pid in pids}
            if all(state in ("T", "t", "Z", "X", "?") for state in states.values()):
                return [pid for pid, state in states.items() if state in ("T", "t")]
            await asyncio.sleep(0.01)  # the kernel stops it once it is scheduled
        return [pid for pid in pids if process_state(pid) in ("T", "t")]

    def _ffmpeg_pids(self, track: JobTrack | None) -> list[int]:
        if track is None:
            return []
        return [process.pid for process in ffmpeg_processes(self.output_dir, track.job_id)]

    async def _proxy_cut(self, track: JobTrack | None, record: FaultRecord) -> bool:
        if track is None and await self._running_job(within=6.0) is None:
            return False
        cut = sum(proxy.cut() for proxy in self.stack.proxies)
        record.detail = f"{cut} connection(s) reset"
        return cut > 0

    async def _proxy_stall(self, track: JobTrack | None, record: FaultRecord) -> bool:
        if track is None and await self._running_job(within=6.0) is None:
            return False
        stall = self.stack.settings.stall_timeout
        hold = self.frng.uniform(1.0, 2.5 * stall)
        then_cut = self.frng.random() < 0.3
        proxies = self.stack.proxies
        for proxy in proxies:
            proxy.stall()
        try:
            await asyncio.sleep(hold)
            if then_cut:
                for proxy in proxies:
                    proxy.cut()
        finally:
            for proxy in proxies:
                proxy.resume()
        record.detail = f"stalled {hold:.1f}s" + (", then reset" if then_cut else "")
        return True

    async def _output_unwritable(self, track: JobTrack | None, record: FaultRecord) -> bool:
        """Moves the output directory away and puts a regular file at its path: creating a
        file in it then fails with ENOTDIR, even for root (permission bits would not)."""
        output = self.output_dir
        away = output.with_name(output.name + ".away")
        hold = self.frng.uniform(1.0, 4.0)
        output.rename(away)
        try:
            output.write_bytes(b"")
            try:
                (output / "probe").write_bytes(b"")
            except NotADirectoryError:
                pass
            else:
                raise AssertionError("the output directory stayed writable")
            await asyncio.sleep(hold)
        finally:
            with contextlib.suppress(FileNotFoundError):
                output.unlink()
            away.rename(output)
        record.detail = f"unwritable {hold:.1f}s"
        return True

    async def _kill_store(self, track: JobTrack | None, record: FaultRecord) -> bool:
        down = self.frng.uniform(0.2, 3.0)
        await self.stack.kill_store()
        try:
            await asyncio.sleep(down)
        finally:
            await self.stack.restart_store()
        record.detail = f"down {down:.1f}s"
        return True

    async def _pause_store(self, track: JobTrack | None, record: FaultRecord) -> bool:
        store = self.stack.store
        assert store is not None
        hold = self.frng.uniform(0.5, 2.5 * self.stack.settings.stall_timeout)
        store.pause()
        try:
            await asyncio.sleep(hold)
        finally:
            store.resume()
        record.detail = f"paused {hold:.1f}s"
        return True

    async def _delete_object(self, track: JobTrack | None, record: FaultRecord) -> bool:
        """Deletes the object of a job seen completed (not one deleted before): its download
        must then say that the object is gone."""
        completed = sorted(
            (
                track
                for track in self.tracks.values()
                if track.latest is not None
                and track.latest.status == "completed"
                and track.job_id not in self.deleted_objects
            ),
            key=lambda track: track.planned.index,
        )
        if not completed:
            return False
        target = self.pick_rng.choice(completed)
        _, job = await self.client.get(target.job_id)
        output_path = str((job or {}).get("outputPath") or "")
        if not output_path.startswith("s3://"):
            return False
        bucket, _, key = output_path.removeprefix("s3://").partition("/")
        store = self.stack.store
        assert store is not None
        async with ObjectStore(store.settings()) as opened:
            await opened.delete(bucket, key)
        self.deleted_objects[target.job_id] = output_path
        record.target_job = target.job_id
        record.detail = output_path
        return True

    async def _cancel(self, track: JobTrack | None, record: FaultRecord) -> bool:
        if track is None:
            if not self.tracks:
                return False
            tracks = sorted(self.tracks.values(), key=lambda track: track.planned.index)
            live = [track for track in tracks if not track.terminal_seen]
            # Half the time a live split job when there is one: a cancel mid-split must stop
            # every part's render, the audio's and the join's.
            live_split = [track for track in live if track.split]
            if live_split and self.pick_rng.random() < 0.5:
                live = live_split
            track = self.pick_rng.choice(live if live and self.frng.random() < 0.8 else tracks)
            record.target_job = track.job_id
        await self.client.cancel(track)
        if not track.cancels:
            return False
        at, http_status, status = track.cancels[-1]
        record.detail = f"HTTP {http_status} {status}"
        if http_status == 200 and status == "cancelled":
            gone_after = await self._ffmpeg_gone_after(track.job_id, since=at, limit=6.0)
            if track.cancel_ffmpeg_gone_after is None:
                track.cancel_ffmpeg_gone_after = gone_after
            record.detail += f", ffmpeg gone after {gone_after:.2f}s"
        return True

    async def _ffmpeg_gone_after(self, job_id: str, since: float, limit: float) -> float:
        while ffmpeg_processes(self.output_dir, job_id):
            if time.monotonic() - since > limit:
                break
            await asyncio.sleep(0.05)
        return time.monotonic() - since


def _describe(record: FaultRecord) -> str:
    text = f"{record.kind:<18}"
    if record.target_job:
        text += f" job={record.target_job}"
    if record.targeted:
        text += f" near-end={'yes' if record.target_hit else 'no'} ({record.target_state})"
    if record.detail:
        text += f" {record.detail}"
    return text


def _job_ffmpeg(output_dir: Path, job_id: str) -> Callable[[], list[int]]:
    """The job's ffmpeg pids, looked up again in /proc only once they are gone."""
    known: list[int] = []

    def pids() -> list[int]:
        nonlocal known
        if not known or not all(Path(f"/proc/{pid}").exists() for pid in known):
            known = [process.pid for process in ffmpeg_processes(output_dir, job_id)]
        return known

    return pids


def _run_slice(track: JobTrack) -> float:
    """How long a slowed ffmpeg may run between two stops of 0.2 s, by the progress its watcher
    saw: ffmpeg reports every 0.5 s of wall time, so the last tenth must last several reports
    for a watcher to see it."""
    latest = track.latest
    progress = latest.progress if latest is not None else 0.0
    if progress >= 80:
        return 0.003
    if progress >= 50:
        return 0.008
    return 0.03
