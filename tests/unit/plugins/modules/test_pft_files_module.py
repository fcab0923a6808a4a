# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of the module pft_files (in process, on real files): what it returns when a
validate command fails midway, check mode, diff."""
import json
import os

import pft_files
import pytest
from ansible.module_utils.testing import patch_module_args


def run(args, capsys, **flags):
    with patch_module_args(dict(args, **{"_ansible_%s" % k: v for k, v in flags.items()})):
        with pytest.raises(SystemExit) as exc:
            pft_files.main()
    result = json.loads(capsys.readouterr().out)
    result["rc"] = exc.value.code
    return result


def test_a_failure_midway_reports_what_changed_before_it(tmp_path, capsys):
    files = [{"path": str(tmp_path / "first"), "content": "1\n"},
             {"path": str(tmp_path / "second"), "content": "2\n", "validate": "false %s"},
             {"path": str(tmp_path / "third"), "content": "3\n"}]
    out = run({"files": files}, capsys)
    assert out["rc"] == 1 and out["failed"]
    assert out["msg"].startswith("pft_files: %s: the new content failed validation" % (tmp_path / "second"))
    assert out["changed"] is True and out["changed_paths"] == [str(tmp_path / "first")]
    assert sorted(os.listdir(tmp_path)) == ["first"]


def test_check_mode_predicts_and_writes_nothing(tmp_path, capsys):
    files = [{"path": str(tmp_path / "d"), "state": "directory"},
             {"path": str(tmp_path / "d" / "f"), "content": "x\n"}]
    out = run({"files": files}, capsys, check_mode=True, diff=True)
    assert out["rc"] == 0 and out["changed"] is True
    assert out["changed_paths"] == [str(tmp_path / "d"), str(tmp_path / "d" / "f")]
    assert out["diff"][1]["after"] == "x\n"
    assert os.listdir(tmp_path) == []


def test_bad_entry_is_named_and_nothing_changes(tmp_path, capsys):
    out = run({"files": [{"path": str(tmp_path / "f"), "content": "x", "mode": "rw"}]}, capsys)
    assert out["rc"] == 1 and out["changed"] is False and out["changed_paths"] == []
    assert "%s: mode 'rw' is not an octal number" % (tmp_path / "f") in out["msg"]
