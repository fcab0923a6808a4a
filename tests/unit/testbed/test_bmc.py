# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of the simulated-BMC helper's own logic (no ipmi_sim needed)."""
import pytest

from pft_testbed import bmc as B


def sensor(name):
    return next(s for s in B.DEFAULT_SENSORS if s.name == name)


@pytest.mark.parametrize("name, value, raw", [("CPU1 Temp", 92, 92), ("FAN1", 540, 9), ("12V", 12.0, 200),
                                              ("12V", 13.5, 225)])
def test_engineering_values_to_raw_and_back(name, value, raw):
    s = sensor(name)
    assert s.raw(value) == raw
    assert s.value(raw) == pytest.approx(value)


def test_out_of_range_value_names_the_sensor():
    with pytest.raises(B.BmcError, match="sensor 'FAN1': value 99999 is outside 0.*15300"):
        sensor("FAN1").raw(99999)


def test_threshold_mask_order_is_highest_first():
    bits, values = B._mask(sensor("12V"))
    assert bits == "011011"              # unr absent, uc, unc, lnr absent, lc, lnc
    assert values == ["0", "220", "210", "0", "180", "190"]


def test_lan_conf_holds_one_admin_user_and_the_console():
    text = B.render_lan_conf("n1", "127.0.9.1", 623, 9000, "admin", "s3cret", extra_lines=["poweroff_wait 5"])
    assert "addr 127.0.9.1 623" in text
    assert 'user 2 true "admin" "s3cret" admin 10 md5' in text
    assert "console 127.0.9.1 9000" in text and "  poweroff_wait 5" in text


def test_lan_conf_refuses_a_quote_in_a_password():
    with pytest.raises(B.BmcError, match="cannot be written"):
        B.render_lan_conf("n1", "127.0.9.1", 623, 9000, "admin", 'a"b')


def test_duplicate_sensor_names_are_refused(tmp_path):
    s = sensor("FAN1")
    with pytest.raises(B.BmcError, match="duplicate sensor names"):
        B.SimBmc("n1", "127.0.9.1", str(tmp_path), sensors=[s, s])


def test_unknown_sensor_lists_the_known_ones(tmp_path):
    b = B.SimBmc("n1", "127.0.9.1", str(tmp_path))
    with pytest.raises(B.BmcError, match="has no sensor 'CPU9 Temp'; it has"):
        b.sensor("CPU9 Temp")


def test_product_id_differs_with_the_sensor_set(tmp_path):
    full = B.SimBmc("a", "127.0.9.1", str(tmp_path))
    fewer = B.SimBmc("b", "127.0.9.2", str(tmp_path), sensors=B.DEFAULT_SENSORS[:2])
    assert full.product_id != fewer.product_id   # pyghmi must not share their SDRs
