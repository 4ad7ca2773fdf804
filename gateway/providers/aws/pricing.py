"""On-demand prices for the aws provider's offers: `providers.aws.on_demand_prices` (a table, type
→ USD/hour) first; else the AWS Price List Query API (`pricing:GetProducts`), read once per type
and kept for the gateway process's life (list prices change rarely); else, when the API cannot
be asked (no permission, no network, an endpoint without it such as moto) or knows no price,
the built-in us-east-1 list price (gateway/market/catalog.py), as before the API was read. An API
failure turns it off for the run, with one warning: a gateway never waits on it twice.

The query: service AmazonEC2, one instance type, Linux, shared tenancy, the region
(`regionCode`), capacity status Used (a running instance, not a reservation), no pre-installed
software. The Price List API answers from a few regions only; us-east-1 answers for every
region. Each `PriceList` entry is a JSON document; the price is
`terms.OnDemand.*.priceDimensions.*.pricePerUnit.USD` of the dimension billed in hours
(AWS's documentation, "Using the AWS Price List Query API").
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from gateway.providers.aws.errors import error_code, error_message

log = logging.getLogger(__name__)

PRICING_REGION = "us-east-1"  # the Price List API's endpoint that answers for every region
SERVICE = "AmazonEC2"


def filters(instance_type: str, region: str) -> list[dict[str, str]]:
    """GetProducts filters for one type's on-demand Linux price in a region."""
    fields = {
        "instanceType": instance_type,
        "operatingSystem": "Linux",
        "tenancy": "Shared",
        "regionCode": region,
        "capacitystatus": "Used",
        "preInstalledSw": "NA",
    }
    return [{"Type": "TERM_MATCH", "Field": k, "Value": v} for k, v in fields.items()]


def price_of(price_list: Iterable[str | Mapping[str, Any]]) -> float | None:
    """The hourly USD on-demand price in GetProducts' `PriceList` (its entries are JSON
    documents); None when no entry has one. Entries that do not parse are skipped."""
    for entry in price_list:
        try:
            product = json.loads(entry) if isinstance(entry, str) else entry
            terms = product.get("terms", {}).get("OnDemand", {})
        except (ValueError, AttributeError):
            continue
        for term in terms.values() if isinstance(terms, dict) else ():
            dimensions = term.get("priceDimensions", {}) if isinstance(term, dict) else {}
            for dimension in dimensions.values():
                if not isinstance(dimension, dict):
                    continue
                if str(dimension.get("unit", "Hrs")).lower() not in ("hrs", "hours", "hr"):
                    continue
                try:
                    usd = float(dimension.get("pricePerUnit", {}).get("USD", ""))
                except (TypeError, ValueError, AttributeError):
                    continue
                if usd > 0:
                    return usd
    return None


class OnDemandPrices:
    """Type → on-demand USD/hour: the table, the Pricing API (cached), the fallback."""

    def __init__(
        self,
        client: Any,
        region: str,
        table: Mapping[str, float],
        fallback: Callable[[str], float | None],
    ) -> None:
        self.client = client
        self.region = region
        self.table = dict(table)
        self.fallback = fallback
        self.off = False  # an API failure: the fallback from then on
        self._read: dict[str, float | None] = {}  # what the API said, per type
        self._lock = threading.Lock()

    def price(self, instance_type: str) -> float | None:
        if instance_type in self.table:
            return self.table[instance_type]
        with self._lock:
            if not self.off and instance_type not in self._read:
                self._read[instance_type] = self._ask(instance_type)
            found = self._read.get(instance_type)
        return found if found is not None else self.fallback(instance_type)

    def _ask(self, instance_type: str) -> float | None:
        """One type's price from GetProducts; None (and the API off for the run, on a
        failure) when it has none."""
        try:
            pages = self.client.get_paginator("get_products").paginate(
                ServiceCode=SERVICE,
                Filters=filters(instance_type, self.region),
                FormatVersion="aws_v1",
            )
            found = price_of(entry for page in pages for entry in page.get("PriceList", []))
        except (ClientError, BotoCoreError) as exc:
            self.off = True
            if isinstance(exc, ClientError):
                why = f"{error_code(exc) or 'error'}: {error_message(exc)}"
            else:
                why = str(exc)
            log.warning(
                "the AWS Pricing API did not answer for %s (%s): using "
                "providers.aws.on_demand_prices and the built-in us-east-1 list prices for this "
                "run (grant pricing:GetProducts, or list the types in on_demand_prices)",
                instance_type,
                why,
            )
            return None
        if found is None:
            log.info(
                "the AWS Price List has no on-demand Linux price for %s in %s: using %s",
                instance_type,
                self.region,
                "the built-in list price" if self.fallback(instance_type) else "none",
            )
        else:
            log.info("on-demand price of %s in %s: %.4f USD/h", instance_type, self.region, found)
        return found
