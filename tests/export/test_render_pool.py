"""Placement over a pool (export_service.render_pool) on members whose capacity is set by hand:
the lighter of two, placements not yet reported counted, draining, full, avoided and silent
members, and dns:/// entries resolved to one member per address."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import AsyncIterator

import pytest

from export_service.render_pool import RenderMember, RenderPool


@pytest.fixture
async def pool() -> AsyncIterator[RenderPool]:
    opened = RenderPool("127.0.0.1:1,127.0.0.1:2,127.0.0.1:3", rng=random.Random(5))
    for index, member in enumerate(opened.members):
        answered(member, f"render-{index}")
    yield opened
    await opened.close()


def answered(
    member: RenderMember, instance_id: str, running: int = 0, queued: int = 0, slots: int = 2
) -> None:
    """As if its GetCapacity had just answered."""
    member.instance_id = instance_id
    member.healthy = True
    member.draining = False
    member.running, member.queued = running, queued
    member.max_concurrent, member.max_queue = slots, 2


def by_key(pool: RenderPool) -> dict[str, RenderMember]:
    return {member.key: member for member in pool.members}


async def test_placements_made_at_once_spread_over_idle_members() -> None:
    """Of two, both are always the candidates: placements not yet reported alternate them."""
    for seed in range(20):
        pair = RenderPool("127.0.0.1:1,127.0.0.1:2", rng=random.Random(seed))
        for index, member in enumerate(pair.members):
            answered(member, f"render-{index}")
        chosen = [pair.choose() for _ in range(4)]
        counts = Counter(member.key for member in chosen if member is not None)
        assert counts == {"render-0": 2, "render-1": 2}
        await pair.close()


async def test_the_lighter_of_two_is_chosen(pool: RenderPool) -> None:
    members = by_key(pool)
    answered(members["render-0"], "render-0", running=2, queued=1)
    answered(members["render-1"], "render-1", running=1)
    answered(members["render-2"], "render-2", running=2)
    for _ in range(20):
        chosen = pool.choose()
        assert chosen is not None and chosen.key != "render-0"  # never the heaviest of a pair
        chosen.pending.clear()


async def test_draining_full_silent_and_avoided_members_are_passed_over(pool: RenderPool) -> None:
    members = by_key(pool)
    members["render-0"].draining = True
    answered(members["render-1"], "render-1", running=2, queued=2)  # no room
    for _ in range(3):  # its room: 2 slots and 2 queued, less the placements just made
        chosen = pool.choose()
        assert chosen is not None and chosen.key == "render-2"
    assert pool.choose(frozenset({"render-2"})) is not None  # the full one: it answers busy
    assert pool.others_available("render-2") is True
    assert pool.others_available("render-2", with_room=True) is False
    members["render-1"].healthy = False
    members["render-2"].healthy = False
    # None usable: any member not draining nor avoided (its call tells), else nothing.
    fallback = pool.choose(frozenset({"render-2"}))
    assert fallback is not None and fallback.key == "render-1"
    assert pool.choose(frozenset({"render-1", "render-2"})) is None


async def test_the_free_slots_are_each_usable_members_idle_slots(pool: RenderPool) -> None:
    """What a split's planner weighs: one entry per usable render service, its slots less its
    running, queued and not yet reported renders."""
    assert pool.free_slots() == (2, 2, 2)
    members = by_key(pool)
    answered(members["render-0"], "render-0", running=1)
    answered(members["render-1"], "render-1", running=2, queued=1)
    members["render-2"].draining = True
    assert pool.free_slots() == (1, 0)
    chosen = pool.choose()
    assert chosen is not None and chosen.key == "render-0"
    assert pool.free_slots() == (0, 0)
    members["render-1"].healthy = False
    assert pool.free_slots() == (0,)


async def test_an_attempt_s_member_is_found_by_instance_id_or_address(pool: RenderPool) -> None:
    members = by_key(pool)
    assert pool.member_for("render-1", "elsewhere:9") is members["render-1"]
    assert pool.member_for("", "127.0.0.1:3") is members["render-2"]
    gone = pool.member_for("render-9", "127.0.0.1:9")
    assert gone.address == "127.0.0.1:9" and gone not in pool.members


async def test_a_dns_entry_becomes_one_member_per_address() -> None:
    pool = RenderPool("dns:///localhost:50999")
    try:
        assert pool.members == []
        await pool._resolve()
        addresses = {member.address for member in pool.members}
        assert "127.0.0.1:50999" in addresses
        assert all(address.endswith(":50999") for address in addresses)
    finally:
        await pool.close()


def test_an_empty_list_is_refused() -> None:
    with pytest.raises(ValueError, match="no render service"):
        RenderPool(" , ")
