"""Prometheus metrics at /metrics: request counts and latencies, tasks by state, instances by
state, market and type; and, from the event log and attempts (gateway.api.metrics_events),
queue latency, checkpoints and restores, migrations, interruptions and spend. Counts are read
from the store when scraped, so they are exact and survive a restart. configs/grafana-tescape.json
is a dashboard of them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from flask import Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from gateway.api.metrics_events import EventCollector
from gateway.store.schema import instances, tasks

if TYPE_CHECKING:
    from gateway.app import Services


class StoreCollector(Collector):
    def __init__(self, services: Services):
        self.services = services

    def collect(self) -> Iterator[GaugeMetricFamily]:
        engine = self.services.database.engine
        with engine.connect() as conn:
            by_state = conn.execute(
                select(tasks.c.state, func.count()).group_by(tasks.c.state)
            ).all()
            by_instance = conn.execute(
                select(
                    instances.c.state, instances.c.market, instances.c.instance_type, func.count()
                ).group_by(instances.c.state, instances.c.market, instances.c.instance_type)
            ).all()
        task_gauge = GaugeMetricFamily(
            "tescape_tasks", "Tasks in the store by state", labels=["state"]
        )
        for state, count in by_state:
            task_gauge.add_metric([state], count)
        yield task_gauge
        inst_gauge = GaugeMetricFamily(
            "tescape_instances",
            "Instances by state, market and type",
            labels=["state", "market", "instance_type"],
        )
        for state, market, instance_type, count in by_instance:
            inst_gauge.add_metric([state, market or "", instance_type or ""], count)
        yield inst_gauge


def install_metrics(app: Flask, services: Services) -> None:
    registry = CollectorRegistry()
    requests_total = Counter(
        "tescape_http_requests",
        "HTTP requests answered",
        ["method", "endpoint", "status"],
        registry=registry,
    )
    latency = Histogram(
        "tescape_http_request_seconds",
        "HTTP request latency",
        ["method", "endpoint"],
        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 30),
        registry=registry,
    )
    registry.register(StoreCollector(services))
    market = services.market
    scale = (lambda: market.time_scale) if market is not None else (lambda: 1.0)
    registry.register(EventCollector(services.database.engine, scale))

    @app.before_request
    def _start_timer() -> None:
        g.metrics_started = time.perf_counter()

    @app.after_request
    def _observe(response: Response) -> Response:
        endpoint = (request.endpoint or "unmatched").rpartition(".")[2]
        started = g.get("metrics_started")
        if started is not None:
            latency.labels(request.method, endpoint).observe(time.perf_counter() - started)
        requests_total.labels(request.method, endpoint, str(response.status_code)).inc()
        return response

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
