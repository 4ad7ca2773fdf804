"""What the gateway and a worker agent share: both import this package, it imports neither.

- messages.py: the agent protocol (register, long poll, orders, reports) as pydantic models
- local_paths.py, s3_paths.py: which host paths and s3:// URLs a task may name (the gateway checks
  at create, the agent again while staging)
- redact.py: secrets out of logs, events and system_logs
- tasklog.py: the TaskLog a task starts with (planned executor entries)
- times.py: RFC 3339 timestamps as TES writes them
- errors.py: FieldError, what the path rules report

pydantic and the standard library only (checked by the import-linter contracts in pyproject.toml).
"""
