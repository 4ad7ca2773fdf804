"""Spot placement scores (EC2's GetSpotPlacementScores): how likely a Spot request for one
instance of a type succeeds in each zone, 1-10. The offers carry them (`Offer.placement_score`)
and the scheduler takes the higher score among equally priced pools (gateway/market/policy.py).

One call per configured type (one instance, single-zone scores, this region), read at most every
`SCORE_TTL` seconds: EC2 limits how many distinct score requests an account makes a day. Scores
name zones by id (use1-az4); DescribeAvailabilityZones (once) maps them to the zone names the
offers use. Where the call is not available — not implemented (moto, some partitions), not
permitted (no ec2:GetSpotPlacementScores), or failing at all — the feature is off for the rest of
the run, said once in the log: it is only a tiebreak.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from botocore.parsers import ResponseParserError

from gateway.providers.aws.errors import error_code, error_message

log = logging.getLogger(__name__)

SCORE_TTL = 3600.0  # seconds scores are reused before asking again


class PlacementScores:
    """(type, zone) → score, for the Spot offers."""

    def __init__(self, ec2: Any, region: str, clock: Callable[[], float]) -> None:
        self.ec2 = ec2
        self.region = region
        self.clock = clock
        self.off = False
        self._scores: dict[tuple[str, str], int] = {}
        self._read_at: float | None = None
        self._zone_names: dict[str, str] | None = None  # zone id → zone name

    def scores(self, instance_types: Sequence[str]) -> dict[tuple[str, str], int]:
        if self.off:
            return {}
        now = self.clock()
        if self._read_at is not None and now - self._read_at < SCORE_TTL:
            return self._scores
        try:
            names = self.zone_names()
            scores: dict[tuple[str, str], int] = {}
            for itype in instance_types:
                answer = self.ec2.get_spot_placement_scores(
                    InstanceTypes=[itype],
                    TargetCapacity=1,
                    TargetCapacityUnitType="units",
                    SingleAvailabilityZone=True,
                    RegionNames=[self.region],
                )
                for entry in answer.get("SpotPlacementScores", []):
                    zone = names.get(str(entry.get("AvailabilityZoneId", "")))
                    if zone and entry.get("Region", self.region) == self.region:
                        scores[itype, zone] = int(entry["Score"])
        except (ClientError, BotoCoreError, ResponseParserError, KeyError, ValueError) as exc:
            self.off = True
            self._scores = {}
            if isinstance(exc, ClientError):
                why = f"{error_code(exc)}: {error_message(exc)}"
            else:
                why = f"{type(exc).__name__}: {exc}"
            log.info(
                "Spot placement scores are not available here (%s): off for this run; equally "
                "priced pools are taken by size, type and zone",
                why,
            )
            return {}
        self._scores, self._read_at = scores, now
        return scores

    def zone_names(self) -> dict[str, str]:
        """Zone id → zone name in this region (DescribeAvailabilityZones, once)."""
        if self._zone_names is None:
            zones = self.ec2.describe_availability_zones()["AvailabilityZones"]
            self._zone_names = {z["ZoneId"]: z["ZoneName"] for z in zones if z.get("ZoneId")}
        return self._zone_names
