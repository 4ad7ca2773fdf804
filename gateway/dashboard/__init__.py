"""The web dashboard (arrives with a later issue)."""
