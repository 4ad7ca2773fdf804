"""The user-data script an EC2 instance runs at its first boot (cloud-init runs it as root).

It makes the machine a tescape instance the way the host setup makes this one: installs (or, on a
baked AMI, verifies) python3, podman, runc and CRIU ≥ 4.2 — through the agent wheel's own host
setup (`python3 -m capsule_runtime.host.setup`), which knows Debian — then starts the agent under
systemd with the gateway's URL, watching the real metadata service (IMDSv2) for Spot interruption
notices.

What it carries: the gateway URL, the gateway's id for the instance, a one-time registration token
and where to get the agent wheel: `providers.aws.agent_wheel_url` (s3:// or https://), or else the
gateway's own (`agent.wheel`, gateway/agent_wheel.py), fetched with the registration token and
installed only if its sha256 is the one user-data carries. The token is the only secret, and a
short-lived one: it is good for registering this one instance, once, within
`providers.aws.token_ttl_seconds` of the launch; at registration the gateway gives the agent its
own credential (kept in the root-only work dir) and the token in user-data is useless from then on.
No account credentials, no capsule key: S3 access comes from the instance profile, the capsule key
from the gateway after registration. The token is written to a root-only file and the instance's
metadata service requires IMDSv2 tokens with a hop limit of 1, so task containers (one network hop
further) cannot read the user-data.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

AGENT_VENV = "/opt/tescape/venv"
WORK_DIR = "/var/lib/tescape/instance"
IMDS_URL = "http://169.254.169.254"


@dataclass(frozen=True)
class Bootstrap:
    gateway_url: str
    instance_id: str  # the gateway's id for the instance (the agent registers as it)
    token: str
    agent_wheel_url: str | None  # https:// or s3://; None: the AMI has the agent already
    cpu_cores: float
    ram_gb: float
    disk_gb: float
    # set: agent_wheel_url is the gateway's own wheel (agent.wheel), installed only with this
    # digest and fetched with the instance's registration token
    agent_wheel_sha256: str | None = None


TEMPLATE = r"""#!/bin/bash
# tescape instance bootstrap (rendered by gateway/providers/aws/userdata.py)
set -euo pipefail
umask 077
exec >>/var/log/tescape-bootstrap.log 2>&1
echo "tescape bootstrap $(date -u +%FT%TZ)"

GATEWAY_URL={gateway_url}
INSTANCE_ID={instance_id}
AGENT_WHEEL_URL={wheel_url}
AGENT_WHEEL_SHA256={wheel_sha256}
VENV={venv}
WORK_DIR={work_dir}

export DEBIAN_FRONTEND=noninteractive
have() {{ command -v "$1" >/dev/null 2>&1; }}
fail() {{ echo "tescape bootstrap failed: $*"; exit 1; }}

# 1. python3 and a virtual environment with the agent (on a baked AMI: there already, unless
#    the gateway serves another wheel than the one installed)
installed=$(cat "$VENV/.tescape-wheel-sha256" 2>/dev/null || true)
if ! "$VENV/bin/python" -c 'import capsule_runtime.agent' 2>/dev/null ||
        [ -n "$AGENT_WHEEL_SHA256" -a "$installed" != "$AGENT_WHEEL_SHA256" ]; then
    [ -n "$AGENT_WHEEL_URL" ] ||
        fail "the AMI has no agent; set providers.aws.agent_wheel_url or agent.wheel"
    if ! have python3 || ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
        apt-get update -q
        apt-get install -y -q --no-install-recommends python3 python3-venv ca-certificates
    fi
    python3 -m venv "$VENV"
    if [ -n "$AGENT_WHEEL_SHA256" ]; then
        # the gateway's own wheel (agent.wheel): fetched with this instance's registration
        # token (still unused: it is good for this and for registering), kept only if its
        # sha256 is the one this script carries
        wheel="/tmp/$(basename "$AGENT_WHEEL_URL")"
        TESCAPE_AGENT_TOKEN={token} python3 - "$AGENT_WHEEL_URL" "$wheel" \
            "$AGENT_WHEEL_SHA256" "$INSTANCE_ID" <<'PY' || fail "no agent wheel from the gateway"
# fetch-agent-wheel
import hashlib, os, sys, time, urllib.request
url, dest, digest, instance = sys.argv[1:5]
headers = {{
    "Authorization": "Bearer " + os.environ["TESCAPE_AGENT_TOKEN"],
    "X-Tescape-Instance": instance,
}}
for attempt in range(10):  # the gateway may be restarting: about a minute in all
    try:
        got = hashlib.sha256()
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60) as r:
            with open(dest, "wb") as out:
                while chunk := r.read(1 << 20):
                    got.update(chunk)
                    out.write(chunk)
        break
    except OSError as exc:
        print(f"agent wheel from {{url}}: {{exc}}", file=sys.stderr)
        if getattr(exc, "code", 0) in (401, 403, 404) or attempt == 9:
            sys.exit(1)
        time.sleep(6)
if got.hexdigest() != digest:
    os.unlink(dest)
    sys.exit(f"the agent wheel from {{url}} is not the one this instance was launched with")
PY
        "$VENV/bin/pip" install -q "$wheel[agent]"
        "$VENV/bin/pip" install -q --force-reinstall --no-deps "$wheel"  # same version, new build
        echo "$AGENT_WHEEL_SHA256" >"$VENV/.tescape-wheel-sha256"
    else
    case "$AGENT_WHEEL_URL" in
        s3://*)
            # the instance profile's credentials, through boto3 in the agent's own venv
            "$VENV/bin/pip" install -q boto3
            wheel="/tmp/$(basename "$AGENT_WHEEL_URL")"
            "$VENV/bin/python" - "$AGENT_WHEEL_URL" "$wheel" <<'PY'
import sys, boto3
bucket, _, key = sys.argv[1][len("s3://"):].partition("/")
boto3.client("s3").download_file(bucket, key, sys.argv[2])
PY
            "$VENV/bin/pip" install -q "$wheel[agent]" ;;
        https://*|http://*) "$VENV/bin/pip" install -q "tescape[agent] @ $AGENT_WHEEL_URL" ;;
        *) fail "agent_wheel_url must be an s3:// or https:// URL: $AGENT_WHEEL_URL" ;;
    esac
    fi
fi

# 2. podman, runc and CRIU >= 4.2 (the agent's host setup installs what is missing)
if ! have podman || ! have runc || ! have criu; then
    "$VENV/bin/python" -m capsule_runtime.host.setup --profile serve
fi
criu_version=$(criu --version | sed -n 's/^Version: *//p')
case "$criu_version" in
    4.[2-9]*|4.[1-9][0-9]*|[5-9].*|[1-9][0-9]*.*) ;;
    *) fail "CRIU $criu_version is older than 4.2" ;;
esac
podman --version
runc --version | head -n 1
{after_setup}
# 3. the agent, started by systemd (restarted if it dies; stopped with the machine)
install -d -m 700 /etc/tescape "$WORK_DIR"
cat >/etc/tescape/agent.env <<'ENV'
TESCAPE_AGENT_TOKEN={token}
ENV
chmod 600 /etc/tescape/agent.env
cat >/etc/systemd/system/tescape-agent.service <<UNIT
[Unit]
Description=tescape worker agent
After=network-online.target
Wants=network-online.target

[Service]
EnvironmentFile=/etc/tescape/agent.env
ExecStart=$VENV/bin/python -m capsule_runtime.agent --gateway $GATEWAY_URL \\
    --instance-id $INSTANCE_ID --work-dir $WORK_DIR --imds-url {imds_url} \\
    --cpu-cores {cpu_cores} --ram-gb {ram_gb} --disk-gb {disk_gb}
Restart=on-failure
RestartSec=5
# the agent exits cleanly only when the gateway tells it to shut down (idle, drained): the
# machine powers off, and InstanceInitiatedShutdownBehavior=terminate ends its billing at once
ExecStopPost=/bin/sh -c 'if [ "\$\$SERVICE_RESULT" = success ]; then systemctl poweroff; fi'
KillMode=mixed
TimeoutStopSec=60

[Install]
WantedBy=multi-user.target
UNIT
chmod 644 /etc/systemd/system/tescape-agent.service  # umask 077 above; systemd warns
if [ -n "${{TESCAPE_BOOTSTRAP_NO_SYSTEMD:-}}" ]; then
    echo "tescape bootstrap done (agent not started: TESCAPE_BOOTSTRAP_NO_SYSTEMD)"
    exit 0
fi
systemctl daemon-reload
systemctl enable --now tescape-agent.service
echo "tescape bootstrap done"
"""


def _number(value: float) -> str:
    return f"{float(value):g}"


def render(b: Bootstrap) -> str:
    """The script, every value quoted for bash (or checked to be a plain number)."""
    return TEMPLATE.format(
        after_setup="",
        gateway_url=shlex.quote(b.gateway_url),
        instance_id=shlex.quote(b.instance_id),
        wheel_url=shlex.quote(b.agent_wheel_url or ""),
        wheel_sha256=_digest(b.agent_wheel_sha256),
        venv=shlex.quote(AGENT_VENV),
        work_dir=shlex.quote(WORK_DIR),
        token=_env_value(b.token),
        cpu_cores=_number(b.cpu_cores),
        ram_gb=_number(b.ram_gb),
        disk_gb=_number(b.disk_gb),
        imds_url=IMDS_URL,
    )


# What a bake machine does once the install is done (`tescape aws bake`, bake.py): it powers off
# (its shutdown behaviour is `stop`) and the gateway makes an image of its root volume. No agent
# is started and no token is carried: an instance launched from the image later runs its own
# user-data, which finds everything installed and goes straight to starting the agent.
BAKE_DONE = r"""
# bake: everything is installed; the machine stops and `tescape aws bake` makes an image of it
echo "tescape bake done $(date -u +%FT%TZ)"
sync
systemctl poweroff || shutdown -h now
exit 0
"""


def render_bake(agent_wheel_url: str) -> str:
    """The user-data of a bake machine: steps 1 and 2 of the bootstrap (the agent from
    `agent_wheel_url`, an s3:// or https:// wheel; podman, runc, CRIU), then power off."""
    if not agent_wheel_url.startswith(("s3://", "https://", "http://")):
        raise ValueError(
            "bake installs the agent from providers.aws.agent_wheel_url (s3:// or https://)"
        )
    head = TEMPLATE[: TEMPLATE.index("# 3. the agent")]
    return head.format(
        after_setup=BAKE_DONE,
        gateway_url="''",
        instance_id="bake",
        wheel_url=shlex.quote(agent_wheel_url),
        wheel_sha256="''",
        venv=shlex.quote(AGENT_VENV),
        work_dir=shlex.quote(WORK_DIR),
        token="",
    )


def _digest(value: str | None) -> str:
    """A sha256 hex digest, or '' for none; anything else is refused."""
    if value is None:
        return "''"
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise ValueError("an agent wheel digest must be a sha256 hex digest")
    return value


def _env_value(token: str) -> str:
    """A token as a systemd EnvironmentFile value: the gateway's tokens are URL-safe base64, so
    nothing needs quoting; anything else is refused rather than escaped wrongly."""
    if not token or not all(c.isalnum() or c in "-_." for c in token):
        raise ValueError("an agent token must be URL-safe base64")
    return token
