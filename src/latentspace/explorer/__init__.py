"""`latentspace explore RUN`: a local page to point at a run's latent space (docs/explorer.md).

    from latentspace.explorer import bind, open_explorer, serve
    explorer = open_explorer(ls.open_run("runs/vae"), limit=2000)   # codes and the 2-D map
    explorer.decode(explorer.code_at(0.5, -1.0)[None])              # [PNG bytes]
    serve(explorer, bind("127.0.0.1", 8765))                        # needs latentspace[explore]

`session` knows the run (codes, map, decoding) and nothing of the web; `app` is the Starlette
application over it; `server` binds the socket and runs uvicorn. Starlette and uvicorn are
imported only by `app` and `serve`.
"""

from __future__ import annotations

from latentspace.explorer.server import bind, require_server, serve
from latentspace.explorer.session import Explorer, open_explorer

__all__ = ["Explorer", "bind", "open_explorer", "require_server", "serve"]
