# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""A small caching HTTP proxy for the testbed nodes' apt, on the controller.

Nodes have no route out of their namespace; their apt uses this proxy on the controller's
testbed address (``Acquire::http::Proxy``). It forwards only to the Debian registry hosts in
``ALLOWED_HOSTS`` and keeps the files whose content never changes under a name (``.deb``
files in ``pool/`` and ``by-hash/`` indexes) in ``<cache>/apt``, shared by all testbeds,
so a second run of a role installs from the cache. Index files (``InRelease``,
``Packages``) always come fresh from upstream.
"""
import argparse
import hashlib
import http.client
import http.server
import os
import shutil
import sys
import urllib.parse

ALLOWED_HOSTS = ("deb.debian.org", "security.debian.org")
UPSTREAM_TIMEOUT = 60
CHUNK = 1 << 16


def cacheable(path):
    """True for URLs whose content is fixed by their name."""
    return path.endswith((".deb", ".udeb")) or "/by-hash/" in path


def cache_path(cache_dir, host, path):
    digest = hashlib.sha256(f"{host}{path}".encode()).hexdigest()
    return os.path.join(cache_dir, digest[:2], digest + "-" + os.path.basename(path)[-80:])


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    cache_dir = None

    def log_message(self, fmt, *args):
        sys.stdout.write("%s %s\n" % (self.address_string(), fmt % args))
        sys.stdout.flush()

    def do_HEAD(self):
        self._handle(head=True)

    def do_GET(self):
        self._handle(head=False)

    def _handle(self, head):
        url = urllib.parse.urlsplit(self.path)
        host = url.hostname or self.headers.get("Host", "").split(":")[0]
        path = url.path + (("?" + url.query) if url.query else "")
        if url.scheme not in ("http", "") or host not in ALLOWED_HOSTS:
            self.send_error(403, f"pft apt proxy forwards only to {', '.join(ALLOWED_HOSTS)}")
            return
        cached = cache_path(self.cache_dir, host, url.path) if cacheable(url.path) else None
        if cached and os.path.exists(cached):
            size = os.path.getsize(cached)
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("X-Pft-Cache", "hit")
            self.end_headers()
            if not head:
                with open(cached, "rb") as f:
                    shutil.copyfileobj(f, self.wfile, CHUNK)
            return
        try:
            conn = http.client.HTTPConnection(host, 80, timeout=UPSTREAM_TIMEOUT)
            conn.request("HEAD" if head else "GET", path, headers={"User-Agent": "pft-testbed-aptproxy"})
            resp = conn.getresponse()
        except OSError as exc:
            self.send_error(502, f"upstream {host}: {exc}")
            return
        self.send_response(resp.status)
        for key in ("Content-Length", "Content-Type", "Last-Modified", "ETag"):
            if resp.getheader(key):
                self.send_header(key, resp.getheader(key))
        if resp.getheader("Content-Length") is None:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if head:
            conn.close()
            return
        out = None
        tmp = None
        if cached and resp.status == 200:
            os.makedirs(os.path.dirname(cached), exist_ok=True)
            tmp = f"{cached}.{os.getpid()}.{id(self)}.part"
            out = open(tmp, "wb")
        try:
            while True:
                chunk = resp.read(CHUNK)
                if not chunk:
                    break
                self.wfile.write(chunk)
                if out:
                    out.write(chunk)
            if out:
                out.close()
                os.replace(tmp, cached)
                out = None
        finally:
            if out:
                out.close()
                os.unlink(tmp)
            conn.close()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listen", required=True)
    ap.add_argument("--port", type=int, default=3142)
    ap.add_argument("--cache", required=True)
    ap.add_argument("--state", help="the testbed's state directory (lets `testbed down` find this process)")
    args = ap.parse_args(argv)
    os.makedirs(args.cache, exist_ok=True)
    Handler.cache_dir = args.cache
    server = http.server.ThreadingHTTPServer((args.listen, args.port), Handler)
    server.daemon_threads = True
    print(f"pft apt proxy on {args.listen}:{args.port}, cache {args.cache}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
