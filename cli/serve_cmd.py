"""`mmsearch serve`: the HTTP API and the web UI over one index, model and index kept warm."""
from __future__ import annotations

import os
import threading
import webbrowser
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from cli.common import DbOption, ModelOption, db_dir, err_console, fail, friendly_errors, setup_logging


@friendly_errors
def serve(
    db: DbOption = None,
    model: ModelOption = None,
    host: Annotated[str, typer.Option(help="Address to listen on. Anything but loopback needs --token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    token: Annotated[Optional[str], typer.Option(envvar="MMSEARCH_TOKEN", show_default=False,
                                                 help="Every request must carry this token (Authorization: Bearer, "
                                                      "the /login cookie, or ?token=).")] = None,
    token_file: Annotated[Optional[Path], typer.Option(exists=True, dir_okay=False, show_default=False,
                                                       help="Read the token from this file (first line).")] = None,
    generate_token: Annotated[bool, typer.Option("--generate-token", help="Make a random token and show it once "
                                                 "(for this run only).")] = False,
    max_upload_mb: Annotated[float, typer.Option(min=0.001, help="Largest image upload accepted, in MB.")] = 20.0,
    max_decode_mb: Annotated[float, typer.Option(min=1, help="Memory one upload's decoding may take, in MB "
                                                 "(estimated from its header first; larger ones get 413).")] = 256.0,
    allow_hard_links: Annotated[bool, typer.Option("--allow-hard-links", help="Also serve files that have more than "
                                                   "one hard link (refused by default: a hard link can bring a file "
                                                   "from outside the indexed folders inside them).")] = False,
    proxy: Annotated[Optional[List[str]], typer.Option(show_default=False, help="Address of a proxy in front (repeat "
                                                       "for more): its X-Forwarded-For then names the client, for "
                                                       "the per-client limits.")] = None,
    preload_image_tower: Annotated[bool, typer.Option(help="Load the image tower at start instead of on the first "
                                                           "image search.")] = False,
    threads: Annotated[int, typer.Option(min=1, help="Torch threads per query embedding (requests run in "
                                                    "parallel besides).")] = 1,
    text_threads: Annotated[Optional[int], typer.Option(min=1, show_default=False, help="Threads for one text "
                                                        "query's ONNX embedding (default: one per core, at most 4).")] = None,
    open_browser: Annotated[bool, typer.Option("--open", help="Open the UI in a web browser once started.")] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda ...")] = "cpu",
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log requests and engine events.")] = False,
) -> None:
    """Serve the web UI and the HTTP API (OpenAPI docs at /docs) for one index.

    Example:
      mmsearch serve --db ~/.local/share/mmsearch --port 8000
          (then open http://127.0.0.1:8000)
      mmsearch serve --host 0.0.0.0 --token-file ~/.mmsearch-token
          (reachable from the LAN)
    """
    setup_logging(verbose)
    if sum((token is not None, token_file is not None, generate_token)) > 1:
        fail("give one of --token, --token-file and --generate-token, not several")
    if token_file is not None:
        lines = token_file.read_text(encoding="utf-8").splitlines()
        token = lines[0].strip() if lines else ""
    # OpenMP (torch, faiss) reads this once, when first loaded: one thread per request thread. Requests
    # already run in parallel, and OpenMP teams spin-waiting beside each other (or beside another busy
    # process) made a 100k-item IVF search 6x slower here; see docs/BENCHMARKS.md "Web server"
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    import uvicorn

    from retrieval.server import ServerConfig, create_app
    from retrieval.server.config import new_token
    from retrieval.server.listen import bind_listener

    if generate_token:
        token = new_token()
    config = ServerConfig(db=db_dir(db), model_name=model, device=device, host=host, port=port, token=token,
                          max_upload_bytes=int(max_upload_mb * 1024 * 1024), preload_image_tower=preload_image_tower,
                          torch_threads=threads, text_threads=text_threads, allow_hard_links=allow_hard_links,
                          max_decode_bytes=int(max_decode_mb * 1024 * 1024))
    config.check()
    listener = bind_listener(host, port)  # a busy port fails here, before the model loads or a URL is shown
    if generate_token:  # shown once, here; it is kept nowhere else
        err_console.print(f"token for this run: {token}", markup=False, highlight=False)
    err_console.print(f"loading the index at {config.db} and its model ...")
    try:
        app = create_app(config)
    except BaseException:
        listener.close()
        raise
    shown_host = f"[{host}]" if ":" in host else host
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else shown_host}:{port}/"
    err_console.print(f"serving {url}  (API docs: {url}docs; Ctrl+C stops)", markup=False)
    if token is not None:
        err_console.print(f"sign in at {url}login with the token, or open {url}?token=<token>", markup=False)
    if open_browser:
        threading.Timer(1.0, webbrowser.open, args=(url,)).start()  # once uvicorn listens
    # keep-alive longer than clients' own pool expiry (httpx: 5 s), so the server is never the side that
    # closes a connection while a client reuses it
    # the peer address names a client (sign-in brake, searches per client); X-Forwarded-For only from --proxy
    server = uvicorn.Server(uvicorn.Config(
        app, host=host, port=port, log_level="info" if verbose else "warning", access_log=verbose,
        server_header=False, timeout_keep_alive=75, proxy_headers=bool(proxy),
        forwarded_allow_ips=list(proxy) if proxy else None))
    try:
        server.run(sockets=[listener])
    except KeyboardInterrupt:
        pass
    finally:
        listener.close()
