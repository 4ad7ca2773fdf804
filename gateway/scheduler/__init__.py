"""Placement, recovery strategies and migration triggers (arrives with the execution issues)."""
