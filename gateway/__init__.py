"""tescape's gateway: the TES API, the store, the scheduler, the providers, the CLI."""

from importlib import metadata

try:  # one source of truth: pyproject.toml's version, as installed
    __version__ = metadata.version("tescape")
except metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
