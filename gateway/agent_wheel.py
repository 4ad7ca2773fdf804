"""The agent wheel a gateway serves to its own instances (`agent.wheel`).

A cloud instance that boots from a plain image installs the agent at first boot (its user-data,
gateway/providers/aws/userdata.py). Where from? The simplest source a user already has is the
gateway itself: `pip wheel --no-deps -w dist .` in a checkout (or the wheel they installed the
gateway from), named in `agent.wheel`, is served at `GET /agent/v1/dist/<its file name>` to
instances holding their own token (the one-time registration token counts: the agent has
nothing else yet). The user-data carries the URL and the wheel's sha256, and the bootstrap
installs only a download with that digest — no bucket, no package index, nothing to keep in step
with the gateway's version by hand.
"""

from __future__ import annotations

import hashlib
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from capsule_runtime.protocol.messages import AGENT_API

# a wheel file name as pip reads it: distribution-version(-build)?-python-abi-platform.whl
WHEEL_NAME = re.compile(
    r"^tescape-[A-Za-z0-9_.+!]+(-[0-9][A-Za-z0-9_.]*)?-[a-z0-9_.]+-[a-z0-9_.]+-[a-z0-9_.]+\.whl$"
)


class AgentWheelError(ValueError):
    """`agent.wheel` does not name a tescape wheel this gateway can serve."""


@dataclass(frozen=True)
class AgentWheel:
    path: Path
    sha256: str

    @property
    def name(self) -> str:
        return self.path.name

    def url(self, gateway_url: str) -> str:
        """Where an instance that reaches this gateway at `gateway_url` downloads it."""
        return f"{gateway_url.rstrip('/')}{AGENT_API}/dist/{self.name}"


def load(path: str | Path) -> AgentWheel:
    """The wheel at `path`, checked and digested once (at start: a wheel replaced later is not
    served under the old digest, the gateway must be restarted to serve another)."""
    p = Path(path).expanduser().resolve()
    if not WHEEL_NAME.match(p.name):
        raise AgentWheelError(
            f"agent.wheel: {p.name!r} is not a tescape wheel's file name (build one with "
            "`pip wheel --no-deps -w dist .` in a checkout)"
        )
    if not p.is_file():
        raise AgentWheelError(f"agent.wheel: {p} does not exist or is not a file")
    if not zipfile.is_zipfile(p):
        raise AgentWheelError(f"agent.wheel: {p} is not a wheel (not a zip archive)")
    digest = hashlib.sha256()
    with p.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return AgentWheel(p, digest.hexdigest())
