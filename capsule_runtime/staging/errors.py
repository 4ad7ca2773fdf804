"""Named staging failures; each message is written for the task's system_logs."""

from __future__ import annotations


class StagingError(RuntimeError):
    """An input could not be staged or an output could not be uploaded."""


class UnsupportedScheme(StagingError):
    """The URL's scheme (gs://, ftp://, ...) has no storage on this worker."""


class AccessRefused(StagingError):
    """The staging policy refuses the path or address (allowed_dirs, metadata, private networks)."""


class SourceMissing(StagingError):
    """The input's file, directory, object or prefix does not exist."""


class StagingCancelled(StagingError):
    """The workspace was cancelled (the task was cancelled, or the instance is going away)."""


class PathEscapes(StagingError):
    """A path a task controls would lead the agent out of the task's tree: a symlink on the way
    that the agent must not follow, a symlink loop, or a target outside the mounted directories."""
