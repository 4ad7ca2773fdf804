"""The `aws` provider (EC2 through boto3; docs/aws.md). Only this package imports boto3's EC2 and
SSM clients; the rest of tescape sees the provider boundary (gateway/providers/base.py)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.providers.aws.provider import AwsProvider

if TYPE_CHECKING:
    from gateway.providers.registry import ProviderContext

__all__ = ["AwsProvider", "from_context", "gateway_id"]
ID_FILE = "aws-gateway-id"


def gateway_id(data_dir: Path) -> str:
    """This gateway's id for the `tescape:gateway` tag: made once and kept in the data dir, so a
    restarted gateway finds the instances it launched (and another gateway's stay apart)."""
    path = data_dir / ID_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    made = f"tescape-{secrets.token_hex(8)}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(made + "\n")
    return made


def from_context(context: ProviderContext) -> AwsProvider:
    """`providers.default: aws` (registry): settings from `providers.aws`."""
    cfg = context.config.providers.aws
    gid = cfg.gateway_id or gateway_id(context.config.data_path)
    return AwsProvider(cfg, context.gateway_url, gid, agent_wheel=context.agent_wheel)
