"""The gateway's state is private to the user it runs as: files 0600, directories 0700.

The data dir holds the database (with its WAL/SHM), the secret key, every task's logs, image
archives, local instances' folders and by default the capsules (a task's whole memory). `tescape
serve` sets the umask to 0077 first, so everything the gateway creates from then on is private;
`make_private` also tightens what an earlier version or another umask left behind at the top of
the data dir. Agents started by the local provider get an ordinary umask back (their tasks'
files are the users'); their folders sit inside the private data dir, and the file capsule store
writes 0600/0700 on its own.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from pathlib import Path

from capsule_runtime.protocol.local_paths import url_local_path
from gateway.config import Config, sqlite_file

log = logging.getLogger(__name__)

UMASK = 0o077
STATE_FILES = (
    "tescape.db",
    "tescape.db-wal",
    "tescape.db-shm",
    "tescape.db-journal",
    "secret.key",
    "capsule.key",
)
STATE_DIRS = ("logs", "apps", "instances", "capsules")


def make_private(cfg: Config) -> list[Path]:
    """Create the data dir (0700) and take group and other access away from it, the state files
    and folders at its top, a SQLite database elsewhere and a local capsule store. Returns what
    was changed, for the log. Only the owner's own files are touched, and the directory `tescape
    serve` runs in (the data dir when none is configured, often a checkout or a home) keeps its
    mode: its state files and folders are private all the same."""
    data = cfg.data_path
    data.mkdir(mode=0o700, parents=True, exist_ok=True)
    paths = [*(data / d for d in STATE_DIRS), *(data / f for f in STATE_FILES)]
    if cfg.data_dir is not None:
        paths.insert(0, data)
    if (database := sqlite_file(cfg.database_url)) is not None:
        paths += [database.with_name(database.name + s) for s in ("", "-wal", "-shm")]
    with contextlib.suppress(ValueError):
        if (store := url_local_path(cfg.capsule_store)) is not None:
            paths.append(Path(store))
    changed = []
    for path in dict.fromkeys(paths):
        if _tighten(path):
            changed.append(path)
    return changed


def _tighten(path: Path) -> bool:
    try:
        info = path.lstat()
    except OSError:
        return False
    if stat.S_ISLNK(info.st_mode) or info.st_uid != os.geteuid():
        return False
    mode = stat.S_IMODE(info.st_mode)
    if not mode & 0o077:
        return False
    with contextlib.suppress(OSError):
        os.chmod(path, mode & 0o700)
        return True
    return False


def private_umask() -> int:
    """Make every file the gateway creates from now on 0600 (directories 0700); the old umask."""
    return os.umask(UMASK)
