"""Image rewrite rules."""

import doctest

import pytest

from capsule_runtime import imageref
from capsule_runtime.imageref import rewrite_image

RULES = {
    "alpine": "127.0.0.1:5000/library/alpine",
    "ubuntu:20.04": "localhost/test/debian-bash:1",
    "ubuntu": "localhost/test/debian-bash:1",
}


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("alpine", "127.0.0.1:5000/library/alpine"),
        ("alpine:3.19", "127.0.0.1:5000/library/alpine:3.19"),
        ("alpine@sha256:abc", "127.0.0.1:5000/library/alpine@sha256:abc"),
        ("alpinex", "alpinex"),
        ("ubuntu:20.04", "localhost/test/debian-bash:1"),
        ("ubuntu:22.04", "localhost/test/debian-bash:1"),
        ("quay.io/x/y:1", "quay.io/x/y:1"),
    ],
)
def test_rewrite(image: str, expected: str) -> None:
    assert rewrite_image(image, RULES) == expected


def test_docstring_examples() -> None:
    assert doctest.testmod(imageref).failed == 0
