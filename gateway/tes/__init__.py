"""TES 1.1 wire types, states and validation — a leaf package: no Flask, no SQLAlchemy, no boto3."""

from capsule_runtime.protocol.tes import (
    TesExecutor,
    TesExecutorLog,
    TesInput,
    TesOutput,
    TesOutputFileLog,
    TesResources,
    TesTask,
    TesTaskLog,
)
from gateway.tes.states import ILLEGAL, TERMINAL, TRANSITIONS, AttemptPhase, State, can_transition

__all__ = [
    "ILLEGAL",
    "TERMINAL",
    "TRANSITIONS",
    "AttemptPhase",
    "State",
    "TesExecutor",
    "TesExecutorLog",
    "TesInput",
    "TesOutput",
    "TesOutputFileLog",
    "TesResources",
    "TesTask",
    "TesTaskLog",
    "can_transition",
]
