"""Install what tescape needs on this host, idempotently. Standard library only: this runs before
any virtual environment exists (`python3 -m capsule_runtime.host.setup --profile serve|test`).

Profiles:
  serve  what `tescape serve` with the embedded defaults needs
  test   serve + what the test suite needs (PostgreSQL server, ...)
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Callable

from capsule_runtime.host import criu as criu_host
from capsule_runtime.host import podman as podman_host

# Debian packages per profile. Each step below may add its own.
PACKAGES: dict[str, list[str]] = {
    "serve": [],
    # wrk: the API benchmark's load generator (its smoke test runs in CI); chromium: the
    # dashboard's browser tests (Playwright drives it; it never downloads a browser);
    # debootstrap: the Debian 12 root an EC2 instance's user-data runs in for real; systemd:
    # journalctl, which reads that root's journal once the booted root has powered off
    "test": [
        "postgresql",
        "python3-venv",
        "docker-registry",
        "apache2-utils",
        "wrk",
        "chromium",
        "debootstrap",
        "systemd",
    ],
}


def say(msg: str) -> None:
    print(f"[tescape setup] {msg}", flush=True)


def missing_packages(names: list[str]) -> list[str]:
    missing = []
    for name in names:
        result = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", name], capture_output=True, text=True
        )
        if "install ok installed" not in result.stdout:
            missing.append(name)
    return missing


def apt_install(names: list[str]) -> None:
    missing = missing_packages(names)
    if not missing:
        return
    if os.geteuid() != 0:
        sys.exit(
            f"[tescape setup] missing Debian packages: {' '.join(missing)}; "
            "run this as root or install them with apt-get"
        )
    say(f"installing Debian packages: {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], check=True, env=env
    )


# Further host steps (container engine, CRIU, ...) register here: name → (profiles, function).
STEPS: dict[str, tuple[set[str], Callable[[], None]]] = {
    "podman": ({"serve", "test"}, lambda: podman_host.prepare(apt_install)),
    "criu": ({"serve", "test"}, lambda: criu_host.prepare(apt_install)),
    "image tools": ({"test"}, lambda: apt_install(podman_host.IMAGE_TOOLS)),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m capsule_runtime.host.setup")
    parser.add_argument("--profile", choices=sorted(PACKAGES), default="serve")
    args = parser.parse_args(argv)
    if shutil.which("dpkg-query") is None:
        say("not a Debian system: install the packages listed in README.md yourself")
        return 0
    wanted = list(PACKAGES["serve"])
    if args.profile == "test":
        wanted += PACKAGES["test"]
    apt_install(wanted)
    for name, (profiles, step) in STEPS.items():
        if args.profile in profiles:
            say(f"step: {name}")
            step()
    say(f"host ready for profile {args.profile!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
