# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of the checkpoint image and reactive restore of pft_xen (xen_prestage checkpoint=true,
xen_restore): the delta stream on real files, the target's receiver through the rendered forced command,
and the xl/ssh orchestration with a fake runner. Real Xen: tests/e2e/test_xen_basic.py
(test_checkpoint_then_restore_on_the_spare).
"""
import hashlib
import io
import os
import re
import shutil
import subprocess

import jinja2
import pytest
from ansible.module_utils.pft_xen import XenError
from ansible.module_utils.pft_xen_checkpoint import (
    CKPT_MAGIC,
    XL_SAVE_MAGIC,
    check_blocksize,
    checkpoint,
    ckpt_apply,
    ckpt_delta,
    ckpt_receiver_main,
    ckpt_sums,
    format_sums,
    parse_sums,
    restore,
)
from ansible.module_utils.pft_xen_prestage import prestage
from pft_paths import REPO

BS = 4096


def image(path, blocks, seed=1, tail=0):
    """An 'xl save' file: the xl magic, then pseudo-random bytes, blocks * BS + tail long."""
    data = bytearray()
    n = 0
    while len(data) < blocks * BS + tail:
        data += hashlib.sha256(b"%d-%d" % (seed, n)).digest()
        n += 1
    data = XL_SAVE_MAGIC + bytes(data[len(XL_SAVE_MAGIC):blocks * BS + tail])
    path.write_bytes(data)
    return data


def change(path, blocks):
    data = bytearray(path.read_bytes())
    for b in blocks:
        data[b * BS + 100] ^= 0xFF
    path.write_bytes(bytes(data))


def send(src, target_dir, guest="g"):
    """Sums of the target's image, the delta, applied there. Returns (stats, apply result, stream bytes)."""
    remote = parse_sums(format_sums(ckpt_sums(os.path.join(target_dir, guest + ".save"), BS)), BS)
    buf = io.BytesIO()
    stats = ckpt_delta(str(src), BS, remote, buf, created=1700000000.0)
    stream = buf.getvalue()
    res = ckpt_apply(io.BytesIO(stream), guest, str(target_dir))
    return stats, res, stream


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def leftovers(directory):
    return sorted(f for f in os.listdir(directory) if f.endswith(".tmp"))


# --------------------------------------------------------------------------- delta on real files


def test_first_checkpoint_sends_everything_then_only_changed_blocks(tmp_path):
    src, tgt = tmp_path / "g.src", tmp_path / "target"
    image(src, 40)
    stats, res, _ = send(src, tgt)
    assert stats["blocks_total"] == 40 and stats["blocks_sent"] == 40
    assert sha(tgt / "g.save") == sha(src) == res["sha256"] == stats["sha256"]
    assert os.stat(tgt / "g.save").st_mtime == pytest.approx(1700000000.0)
    assert oct(os.stat(tgt).st_mode & 0o777) == "0o700"
    change(src, [0, 17, 39])
    stats, res, stream = send(src, tgt)
    assert stats["blocks_sent"] == 3 and res["blocks_received"] == 3
    assert len(stream) < 4 * BS
    assert sha(tgt / "g.save") == sha(src)
    stats, _, _ = send(src, tgt)                         # nothing changed: nothing but the header and end
    assert stats["blocks_sent"] == 0 and sha(tgt / "g.save") == sha(src)
    assert leftovers(tgt) == []


def test_truncated_and_extended_images(tmp_path):
    src, tgt = tmp_path / "g.src", tmp_path / "target"
    image(src, 20)
    send(src, tgt)
    image(src, 12, tail=123)                             # shorter, partial last block
    stats, _, _ = send(src, tgt)
    assert stats["blocks_sent"] == 1 and stats["size"] == 12 * BS + 123     # only the partial block
    assert sha(tgt / "g.save") == sha(src)
    image(src, 30, tail=7)                               # longer again
    stats, _, _ = send(src, tgt)
    assert stats["blocks_sent"] == 31 - 12 and sha(tgt / "g.save") == sha(src)
    src.write_bytes(b"")                                 # empty
    stats, _, _ = send(src, tgt)
    assert stats["blocks_total"] == 0 and os.path.getsize(tgt / "g.save") == 0


@pytest.mark.parametrize("damage", ["flip", "cut", "extra", "magic", "bad_record", "long_record", "end_sha"])
def test_a_bad_stream_keeps_the_old_image(tmp_path, damage):
    src, tgt = tmp_path / "g.src", tmp_path / "target"
    image(src, 10)
    send(src, tgt)
    before = sha(tgt / "g.save")
    change(src, [2, 5])
    remote = ckpt_sums(str(tgt / "g.save"), BS)
    buf = io.BytesIO()
    ckpt_delta(str(src), BS, remote, buf)
    stream = buf.getvalue()
    first = stream.index(b"\nD ") + 1
    if damage == "flip":
        i = stream.index(b"\n", first) + 50
        stream = stream[:i] + bytes([stream[i] ^ 1]) + stream[i + 1:]
    elif damage == "cut":
        stream = stream[:first + 2000]
    elif damage == "extra":
        stream += b"junk"
    elif damage == "magic":
        stream = b"XFTCKPT" + stream[7:]
    elif damage == "bad_record":
        stream = stream[:first] + b"X 0 1\n"
    elif damage == "long_record":
        stream = stream[:first] + b"D 0 %d\n" % (BS + 1) + b"\0" * (BS + 1)
    elif damage == "end_sha":
        stream = stream[:stream.rindex(b"E ")] + b"E %d %s\n" % (10 * BS, b"0" * 64)
    with pytest.raises(XenError):
        ckpt_apply(io.BytesIO(stream), "g", str(tgt))
    assert sha(tgt / "g.save") == before
    assert leftovers(tgt) == []


def test_the_image_changed_since_its_sums(tmp_path):
    src, tgt = tmp_path / "g.src", tmp_path / "target"
    image(src, 10)
    send(src, tgt)
    remote = ckpt_sums(str(tgt / "g.save"), BS)
    change(tgt / "g.save", [1])
    before = sha(tgt / "g.save")
    change(src, [3])
    buf = io.BytesIO()
    ckpt_delta(str(src), BS, remote, buf)
    with pytest.raises(XenError, match="not the one the sums were taken from"):
        ckpt_apply(io.BytesIO(buf.getvalue()), "g", str(tgt))
    assert sha(tgt / "g.save") == before


def test_sums_format_and_validation(tmp_path):
    assert parse_sums("none\n", BS) is None
    assert ckpt_sums(str(tmp_path / "missing"), BS) is None
    image(tmp_path / "i", 3, tail=1)
    s = ckpt_sums(str(tmp_path / "i"), BS)
    assert len(s["blocks"]) == 4 and parse_sums(format_sums(s), BS) == s
    text = format_sums(s)
    for bad in (text.replace("\nend\n", "\n"), text.replace("blocksize 4096", "blocksize 8192"),
                "\n".join(text.splitlines()[:-2] + ["end"]), "size x\n", "", "Permission denied"):
        with pytest.raises(XenError, match="unexpected checkpoint sums"):
            parse_sums(bad, BS)
    for bad in (0, 1000, 4097, 128 * 1024 * 1024, "4096", True):
        with pytest.raises(XenError, match="block size"):
            check_blocksize(bad)
    assert check_blocksize(256 * 1024) == 256 * 1024


@pytest.mark.parametrize("argv", [[], ["sums", "g"], ["sums", "../g", "4096"], ["sums", "g", "12"],
                                  ["sums", "g", "-1"], ["put"], ["put", "a/b"], ["put", "Domain-0"],
                                  ["put", "g", "x"], ["rm", "g"]])
def test_receiver_refuses_bad_arguments(tmp_path, argv):
    err = io.StringIO()
    assert ckpt_receiver_main(argv, directory=str(tmp_path / "d"), stdin=io.BytesIO(), stdout=io.StringIO(),
                              stderr=err) == 2
    assert "refused" in err.getvalue() and not os.path.exists(tmp_path / "d")


# --------------------------------------------------------------------------- through the forced command


def receiver_lib_files():
    """The module_utils files the xen_host role installs in the receiver's lib dir (tasks/configure.yml)."""
    with open(os.path.join(REPO, "roles", "xen_host", "tasks", "configure.yml")) as f:
        return re.findall(r"xen_host_ckpt_lib_dir \}\}/(pft_\w+\.py)", f.read())


@pytest.fixture
def forced(tmp_path):
    """The forced command and the receiver, rendered; the receiver's lib dir holds only what the role installs."""
    lib = tmp_path / "lib"
    lib.mkdir()
    for name in receiver_lib_files():
        shutil.copy(os.path.join(REPO, "plugins", "module_utils", name), lib / name)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(os.path.join(REPO, "roles", "xen_host", "templates")),
                             keep_trailing_newline=True, trim_blocks=True)
    env.filters["comment"] = lambda text: "# " + text
    variables = dict(ansible_managed="test", xen_host_xl_path=str(tmp_path / "xl"),
                     xen_host_ckpt_helper=str(tmp_path / "pft-ckpt-recv"),
                     xen_host_ckpt_lib_dir=str(lib),
                     xen_host_ckpt_dir=str(tmp_path / "checkpoints"))
    (tmp_path / "xl").write_text("#!/bin/sh\necho \"XL $*\"\n")
    for name, dest in (("pft-migrate-receive.j2", "pft-migrate-receive"), ("pft-ckpt-recv.py.j2", "pft-ckpt-recv")):
        (tmp_path / dest).write_text(env.get_template(name).render(**variables))
        (tmp_path / dest).chmod(0o755)
    return str(tmp_path / "pft-migrate-receive"), tmp_path / "checkpoints"


def run_forced(wrapper, command, data=b""):
    return subprocess.run([wrapper], input=data, capture_output=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "SSH_ORIGINAL_COMMAND": command})


def test_forced_command_checkpoint_verbs(forced, tmp_path):
    wrapper, ckdir = forced
    out = run_forced(wrapper, "pft-ckpt-sums guest1 4096")
    assert out.returncode == 0, out.stderr
    assert out.stdout == b"none\n"
    src = tmp_path / "src"
    image(src, 8)
    buf = io.BytesIO()
    stats = ckpt_delta(str(src), BS, None, buf)
    out = run_forced(wrapper, "pft-ckpt-put guest1", buf.getvalue())
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == b"ok" and out.stdout.split()[3].decode() == stats["sha256"]
    assert sha(ckdir / "guest1.save") == sha(src)
    out = run_forced(wrapper, "pft-ckpt-sums guest1 4096")
    remote = parse_sums(out.stdout.decode(), BS)
    assert remote["sha256"] == stats["sha256"] and len(remote["blocks"]) == 8
    out = run_forced(wrapper, "pft-ckpt-put guest1", buf.getvalue()[:-30])          # cut: refused, image kept
    assert out.returncode == 1 and b"previous checkpoint is unchanged" in out.stderr
    assert sha(ckdir / "guest1.save") == sha(src)


@pytest.mark.parametrize("command", [
    "pft-ckpt-sums", "pft-ckpt-sums guest1", "pft-ckpt-sums guest1 4096 x", "pft-ckpt-sums ../etc 4096",
    "pft-ckpt-sums a/b 4096", "pft-ckpt-sums g..x 4096", "pft-ckpt-sums -g 4096", "pft-ckpt-sums g 4k",
    "pft-ckpt-sums g 04096", "pft-ckpt-sums g $(id)", "pft-ckpt-sums Domain-0 4096", "pft-ckpt-put",
    "pft-ckpt-put g extra", "pft-ckpt-put /var/lib/pft/checkpoints/g", "pft-ckpt-put g;id", "pft-ckpt-put *",
    "pft-ckpt-put " + "x" * 65, "pft-ckpt-get g", "pft-ckpt-sums g 1234567890",
])
def test_forced_command_refuses_bad_checkpoint_verbs(forced, command):
    wrapper, ckdir = forced
    out = run_forced(wrapper, command, b"PFTCKPT 1\n")
    assert out.returncode == 126, (command, out.stdout, out.stderr)
    assert b"may only run" in out.stderr and not os.path.exists(ckdir)


def test_forced_command_helper_refuses_what_the_shell_lets_through(forced):
    """The helper checks again: a block size the shell accepts but pft_xen does not."""
    wrapper, ckdir = forced
    out = run_forced(wrapper, "pft-ckpt-sums g 1000")
    assert out.returncode == 2 and b"block size" in out.stderr


# --------------------------------------------------------------------------- orchestration (fake xl and ssh)

HEAD = "Name                                        ID   Mem VCPUs\tState\tTime(s)\n"
DOM0 = "Domain-0                                     0   512     1     r-----      52.1\n"
ROW = "%-44s 3   128     1     %s       8.4\n"


class Node(object):
    """xl on this dom0 and, through 'ssh', the target's forced command (its receiver in a directory)."""

    def __init__(self, tmp_path, guests=("g",), target_guests=(), target_answers=True):
        self.tmp, self.guests, self.target_guests = tmp_path, dict((g, "-b----") for g in guests), target_guests
        self.target_dir = str(tmp_path / "target")
        self.target_answers = target_answers
        self.calls, self.seed = [], 1
        self.save_rc, self.restore_rc, self.state_after_save = 0, 0, "-b----"

    def listing(self, names):
        return HEAD + DOM0 + "".join(ROW % (n, s) for n, s in names.items())

    def __call__(self, argv, timeout, stdin_path=None, **kw):
        self.calls.append(list(argv))
        if argv[0] == "ssh":
            if not self.target_answers:
                return 255, "", "ssh: connect to host %s port 22: No route to host" % argv[-2]
            words = argv[-1].split()
            out, err = io.StringIO(), io.StringIO()
            if words[0] == "pft-probe":
                return 0, ("== xl-info\nhost : t\nfree_memory : 900\ntotal_memory : 1151\nxen_version : 4.17.5\n"
                           "virt_caps : pv hvm shadow\n== xl-list\n%s\n== toolstack\nV\n== end\n"
                           % self.listing(dict((g, "-b----") for g in self.target_guests))), ""
            if words[0] == "pft-ckpt-sums":
                rc = ckpt_receiver_main(["sums"] + words[1:], self.target_dir, stdout=out, stderr=err)
            elif words[0] == "pft-ckpt-put":
                with open(stdin_path, "rb") as f:
                    rc = ckpt_receiver_main(["put"] + words[1:], self.target_dir, stdin=f, stdout=out, stderr=err)
            else:
                rc = 126
            return rc, out.getvalue(), err.getvalue()
        if argv[1:] == ["list"]:
            return 0, self.listing(self.guests), ""
        if argv[1:3] == ["save", "-c"]:
            image(type(self.tmp)(argv[4]), 32, seed=self.seed)
            self.guests[argv[3]] = self.state_after_save
            return self.save_rc, "", "Saving to %s new xl format (info 0x3/0x0/1234)" % argv[4]
        if argv[1] == "restore":
            if self.restore_rc == 0:
                self.guests["g"] = "r-----"
            return self.restore_rc, "", ""
        if argv[0] == "dpkg-query":
            return 0, "V", ""
        return 1, "", "unexpected %s" % argv


def test_checkpoint_saves_sends_and_then_refreshes_only_the_changes(tmp_path):
    node = Node(tmp_path)
    steps, ck = checkpoint("g", "t", blocksize=BS, runner=node, local_dir=str(tmp_path / "local"))
    assert [s["name"] for s in steps] == ["save", "sums", "send"]
    assert steps[0]["pause_s"] == ck["pause_s"] == ck["save_s"]
    assert ck["blocks_total"] == ck["blocks_sent"] == 32 and ck["base"] == "none"
    assert ck["path"] == "/var/lib/pft/checkpoints/g.save" and ck["guest_state"] == "blocked"
    assert sha(os.path.join(node.target_dir, "g.save")) == ck["sha256"]
    save = [c for c in node.calls if "save" in c][0]
    assert save == ["/usr/sbin/xl", "save", "-c", "g", str(tmp_path / "local" / "g.save.new")]
    assert [c[-1] for c in node.calls if c[0] == "ssh"] == ["pft-ckpt-sums g 4096", "pft-ckpt-put g"]
    assert all(c[1:5] == ["-o", "BatchMode=yes", "-o", "ConnectTimeout=10"] for c in node.calls if c[0] == "ssh")
    assert os.listdir(tmp_path / "local") == []                   # neither image nor delta stays here
    # the guest changed in 3 blocks
    node.seed = 1
    orig = image

    def save_changed(path, blocks, seed=1, tail=0):
        data = orig(path, blocks, seed, tail)
        change(path, [4, 5, 30])
        return data
    globals()["image"] = save_changed
    try:
        steps, ck2 = checkpoint("g", "t", blocksize=BS, runner=node, local_dir=str(tmp_path / "local"))
    finally:
        globals()["image"] = orig
    assert ck2["blocks_sent"] == 3 and ck2["base"] == "delta" and ck2["mib_sent"] < 0.1
    assert sha(os.path.join(node.target_dir, "g.save")) == ck2["sha256"] != ck["sha256"]


def test_checkpoint_check_mode_does_nothing(tmp_path):
    node = Node(tmp_path)
    steps, ck = checkpoint("g", "t", check_mode=True, runner=node, local_dir=str(tmp_path / "local"))
    assert steps == [] and "xl save -c g" in ck["would"] and "paused" in ck["would"]
    assert not any("save" in c or c[0] == "ssh" for c in node.calls)
    assert not os.path.exists(tmp_path / "local") and not os.path.exists(node.target_dir)


def test_checkpoint_failures(tmp_path):
    node = Node(tmp_path, guests=())
    with pytest.raises(XenError, match="does not run exactly once"):
        checkpoint("g", "t", runner=node, local_dir=str(tmp_path / "local"))
    node = Node(tmp_path)
    node.save_rc, node.state_after_save = 1, "---s--"
    with pytest.raises(XenError, match="xl save -c g failed.*now shutdown.*operator action"):
        checkpoint("g", "t", runner=node, local_dir=str(tmp_path / "local"))
    assert os.listdir(tmp_path / "local") == []
    node = Node(tmp_path, target_answers=False)
    with pytest.raises(XenError, match="pft-ckpt-sums on t failed"):
        checkpoint("g", "t", runner=node, local_dir=str(tmp_path / "local"))
    for bad in (dict(guest="g;id"), dict(target="-oProxyCommand=id"), dict(blocksize=1000)):
        args = dict(dict(guest="g", target="t", blocksize=BS), **bad)
        with pytest.raises(XenError):
            checkpoint(args["guest"], args["target"], blocksize=args["blocksize"], runner=node)


class PrestageNode(Node):
    def __call__(self, argv, timeout, stdin_path=None, **kw):
        if argv[1:3] == ["list", "-l"] or argv[1:] == ["uptime"]:
            return 1, "", ""
        if argv[1:] == ["info"]:
            return 0, "host : s\nfree_memory : 900\nxen_version : 4.17.5\nvirt_caps : pv shadow\n", ""
        return super(PrestageNode, self).__call__(argv, timeout, stdin_path, **kw)


def test_prestage_with_checkpoint(tmp_path):
    node = PrestageNode(tmp_path)
    res = prestage("g", "t", checkpoint_image=True, checkpoint_block=BS, runner=node,
                   checkpoint_dir=str(tmp_path / "local"))
    assert res["changed"] and res["ready"], res["checks"]
    assert [s["name"] for s in res["steps"]] == ["source_facts", "probe_target", "save", "sums", "send"]
    ck = [c for c in res["checks"] if c["name"] == "checkpoint"][0]
    assert ck["ok"] and "32 of 32 blocks sent" in ck["detail"] and res["checkpoint"]["blocks_sent"] == 32
    # check mode: predicted, nothing saved or sent
    node = PrestageNode(tmp_path / "cm")
    res = prestage("g", "t", checkpoint_image=True, check_mode=True, runner=node,
                   checkpoint_dir=str(tmp_path / "cm" / "local"))
    assert res["changed"] and "would" in res["checkpoint"] and res["ready"]
    assert not any("save" in c or "pft-ckpt" in c[-1] for c in node.calls)
    # the target already has the guest: no checkpoint, not ready
    node = PrestageNode(tmp_path / "tt", target_guests=("g",))
    res = prestage("g", "t", checkpoint_image=True, runner=node, checkpoint_dir=str(tmp_path / "tt" / "l"))
    assert not res["ready"] and res["checkpoint"] is None
    assert not any("save" in c for c in node.calls)
    with pytest.raises(XenError, match="block size"):
        prestage("g", "t", checkpoint_image=True, checkpoint_block=1000, runner=node)


# --------------------------------------------------------------------------- restore


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "g.save"
    image(path, 4)
    os.utime(path, (1000.0, 1000.0))
    return str(path)


def test_restore_runs_xl_restore_and_verifies(tmp_path, saved):
    node = Node(tmp_path, guests=())
    failed, msg, res = restore("g", image=saved, absent_on=["compute1"], runner=node, wall=lambda: 1060.0)
    assert not failed and res["restored"] and res["changed"], msg
    assert res["checkpoint"]["age_s"] == 60.0 and res["restore_s"] is not None
    assert ["/usr/sbin/xl", "restore", saved] in node.calls
    assert [c["name"] for c in res["checks"]] == ["image", "not_here", "absent_on"]
    assert "runs here exactly once" in msg


def test_restore_refuses_to_start_it_twice(tmp_path, saved):
    node = Node(tmp_path, guests=(), target_guests=("g",))
    failed, msg, res = restore("g", image=saved, absent_on=["compute1"], runner=node)
    assert failed and msg.startswith("g still runs on compute1") and "refusing to start it twice" in msg
    assert not any(c[1:2] == ["restore"] for c in node.calls) and not res["changed"]
    node = Node(tmp_path, guests=(), target_guests=("g--migratedaway",))
    failed, msg, _ = restore("g", image=saved, absent_on=["compute1"], runner=node, source_down_confirmed=True)
    assert failed and "still runs on compute1" in msg


def test_restore_needs_an_answer_or_a_confirmation(tmp_path, saved):
    node = Node(tmp_path, guests=(), target_answers=False)
    failed, msg, _ = restore("g", image=saved, absent_on=["compute1"], runner=node)
    assert failed and "cannot check that g does not run on compute1" in msg and "source_down_confirmed" in msg
    assert not any(c[1:2] == ["restore"] for c in node.calls)
    failed, msg, res = restore("g", image=saved, absent_on=["compute1"], runner=node, source_down_confirmed=True)
    assert not failed and res["restored"]
    assert "operator confirmed" in [c for c in res["checks"] if c["name"] == "absent_on"][0]["detail"]


def test_restore_here_already_and_check_mode_and_failure(tmp_path, saved):
    node = Node(tmp_path)                                        # g runs here
    failed, msg, res = restore("g", image=saved, runner=node)
    assert not failed and not res["changed"] and "already runs here" in msg
    node = Node(tmp_path, guests=())
    node.guests = {"g--incoming": "--p---"}
    failed, msg, res = restore("g", image=saved, runner=node)
    assert failed and "refusing to restore" in msg
    node = Node(tmp_path, guests=())
    failed, msg, res = restore("g", image=saved, absent_on=["c1"], check_mode=True, runner=node)
    assert not failed and res["changed"] and not res["restored"] and "would restore" in msg
    assert res["would"] == "/usr/sbin/xl restore %s" % saved
    assert not any(c[1:2] == ["restore"] for c in node.calls)
    node = Node(tmp_path, guests=())
    node.restore_rc = 1
    failed, msg, res = restore("g", image=saved, runner=node)
    assert failed and "xl restore of g" in msg and "this host now has nothing" in msg


def test_restore_validates(tmp_path, saved):
    bad = tmp_path / "bad.save"
    bad.write_bytes(CKPT_MAGIC + b"x" * 100)
    with pytest.raises(XenError, match="not an xl save image"):
        restore("g", image=str(bad), runner=Node(tmp_path, guests=()))
    with pytest.raises(XenError, match="cannot read the checkpoint image"):
        restore("g", image=str(tmp_path / "nope"), runner=Node(tmp_path, guests=()))
    with pytest.raises(XenError, match="absent_on host"):
        restore("g", image=saved, absent_on=["h;id"])
    with pytest.raises(XenError, match="not a valid domain name"):
        restore("../g", image=saved)
