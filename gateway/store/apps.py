"""The Application Library: named images (optionally held as image archives by the gateway) and
the credentials of the registries they come from."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, insert, select, update

from capsule_runtime.protocol.times import Clock, rfc3339, utcnow
from gateway.store.database import Database
from gateway.store.schema import apps, registry_credentials


def registry_of(image: str) -> str:
    """The registry host of an image reference, as docker/podman read it."""
    first, sep, _ = image.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


@dataclass(frozen=True)
class App:
    name: str
    image: str
    owner: str
    archive_sha256: str | None
    archive_size: int | None
    created_time: str


class AppStore:
    def __init__(self, db: Database, clock: Clock = utcnow):
        self.db = db
        self.clock = clock

    def put(self, name: str, image: str, owner: str = "") -> App:
        now = rfc3339(self.clock())
        with self.db.engine.begin() as conn:
            done = conn.execute(
                update(apps).where(apps.c.name == name).values(image=image, updated_time=now)
            ).rowcount
            if not done:
                conn.execute(
                    insert(apps).values(
                        name=name, image=image, owner=owner, created_time=now, updated_time=now
                    )
                )
        found = self.get(name)
        assert found is not None
        return found

    def set_archive(self, name: str, sha256: str, size: int) -> None:
        with self.db.engine.begin() as conn:
            conn.execute(
                update(apps)
                .where(apps.c.name == name)
                .values(
                    archive_sha256=sha256, archive_size=size, updated_time=rfc3339(self.clock())
                )
            )

    def get(self, name: str) -> App | None:
        with self.db.engine.connect() as conn:
            row = conn.execute(select(apps).where(apps.c.name == name)).first()
        return (
            App(
                row.name,
                row.image,
                row.owner,
                row.archive_sha256,
                row.archive_size,
                row.created_time,
            )
            if row
            else None
        )

    def all(self) -> list[App]:
        with self.db.engine.connect() as conn:
            rows = conn.execute(select(apps).order_by(apps.c.name)).all()
        return [
            App(r.name, r.image, r.owner, r.archive_sha256, r.archive_size, r.created_time)
            for r in rows
        ]

    def remove(self, name: str) -> bool:
        with self.db.engine.begin() as conn:
            return bool(conn.execute(delete(apps).where(apps.c.name == name)).rowcount)

    # -- registry credentials (passwords sealed by the caller's SecretBox) --------------------

    def put_credentials(self, registry: str, username: str, password_sealed: str) -> None:
        now = rfc3339(self.clock())
        with self.db.engine.begin() as conn:
            done = conn.execute(
                update(registry_credentials)
                .where(registry_credentials.c.registry == registry)
                .values(username=username, password_encrypted=password_sealed, updated_time=now)
            ).rowcount
            if not done:
                conn.execute(
                    insert(registry_credentials).values(
                        registry=registry,
                        username=username,
                        password_encrypted=password_sealed,
                        updated_time=now,
                    )
                )

    def credentials(self, registry: str) -> tuple[str, str] | None:
        """(username, sealed password) for a registry host."""
        with self.db.engine.connect() as conn:
            row = conn.execute(
                select(registry_credentials).where(registry_credentials.c.registry == registry)
            ).first()
        return (row.username, row.password_encrypted) if row else None

    def registries(self) -> list[str]:
        with self.db.engine.connect() as conn:
            return list(conn.execute(select(registry_credentials.c.registry)).scalars())
