#!/usr/bin/env python3
"""The file server of static releases (standard library only: it is copied into each release as `runix-static`).

Serves the current folder on $PORT: `index.html` for folders, `/about` from `about.html`, `404.html` for what is not
there. Never lists folders, never serves dotfiles (`.env`, `.git`) or runix.json. Keep-alive (HTTP/1.1), so the router
can reuse its connections.
"""

from __future__ import annotations

import os
import posixpath
import sys
import urllib.parse
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

HIDDEN = {"runix.json", "Procfile"}


class StaticHandler(SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "runix-static"
    sys_version = ""

    def _hidden(self, url_path: str) -> bool:
        parts = [p for p in posixpath.normpath(urllib.parse.unquote(url_path)).split("/") if p]
        return any(p.startswith(".") for p in parts) or (bool(parts) and parts[-1] in HIDDEN)

    def send_head(self):
        url_path = urllib.parse.urlsplit(self.path).path
        if self._hidden(url_path):
            return self._not_found()
        local = self.translate_path(url_path)
        if os.path.isdir(local):
            if not url_path.endswith("/"):
                return super().send_head()  # redirects to the folder with a trailing slash
            if not os.path.isfile(os.path.join(local, "index.html")):
                return self._not_found()
        elif not os.path.exists(local) and os.path.isfile(local + ".html"):
            self.path = url_path + ".html"
        elif not os.path.exists(local):
            return self._not_found()
        return super().send_head()

    def _not_found(self):
        page = os.path.join(self.directory, "404.html")
        if not os.path.isfile(page):
            self.send_error(HTTPStatus.NOT_FOUND, "Not found")
            return None
        body = open(page, "rb")  # noqa: SIM115 - handed to the base class, which closes it
        self.send_response(HTTPStatus.NOT_FOUND)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(os.fstat(body.fileno()).st_size))
        self.end_headers()
        return body

    def list_directory(self, path):  # folders are never listed
        self.send_error(HTTPStatus.NOT_FOUND, "Not found")
        return None

    def log_message(self, format: str, *args: object) -> None:
        sys.stdout.write(f"{self.address_string()} {format % args}\n")
        sys.stdout.flush()


def main() -> None:
    host = os.environ.get("HOST", "127.0.0.1")
    port = int(os.environ.get("PORT", "8000"))
    server = ThreadingHTTPServer((host, port), StaticHandler)
    server.daemon_threads = True
    print(f"Serving {os.getcwd()} on http://{host}:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
