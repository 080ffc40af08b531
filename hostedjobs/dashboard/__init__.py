"""A dashboard for hostedjobs, to mount in any Starlette or FastAPI app.

``Mount("/jobs", app=host.dashboard(auth=...))``: an overview (workers, queue, startup), the
hosted jobs with "run now", and on-demand jobs by state with delete and retry. Server-rendered
with Jinja2 (``pip install 'hostedjobs[dashboard]'``), a little vanilla JavaScript for the live
refresh, no build step and nothing fetched from elsewhere.
"""

from __future__ import annotations

from .app import PAGE_SIZE, create_dashboard
from .security import AuthCheck

__all__ = ["PAGE_SIZE", "AuthCheck", "create_dashboard"]
