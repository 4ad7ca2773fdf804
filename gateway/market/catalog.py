"""The instance catalog: real EC2 instance types with their size and on-demand price.

Sizes (vCPU, memory GiB) are AWS's published specifications. On-demand prices are the public
us-east-1 (N. Virginia) Linux/UNIX, shared-tenancy, per-hour list prices as published on
aws.amazon.com/ec2/pricing/on-demand (2023-2024; they have been stable for these generations).
They are approximate for any given day — AWS can change them — and cover the instance only (no EBS,
no data transfer). Every type is offered in every zone here; in reality availability differs per
zone (us-east-1e, for one, offers fewer types).
"""

from __future__ import annotations

from dataclasses import dataclass

REGION = "us-east-1"
ZONES: tuple[str, ...] = tuple(f"{REGION}{z}" for z in "abcdef")

# Size suffix → rank, for "the next larger size" within a family.
SIZE_ORDER = ("large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "9xlarge", "12xlarge")


@dataclass(frozen=True)
class InstanceType:
    name: str  # e.g. m5.xlarge
    vcpu: int
    memory_gib: float
    on_demand_usd: float  # per hour, us-east-1 Linux

    @property
    def family(self) -> str:
        return self.name.partition(".")[0]

    @property
    def size(self) -> str:
        return self.name.partition(".")[2]

    @property
    def kind(self) -> str:
        """general | compute | memory (from the family letter)."""
        return {"m": "general", "c": "compute", "r": "memory"}.get(self.family[0], "other")


def _family(family: str, rows: list[tuple[str, int, float, float]]) -> list[InstanceType]:
    return [InstanceType(f"{family}.{size}", cpu, mem, usd) for size, cpu, mem, usd in rows]


# fmt: off
CATALOG: tuple[InstanceType, ...] = tuple(
    # general purpose, 1 vCPU : 4 GiB
    _family("m5", [("large", 2, 8, 0.096), ("xlarge", 4, 16, 0.192), ("2xlarge", 8, 32, 0.384),
                   ("4xlarge", 16, 64, 0.768), ("8xlarge", 32, 128, 1.536)])
    + _family("m5a", [("large", 2, 8, 0.086), ("xlarge", 4, 16, 0.172), ("2xlarge", 8, 32, 0.344),
                      ("4xlarge", 16, 64, 0.688), ("8xlarge", 32, 128, 1.376)])
    + _family("m6i", [("large", 2, 8, 0.096), ("xlarge", 4, 16, 0.192), ("2xlarge", 8, 32, 0.384),
                      ("4xlarge", 16, 64, 0.768), ("8xlarge", 32, 128, 1.536)])
    # compute optimised, 1 vCPU : 2 GiB
    + _family("c5", [("large", 2, 4, 0.085), ("xlarge", 4, 8, 0.17), ("2xlarge", 8, 16, 0.34),
                     ("4xlarge", 16, 32, 0.68), ("9xlarge", 36, 72, 1.53)])
    + _family("c5a", [("large", 2, 4, 0.077), ("xlarge", 4, 8, 0.154), ("2xlarge", 8, 16, 0.308),
                      ("4xlarge", 16, 32, 0.616), ("8xlarge", 32, 64, 1.232)])
    + _family("c6i", [("large", 2, 4, 0.085), ("xlarge", 4, 8, 0.17), ("2xlarge", 8, 16, 0.34),
                      ("4xlarge", 16, 32, 0.68), ("8xlarge", 32, 64, 1.36)])
    # memory optimised, 1 vCPU : 8 GiB
    + _family("r5", [("large", 2, 16, 0.126), ("xlarge", 4, 32, 0.252), ("2xlarge", 8, 64, 0.504),
                     ("4xlarge", 16, 128, 1.008), ("8xlarge", 32, 256, 2.016)])
    + _family("r5a", [("large", 2, 16, 0.113), ("xlarge", 4, 32, 0.226), ("2xlarge", 8, 64, 0.452),
                      ("4xlarge", 16, 128, 0.904), ("8xlarge", 32, 256, 1.808)])
    + _family("r6i", [("large", 2, 16, 0.126), ("xlarge", 4, 32, 0.252), ("2xlarge", 8, 64, 0.504),
                      ("4xlarge", 16, 128, 1.008), ("8xlarge", 32, 256, 2.016)])
)
# fmt: on

_BY_NAME = {t.name: t for t in CATALOG}


def lookup(name: str) -> InstanceType | None:
    """The catalog entry of an instance type, or None."""
    return _BY_NAME.get(name)


def require(name: str) -> InstanceType:
    """The catalog entry of an instance type; KeyError names the unknown type."""
    found = _BY_NAME.get(name)
    if found is None:
        raise KeyError(f"unknown instance type {name!r}")
    return found


def on_demand_price(name: str) -> float | None:
    found = _BY_NAME.get(name)
    return found.on_demand_usd if found else None


def select(names: list[str] | tuple[str, ...] | None = None) -> tuple[InstanceType, ...]:
    """The catalog, or the named subset of it in catalog order. A name may be a family
    (`m5`) or a type (`m5.large`); an unknown name raises KeyError."""
    if not names:
        return CATALOG
    wanted: set[str] = set()
    for name in names:
        if name in _BY_NAME:
            wanted.add(name)
            continue
        family = [t.name for t in CATALOG if t.family == name]
        if not family:
            raise KeyError(f"unknown instance type or family {name!r}")
        wanted.update(family)
    return tuple(t for t in CATALOG if t.name in wanted)


def size_rank(t: InstanceType) -> int:
    return SIZE_ORDER.index(t.size) if t.size in SIZE_ORDER else len(SIZE_ORDER)
