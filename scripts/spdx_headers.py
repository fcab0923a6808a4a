#!/usr/bin/env python3
# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Give every source file of the repository pft's one licence header, or check that it has it.

    scripts/spdx_headers.py          add or normalise the header where it is missing
    scripts/spdx_headers.py --check  list the files without it; exit 1 if there are any

The header is two comment lines in the file's own comment syntax:

    Copyright: pft contributors
    SPDX-License-Identifier: GPL-3.0-or-later

It goes after a shebang and a coding line, if the file has them. In a Jinja template it is one
Jinja comment, which renders to nothing (Ansible renders with trim_blocks, so its newline goes
too). The testbed's image files are left alone: they are copied into the base image, whose cache
key is their content (testbed/pft_testbed/image.py), and they are configuration data, not code.
"""
import os
import re
import subprocess
import sys

SPDX = "SPDX-License-Identifier: GPL-3.0-or-later"
COPYRIGHT = "Copyright: pft contributors"
SKIP_PREFIXES = ("testbed/pft_testbed/imagefiles/",)
# Older forms of the header, replaced by the one above.
OLD_LINES = re.compile(r"^#\s*(Copyright: pft contributors|GNU General Public License v3\.0\+.*)\s*$")


def style(path):
    name = os.path.basename(path)
    if name.endswith(".j2"):
        return "jinja"
    if name.endswith((".py", ".yml", ".yaml", ".sh", ".cfg", ".ini", ".conf", ".service")) \
            or name in ("Makefile", ".yamllint", ".gitignore", "run", "testbed"):
        return "hash"
    return None


def tracked(repo):
    out = subprocess.run(["git", "-C", repo, "ls-files"], capture_output=True, text=True, check=True)
    return [p for p in out.stdout.splitlines() if not p.startswith(SKIP_PREFIXES)
            and not os.path.islink(os.path.join(repo, p))]


def has_header(text):
    return SPDX in "\n".join(text.splitlines()[:6])


def add_header(text, kind):
    lines = text.splitlines(keepends=True)
    if kind == "jinja":
        head = "{# " + COPYRIGHT + " · " + SPDX + " #}\n"
        if lines and lines[0].startswith("#!"):
            return lines[0] + head + "".join(lines[1:])
        return head + text
    keep = []
    while lines and (lines[0].startswith("#!") or re.match(r"^#.*coding[:=]", lines[0])):
        keep.append(lines.pop(0))
    while lines and OLD_LINES.match(lines[0]):
        lines.pop(0)
    return "".join(keep) + f"# {COPYRIGHT}\n# {SPDX}\n" + "".join(lines)


def main(argv):
    repo = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True,
                          check=True).stdout.strip()
    check = "--check" in argv
    missing = []
    for rel in tracked(repo):
        kind = style(rel)
        if kind is None:
            continue
        path = os.path.join(repo, rel)
        with open(path, encoding="utf-8") as f:
            text = f.read()
        if has_header(text) or text.startswith("$ANSIBLE_VAULT") or "\n$ANSIBLE_VAULT;" in text[:200]:
            continue        # (an encrypted vault file must start with its own header line)
        missing.append(rel)
        if not check:
            mode = os.stat(path).st_mode
            with open(path, "w", encoding="utf-8") as f:
                f.write(add_header(text, kind))
            os.chmod(path, mode)
    if check and missing:
        print("no licence header (scripts/spdx_headers.py adds it):\n  " + "\n  ".join(missing))
        return 1
    if not check:
        print(f"header added to {len(missing)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
