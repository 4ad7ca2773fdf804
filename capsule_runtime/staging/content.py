"""Inputs given inline (`content` instead of `url`, as Snakemake sends its job script)."""

from __future__ import annotations

from pathlib import Path


def write_content(content: str, dest: Path) -> int:
    """Write `content` as UTF-8 to `dest`; returns the bytes written."""
    data = content.encode("utf-8")
    dest.write_bytes(data)
    return len(data)
