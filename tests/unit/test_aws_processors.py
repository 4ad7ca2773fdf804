"""Which EC2 instance types can restore a capsule taken on another (gateway/providers/aws/
processors.py): architecture and maker from DescribeInstanceTypes' ProcessorInfo, the family
from the table; a family the table lacks is compatible only with itself."""

from __future__ import annotations

from gateway.providers.aws.processors import (
    FAMILIES,
    GENERATIONS,
    Processor,
    compatible,
    processor_of,
)


def info(arches: list[str], maker: str | None = None) -> dict[str, object]:
    processor: dict[str, object] = {"SupportedArchitectures": arches}
    if maker is not None:
        processor["Manufacturer"] = maker
    return {"ProcessorInfo": processor}


def test_processor_from_ec2_and_the_table() -> None:
    assert processor_of("m5.large", info(["x86_64"], "Intel")) == Processor(
        "x86_64", "Intel", "skylake-cascadelake"
    )
    assert processor_of("t2.micro", info(["i386", "x86_64"], "Intel")).arch == "x86_64"
    assert processor_of("m7g.large", info(["arm64"], "AWS")) == Processor(
        "arm64", "AWS", "graviton3"
    )
    # no Manufacturer (older EC2 answers): the table's; not described at all: the table alone
    assert processor_of("c6a.large", info(["x86_64"])).manufacturer == "AMD"
    assert processor_of("c6g.large", None) == Processor("arm64", "AWS", "graviton2")


def test_an_unknown_family_is_compatible_only_with_itself() -> None:
    z = processor_of("zz9.large", info(["x86_64"], "Intel"))
    assert z.family == "type:zz9"
    procs = {
        "zz9.large": z,
        "zz9.xlarge": processor_of("zz9.xlarge", info(["x86_64"], "Intel")),
        "m5.large": processor_of("m5.large", info(["x86_64"], "Intel")),
    }
    assert compatible(z, procs, procs) == {"zz9.large", "zz9.xlarge"}


def test_compatible_keeps_to_the_types_asked_and_known() -> None:
    m5 = processor_of("m5.large", None)
    procs = {t: processor_of(t, None) for t in ("m5.large", "c5.xlarge", "m6i.large", "m5a.large")}
    assert compatible(m5, procs, ["m5.large", "c5.xlarge", "m6i.large", "r5.large"]) == {
        "m5.large",
        "c5.xlarge",
        "m6i.large",  # Ice Lake: a newer Intel generation
    }


def test_a_capsule_restores_on_its_generation_and_newer_ones_of_its_maker() -> None:
    procs = {
        t: processor_of(t, None)
        for t in ("m4.large", "m5.large", "m6i.large", "m7i.large", "m6a.large", "m7g.large")
    }
    assert compatible(procs["m6i.large"], procs, procs) == {"m6i.large", "m7i.large"}
    assert compatible(procs["m4.large"], procs, procs) == {
        "m4.large",
        "m5.large",
        "m6i.large",
        "m7i.large",
    }
    assert compatible(procs["m7i.large"], procs, procs) == {"m7i.large"}  # nothing older
    assert compatible(procs["m6a.large"], procs, procs) == {"m6a.large"}  # AMD: not Intel
    assert compatible(procs["m7g.large"], procs, procs) == {"m7g.large"}  # Graviton3


def test_every_family_of_the_table_has_its_generation() -> None:
    for maker, family in FAMILIES.values():
        assert family in GENERATIONS[maker], (maker, family)


def test_every_table_entry_names_a_known_maker() -> None:
    assert {maker for maker, _ in FAMILIES.values()} == {"Intel", "AMD", "AWS"}
    assert all(family for _, family in FAMILIES.values())
