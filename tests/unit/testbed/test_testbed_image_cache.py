# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Image cache keys and the MBR/GRUB writers (pft_testbed.image); no debootstrap here."""
import struct

import pytest

from pft_testbed import image


def _files(tmp_path, content="a"):
    d = tmp_path / "files"
    (d / "etc").mkdir(parents=True, exist_ok=True)
    (d / "etc" / "x.conf").write_text(content)
    return str(d)


def test_key_is_stable_for_the_same_inputs(tmp_path):
    files = _files(tmp_path)
    a = image.cache_key(image.image_inputs(files_dir=files))
    b = image.cache_key(image.image_inputs(files_dir=files))
    assert a == b and len(a) == 16


def test_key_ignores_package_order_and_duplicates(tmp_path):
    files = _files(tmp_path)
    a = image.cache_key(image.image_inputs(packages=("b", "a"), files_dir=files))
    b = image.cache_key(image.image_inputs(packages=("a", "b", "a"), files_dir=files))
    assert a == b


@pytest.mark.parametrize("change", [
    {"packages": image.PACKAGES + ("vim",)},
    {"suite": "trixie"},
    {"mirror": "http://example.invalid/debian"},
])
def test_key_changes_with_each_input(tmp_path, change):
    files = _files(tmp_path)
    base = image.cache_key(image.image_inputs(files_dir=files))
    assert image.cache_key(image.image_inputs(files_dir=files, **change)) != base


def test_key_changes_when_an_image_file_or_its_mode_changes(tmp_path):
    files = _files(tmp_path)
    base = image.cache_key(image.image_inputs(files_dir=files))
    _files(tmp_path, "b")
    changed = image.cache_key(image.image_inputs(files_dir=files))
    assert changed != base
    (tmp_path / "files" / "etc" / "x.conf").chmod(0o755)
    assert image.cache_key(image.image_inputs(files_dir=files)) != changed


def test_key_changes_when_the_builder_changes(tmp_path):
    files = _files(tmp_path)
    builder = tmp_path / "builder.py"
    builder.write_text("one")
    a = image.cache_key(image.image_inputs(files_dir=files, builder=str(builder)))
    builder.write_text("two")
    assert image.cache_key(image.image_inputs(files_dir=files, builder=str(builder))) != a


def test_cache_dir_is_outside_the_repo_and_overridable(monkeypatch, tmp_path):
    monkeypatch.delenv("PFT_CACHE_DIR", raising=False)
    assert image.default_cache_dir().endswith("/.cache/pft")
    monkeypatch.setenv("PFT_CACHE_DIR", str(tmp_path))
    assert image.default_cache_dir() == str(tmp_path)
    assert image.ImageBuilder(progress=lambda m: None).image.startswith(str(tmp_path) + "/images/")


def test_partition_table_entry():
    table = image.mbr_partition_table(2048, 1000)
    assert len(table) == 66 and table[-2:] == b"\x55\xaa"
    status, ptype, start, count = table[0], table[4], *struct.unpack_from("<II", table, 8)
    assert (status, ptype, start, count) == (0x80, 0x83, 2048, 1000)
    assert table[16:64] == b"\0" * 48


def test_boot_sector_patch_keeps_the_partition_table():
    boot = bytes(range(256)) * 2
    mbr = bytearray(512)
    mbr[0x1be:] = image.mbr_partition_table(2048, 1000)
    out = image.grub_boot_sector(boot, bytes(mbr))
    assert out[0x1b8:0x1fe] == bytes(mbr[0x1b8:0x1fe])
    assert struct.unpack_from("<Q", out, 0x5c)[0] == 1
    assert out[0x64] == 0xff and out[0x66:0x68] == b"\x90\x90"
    assert out[:0x5c] == boot[:0x5c]


def test_core_blocklist_for_contiguous_embedding():
    core = bytearray(512 * 40 + 100)
    struct.pack_into("<QHH", core, 500, 99, 7, 0x820)       # a stale entry from grub-mkimage
    out = image.grub_core_embedded(bytes(core))
    assert len(out) == 512 * 41
    assert struct.unpack_from("<QHH", out, 500) == (2, 40, 0x820)
    assert struct.unpack_from("<QHH", out, 488) == (0, 0, 0)


def test_core_too_big_for_the_gap_is_a_clear_error():
    with pytest.raises(image.TestbedError, match="core.img needs"):
        image.grub_core_embedded(b"\0" * 512 * 3000)
