"""The market tick: Spot prices follow their pools, and a provider that simulates the Spot market
reclaims instances (a notice now, the machine gone at the deadline)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING

from gateway.providers.base import Capability, ProviderError, interrupter, record_of
from gateway.scheduler import cloud_notices
from gateway.store.fleet import InstanceState
from gateway.tes.states import MarketType

if TYPE_CHECKING:
    from gateway.scheduler.loop import Scheduler

log = logging.getLogger(__name__)


def refresh_prices(s: Scheduler) -> None:
    """A priced provider without the simulated market: each running Spot instance's price
    follows its pool's current offer (the market tick does this for the market)."""
    prices = {
        (o.instance_type, o.zone): o.price_per_hour
        for o in s.provider.offers()
        if o.market == MarketType.SPOT and o.price_per_hour is not None
    }
    for inst in s.fleet.instances({InstanceState.READY}):
        price = prices.get((inst.instance_type, inst.zone))
        if inst.market != MarketType.SPOT or price is None:
            continue
        if inst.price_per_hour is None or abs(price - inst.price_per_hour) > 1e-9:
            s.fleet.set_price(inst.id, price)


def market_tick(s: Scheduler, now: datetime) -> None:
    """Spot prices move (each running Spot instance's price follows its market pool) and a
    provider that simulates the Spot market reclaims instances: each gets a notice now and
    dies at the deadline."""
    simulates = s.provider.supports(Capability.INTERRUPT_SIMULATION)
    if s.market is None and not simulates:
        return
    dt = 0.0 if s.last_tick is None else (now - s.last_tick).total_seconds()
    s.last_tick = now
    spot = [i for i in s.fleet.instances({InstanceState.READY}) if i.market == MarketType.SPOT]
    if s.market is not None:
        for inst in spot:
            price = s.market.price(inst.instance_type, inst.zone, MarketType.SPOT)
            if inst.price_per_hour is None or abs(price - inst.price_per_hour) > 1e-9:
                s.fleet.set_price(inst.id, price)
    if dt <= 0 or not simulates or not spot:
        return
    simulation = interrupter(s.provider)
    live = [i for i in spot if not i.data.interruption]
    for inst, notice in simulation.reclaims(live, dt):
        try:
            deadline = simulation.interrupt(record_of(inst), notice)
        except ProviderError as exc:
            log.warning("reclaiming %s: %s", inst.id, exc)
            continue
        cloud_notices.notice(s, inst, "terminate", deadline)
