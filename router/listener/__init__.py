"""The HTTP listener: OpenAI- and Anthropic-compatible endpoints over the router.

Both protocols go through the same router, so a request in one protocol may be answered by a
backend of the other. Errors leave in the caller's own format. Binds 127.0.0.1 by default; any
other address needs a listener key (keyring name "listener", or MLXWB_LISTENER_KEY).
The only package that imports fastapi, starlette, uvicorn and sse-starlette (import-linter checks it).
"""

from router.listener.app import create_app
from router.listener.errors import ListenerError
from router.listener.server import Listener, is_loopback

__all__ = ["Listener", "ListenerError", "create_app", "is_loopback"]
