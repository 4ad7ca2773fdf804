"""Preparing a host (a developer's machine, CI, a worker instance): system packages and files."""
