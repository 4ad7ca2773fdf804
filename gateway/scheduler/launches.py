"""Step 3 of a tick, launch: one instance at a time for the first unplaced want any offer serves;
capacity errors quarantine the pool and the next fitting offer is tried; other failures back off."""

from __future__ import annotations

import logging
import secrets
from datetime import timedelta
from typing import TYPE_CHECKING, Literal

from sqlalchemy import Connection

from capsule_runtime.protocol.resources import Resources
from gateway.auth import token_sha256
from gateway.market.policy import MarketPolicy, choose_offer
from gateway.providers.base import (
    CapacityUnavailable,
    LaunchRecord,
    LaunchSpec,
    Offer,
    ProviderError,
)
from gateway.scheduler import upkeep
from gateway.scheduler.compat import keep_types
from gateway.scheduler.needs import Want, market_allows
from gateway.store.fleet import Instance, InstanceState
from gateway.store.fleet_data import InstanceData

if TYPE_CHECKING:
    from gateway.scheduler.loop import Scheduler

log = logging.getLogger(__name__)
LaunchOutcome = Literal["launched", "no capacity", "failed"]
MAX_LAUNCH_BACKOFF = 300.0
LAUNCH_TRIES = 5  # offers tried in one tick when launches meet capacity errors


def launch(s: Scheduler, wants: list[Want], not_counting: frozenset[str] = frozenset()) -> None:
    """Start instances for the wants that any offer serves: at most `provider.launch_batch`
    on their way at once (1, the local provider's: each new instance registers before the next
    is started). The room of instances already on their way counts for the wants first, and
    each launch takes the wants its offer's room holds, so no want launches twice."""
    if s.clock() < s.next_launch:
        return
    active = s.fleet.instances({InstanceState.LAUNCHING, InstanceState.READY})
    launching = [i for i in active if i.state is InstanceState.LAUNCHING]
    batch = max(1, s.provider.launch_batch)
    if len(launching) >= batch:
        return  # let those register first
    counted = [i for i in active if i.id not in not_counting and not i.data.interruption]
    if len(counted) >= s.provider.max_instances:
        make_room(s, counted)
        return
    slots = min(batch - len(launching), s.provider.max_instances - len(counted))
    wants = unserved(wants, [(i.data.capacity, i.market, i.instance_type) for i in launching])
    all_offers = s.provider.offers()
    tries = 0
    while wants and slots > 0 and tries < LAUNCH_TRIES:
        chosen = launch_offer(s, wants, s.quarantines.usable(all_offers))
        if chosen is None:
            return  # nothing fits now
        offer, types = chosen
        outcome = launch_one(s, offer, types)
        if outcome == "failed":
            return  # backing off
        if outcome == "no capacity":
            tries += 1  # quarantined now: the next fitting offer
            continue
        slots -= 1
        wants = unserved(wants, [(offer, offer.market, offer.instance_type)])


def unserved(wants: list[Want], rooms: list[tuple[Resources | None, str, str]]) -> list[Want]:
    """The wants that the rooms (an instance's size, market and type) do not hold, first fit in
    order."""
    left = [(r, market, itype) for r, market, itype in rooms if r is not None]
    out: list[Want] = []
    for want in wants:
        for k, (room, market, itype) in enumerate(left):
            if (
                want.need.fits(room)
                and market_allows(want.policy, market)
                and want.only_type in (None, itype)
                and (want.offer is None or want.offer.instance_type == itype)
                and (want.types is None or itype in want.types)
            ):
                left[k] = (room.minus(want.need), market, itype)
                break
        else:
            out.append(want)
    return out


def launch_offer(
    s: Scheduler, wants: list[Want], offers: list[Offer]
) -> tuple[Offer, frozenset[str] | None] | None:
    """The offer for the first want that one serves (a recovery plan's own offer unless its
    pool is quarantined), with the instance types that want may be launched as (a capsule's
    restore: those that can run it; None: any)."""
    for want in wants:
        if want.offer is not None:
            if not s.quarantines.blocks(want.offer):
                return want.offer, want.types
            continue
        usable = s.budget.spot_offers(
            want,
            keep_types(offers, want.types),
            s.provider.name,
            want.policy is MarketPolicy.SPOT_ONLY,
        )
        offer = choose_offer(
            want.need, usable, want.policy, market_quarantined(s), only_type=want.only_type
        )
        if offer is not None:
            return offer, want.types
    return None


def launch_one(s: Scheduler, offer: Offer, types: frozenset[str] | None = None) -> LaunchOutcome:
    """Launch one instance of `offer` (a provider choosing among types keeps to `types`):
    "launched"; "no capacity" when its pool had none (quarantined now: the caller tries the
    next fitting offer); "failed" otherwise (backing off)."""
    token = secrets.token_urlsafe(32)
    with s.tasks.batch() as conn:
        s.fence(conn)
        inst = add_instance(s, conn, offer, token)
    try:
        (result,) = s.provider.launch_many([LaunchSpec(inst.id, token, offer, types)])
    except ProviderError as exc:
        result = exc
    if isinstance(result, LaunchRecord):
        s.fleet.set_launch_record(
            inst.id, result.provider_id, result.zone or inst.zone, result.provider_data
        )
        return "launched"
    if isinstance(result, CapacityUnavailable):
        seconds = s.cfg.scheduler.quarantine_seconds
        log.warning("launch failed: %s; avoiding that pool for %.0fs", result, seconds)
        s.quarantines.add(offer.instance_type, offer.zone, offer.market, seconds)
        s.fleet.set_instance_state(inst.id, InstanceState.TERMINATED)
        # with no quarantine the same pool would come first again
        return "no capacity" if seconds > 0 else "failed"
    # a launch that fails for another reason will likely fail again: wait longer each time
    s.failed_launches += 1
    delay = min(2.0**s.failed_launches, MAX_LAUNCH_BACKOFF)
    s.next_launch = s.clock() + timedelta(seconds=delay)
    log.error("launch failed: %s; next launch in %.0fs", result, delay)
    s.fleet.set_instance_state(inst.id, InstanceState.LOST)
    return "failed"


def add_instance(s: Scheduler, conn: Connection, offer: Offer, token: str) -> Instance:
    return s.fleet.add_instance(
        provider=s.provider.name,
        instance_type=offer.instance_type,
        market=offer.market,
        zone=offer.zone,
        price_per_hour=offer.price_per_hour,
        token_sha256=token_sha256(token),
        data=InstanceData(
            capacity=Resources(
                cpu_cores=offer.cpu_cores, ram_gb=offer.ram_gb, disk_gb=offer.disk_gb
            )
        ),
        owner=s.lease.holder if s.lease is not None else None,
        conn=conn,
    )


def market_quarantined(s: Scheduler) -> frozenset[tuple[str, str]]:
    """The Spot pools (type, zone) the simulated market quarantines (the scheduler's own
    quarantines are taken out of the offers: `Quarantines.usable`)."""
    return s.market.quarantined() if s.market is not None else frozenset()


def usable_offers(s: Scheduler) -> list[Offer]:
    """What the provider offers, less the quarantined pools."""
    return s.quarantines.usable(s.provider.offers())


def make_room(s: Scheduler, counted: list[Instance]) -> None:
    """Every instance slot is taken while work waits for an instance of another kind: stop
    an idle one now rather than after the idle timeout (its slot goes to the launch)."""
    for inst in counted:
        if inst.state is InstanceState.READY and not s.fleet.live_attempts(inst.id):
            if upkeep.retire_instance(s, inst):
                log.info("stopping idle instance %s to make room for a launch", inst.id)
                s.wakeups.notify(inst.id)
            return
