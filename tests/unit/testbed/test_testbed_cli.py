# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Argument handling of the testbed CLI (pft_testbed.cli), without touching the host."""
import pytest

from pft_testbed import cli
from pft_testbed.errors import MissingPackageError, TestbedError


def parse(*argv):
    return cli.build_parser().parse_args(list(argv))


def test_up_defaults_to_three_compute_nodes():
    args = parse("up")
    assert args.command == "up" and args.compute == 3 and args.name == "pft"


def test_up_compute_and_name():
    args = parse("--name", "e2e", "up", "--compute", "2")
    assert (args.name, args.compute) == ("e2e", 2)


@pytest.mark.parametrize("argv", [("up", "--compute", "0"), ("up", "--compute", "x"),
                                  ("--name", "Bad-Name", "status"), ("heat", "compute1", "CPU1 Temp", "hot"),
                                  ("heat", "compute1"), ("frobnicate",), ()])
def test_bad_arguments_exit_with_usage(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        parse(*argv)
    assert exc.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_up_spares_out_of_range_exits_with_usage_before_anything_starts(capsys):
    assert parse("up", "--compute", "4", "--spares", "2").spares == 2
    with pytest.raises(SystemExit) as exc:
        cli.main(["--name", "e2e", "up", "--compute", "3", "--spares", "3"])
    assert exc.value.code == 2
    assert "--spares 3 is out of range for 3 compute nodes" in capsys.readouterr().err


def test_heat_takes_a_sensor_name_with_spaces_and_a_number():
    args = parse("heat", "compute1", "CPU1 Temp", "92")
    assert (args.node, args.sensor, args.value) == ("compute1", "CPU1 Temp", 92.0)


def test_ssh_passes_the_remaining_words_as_the_command():
    args = parse("ssh", "head", "uname", "-r")
    assert args.node == "head" and args.cmd == ["uname", "-r"]


def test_name_from_environment(monkeypatch):
    monkeypatch.setenv("PFT_TESTBED_NAME", "other")
    assert parse("status").name == "other"


def test_errors_are_printed_without_a_traceback(monkeypatch, capsys):
    def boom(args):
        raise TestbedError("node compute2 did not answer ssh")
    monkeypatch.setattr(cli, "run", boom)
    assert cli.main(["status"]) == 1
    assert capsys.readouterr().err == "testbed: error: node compute2 did not answer ssh\n"


def test_missing_package_error_names_the_package():
    err = MissingPackageError("ipmi_sim", "openipmi")
    assert "'openipmi'" in str(err) and "ipmi_sim" in str(err)


def test_status_of_a_testbed_that_is_not_up(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("PFT_TESTBED_STATE", str(tmp_path))
    assert cli.main(["--name", "nothere", "status"]) == 3
    assert "down" in capsys.readouterr().out


def test_commands_on_a_testbed_that_is_not_up_fail_clearly(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("PFT_TESTBED_STATE", str(tmp_path))
    assert cli.main(["--name", "nothere", "heat", "compute1", "CPU1 Temp", "90"]) == 1
    assert "is not up" in capsys.readouterr().err


def test_each_testbed_name_has_its_own_default_inventory():
    assert cli.default_inventory("pft").endswith("/inventory/testbed")
    assert cli.default_inventory("demo").endswith("/inventory/testbed.demo")
    assert parse("--name", "demo", "up").inventory is None          # resolved per name in run()
    assert parse("up", "--inventory", "/tmp/inv").inventory == "/tmp/inv"
