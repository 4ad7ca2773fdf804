"""The tables. Migrations in `migrations/versions` must produce exactly this (a test compares them).

Times are RFC 3339 strings in UTC (`2026-11-22T23:10:00.123456+00:00`): they sort as text, read
the same on SQLite and PostgreSQL, and go to the wire unchanged. Documents (task spec, logs,
event data, manifests) are JSON text.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
SeqType = BigInteger().with_variant(Integer(), "sqlite")
# Task names sort bytewise on both databases, so a name_prefix filter is an index range scan.
NameType = Text().with_variant(Text(collation="C"), "postgresql")

tasks = Table(
    "tasks",
    metadata,
    Column("seq", SeqType, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("owner", String(255), nullable=False, server_default=""),
    Column("name", NameType, nullable=True),
    Column("state", String(16), nullable=False),
    Column("creation_time", String(40), nullable=False),
    Column("updated_time", String(40), nullable=False),
    Column("spec", Text, nullable=False),  # the normalised request document (JSON)
    Column("logs", Text, nullable=True),  # list of TaskLog documents (JSON)
    Column("version", Integer, nullable=False, server_default="0"),
    Index("ix_tasks_owner_seq", "owner", "seq"),
    Index("ix_tasks_state_seq", "state", "seq"),
    Index("ix_tasks_owner_state_seq", "owner", "state", "seq"),
    Index("ix_tasks_name_seq", "name", "seq"),
)

task_tags = Table(
    "task_tags",
    metadata,
    Column("task_seq", SeqType, ForeignKey("tasks.seq", ondelete="CASCADE"), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("value", Text, nullable=False),
    Index("ix_task_tags_key_value_seq", "key", "value", "task_seq"),
)

instances = Table(
    "instances",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("provider", String(32), nullable=False),
    Column("instance_type", String(64), nullable=False),
    Column("market", String(16), nullable=False),  # spot | on-demand
    Column("zone", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    Column("price_per_hour", Float, nullable=True),
    Column("token_sha256", String(64), nullable=True),
    Column("created_time", String(40), nullable=False),
    Column("updated_time", String(40), nullable=False),
    Column("last_heartbeat", String(40), nullable=True),
    Column("data", Text, nullable=True),
    # What the provider returned at launch (gateway.providers.base.LaunchRecord): its own id for
    # the machine and the JSON it needs to find, query and terminate it again after a restart.
    Column("provider_id", String(128), nullable=True),
    Column("provider_data", Text, nullable=True),
    Column("owner", String(64), nullable=True),  # the gateway that launched or adopted it
    Index("ix_instances_state", "state"),
)

# One row per lease ("scheduler"): the gateway that runs the scheduler, until `expires`; every
# takeover bumps `epoch`, the fencing token the leader's writes check (scheduler/leadership.py).
scheduler_lease = Table(
    "scheduler_lease",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("holder", String(64), nullable=False),
    Column("epoch", Integer, nullable=False),
    Column("expires", String(40), nullable=False),
)

attempts = Table(
    "attempts",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("task_id", String(64), ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False),
    Column("number", Integer, nullable=False),
    Column("instance_id", String(64), ForeignKey("instances.id"), nullable=True),
    Column("phase", String(16), nullable=False),
    # first | reclaim | cost | rightsize | oom | manual
    Column("reason", String(32), nullable=True),
    Column("market", String(16), nullable=True),
    Column("instance_type", String(64), nullable=True),
    Column("zone", String(64), nullable=True),
    Column("price_per_hour", Float, nullable=True),
    Column("start_time", String(40), nullable=True),
    Column("end_time", String(40), nullable=True),
    Column("data", Text, nullable=True),
    # Bumped by every change of the row (gateway.store.fleet takes the row with it before it
    # reads, so concurrent read-modify-writes of `data` serialise instead of losing one).
    Column("version", Integer, nullable=False, server_default="0"),
    # The ids of the agent reports applied to this attempt (JSON list, newest last, bounded): a
    # report sent again (its answer was lost) is answered the same and not applied twice.
    Column("report_ids", Text, nullable=True),
    Index("ix_attempts_task_number", "task_id", "number", unique=True),
    Index("ix_attempts_instance", "instance_id"),
    Index("ix_attempts_end_time", "end_time"),  # what ran in a window (costs), what still runs
    Index("ix_attempts_phase", "phase"),  # the live attempts (status)
)

capsules = Table(
    "capsules",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("task_id", String(64), ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False),
    Column("attempt_id", String(64), ForeignKey("attempts.id"), nullable=True),
    Column("sequence", Integer, nullable=False),
    Column("state", String(16), nullable=False),  # writing | complete | corrupt | deleted
    Column("store_key", Text, nullable=False),
    Column("size_bytes", BigInteger, nullable=True),
    Column("manifest_sha256", String(64), nullable=True),
    Column("parent_id", String(64), nullable=True),
    Column("created_time", String(40), nullable=False),
    Column("data", Text, nullable=True),
    Index("ix_capsules_task_sequence", "task_id", "sequence"),
)

# The notice budget planner's running estimate of checkpoint speed per instance type
# (gateway/scheduler/notice_budget.py, migration 0007): `stats` is JSON, decayed least-squares
# sums over the type's measured capsules.
checkpoint_rates = Table(
    "checkpoint_rates",
    metadata,
    Column("provider", String(32), primary_key=True),
    Column("instance_type", String(64), primary_key=True),
    Column("samples", Integer, nullable=False),
    Column("stats", Text, nullable=False),
    Column("updated_time", String(40), nullable=False),
)

events = Table(
    "events",
    metadata,
    Column("id", SeqType, primary_key=True, autoincrement=True),
    Column("task_id", String(64), nullable=True),
    Column("attempt_id", String(64), nullable=True),
    Column("instance_id", String(64), nullable=True),
    Column("time", String(40), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("from_state", String(16), nullable=True),
    Column("to_state", String(16), nullable=True),
    Column("phase", String(16), nullable=True),
    Column("message", Text, nullable=True),
    Column("data", Text, nullable=True),
    Index("ix_events_task_id", "task_id", "id"),
    Index("ix_events_instance_id", "instance_id", "id"),
    Index("ix_events_kind_id", "kind", "id"),  # the newest events of a kind (status, metrics)
)

# The Application Library: named images, optionally with an image archive held by the gateway
# for air-gapped sites (migration 0002).
apps = Table(
    "apps",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("image", Text, nullable=False),
    Column("owner", String(255), nullable=False, server_default=""),
    Column("archive_sha256", String(64), nullable=True),
    Column("archive_size", BigInteger, nullable=True),
    Column("created_time", String(40), nullable=False),
    Column("updated_time", String(40), nullable=False),
)

# Credentials per registry host; the password is encrypted with the gateway's secret key.
registry_credentials = Table(
    "registry_credentials",
    metadata,
    Column("registry", String(255), primary_key=True),
    Column("username", Text, nullable=False),
    Column("password_encrypted", Text, nullable=False),
    Column("updated_time", String(40), nullable=False),
)

# What the cost of an attempt is computed from (gateway/market/costs.py `attempt_cost`): the
# columns the costs API, the dashboard and the task telemetry select.
ATTEMPT_COST_COLUMNS = (
    attempts.c.id,
    attempts.c.task_id,
    attempts.c.instance_id,
    attempts.c.market,
    attempts.c.instance_type,
    attempts.c.zone,
    attempts.c.price_per_hour,
    attempts.c.start_time,
    attempts.c.end_time,
)
