"""Cromwell TES backend configuration, and a replay harness that speaks like Cromwell's backend."""
