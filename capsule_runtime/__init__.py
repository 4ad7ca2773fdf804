"""The worker agent that runs on each instance: containers, capsules, staging.

It never imports Flask, nor the gateway package: a worker installs without the gateway's server
dependencies. What both sides share (the agent protocol, the task path rules, redaction) lives in
capsule_runtime.protocol, which the gateway imports.
"""

from importlib import metadata

try:  # one source of truth: pyproject.toml's version, as installed
    __version__ = metadata.version("tescape")
except metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
