"""Which EC2 instance types can restore a capsule taken on another: the same CPU architecture and
processor manufacturer, and the same or a newer processor generation (`GENERATIONS`: each of a
maker's server generations has the instruction-set features of the ones before). CRIU refuses to
restore onto a CPU without the dumped process's instruction-set features, and a process that
chose e.g. AVX-512 at start would crash without them, so a restore launched onto Graviton,
another vendor or an older generation would be a machine started for nothing. The agent's registered
CPU profile is checked again before a restore is placed (gateway/scheduler/compat.py); this only
keeps useless types from being launched.

Architecture and manufacturer come from DescribeInstanceTypes' `ProcessorInfo`
(`SupportedArchitectures`, `Manufacturer`); EC2 does not name the processor family, so it comes
from `FAMILIES`, keyed by the instance family (the type's name before the dot) as AWS's instance
type pages list their processors. An instance family not in the table is a family of its own:
only types of that same instance family are taken as compatible (safe, never wrong; extend the
table to widen it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


def _families(manufacturer: str, family: str, names: str) -> dict[str, tuple[str, str]]:
    return {name: (manufacturer, family) for name in names.split()}


# instance family → (manufacturer as EC2 names it, processor family)
FAMILIES: dict[str, tuple[str, str]] = {
    # Intel Xeon E5 v3/v4 (Haswell, Broadwell)
    **_families("Intel", "haswell-broadwell", "c4 m4 r4 t2 i3 d2 h1 x1 x1e p2 p3"),
    # Intel Xeon Scalable 1st/2nd generation (Skylake, Cascade Lake)
    **_families(
        "Intel",
        "skylake-cascadelake",
        "m5 m5d m5n m5dn m5zn c5 c5d c5n r5 r5d r5n r5dn r5b t3 z1d i3en d3 d3en g4dn p3dn x2iezn",
    ),
    # Intel Xeon Scalable 3rd generation (Ice Lake)
    **_families(
        "Intel",
        "icelake",
        "m6i m6id m6in m6idn c6i c6id c6in r6i r6id r6in r6idn x2idn x2iedn i4i g5 p4d",
    ),
    # Intel Xeon Scalable 4th generation (Sapphire Rapids)
    **_families("Intel", "sapphirerapids", "m7i m7i-flex c7i c7i-flex r7i r7iz i7ie"),
    # AMD EPYC 1st generation (Naples)
    **_families("AMD", "naples", "m5a m5ad r5a r5ad t3a"),
    # AMD EPYC 2nd generation (Rome)
    **_families("AMD", "rome", "c5a c5ad g4ad"),
    # AMD EPYC 3rd generation (Milan)
    **_families("AMD", "milan", "m6a c6a r6a hpc6a"),
    # AMD EPYC 4th generation (Genoa)
    **_families("AMD", "genoa", "m7a c7a r7a hpc7a"),
    # AWS Graviton
    **_families("AWS", "graviton1", "a1"),
    **_families("AWS", "graviton2", "m6g m6gd c6g c6gd c6gn r6g r6gd t4g x2gd im4gn is4gen g5g"),
    **_families("AWS", "graviton3", "m7g m7gd c7g c7gd c7gn r7g r7gd hpc7g"),
    **_families("AWS", "graviton4", "m8g c8g r8g x8g"),
}


# each maker's processor families, oldest first: a capsule taken on one restores on it and on
# those after it (their features are a superset; the agent's registered CPU flags are checked
# before the restore is placed, which catches an exception)
GENERATIONS: dict[str, tuple[str, ...]] = {
    "Intel": ("haswell-broadwell", "skylake-cascadelake", "icelake", "sapphirerapids"),
    "AMD": ("naples", "rome", "milan", "genoa"),
    "AWS": ("graviton1", "graviton2", "graviton3", "graviton4"),
}


def generation(manufacturer: str, family: str) -> int | None:
    """The family's place among its maker's generations; None when not listed."""
    order = GENERATIONS.get(manufacturer, ())
    return order.index(family) if family in order else None


@dataclass(frozen=True)
class Processor:
    """What a capsule's restore depends on of an instance type's CPU."""

    arch: str  # x86_64 | arm64 (the machine's, where EC2 lists i386 too)
    manufacturer: str  # Intel | AMD | AWS | … ("" where neither EC2 nor the table says)
    family: str  # the processor family (FAMILIES), else "type:<instance family>"

    def runs(self, source: Processor) -> bool:
        """Whether a capsule taken on `source` may be restored on this processor: the same
        architecture and maker, and the same family or a newer generation of it."""
        if self.arch != source.arch or self.manufacturer != source.manufacturer:
            return False
        if self.family == source.family:
            return True
        here = generation(self.manufacturer, self.family)
        there = generation(source.manufacturer, source.family)
        return here is not None and there is not None and here > there

    def __str__(self) -> str:
        family = self.family.removeprefix("type:")
        return f"{self.arch}, {self.manufacturer or 'unknown maker'} {family}".strip()


def instance_family(instance_type: str) -> str:
    return instance_type.split(".", 1)[0]


def processor_of(instance_type: str, info: Mapping[str, Any] | None) -> Processor:
    """An instance type's processor from its DescribeInstanceTypes entry (None: EC2 did not
    describe it; the table alone)."""
    processor = (info or {}).get("ProcessorInfo") or {}
    arches = [str(a) for a in processor.get("SupportedArchitectures") or []]
    known = FAMILIES.get(instance_family(instance_type))
    if "arm64" in arches or "arm64_mac" in arches:
        arch = "arm64"
    elif "x86_64" in arches or "x86_64_mac" in arches or "i386" in arches:
        arch = "x86_64"
    elif known is not None:
        arch = "arm64" if known[0] == "AWS" else "x86_64"
    else:
        arch = "unknown"
    manufacturer = str(processor.get("Manufacturer") or (known[0] if known else ""))
    family = known[1] if known else f"type:{instance_family(instance_type)}"
    return Processor(arch, manufacturer, family)


def compatible(
    source: Processor, processors: Mapping[str, Processor], types: Iterable[str]
) -> frozenset[str]:
    """Those of `types` whose processor can restore a capsule taken on `source`."""
    return frozenset(t for t in types if t in processors and processors[t].runs(source))
