# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of pft_files: real files in a temporary directory (the tests run as root)."""
import os
import stat

import pytest
from ansible.module_utils.pft_files import FilesError, apply, diffs, normalize, plan, summary


def run(entries, check=False):
    entries = normalize(entries)
    planned = plan(entries)
    if not check:
        apply(entries, planned)
    return entries, planned, summary(planned)


def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_creates_directories_then_files_in_order(tmp_path):
    d = tmp_path / "lib" / "pft"
    _, _, out = run([
        {"path": str(d), "state": "directory"},
        {"path": str(d / "a.py"), "content": "print(1)\n", "mode": "0755"},
        {"path": str(tmp_path / "b.conf"), "content": "x = 1\n"},
    ])
    assert out["changed_paths"] == [str(d), str(d / "a.py"), str(tmp_path / "b.conf")]
    assert (d / "a.py").read_text() == "print(1)\n"
    assert mode_of(d / "a.py") == 0o755
    assert mode_of(tmp_path / "b.conf") == 0o644
    assert mode_of(d) == 0o755
    assert all(f["reasons"] == ["created"] for f in out["files"])


def test_second_run_changes_nothing(tmp_path):
    entries = [{"path": str(tmp_path / "d"), "state": "directory", "mode": "0700"},
               {"path": str(tmp_path / "d" / "f"), "content": "one\n", "mode": "0600"}]
    run(entries)
    _, _, out = run(entries)
    assert out["changed_paths"] == []
    assert [f["changed"] for f in out["files"]] == [False, False]


def test_content_mode_and_owner_differences_are_named(tmp_path):
    f = tmp_path / "f"
    f.write_text("old\n")
    os.chmod(f, 0o600)
    _, planned, out = run([{"path": str(f), "content": "new\n", "mode": "0644"}], check=True)
    assert out["files"][0]["reasons"] == ["content", "mode"]
    assert f.read_text() == "old\n"  # check mode wrote nothing
    assert mode_of(f) == 0o600
    run([{"path": str(f), "content": "new\n", "mode": "0644"}])
    assert f.read_text() == "new\n" and mode_of(f) == 0o644


def test_mode_only_change_keeps_the_inode(tmp_path):
    f = tmp_path / "f"
    f.write_text("same\n")
    os.chmod(f, 0o600)
    ino = os.stat(f).st_ino
    _, _, out = run([{"path": str(f), "content": "same\n", "mode": "0640"}])
    assert out["files"][0]["reasons"] == ["mode"]
    assert os.stat(f).st_ino == ino and mode_of(f) == 0o640


def test_absent_removes_files_and_ignores_missing_ones(tmp_path):
    f = tmp_path / "old"
    f.write_text("x")
    _, _, out = run([{"path": str(f), "state": "absent"},
                     {"path": str(tmp_path / "never"), "state": "absent"}])
    assert out["changed_paths"] == [str(f)]
    assert not f.exists()


def test_absent_refuses_a_directory(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(FilesError, match="is a directory"):
        run([{"path": str(tmp_path / "d"), "state": "absent"}])


def test_check_mode_counts_planned_directories(tmp_path):
    d = tmp_path / "new"
    _, _, out = run([{"path": str(d), "state": "directory"},
                     {"path": str(d / "f"), "content": "x\n"}], check=True)
    assert out["changed_paths"] == [str(d), str(d / "f")]
    assert not d.exists()


def test_missing_directory_is_named(tmp_path):
    with pytest.raises(FilesError, match=r"/nope/f: its directory .*/nope does not exist"):
        run([{"path": str(tmp_path / "nope" / "f"), "content": "x"}])


@pytest.mark.parametrize("entry, message", [
    ({"path": "relative/f", "content": "x"}, "not an absolute path"),
    ({"path": "/tmp/f"}, "state=file needs content"),
    ({"path": "/tmp/f", "content": "x", "mode": "rw-r--r--"}, "not an octal number"),
    ({"path": "/tmp/f", "content": "x", "mode": "17777"}, "out of range"),
    ({"path": "/tmp/f", "state": "link"}, "not one of"),
    ({"path": "/tmp/d", "state": "directory", "content": "x"}, "content is only for state=file"),
    ({"path": "/tmp/f", "content": "x", "validate": "/bin/true"}, "has no %s"),
])
def test_bad_entries_name_the_path(entry, message):
    with pytest.raises(FilesError, match=message):
        normalize([entry])


def test_a_path_listed_twice_differently_is_refused():
    with pytest.raises(FilesError, match="listed twice, differently"):
        normalize([{"path": "/tmp/a/../f", "content": "x"}, {"path": "/tmp/f", "content": "y"}])


def test_the_same_entry_twice_counts_once():
    out = normalize([{"path": "/usr/local/lib/pft", "state": "directory"},
                     {"path": "/usr/local/lib/pft/", "state": "directory"}])
    assert [e["path"] for e in out] == ["/usr/local/lib/pft"]


def test_unknown_owner_is_named(tmp_path):
    with pytest.raises(FilesError, match="owner 'no-such-user-pft' is not a user"):
        run([{"path": str(tmp_path / "f"), "content": "x", "owner": "no-such-user-pft"}])


def test_a_type_clash_is_named(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(FilesError, match="exists but is not a regular file"):
        run([{"path": str(tmp_path / "d"), "content": "x"}])


def test_validate_failure_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    f = tmp_path / "f"
    f.write_text("good\n")
    with pytest.raises(FilesError, match=r"failed validation .*rc 1"):
        run([{"path": str(f), "content": "bad\n", "validate": "grep -q good %s"}])
    assert f.read_text() == "good\n"
    assert sorted(os.listdir(tmp_path)) == ["f"]


def test_validate_success_sees_the_new_content(tmp_path):
    f = tmp_path / "f"
    run([{"path": str(f), "content": "good\n", "validate": "grep -q good %s"}])
    assert f.read_text() == "good\n"


def test_validate_command_missing_is_named(tmp_path):
    with pytest.raises(FilesError, match="validate command /no/such/validator not found"):
        run([{"path": str(tmp_path / "f"), "content": "x", "validate": "/no/such/validator %s"}])


def test_diff_leaves_secrets_out(tmp_path):
    entries = normalize([{"path": str(tmp_path / "pub"), "content": "hello\n"},
                         {"path": str(tmp_path / "key"), "content": "PRIVATE\n", "sensitive": True, "mode": "0600"}])
    out = diffs(entries, plan(entries))
    assert out[0]["after"] == "hello\n" and out[0]["before"] == ""
    assert "PRIVATE" not in repr(out[1])
    assert "created" in out[1]["after"]


def test_apply_returns_the_paths_it_changed(tmp_path):
    (tmp_path / "same").write_text("same\n")
    os.chmod(tmp_path / "same", 0o644)
    entries = normalize([{"path": str(tmp_path / "same"), "content": "same\n"},
                         {"path": str(tmp_path / "new"), "content": "new\n"}])
    assert apply(entries, plan(entries)) == [str(tmp_path / "new")]


def test_a_failure_midway_says_what_was_done_before_it(tmp_path):
    entries = normalize([{"path": str(tmp_path / "first"), "content": "1\n"},
                         {"path": str(tmp_path / "second"), "content": "2\n", "validate": "false %s"},
                         {"path": str(tmp_path / "third"), "content": "3\n"}])
    with pytest.raises(FilesError, match="second: the new content failed validation") as caught:
        apply(entries, plan(entries))
    assert caught.value.done == [str(tmp_path / "first")]
    assert sorted(os.listdir(tmp_path)) == ["first"]
