"""The render services this export service places renders on: membership, capacity and placement.

``--render-addr`` lists them (``a:p,b:p``); a ``dns:///name:port`` entry stands for every address
the name resolves to, resolved again every ``resolve_interval`` seconds. Each render service gets
its own channel: a job's calls for one attempt (Render, WatchRender, GetRender, CancelRender) all
go to the render service that attempt was placed on, never spread round-robin (a render
service's event log is its own; a NOT_FOUND from the wrong one would read as a lost render).

Every ``poll_interval`` each member is asked GetCapacity (cheap: counters and its instance id):
healthy (it answered), draining, and its load. ``choose`` places by load, with the power of two
choices: of two random healthy, non-draining candidates with room, the lighter, where the load
counts the placements made here that the service has not reported yet (so jobs created at once
spread instead of all landing on the one that looked idle). A member that has not answered yet
or stopped answering is chosen only when no healthy one can be: the call itself then fails and
the tracker decides (a pool of one behaves as a single render service).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import time
from dataclasses import dataclass, field

import grpc

from videojob.grpc_setup import TlsFiles, create_channel
from videojob.render.v1 import render_pb2, render_pb2_grpc

logger = logging.getLogger(__name__)

POLL_INTERVAL_SECONDS = 1.0
POLL_TIMEOUT_SECONDS = 1.0
RESOLVE_INTERVAL_SECONDS = 30.0
# A placement not reported by the render service's capacity after this long is forgotten.
PENDING_PLACEMENT_SECONDS = 10.0
DNS_PREFIX = "dns:///"


@dataclass
class RenderMember:
    """One render service of the pool, by address."""

    address: str
    channel: grpc.aio.Channel
    stub: render_pb2_grpc.RenderServiceAsyncStub
    instance_id: str = ""
    # None: not asked yet; False: the last GetCapacity went unanswered.
    healthy: bool | None = None
    draining: bool = False
    running: int = 0
    queued: int = 0
    max_concurrent: int = 0
    max_queue: int = 0
    # When each placement made here was made (monotonic), until the service reports it.
    pending: list[float] = field(default_factory=list)

    @property
    def key(self) -> str:
        """The instance id once known (stable across restarts), else the address."""
        return self.instance_id or self.address

    @property
    def load(self) -> float:
        busy = self.running + self.queued + len(self.pending)
        return busy / max(self.max_concurrent, 1)

    @property
    def has_room(self) -> bool:
        if self.max_concurrent == 0:  # capacity unknown (a render service that does not say)
            return True
        limit = self.max_concurrent + self.max_queue
        return self.running + self.queued + len(self.pending) < limit

    @property
    def usable(self) -> bool:
        return bool(self.healthy) and not self.draining

    @property
    def free_slots(self) -> int:
        """Render slots idle here, less the placements not yet reported (a render service that
        does not tell its capacity: one, if it has room)."""
        if self.max_concurrent == 0:
            return 1 if self.has_room else 0
        busy = self.running + self.queued + len(self.pending)
        return max(0, self.max_concurrent - busy)


def parse_render_addresses(addresses: str) -> list[str]:
    """The comma-separated entries of ``--render-addr``, without blanks."""
    return [item.strip() for item in addresses.split(",") if item.strip()]


def _split_host_port(target: str) -> tuple[str, int]:
    host, _, port = target.rpartition(":")
    return host.strip("[]"), int(port)


class RenderPool:
    def __init__(
        self,
        addresses: str,
        tls: TlsFiles | None = None,
        *,
        poll_interval: float = POLL_INTERVAL_SECONDS,
        resolve_interval: float = RESOLVE_INTERVAL_SECONDS,
        rng: random.Random | None = None,
    ) -> None:
        self._entries = parse_render_addresses(addresses)
        if not self._entries:
            raise ValueError("--render-addr names no render service")
        self._tls = tls
        self._poll_interval = poll_interval
        self._resolve_interval = resolve_interval
        self._rng = rng or random.Random()
        self._members: dict[str, RenderMember] = {}
        # Render services a job's attempt was placed on that are no longer listed: kept for
        # that attempt's calls.
        self._recorded: dict[str, RenderMember] = {}
        self._tasks: list[asyncio.Task[None]] = []
        for entry in self._entries:
            if not entry.startswith(DNS_PREFIX):
                self._add(entry)

    # Membership.

    @property
    def members(self) -> list[RenderMember]:
        return list(self._members.values())

    def _add(self, address: str) -> RenderMember:
        member = self._members.get(address) or self._recorded.pop(address, None)
        if member is None:
            channel = create_channel(address, self._tls)
            member = RenderMember(address, channel, render_pb2_grpc.RenderServiceStub(channel))
        self._members[address] = member
        return member

    async def _resolve(self) -> None:
        """Every ``dns:///`` entry resolved again; members whose address is gone are kept for
        the attempts placed on them but no longer chosen."""
        wanted = {entry for entry in self._entries if not entry.startswith(DNS_PREFIX)}
        loop = asyncio.get_running_loop()
        for entry in self._entries:
            if not entry.startswith(DNS_PREFIX):
                continue
            host, port = _split_host_port(entry.removeprefix(DNS_PREFIX))
            try:
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except OSError as error:
                logger.warning("cannot resolve render services %s: %s", entry, error)
                wanted |= {a for a in self._members if a not in self._entries}
                continue
            for _family, _type, _proto, _name, sockaddr in infos:
                ip = str(sockaddr[0])
                wanted.add(f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}")
        for address in wanted - set(self._members):
            logger.info("render service %s joins the pool", address)
            self._add(address)
        for address in set(self._members) - wanted:
            logger.info("render service %s leaves the pool", address)
            self._recorded[address] = self._members.pop(address)

    async def start(self) -> None:
        """Resolves the names and asks every member once (a short wait), then keeps polling."""
        await self._resolve()
        await self.poll_once()
        self._tasks.append(asyncio.create_task(self._poll_forever(), name="render-pool-poll"))
        if any(entry.startswith(DNS_PREFIX) for entry in self._entries):
            self._tasks.append(asyncio.create_task(self._resolve_forever(), name="render-dns"))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for member in [*self._members.values(), *self._recorded.values()]:
            await member.channel.close(None)

    # Capacity.

    async def poll_once(self) -> None:
        await asyncio.gather(*(self._poll(member) for member in self.members))

    async def _poll(self, member: RenderMember) -> None:
        asked_at = time.monotonic()
        try:
            capacity = await member.stub.GetCapacity(
                render_pb2.GetCapacityRequest(), timeout=POLL_TIMEOUT_SECONDS
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.UNIMPLEMENTED:  # answers, but cannot say more
                self._note_health(member, True)
            else:
                self._note_health(member, False)
            return
        if member.instance_id and capacity.instance_id != member.instance_id:
            logger.warning(
                "render service %s is now %s (was %s)",
                member.address,
                capacity.instance_id,
                member.instance_id,
            )
        member.instance_id = capacity.instance_id
        if capacity.draining and not member.draining:
            logger.info("render service %s (%s) is draining", member.address, member.key)
        member.draining = capacity.draining
        member.running = capacity.running
        member.queued = capacity.queued
        member.max_concurrent = capacity.max_concurrent
        member.max_queue = capacity.max_queue
        # What it reports now includes every placement made before it was asked.
        member.pending = [at for at in member.pending if at >= asked_at]
        self._note_health(member, True)

    def _note_health(self, member: RenderMember, healthy: bool) -> None:
        if member.healthy is not None and member.healthy != healthy:
            state = "answers again" if healthy else "does not answer"
            logger.warning("render service %s (%s) %s", member.address, member.key, state)
        member.healthy = healthy

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self._poll_interval)
            await self.poll_once()

    async def _resolve_forever(self) -> None:
        while True:
            await asyncio.sleep(self._resolve_interval)
            await self._resolve()

    # Placement.

    def choose(self, avoid: frozenset[str] = frozenset()) -> RenderMember | None:
        """Where to place a new render: the lighter of two random usable members with room
        (not one of ``avoid``, by key); when none has room, the least loaded usable one (it
        answers RESOURCE_EXHAUSTED and the tracker waits); when none is usable, any member not
        avoided nor draining (the call tells). None when every member is avoided or draining.
        The choice counts as pending load on the member until it reports it."""
        now = time.monotonic()
        for member in self._members.values():
            member.pending = [at for at in member.pending if now - at < PENDING_PLACEMENT_SECONDS]
        allowed = [m for m in self._members.values() if m.key not in avoid]
        usable = [m for m in allowed if m.usable]
        with_room = [m for m in usable if m.has_room]
        chosen: RenderMember | None
        if with_room:
            pair = self._rng.sample(with_room, min(2, len(with_room)))
            chosen = min(pair, key=lambda member: member.load)
        elif usable:
            chosen = min(usable, key=lambda member: member.load)
        else:
            fallback = [m for m in allowed if not m.draining]
            chosen = self._rng.choice(fallback) if fallback else None
        if chosen is not None:
            chosen.pending.append(now)
        return chosen

    def others_available(self, key: str, *, with_room: bool = False) -> bool:
        """Another usable member than ``key`` (with room, when asked): somewhere to fail over."""
        return any(
            member.usable and member.key != key and (member.has_room or not with_room)
            for member in self._members.values()
        )

    def member_for(self, instance_id: str, address: str) -> RenderMember:
        """The render service an attempt was recorded on: by instance id (it may have moved),
        else by address (a channel of its own when it is no longer listed)."""
        if instance_id:
            for member in self._members.values():
                if member.instance_id == instance_id:
                    return member
        known = self._members.get(address) or self._recorded.get(address)
        if known is not None:
            return known
        channel = create_channel(address, self._tls)
        member = RenderMember(address, channel, render_pb2_grpc.RenderServiceStub(channel))
        member.instance_id = instance_id
        self._recorded[address] = member
        return member

    def reachable(self, instance_id: str, address: str) -> bool | None:
        """Whether the render service of a recorded attempt answered its last capacity poll
        (None: not polled, e.g. no longer listed)."""
        member = self.member_for(instance_id, address)
        return member.healthy if member.address in self._members else None

    def first(self) -> RenderMember:
        """The first listed member (legacy renders placed before placements were recorded)."""
        return next(iter(self._members.values()), None) or self.member_for("", self._entries[0])

    def slots_of(self, instance_id: str, address: str) -> int | None:
        """How many renders a listed render service runs at once (by instance id, else by
        address), when it answered its last capacity poll, is not draining and says; else None."""
        listed = [m for m in self._members.values() if instance_id and m.instance_id == instance_id]
        member = listed[0] if listed else self._members.get(address)
        if member is None or not member.usable or member.max_concurrent <= 0:
            return None
        return member.max_concurrent

    def free_slots(self) -> tuple[int, ...]:
        """The free render slots of each usable member (one entry per render service): what a
        split's planner (export_service.split_plan) weighs."""
        return tuple(member.free_slots for member in self._members.values() if member.usable)

    def usable_count(self) -> int:
        return sum(1 for member in self._members.values() if member.usable)

    def any_usable(self) -> RenderMember:
        """A member to ask something any render service can answer (CheckInputs)."""
        usable = [member for member in self._members.values() if member.usable]
        return self._rng.choice(usable) if usable else self.first()
