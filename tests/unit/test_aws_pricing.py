"""On-demand prices from the AWS Price List Query API (gateway/providers/aws/pricing.py), with
botocore's Stubber answering `GetProducts` as AWS documents it (moto has no Pricing API, so only
this stub exercises the call): the filters sent, the price parsed from a real-shaped answer, the
configured table first, one call per type per run, and on a failure the built-in list prices
for the rest of the run, said once."""

from __future__ import annotations

import json
import logging
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from gateway.config import AwsProviderConfig
from gateway.market import catalog
from gateway.providers.aws import AwsProvider
from gateway.providers.aws.pricing import OnDemandPrices, filters, price_of


def product(instance_type: str, usd: str, sku: str = "JRTCKXETXF7Z7V2P") -> str:
    """One PriceList entry as GetProducts returns it (FormatVersion aws_v1): a JSON document
    with the product's attributes and its terms (on-demand and reserved)."""
    return json.dumps(
        {
            "product": {
                "productFamily": "Compute Instance",
                "attributes": {
                    "enhancedNetworkingSupported": "Yes",
                    "memory": "8 GiB",
                    "vcpu": "2",
                    "capacitystatus": "Used",
                    "locationType": "AWS Region",
                    "storage": "EBS only",
                    "instanceFamily": "General purpose",
                    "operatingSystem": "Linux",
                    "regionCode": "eu-west-1",
                    "physicalProcessor": "Intel Xeon Platinum 8175",
                    "servicecode": "AmazonEC2",
                    "licenseModel": "No License required",
                    "usagetype": f"EU-BoxUsage:{instance_type}",
                    "tenancy": "Shared",
                    "operation": "RunInstances",
                    "location": "EU (Ireland)",
                    "preInstalledSw": "NA",
                    "instanceType": instance_type,
                    "marketoption": "OnDemand",
                },
                "sku": sku,
            },
            "serviceCode": "AmazonEC2",
            "terms": {
                "OnDemand": {
                    f"{sku}.JRTCKXETXF": {
                        "priceDimensions": {
                            f"{sku}.JRTCKXETXF.6YS6EN2CT7": {
                                "unit": "Hrs",
                                "endRange": "Inf",
                                "description": f"${usd} per On Demand Linux {instance_type} "
                                "Instance Hour",
                                "appliesTo": [],
                                "rateCode": f"{sku}.JRTCKXETXF.6YS6EN2CT7",
                                "beginRange": "0",
                                "pricePerUnit": {"USD": usd},
                            }
                        },
                        "sku": sku,
                        "effectiveDate": "2026-11-01T00:00:00Z",
                        "offerTermCode": "JRTCKXETXF",
                        "termAttributes": {},
                    }
                },
                "Reserved": {
                    f"{sku}.4NA7Y494T4": {
                        "priceDimensions": {
                            f"{sku}.4NA7Y494T4.6YS6EN2CT7": {
                                "unit": "Hrs",
                                "pricePerUnit": {"USD": "0.0620000000"},
                                "description": "Linux/UNIX (Amazon VPC), m5.large reserved",
                            }
                        },
                        "termAttributes": {"LeaseContractLength": "1yr"},
                    }
                },
            },
            "version": "20261101000000",
            "publicationDate": "2026-11-01T00:00:00Z",
        }
    )


def answer(*entries: str) -> dict[str, Any]:
    return {"FormatVersion": "aws_v1", "PriceList": list(entries)}


def query(instance_type: str, region: str = "eu-west-1") -> dict[str, Any]:
    return {
        "ServiceCode": "AmazonEC2",
        "Filters": filters(instance_type, region),
        "FormatVersion": "aws_v1",
    }


def client() -> Any:
    session = boto3.Session(aws_access_key_id="k", aws_secret_access_key="s")
    return session.client("pricing", region_name="us-east-1")


def test_the_filters_ask_for_linux_shared_used_without_software() -> None:
    got = {f["Field"]: f["Value"] for f in filters("m5.large", "eu-west-1")}
    assert got == {
        "instanceType": "m5.large",
        "operatingSystem": "Linux",
        "tenancy": "Shared",
        "regionCode": "eu-west-1",
        "capacitystatus": "Used",
        "preInstalledSw": "NA",
    }
    assert all(f["Type"] == "TERM_MATCH" for f in filters("m5.large", "eu-west-1"))


def test_the_price_is_the_on_demand_hourly_usd() -> None:
    assert price_of([product("m5.large", "0.1070000000")]) == pytest.approx(0.107)
    assert price_of([]) is None
    assert price_of(["not json", product("m5.large", "0.0000000000")]) is None  # no price


def test_the_api_answers_once_per_type_and_the_table_comes_first() -> None:
    pricing = client()
    stub = Stubber(pricing)
    stub.add_response(
        "get_products", answer(product("m5.large", "0.1070000000")), query("m5.large")
    )
    stub.add_response("get_products", answer(), query("x9.huge"))  # AWS knows no such price
    prices = OnDemandPrices(
        pricing, "eu-west-1", {"c5.large": 0.5}, lambda t: {"x9.huge": 9.0}.get(t)
    )
    with stub:
        assert prices.price("m5.large") == pytest.approx(0.107)
        assert prices.price("m5.large") == pytest.approx(0.107)  # cached: no second call
        assert prices.price("c5.large") == 0.5  # the table: no call
        assert prices.price("x9.huge") == 9.0  # none in the Price List: the fallback
        assert prices.price("x9.huge") == 9.0
    stub.assert_no_pending_responses()


def test_a_failure_falls_back_for_the_run_and_is_said_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pricing = client()
    stub = Stubber(pricing)
    stub.add_client_error(
        "get_products",
        "AccessDeniedException",
        "User is not authorized to perform: pricing:GetProducts",
        http_status_code=400,
    )
    prices = OnDemandPrices(pricing, "eu-west-1", {}, catalog.on_demand_price)
    with stub, caplog.at_level(logging.WARNING):
        assert prices.price("m5.large") == catalog.on_demand_price("m5.large")
        assert prices.price("m5.xlarge") == catalog.on_demand_price("m5.xlarge")  # no call
        assert prices.price("m5.large") == catalog.on_demand_price("m5.large")
    stub.assert_no_pending_responses()
    said = [r.message for r in caplog.records if "Pricing API" in r.message]
    assert len(said) == 1 and "AccessDeniedException" in said[0] and "m5.large" in said[0]
    assert prices.off


def test_the_provider_prices_on_demand_offers_from_the_api() -> None:
    session = boto3.Session(
        region_name="eu-west-1", aws_access_key_id="k", aws_secret_access_key="s"
    )
    cfg = AwsProviderConfig(ami="ami-1", region="eu-west-1", instance_types=["m5.large"])
    p = AwsProvider(cfg, "https://gw.example", "gw", session)
    assert p.prices.client.meta.region_name == "us-east-1"  # the endpoint for every region
    stub = Stubber(p.prices.client)
    stub.add_response(
        "get_products", answer(product("m5.large", "0.1070000000")), query("m5.large")
    )
    with stub:
        assert p.on_demand_price("m5.large") == pytest.approx(0.107)
        assert p.price("m5.large", "eu-west-1a", "on-demand") == pytest.approx(0.107)
    stub.assert_no_pending_responses()


def test_the_policy_asks_for_the_pricing_api_only_when_it_is_read() -> None:
    from gateway.providers.aws.plan import iam_policy

    def sids(**settings: Any) -> set[str]:
        cfg = AwsProviderConfig(ami="ami-1", instance_types=["m5.large"], **settings)
        return {s["Sid"] for s in iam_policy(cfg)["Statement"]}

    assert "OnDemandPrices" in sids()
    assert "OnDemandPrices" not in sids(on_demand_prices={"m5.large": 0.1})
    assert "OnDemandPrices" not in sids(markets=["spot"])
