"""tescape's gateway: the TES API, the store, the scheduler, the providers, the CLI."""

__version__ = "0.1.0"
