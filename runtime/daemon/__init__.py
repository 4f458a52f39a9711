"""actorflowd, the HTTP daemon: ``main`` is the ``actorflowd`` console script.

Litestar with msgspec models on uvicorn (uvloop, httptools), one process, built
on ``AsyncRuntime``. The endpoints, bodies and errors are described in
docs/http-api.md.
"""

from runtime.daemon._main import main

__all__ = ["main"]
