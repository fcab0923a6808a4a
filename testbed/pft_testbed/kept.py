# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Kept clusters: a converged testbed's nodes, saved once and loaded again instead of a converge.

A converge of ``playbooks/site.yml`` from bare nodes costs 20-40 min under TCG. Its result only
changes when one of its inputs does, so after a converge (and its idempotent second run) pass,
the e2e suite keeps each node's whole state, disk and RAM, as one QEMU internal snapshot
(``savevm``) in a copy of the node's qcow2. The next session whose inputs hash to the same key
loads those snapshots (``-loadvm``) instead of converging, and runs ``site.yml`` once to show that
it changes nothing.

Layout (``<cache>/kept/<key>/``)::

    meta.json        the key's inputs, the testbed plan, the BMC password, when and how long
    id_ed25519{,.pub} the testbed's ssh key (the nodes' authorized_keys hold its public half)
    <node>.qcow2     the node's disk over the base image, with the snapshot SNAPSHOT inside
    controller/      the controller files the nodes depend on (:func:`controller_files`), put
                     back after a restore

The key (:func:`converge_key`) hashes everything the converge reads: ``site.yml``, the roles it runs
(:func:`converge_roles`), the
pft modules that the roles and ``site.yml`` call, the module_utils those modules import and the
roles install on the nodes (:func:`converge_code`: found by reading them, so a new call or import
changes the key), the testbed site inventory, ansible.cfg, the pinned package lists, the base
image, the testbed code that shapes a node (image, identity, QEMU command line, inventory), the
testbed's plan (names, addresses, MACs, memory), the ansible-core version and the QEMU version.
The watch's playbooks, its role and the modules only the watch runs are not inputs: a change there leaves
the kept cluster valid (the warm run's second ``site.yml`` still shows that it changes nothing).
Files the converge makes on the controller and reuses (the cluster's migration key) are not in
the key: :func:`KeptCluster.valid` compares them with the ones recorded when the cluster was kept.
"""
import hashlib
import json
import os
import re
import shutil
import time

from pft_testbed.image import default_cache_dir

SNAPSHOT = "pft-kept"          # the whole cluster at one cut: Testbed.restore loads it
RESET = "pft-reset"             # a node with its guests paused: Testbed.reset_node loads it, destroys them
KEEP_LAST = 2                   # kept clusters on disk (each about 5 x 1.5 GB); older ones are removed
FORMAT = 2                      # bump when the layout changes: old kept clusters then never match

# What the converge reads, relative to the repository. Directories are hashed file by file
# (relative path, mode and contents); a symlink by its target.
REPO_INPUTS = (
    "playbooks/site.yml",
    "inventory/testbed-site",
    "ansible.cfg",
    "requirements-apt.txt",
    "requirements.txt",
    "requirements.yml",
)
# The testbed code that shapes a node: its image, identity, QEMU command line, inventory.
TESTBED_INPUTS = (
    "testbed/pft_testbed/image.py",
    "testbed/pft_testbed/imagefiles",
    "testbed/pft_testbed/config.py",
    "testbed/pft_testbed/testbed.py",
    "testbed/pft_testbed/inventory.py",
    "testbed/pft_testbed/kept.py",
)
IGNORED_NAMES = ("__pycache__", ".pytest_cache")


def _digest_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tree_entries(repo, rel):
    """[(relative path, kind, mode, digest)] of a file or directory under repo, sorted.

    A missing input is an entry too (kind "missing"), so that creating it changes the key."""
    top = os.path.join(repo, rel)
    if os.path.islink(top):
        return [(rel, "link", 0, os.readlink(top))]
    if os.path.isfile(top):
        return [(rel, "file", os.stat(top).st_mode & 0o7777, _digest_file(top))]
    if not os.path.isdir(top):
        return [(rel, "missing", 0, "")]
    entries = []
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = sorted(d for d in dirnames if d not in IGNORED_NAMES)
        for name in sorted(filenames):
            if name.endswith((".pyc", ".pyo")):
                continue
            path = os.path.join(dirpath, name)
            relpath = os.path.relpath(path, repo)
            if os.path.islink(path):
                entries.append((relpath, "link", 0, os.readlink(path)))
            else:
                entries.append((relpath, "file", os.stat(path).st_mode & 0o7777, _digest_file(path)))
    return entries


MODULES_DIR = "plugins/modules"
MODULE_UTILS_DIR = "plugins/module_utils"
LIBRARY_DIR = "library"
ROLES_DIR = "roles"
SITE_PLAYBOOK = "playbooks/site.yml"
# A role the converge runs: `- role: NAME` or `roles: [NAME]` in site.yml, `name: NAME` under an
# include_role/import_role, or a meta dependency.
_ROLE_REF = re.compile(r"(?:role|name):\s*['\"]?([A-Za-z0-9_.]+)['\"]?\s*$"
                       r"|^\s*-\s+['\"]?([A-Za-z0-9_]+)['\"]?\s*$", re.M)
# A module used as a task: `pft_files:` or `- pft.cluster.pft_files:` at the start of a line.
_TASK_KEY = r"^[ \t]*(?:-[ \t]+)?(?:[A-Za-z0-9_]+\.[A-Za-z0-9_]+\.)?({names})[ \t]*:"
# A module_util named in code or a role: an Ansible import, a plain import on a node, a file name.
_UTIL_REFS = (re.compile(r"ansible\.module_utils\.(\w+)"), re.compile(r"^\s*(?:from|import)\s+(\w+)", re.M),
              re.compile(r"\b(\w+)\.py\b"))


def _texts(repo, rel):
    """(relative path, text) of every readable file at or under rel."""
    for path, kind, _, _ in tree_entries(repo, rel):
        if kind != "file":
            continue
        try:
            with open(os.path.join(repo, path), encoding="utf-8") as f:
                yield path, f.read()
        except (OSError, UnicodeDecodeError):
            continue


def _names(repo, rel, suffix=".py"):
    top = os.path.join(repo, rel)
    if not os.path.isdir(top):
        return set()
    return {n[:-len(suffix)] for n in os.listdir(top) if n.endswith(suffix)}


def converge_roles(repo):
    """Relative paths of the roles a converge of site.yml runs (whole directories): those site.yml
    names, and the roles they name in turn (include_role, import_role, meta dependencies). A name
    counts only when a role of that name exists, so a superset at worst; the watch's own role
    (pft_watch), which site.yml does not run, is not an input."""
    top = os.path.join(repo, ROLES_DIR)
    roles = set(os.listdir(top)) if os.path.isdir(top) else set()
    def refs(text):
        return {name for m in _ROLE_REF.finditer(text) for name in m.groups() if name in roles}

    def called_by(name):
        return {n for rel, text in _texts(repo, f"{ROLES_DIR}/{name}")
                if rel.endswith((".yml", ".yaml")) and ("/tasks/" in rel or "/meta/" in rel or "/handlers/" in rel)
                for n in refs(text)}

    start = {n for _, text in _texts(repo, SITE_PLAYBOOK) for n in refs(text)}
    return sorted(f"{ROLES_DIR}/{name}" for name in _closure(start, called_by))


def _closure(start, follow):
    """Every name reachable from the set ``start`` through ``follow(name)`` (a set of names), ``start``
    included; each name is followed once."""
    seen, pending = set(), set(start)
    while pending:
        name = pending.pop()
        if name not in seen:
            seen.add(name)
            pending |= follow(name) - seen
    return seen


def _callers(repo):
    return tuple(converge_roles(repo)) + (SITE_PLAYBOOK,)


def converge_code(repo):
    """Relative paths of the pft modules and module_utils a converge of site.yml runs or installs.

    The modules are those that a role or site.yml uses as a task, with their ``library/`` links;
    the module_utils are those that these modules import, that a role names (installs on a node,
    or a template imports), and what those import in turn. Found by reading the files, so this is
    a superset when a name only appears in a comment: a key that changes too often costs a
    converge, one that changes too seldom passes off an old converge as this one."""
    modules = _names(repo, MODULES_DIR)
    utils = _names(repo, MODULE_UTILS_DIR)
    caller_texts = [text for rel in _callers(repo) for _, text in _texts(repo, rel)]
    used = set()
    if modules:
        task_key = re.compile(_TASK_KEY.format(names="|".join(sorted(map(re.escape, modules)))), re.M)
        for text in caller_texts:
            used.update(m.group(1) for m in task_key.finditer(text))

    def util_refs(text):
        return {m.group(1) for ref in _UTIL_REFS for m in ref.finditer(text) if m.group(1) in utils}

    start = {n for text in caller_texts for n in util_refs(text)}
    out = set()
    for name in sorted(used):
        out.add(f"{MODULES_DIR}/{name}.py")
        if os.path.lexists(os.path.join(repo, LIBRARY_DIR, f"{name}.py")):
            out.add(f"{LIBRARY_DIR}/{name}.py")
        start |= {n for _, text in _texts(repo, f"{MODULES_DIR}/{name}.py") for n in util_refs(text)}

    def imported_by(name):
        return {n for _, text in _texts(repo, f"{MODULE_UTILS_DIR}/{name}.py") for n in util_refs(text)}

    out |= {f"{MODULE_UTILS_DIR}/{name}.py" for name in _closure(start, imported_by)}
    return sorted(out)


def converge_inputs(repo, plan, image, ansible_version, qemu_version="", extra=None):
    """Everything that decides what a converge of the testbed makes, as a JSON-able dict.

    ``plan``: the testbed's plan as a dict (``Plan.to_dict()``); ``image``: the base image's path
    (its directory name is the image's own input hash); ``qemu_version``: the first line of
    ``qemu-system-x86_64 --version`` (a snapshot is only sure to load into the QEMU that saved
    it); ``extra``: anything else the caller's converge depends on (e.g. extra-vars)."""
    files = []
    for rel in REPO_INPUTS + tuple(converge_roles(repo)) + tuple(converge_code(repo)) + TESTBED_INPUTS:
        files.extend(tree_entries(repo, rel))
    return {
        "format": FORMAT,
        "files": files,
        "plan": plan,
        "image": os.path.basename(os.path.dirname(image)) + "/" + os.path.basename(image),
        "ansible": ansible_version,
        "qemu": qemu_version,
        "extra": extra or {},
    }


def converge_key(inputs):
    """Short stable hash of :func:`converge_inputs`: the kept cluster's directory name."""
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(canonical).hexdigest()[:20]


def qemu_version():
    """First line of ``qemu-system-x86_64 --version`` ("" if it cannot be run)."""
    import subprocess
    try:
        out = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return ""
    return (out.stdout.splitlines() or [""])[0].strip()


def kept_root(cache_dir=None):
    return os.path.join(cache_dir or default_cache_dir(), "kept")


class KeptCluster:
    """One kept cluster on disk: ``<cache>/kept/<key>/``."""

    def __init__(self, key, cache_dir=None):
        self.key = key
        self.root = kept_root(cache_dir)
        self.path = os.path.join(self.root, key)
        self.meta_file = os.path.join(self.path, "meta.json")

    def disk(self, node):
        return os.path.join(self.path, f"{node}.qcow2")

    @property
    def key_file(self):
        return os.path.join(self.path, "id_ed25519")

    def meta(self):
        with open(self.meta_file) as f:
            return json.load(f)

    def exists(self):
        return os.path.exists(self.meta_file)

    @property
    def controller_dir(self):
        return os.path.join(self.path, "controller")

    def save_controller_files(self, cluster_name, home=None):
        """Copy the controller files the kept nodes depend on (:func:`controller_files`) into the
        kept cluster, so that a later converge of another cluster of the same name, which rewrites
        them, leaves this kept cluster usable: :meth:`put_back_controller_files` puts them back.
        Returns the relative paths saved."""
        base = pft_cache(home)
        tmp = self.controller_dir + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        saved = []
        for rel in controller_relpaths(cluster_name):
            src = os.path.join(base, rel)
            if not os.path.exists(src):
                continue
            _copy(src, os.path.join(tmp, rel))
            saved.append(rel)
        shutil.rmtree(self.controller_dir, ignore_errors=True)
        os.makedirs(tmp, exist_ok=True)
        os.replace(tmp, self.controller_dir)
        return saved

    def saved_controller_paths(self, cluster_name, home=None):
        """{absolute path on the controller: saved copy} of the controller files this cluster holds."""
        base = pft_cache(home)
        out = {}
        for rel in controller_relpaths(cluster_name):
            copy = os.path.join(self.controller_dir, rel)
            if os.path.lexists(copy):
                out[os.path.join(base, rel)] = copy
        return out

    def put_back_controller_files(self, cluster_name, home=None):
        """Replace the controller's copies with the ones saved when the cluster was kept (after a
        restore, before anything runs over the kept nodes). Returns the paths replaced."""
        replaced = []
        for path, copy in sorted(self.saved_controller_paths(cluster_name, home).items()):
            tmp = path + ".pft-put-back"
            if os.path.isdir(tmp) and not os.path.islink(tmp):
                shutil.rmtree(tmp)
            elif os.path.lexists(tmp):
                os.unlink(tmp)
            _copy(copy, tmp)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            os.replace(tmp, path)
            replaced.append(path)
        return replaced

    def valid(self, plan_nodes, requires_now, saved=()):
        """(True, "") if the kept cluster can replace a converge, else (False, why).

        ``plan_nodes``: node names the testbed has; ``requires_now``: {path: digest or None} of the
        controller files the converge reuses (see :func:`controller_files`); ``saved``: the paths
        of those that the kept cluster holds a copy of (:meth:`saved_controller_paths`), which are
        put back after the restore, so they need not match now."""
        if not self.exists():
            return False, f"no kept cluster {self.key}"
        try:
            meta = self.meta()
        except (OSError, ValueError) as exc:
            return False, f"unreadable {self.meta_file}: {exc}"
        missing = [n for n in plan_nodes if not os.path.exists(self.disk(n))]
        if missing:
            return False, f"kept cluster {self.key} lacks the disks of {', '.join(missing)}"
        if not os.path.exists(self.key_file):
            return False, f"kept cluster {self.key} lacks its ssh key"
        kept_requires = meta.get("requires", {})
        for path, digest in sorted(kept_requires.items()):
            if path not in saved and requires_now.get(path) != digest:
                return False, (f"{path} changed since the cluster was kept (the kept nodes trust the old "
                               "one): converge again")
        return True, ""

    def remove(self):
        shutil.rmtree(self.path, ignore_errors=True)

    def touch(self):
        """Mark as used (the pruning keeps the most recently used)."""
        os.utime(self.meta_file)


def pft_cache(home=None):
    return os.path.join(home or os.path.expanduser("~"), ".cache", "pft")


def controller_relpaths(cluster_name):
    """The controller files (relative to ~/.cache/pft) a converge makes and later runs reuse."""
    return (f"keys/{cluster_name}-migration", f"keys/{cluster_name}-migration.pub",
            f"guest-boot/{cluster_name}", "shim")


def _copy(src, dst):
    """Copy a file or a tree, modes and symlinks as they are."""
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    if os.path.isdir(src) and not os.path.islink(src):
        shutil.copytree(src, dst, symlinks=True)
    else:
        shutil.copy2(src, dst, follow_symlinks=False)


def controller_files(cluster_name, home=None):
    """{path: digest or None} of what a converge makes on the controller and later runs reuse.

    The kept nodes depend on them: they trust the cluster's migration key pair
    (``~/.cache/pft/keys/<cluster>-migration``), and a run of site.yml compares the nodes' guest
    kernel and initrd (staged in ``~/.cache/pft/guest-boot/<cluster>``) and the xl progress shim
    (``~/.cache/pft/shim``) with the controller's copies. If any changed, a run over the kept
    nodes would change them: the kept cluster is not valid then."""
    base = pft_cache(home)
    out = {}
    for rel in controller_relpaths(cluster_name):
        path = os.path.join(base, rel)
        if not os.path.exists(path):
            out[path] = None
            continue
        h = hashlib.sha256()
        for entry in tree_entries(base, rel):
            h.update(json.dumps(entry).encode())
        out[path] = h.hexdigest()
    return out


def prune(cache_dir=None, keep=KEEP_LAST, progress=print):
    """Remove all but the `keep` most recently used kept clusters, and half-written ones."""
    root = kept_root(cache_dir)
    if not os.path.isdir(root):
        return []
    entries = []
    removed = []
    for name in os.listdir(root):
        path = os.path.join(root, name)
        meta = os.path.join(path, "meta.json")
        if name.endswith(".tmp") or not os.path.exists(meta):
            # a keep that died half way (or one running now: those are younger than an hour)
            if time.time() - os.stat(path).st_mtime > 3600:
                shutil.rmtree(path, ignore_errors=True)
                removed.append(name)
            continue
        entries.append((os.stat(meta).st_mtime, name))
    for _, name in sorted(entries, reverse=True)[keep:]:
        shutil.rmtree(os.path.join(root, name), ignore_errors=True)
        removed.append(name)
    for name in removed:
        progress(f"kept cluster {name}: removed (only the {keep} most recently used are kept)")
    return removed

