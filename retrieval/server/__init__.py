"""The web server: an HTTP API and a browser UI over one index, with the model kept warm.

`create_app(ServerConfig(db=...))` returns the FastAPI app; `mmsearch serve` runs it with uvicorn.
"""
from retrieval.server.app import create_app
from retrieval.server.config import ServerConfig

__all__ = ["ServerConfig", "create_app"]
