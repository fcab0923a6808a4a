#!/usr/bin/env python3
# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Bring the e2e testbed up with the kept cluster that matches this tree loaded, for development.

    scripts/kept_up.py [--name e2e]

It runs testbed up (unless the testbed is already running), loads the kept cluster whose converge key
matches this tree (docs/site.md, "How CI stays within its budget"), and puts back its controller files.
It does not run site.yml over it; the test suite's warm run does that. It took about 2 min here, against
about 17 min for ``PFT_E2E_SITE=1 PFT_E2E_KEEP=1 pytest -m e2e tests/e2e/test_site.py``. Then run tests
on it with

    PFT_E2E_SITE=1 PFT_E2E_REUSE=1 PFT_E2E_SITE_PROVISIONED=1 PFT_E2E_KEEP=1 pytest -m e2e tests/e2e/...

and take it down with ``testbed/testbed --name e2e down``.
"""
import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
for sub in ("scripts", "testbed", "tests", os.path.join("tests", "e2e")):
    sys.path.insert(0, os.path.join(REPO, sub))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", default="e2e")
    args = ap.parse_args()
    os.chdir(REPO)
    import conftest  # tests/e2e/conftest.py: the suite's own plan and key

    from pft_testbed.testbed import Testbed
    started = time.monotonic()
    tb = Testbed(args.name, progress=lambda msg: print("[testbed]", msg, flush=True))
    if not tb.exists():
        tb.up(compute=conftest.COMPUTE, spares=conftest.SPARES)
    kept, why = conftest._kept_cluster(tb)
    if kept is None:
        sys.exit("no kept cluster for this tree: %s (a make test, or tests/e2e/test_site.py, keeps one)" % why)
    print("kept cluster %s loaded in %.0f s" % (kept.key, tb.restore(kept)))
    print("controller files put back:", ", ".join(kept.put_back_controller_files("pft-%s" % args.name)) or "none")
    print("testbed %s ready in %.0f s" % (args.name, time.monotonic() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
