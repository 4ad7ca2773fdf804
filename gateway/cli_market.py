"""`tescape market show|set-price` and `tescape costs`-style reports on a running server:
the simulated Spot market's prices, buckets and quarantines, a pinned price, and what tasks cost."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.table import Table

from gateway.cli_output import id_column, text_column


def _cli() -> Any:
    """gateway.cli, imported late: it imports this module to register the commands."""
    from gateway import cli

    return cli


def _call(server: str, method: str, path: str, **kwargs: Any) -> Any:
    return _cli()._call(server, method, path, **kwargs)


def _show(server: str, instance_type: str | None, zone: str | None, as_json: bool) -> None:
    body = _call(server, "GET", "/api/v1/market")
    if as_json:
        click.echo(json.dumps(body, indent=2))
        return
    zones = [z for z in body["zones"] if zone is None or z == zone]
    table = Table(
        "type", "vCPU", "GiB", "on-demand", *zones, title=f"Spot market at {body['time']}"
    )
    for t in body["types"]:
        if instance_type and not (
            t["instance_type"] == instance_type
            or t["instance_type"].startswith(instance_type + ".")
        ):
            continue
        cells = []
        for z in zones:
            cell = t["zones"][z]
            mark = "*" if cell["price_source"] == "override" else ""
            cells.append(f"{cell['spot_price']:.4f}{mark} {cell['interruption_bucket']}")
        table.add_row(
            t["instance_type"],
            str(t["vcpu"]),
            f"{t['memory_gib']:g}",
            f"{t['on_demand_price']:.4f}",
            *cells,
        )
    console = _cli().console
    console.print(table)
    console.print("Spot USD/h and interruption bucket per zone; * a pinned price")
    for q in body["quarantines"]:
        console.print(f"quarantined: {q['instance_type']} in {q['zone']} until {q['until']}")


def register(main: click.Group) -> None:
    """Add `tescape market …` to the command line. Call it after gateway.cli defines
    `server_option` (at the end of cli.py)."""
    server_option = _cli().server_option

    @main.group()
    def market() -> None:
        """The simulated Spot market of a running server: prices, buckets, costs."""

    @market.command("show")
    @server_option
    @click.option("--type", "instance_type", help="only this type or family (m5.large, r5)")
    @click.option("--zone", help="only this zone")
    @click.option("--json", "as_json", is_flag=True, help="print the server's JSON")
    def market_show(
        server: str, instance_type: str | None, zone: str | None, as_json: bool
    ) -> None:
        """Spot prices per type and zone, interruption buckets, quarantines."""
        _show(server, instance_type, zone, as_json)

    @market.command("set-price")
    @server_option
    @click.argument("instance_type")
    @click.argument("zone")
    @click.argument("price")
    def market_set_price(server: str, instance_type: str, zone: str, price: str) -> None:
        """Pin the Spot price of INSTANCE_TYPE in ZONE to PRICE USD/h (`clear` unpins)."""
        value: float | None
        if price.lower() in ("clear", "none", "null"):
            value = None
        else:
            try:
                value = float(price)
            except ValueError:
                raise click.BadParameter("a number of USD per hour, or `clear`") from None
        body = {"instance_type": instance_type, "zone": zone, "price": value}
        out = _call(server, "PUT", "/api/v1/market/prices", json=body)
        click.echo(
            f"{out['instance_type']} {out['zone']}: {out['spot_price']} ({out['price_source']})"
        )

    @market.command("costs")
    @server_option
    @click.option("--task", "task_ids", multiple=True, help="only this task (repeatable)")
    @click.option("--limit", type=int, default=50, show_default=True, help="tasks listed")
    @click.option("--json", "as_json", is_flag=True, help="print the server's JSON")
    def market_costs(server: str, task_ids: tuple[str, ...], limit: int, as_json: bool) -> None:
        """What tasks cost, what on-demand would have cost, and the savings."""
        params: dict[str, Any] = {"limit": limit}
        if task_ids:
            params["task_id"] = list(task_ids)
        body = _call(server, "GET", "/api/v1/costs", params=params)
        if as_json:
            click.echo(json.dumps(body, indent=2))
            return
        total = body["total"]
        label = f"total ({total['tasks']} tasks)"
        table = Table(
            id_column("task", [label, *(t["task_id"] for t in body["tasks"])]),
            "attempts",
            "hours",
            "cost",
            "on-demand",
            text_column("savings"),
        )
        for t in body["tasks"]:
            table.add_row(
                t["task_id"],
                str(t["attempts"]),
                f"{t['instance_hours']:.3f}",
                f"${t['cost_usd']:.4f}",
                f"${t['on_demand_usd']:.4f}",
                f"${t['savings_usd']:.4f} ({t['savings_pct']:.1f}%)",
            )
        table.add_section()
        table.add_row(
            label,
            "",
            f"{total['instance_hours']:.3f}",
            f"${total['cost_usd']:.4f}",
            f"${total['on_demand_usd']:.4f}",
            f"${total['savings_usd']:.4f} ({total['savings_pct']:.1f}%)",
        )
        _cli().console.print(table)
