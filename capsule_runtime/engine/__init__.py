"""Running task containers: the ContainerEngine interface, podman (runc) and an in-memory fake.

protocol    ContainerEngine: has_image, ensure_image, load_archive, create/start/run, wait, stop,
            remove, inspect, list
spec        ContainerSpec, Mount, Network (in); ContainerInfo, ContainerState (out)
errors      EngineError and its named kinds (ContainerNotFound, WaitTimeout, ...)
podman      PodmanEngine, over podman_cli (argv, timeouts, tescape's containers.conf)
launcher    the static busybox that connects stdin/stdout/stderr to files in a container
fake        FakeEngine, for fast tests
images      local image builds (busybox FROM scratch, Debian minbase) with an archive cache
"""

from capsule_runtime.engine.errors import (
    ContainerNotFound,
    EngineError,
    EngineTimeout,
    EngineUnavailable,
    ImageNotFound,
    RegistryAuthFailed,
    WaitTimeout,
)
from capsule_runtime.engine.fake import FakeEngine, FakeProcess
from capsule_runtime.engine.podman import PodmanEngine
from capsule_runtime.engine.protocol import ContainerEngine
from capsule_runtime.engine.spec import (
    TASK_LABEL,
    ContainerInfo,
    ContainerSpec,
    ContainerState,
    Mount,
    Network,
)

__all__ = [
    "TASK_LABEL",
    "ContainerEngine",
    "ContainerInfo",
    "ContainerNotFound",
    "ContainerSpec",
    "ContainerState",
    "EngineError",
    "EngineTimeout",
    "EngineUnavailable",
    "FakeEngine",
    "FakeProcess",
    "ImageNotFound",
    "Mount",
    "Network",
    "PodmanEngine",
    "RegistryAuthFailed",
    "WaitTimeout",
]
