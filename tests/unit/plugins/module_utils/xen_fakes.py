# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Fakes and recorded outputs shared by the unit tests of the pft_xen* module_utils.

Outputs come from fixtures recorded on the Xen testbed (fixtures/xen/, each with a header saying how it
was recorded).
"""
import os
import time

from ansible.module_utils.pft_xen_migration_log import MigrationLog

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "xen")


def fixture(name):
    """A recorded output without its '#' header lines."""
    with open(os.path.join(FIXTURES, name)) as f:
        lines = f.read().split("\n")
    while lines and lines[0].startswith("#"):
        lines.pop(0)
    return "\n".join(lines)


def migration_lines(name):
    """A recorded xl_output: lines '<seconds> <line>' as xen_migrate returns them."""
    out = []
    for line in fixture(name).split("\n"):
        if not line.strip():
            continue
        t, _, text = line.strip().partition(" ")
        out.append((float(t), text))
    return out


def replay(name):
    log = MigrationLog(0.0)
    events = []
    for t, line in migration_lines(name):
        events += [(t, e[0]) for e in log.feed(t, line)]
    return log, events


class FakeXl(object):
    """Answers argv with recorded outputs; records the calls."""

    def __init__(self, answers):
        self.answers, self.calls = answers, []

    def __call__(self, argv, timeout, *a, **kw):
        self.calls.append(list(argv))
        for key, value in self.answers.items():
            if list(argv[:len(key)]) == list(key):
                return value
        return 1, "", "unexpected call %s" % argv


def recorded_xl():
    return FakeXl({
        ("/usr/sbin/xl", "list", "-l"): (0, fixture("xl-list-l.json.txt"), ""),
        ("/usr/sbin/xl", "list"): (0, fixture("xl-list.txt"), ""),
        ("/usr/sbin/xl", "uptime"): (0, fixture("xl-uptime.txt"), ""),
        ("/usr/sbin/xl", "info"): (0, fixture("xl-info.txt"), ""),
        ("dpkg-query",): (0, "4.17.5+72-g01140da4e8-1", ""),
    })


class Scripted(FakeXl):
    """xl list on the source and pft-probe on the target, from small texts."""

    def __init__(self, source_list, target_list, free=600):
        probe = ("== xl-info\nhost : t\nfree_memory : %d\ntotal_memory : 1151\nxen_version : 4.17.5-pre\n"
                 "virt_caps : pv hvm shadow\n== xl-list\n%s\n== toolstack\nV\n== end\n" % (free, target_list))
        super(Scripted, self).__init__({
            ("/usr/sbin/xl", "list"): (0, source_list, ""),
            ("ssh",): (0, probe, ""),
            ("dpkg-query",): (0, "V", ""),
        })


HEAD = "Name                                        ID   Mem VCPUs\tState\tTime(s)\n"


DOM0 = "Domain-0                                     0   512     1     r-----      52.1\n"


G = "g                                            3   128     1     -b----       8.4\n"


INCOMING = "g--incoming                                  7   128     1     --p---       0.1\n"


def isolate_lock_dir(tmp_path, monkeypatch):
    """migrate() takes the guest's migration lock and domain_info() lists the held ones: here under
    tmp_path, never in this machine's /run/pft/migrate."""
    import ansible.module_utils.pft_xen_lock as pft_xen_lock
    import ansible.module_utils.pft_xen_migrate as pft_xen_migrate
    monkeypatch.setattr(pft_xen_lock, "LOCK_DIR", str(tmp_path / "run-pft-migrate"))
    monkeypatch.setattr(pft_xen_migrate, "LOCK_DIR", str(tmp_path / "run-pft-migrate"))


class Looks(object):
    """The looks of migrate() around xl: the source's `xl list` and the target's pft-probe, each a
    list of outputs given out in turn (the last one repeats): before xl, then after."""

    def __init__(self, xl, source_lists, target_lists):
        self.xl, self.sources, self.targets, self.calls = xl, list(source_lists), list(target_lists), []

    @staticmethod
    def _next(outputs):
        return outputs.pop(0) if len(outputs) > 1 else outputs[0]

    def __call__(self, argv, timeout, *a, **kw):
        self.calls.append(list(argv))
        if argv[:2] == [self.xl, "list"]:
            return 0, self._next(self.sources), ""
        if argv[0] == "ssh":
            return 0, ("== xl-info\nhost : t\nfree_memory : 600\ntotal_memory : 1151\nxen_version : 4.17.5-pre\n"
                       "virt_caps : pv hvm shadow\n== xl-list\n%s\n== toolstack\nV\n== end\n"
                       % self._next(self.targets)), ""
        if argv[0] == "dpkg-query":
            return 0, "V", ""
        return 1, "", "unexpected call %s" % argv


def wait_for(predicate, timeout=10.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()
