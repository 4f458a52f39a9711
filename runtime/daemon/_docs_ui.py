"""The interactive API docs page, served with its scripts from the daemon itself.

Swagger UI's files are vendored in ``swagger_ui/`` (swagger-ui-dist, pinned to
``SWAGGER_UI_VERSION``, with its LICENSE and the files' SHA256SUMS), so the page
works offline and loads nothing from a third party.
"""

from __future__ import annotations

from pathlib import Path

from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.static_files import create_static_files_router
from litestar.types import ControllerRouterHandler

__all__ = ["ASSETS_DIR", "SWAGGER_UI_VERSION", "docs_assets_router", "swagger_plugin"]

SWAGGER_UI_VERSION = "5.18.2"
ASSETS_DIR = Path(__file__).resolve().parent / "swagger_ui"


def swagger_plugin(openapi_path: str) -> SwaggerRenderPlugin:
    """The Swagger UI page at ``<openapi_path>/swagger``, pointing at the vendored files."""
    base = f"{openapi_path}/assets"
    return SwaggerRenderPlugin(
        js_url=f"{base}/swagger-ui-bundle.js",
        css_url=f"{base}/swagger-ui.css",
        standalone_preset_js_url=f"{base}/swagger-ui-standalone-preset.js",
        favicon="<link rel='icon' href='data:,'>",  # Litestar's default is on a CDN
    )


def docs_assets_router(openapi_path: str) -> ControllerRouterHandler:
    """Serves the vendored Swagger UI files at ``<openapi_path>/assets/``."""
    return create_static_files_router(
        path=f"{openapi_path}/assets",
        directories=[ASSETS_DIR],
        include_in_schema=False,
        name="swagger_ui_assets",
    )
