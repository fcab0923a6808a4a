# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of pft_reservation (real files and flock in a temporary directory)."""
import json
import multiprocessing
import os

import pytest
from ansible.module_utils.pft_reservation import ReservationError, ReservationStore


class Clock:
    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def store(tmp_path, clock):
    return ReservationStore(str(tmp_path / "res"), lock_timeout=5, clock=clock)


def test_reserve_first_free_host(store):
    out = store.reserve(["n1", "n2"], "evac-a", ttl=60)
    assert out["host"] == "n1" and out["changed"] is True
    data = json.load(open(os.path.join(store.directory, "n1.json")))
    assert data["owner"] == "evac-a" and data["expires"] == data["created"] + 60
    out = store.reserve(["n1", "n2"], "evac-b", ttl=60)
    assert out["host"] == "n2" and out["skipped"] == {"n1": "evac-a"}


def test_same_owner_is_idempotent(store):
    first = store.reserve(["n1", "n2"], "evac-a", ttl=60)
    again = store.reserve(["n2", "n1"], "evac-a", ttl=60)
    assert again["host"] == "n1" and again["changed"] is False
    assert again["reservation"]["id"] == first["reservation"]["id"]


def test_no_free_host_is_a_clear_none(store):
    store.reserve(["n1"], "evac-a", ttl=60)
    out = store.reserve(["n1"], "evac-b", ttl=60)
    assert out["host"] is None and out["changed"] is False
    assert "no spare" in out["reason"] and "n1 by evac-a" in out["reason"]


def test_expired_reservation_is_taken_over_and_reported(store, clock):
    store.reserve(["n1"], "evac-a", ttl=10)
    clock.now += 11
    out = store.reserve(["n1"], "evac-b", ttl=10)
    assert out["host"] == "n1" and out["reclaimed"][0]["owner"] == "evac-a"
    assert store.active()["n1"].owner == "evac-b"


def test_release_only_by_owner_unless_force(store):
    store.reserve(["n1"], "evac-a", ttl=60)
    out = store.release(["n1"], owner="evac-b")
    assert out["refused"] == {"n1": "evac-a"} and not out["changed"]
    out = store.release(owner="evac-a")
    assert [r["host"] for r in out["released"]] == ["n1"] and out["changed"]
    assert store.active() == {}
    store.reserve(["n2"], "evac-a", ttl=60)
    assert store.release(["n2"], force=True)["changed"]


def test_release_absent_host(store):
    out = store.release(["n9"], owner="evac-a")
    assert out["absent"] == ["n9"] and not out["changed"]


def test_release_needs_owner(store):
    with pytest.raises(ReservationError):
        store.release(["n1"])


def test_reclaim_removes_only_expired(store, clock):
    store.reserve(["n1"], "evac-a", ttl=10)
    store.reserve(["n2"], "evac-b", ttl=100)
    clock.now += 50
    assert [r["host"] for r in store.reclaim(dry_run=True)] == ["n1"]
    assert len(store.list()) == 2
    assert [r["host"] for r in store.reclaim()] == ["n1"]
    assert [r.host for r in store.list()] == ["n2"]


def test_dry_run_writes_nothing(store, clock):
    out = store.reserve(["n1"], "evac-a", ttl=60, dry_run=True)
    assert out["host"] == "n1" and out["changed"] is True
    assert not os.path.exists(store.directory)
    store.reserve(["n1"], "evac-a", ttl=5)
    clock.now += 10
    before = sorted(os.listdir(store.directory))
    out = store.reserve(["n1"], "evac-b", ttl=60, dry_run=True)
    assert out["host"] == "n1" and out["reclaimed"]
    assert store.release(owner="evac-a", dry_run=True)["released"]
    assert sorted(os.listdir(store.directory)) == before
    assert store.list()[0].owner == "evac-a"


@pytest.mark.parametrize("host", ["", ".hidden", "../etc/passwd", "a/b", "-x", "x y", None])
def test_bad_host_names_are_refused(store, host):
    with pytest.raises(ReservationError) as err:
        store.reserve([host], "evac-a")
    assert repr(host) in str(err.value)


@pytest.mark.parametrize("owner", ["", " ", "a\nb", None])
def test_bad_owner_refused(store, owner):
    with pytest.raises(ReservationError):
        store.reserve(["n1"], owner)


def test_bad_ttl_and_relative_directory(store, tmp_path):
    with pytest.raises(ReservationError):
        store.reserve(["n1"], "a", ttl=0)
    with pytest.raises(ReservationError):
        ReservationStore("relative/dir")


def test_corrupt_file_is_named(store):
    os.makedirs(store.directory)
    with open(os.path.join(store.directory, "n1.json"), "w") as handle:
        handle.write("{not json")
    with pytest.raises(ReservationError) as err:
        store.list()
    assert "n1.json" in str(err.value)


def test_lock_deadline(store):
    import fcntl
    os.makedirs(store.directory)
    fd = os.open(os.path.join(store.directory, ".lock"), os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        # flock locks belong to the open file description: a second open() in this process conflicts too.
        quick = ReservationStore(store.directory, lock_timeout=0.2)
        with pytest.raises(ReservationError) as err:
            quick.reserve(["n1"], "a")
        assert "still held" in str(err.value)
    finally:
        os.close(fd)


def _reserve_worker(args):
    directory, owner, hosts = args
    return ReservationStore(directory, lock_timeout=30).reserve(hosts, owner, ttl=600)["host"]


def test_parallel_processes_never_get_the_same_host(tmp_path):
    directory = str(tmp_path / "res")
    hosts = ["s1", "s2", "s3"]
    with multiprocessing.get_context("fork").Pool(8) as pool:
        got = pool.map(_reserve_worker, [(directory, "evac-%d" % i, hosts) for i in range(16)])
    winners = [h for h in got if h]
    assert sorted(winners) == hosts  # each spare exactly once, 13 clear "no spare"
    assert got.count(None) == 13
