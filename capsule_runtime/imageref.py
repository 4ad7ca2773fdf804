"""Image references: the gateway's rewrite rules (mirrors for offline sites and tests)."""

from __future__ import annotations


def has_tag_or_digest(ref: str) -> bool:
    last = ref.rsplit("/", 1)[-1]
    return ":" in last or "@" in last


def rewrite_image(image: str, rules: dict[str, str]) -> str:
    """Apply the most specific matching rule: a key equal to the image, or followed by ':' (tag)
    or '@' (digest). A value without a tag keeps the image's tag or digest; a value with one
    replaces the whole reference.

    >>> rewrite_image("alpine:3.19", {"alpine": "127.0.0.1:5000/library/alpine"})
    '127.0.0.1:5000/library/alpine:3.19'
    >>> rewrite_image("alpine:3.19", {"alpine": "localhost/test/busybox:1"})
    'localhost/test/busybox:1'
    """
    for key in sorted(rules, key=len, reverse=True):
        value = rules[key]
        if image == key:
            return value
        if image.startswith(key) and image[len(key)] in ":@":
            return value if has_tag_or_digest(value) else value + image[len(key) :]
    return image
