"""The web console: a static page (HTML, CSS and plain ES modules, no build step) that the API serves at `/`.

The page talks to the server only through the public REST API the CLI and other clients use, so it can show
nothing a client could not see and needs no private endpoint. Everything it loads ships inside this package
(`static/`, listed in pyproject's package-data) and nothing is fetched from elsewhere at run time, so it works
offline and its Content-Security-Policy can be `'self'` only.

This package holds files, not HTTP: `ragsvc.api.console` mounts them.
"""

from __future__ import annotations

from pathlib import Path

STATIC_DIR = Path(__file__).resolve().parent / "static"
"""The console's files: index.html, console.css and js/*.js."""
INDEX_FILE = STATIC_DIR / "index.html"
