"""The store: SQLAlchemy Core schema, Alembic migrations, and the repositories over them."""

from gateway.store.database import Database, open_database
from gateway.store.tasks import TaskRecord, TaskStore, Transition

__all__ = ["Database", "TaskRecord", "TaskStore", "Transition", "open_database"]
