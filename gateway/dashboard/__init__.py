"""The web dashboard at /ui/: server-rendered pages (Jinja) with a small hand-written script that
polls JSON endpoints for live updates. Its templates and static files ship in the package;
nothing is fetched from the network at run time.

Authentication is the API's own (the app's `before_request` sets `g.principal` for every
`dashboard.*` endpoint): a user sees their own tasks, an admin every task and the instances.
"""

from gateway.dashboard.views import dashboard_blueprint

__all__ = ["dashboard_blueprint"]
