"""tescape's gateway: the TES API, the store, the scheduler, the providers, the CLI."""

# one version for the distribution, gateway and agent alike (read from the installed metadata)
from capsule_runtime import __version__ as __version__
