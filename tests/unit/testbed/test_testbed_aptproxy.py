# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The nodes' caching apt proxy (pft_testbed.aptproxy): what it caches and forwards, on loopback."""
import http.client
import http.server
import os
import threading

import pytest

from pft_testbed import aptproxy


@pytest.mark.parametrize("path, cached", [
    ("/debian/pool/main/x/xen/xen-utils-4.17_4.17.5+72-g01140da4e8-1_amd64.deb", True),
    ("/debian/dists/bookworm/main/binary-amd64/by-hash/SHA256/abc", True),
    ("/debian/dists/bookworm/InRelease", False),
    ("/debian/dists/bookworm/main/binary-amd64/Packages.xz", False),
])
def test_only_content_addressed_files_are_cached(path, cached):
    assert aptproxy.cacheable(path) is cached


def test_cache_paths_differ_per_host_and_path(tmp_path):
    a = aptproxy.cache_path(str(tmp_path), "deb.debian.org", "/debian/pool/a.deb")
    b = aptproxy.cache_path(str(tmp_path), "security.debian.org", "/debian/pool/a.deb")
    assert a != b and a.endswith("-a.deb") and a.startswith(str(tmp_path))


@pytest.fixture
def proxy(tmp_path):
    aptproxy.Handler.cache_dir = str(tmp_path)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), aptproxy.Handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield server.server_address
    server.shutdown()
    server.server_close()


def _get(addr, url):
    conn = http.client.HTTPConnection(*addr, timeout=10)
    conn.request("GET", url)
    resp = conn.getresponse()
    return resp.status, resp.read(), dict(resp.getheaders())


def test_other_hosts_are_refused(proxy):
    status, body, _ = _get(proxy, "http://example.com/debian/pool/x.deb")
    assert status == 403 and b"deb.debian.org" in body


def test_a_cached_file_is_served_without_upstream(proxy, tmp_path):
    path = aptproxy.cache_path(str(tmp_path), "deb.debian.org", "/debian/pool/main/t/t_1_all.deb")
    os.makedirs(os.path.dirname(path))
    with open(path, "wb") as f:
        f.write(b"DEB")
    status, body, headers = _get(proxy, "http://deb.debian.org/debian/pool/main/t/t_1_all.deb")
    assert (status, body, headers.get("X-Pft-Cache")) == (200, b"DEB", "hit")


