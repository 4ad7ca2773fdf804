"""Flask blueprints: the TES routes, the admin API, and JSON errors."""
