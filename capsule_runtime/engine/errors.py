"""Named failures of a container engine; each carries what the engine said (podman's stderr)."""

from __future__ import annotations

from collections.abc import Sequence


class EngineError(Exception):
    """A container engine operation failed."""

    def __init__(
        self,
        message: str,
        *,
        argv: Sequence[str] = (),
        returncode: int | None = None,
        stderr: str = "",
    ) -> None:
        self.message = message
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(self._describe())

    def _describe(self) -> str:
        parts = [self.message]
        if self.returncode is not None:
            parts.append(f"exit status {self.returncode}")
        if self.stderr.strip():
            parts.append(f"stderr: {self.stderr.strip()}")
        return "; ".join(parts)


class EngineUnavailable(EngineError):
    """The engine is not installed or not configured on this host."""


class EngineTimeout(EngineError):
    """An engine command did not answer within its time limit."""


class ImageNotFound(EngineError):
    """The image is neither in the local store nor pullable."""


class RegistryAuthFailed(EngineError):
    """The registry refused the pull: no credentials, wrong ones, or no access to the repository."""


class ContainerNotFound(EngineError):
    """No container with that id or name."""


class WaitTimeout(EngineError):
    """The container was still running when `wait` gave up. It is left running."""
