"""See and compare runs in the browser.

    python -m vae_lab.explore outputs/sweeps/<date_time>              # serve on http://127.0.0.1:8000/
    python -m vae_lab.explore <run> <run> ... [--port N] [--open]     # any runs, a column each
    python -m vae_lab.explore <run or sweep> --static explorer/       # a folder; open explorer/index.html

Each path is a run folder, a sweep folder (its subfolders that are runs) or a .ckpt file;
``--checkpoint best`` shows each run's best epoch instead of its last. The page is exported once
(vae_lab/explore/__init__.py) and then decodes in the browser; serving it is the standard library's
static file server on 127.0.0.1 only, until Ctrl-C. ``--static`` writes the same folder and serves
nothing: it opens from disk (file://) and can be copied anywhere. Bad input: one line, exit status 1.
"""
import argparse
import functools
import signal
import sys
import tempfile
import webbrowser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from vae_lab.errors import VaeLabError


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # one line per request would bury the address
        pass


def make_server(folder: Path, port: int = 8000) -> ThreadingHTTPServer:
    """A server of ``folder``'s files on 127.0.0.1:port (0: any free port), not yet serving."""
    try:
        return ThreadingHTTPServer(("127.0.0.1", port), functools.partial(QuietHandler, directory=str(folder)))
    except OSError as error:
        raise VaeLabError(f"cannot serve on 127.0.0.1:{port} ({error.strerror}); choose another with --port N "
                          "(0: any free port)") from None


def parse(argv):
    parser = argparse.ArgumentParser(prog="python -m vae_lab.explore", description="See and compare runs in the browser.")
    parser.add_argument("paths", nargs="+", metavar="RUN", help="run folders, sweep folders or .ckpt files")
    parser.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (default 8000; 0: any free port)")
    parser.add_argument("--static", metavar="OUT_DIR", type=Path, help="write the page folder there and serve nothing")
    parser.add_argument("--checkpoint", choices=("last", "best"), default="last", help="each run's checkpoint")
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                        help="a module that registered the runs' own models (as when they trained); repeatable")
    parser.add_argument("--open", action="store_true", help="also open the page in the default browser")
    # a wrong option is bad input too: one line and status 1, as every other refusal (argparse: usage, status 2)
    parser.error = lambda message: sys.exit(f"error: {message}; {' '.join(parser.format_usage().split())}")
    return parser.parse_args(argv)


def command(options) -> None:
    from vae_lab.explore import build

    if options.static is not None:
        index = build(options.paths, options.static, options.checkpoint, options.plugin)
        print(f"wrote {index.parent}: open {index.resolve().as_uri()}")
        if options.open:
            webbrowser.open(index.resolve().as_uri())
        return
    if not 0 <= options.port < 65536:
        raise VaeLabError(f"--port {options.port} must be 0-65535")
    # `kill` (SIGTERM) stops it as Ctrl-C does: the finally clauses close the server and remove the folder
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    with tempfile.TemporaryDirectory(prefix="vae_lab-explore-") as folder:
        server = make_server(Path(folder) / "page", options.port)  # first: a busy port fails before the export
        try:
            build(options.paths, Path(folder) / "page", options.checkpoint, options.plugin)
            address = f"http://127.0.0.1:{server.server_address[1]}/"
            print(f"serving the explorer at {address} (Ctrl-C stops)", flush=True)
            if options.open:
                webbrowser.open(address)
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()


def main(argv: list[str] | None = None) -> None:
    options = parse(argv)
    try:
        command(options)
    except VaeLabError as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
