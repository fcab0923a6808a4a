# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The testbed's node image: Debian bookworm from debootstrap, GRUB on its own disk.

The image is cached under ``<cache>/images/<key>/base.qcow2``. The key is a hash of every
input (suite, mirror, package list, the files in ``imagefiles/``, this module's source), so
changing any of them builds a new image and an unchanged input reuses the cached one.

Packing uses no loop device and no mount: the root filesystem is written by
``mke2fs -d ROOTDIR -E offset=`` into the first partition of a sparse raw disk whose MBR
this module writes; GRUB's ``boot.img`` and ``core.img`` (made by ``grub-mkimage`` from
the image's own grub-pc) are written into the MBR and the gap before the partition, as
``grub-bios-setup`` would. SeaBIOS then boots whatever GRUB on the node's disk says.
"""
import fcntl
import hashlib
import json
import os
import shutil
import struct
import time

from pft_testbed import host
from pft_testbed.errors import TestbedError

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
SECURITY_MIRROR = "http://deb.debian.org/debian-security"
# Plain Debian: Xen comes later from the xen_host role. python3 and python3-apt are for Ansible
# (without python3-apt, the first apt task of a converge installs it with an `apt-get update` of
# its own: minutes on every TCG node).
PACKAGES = (
    "systemd-sysv", "udev", "kmod", "initramfs-tools", "linux-image-amd64", "grub-pc",
    "openssh-server", "ifupdown", "iproute2", "iputils-ping", "procps", "netbase",
    "python3", "python3-apt", "ipmitool", "netcat-openbsd", "less", "dbus",
)
INITRAMFS_MODULES = ("virtio_pci", "virtio_blk", "virtio_net", "ext4")
DISK_SIZE = 8 << 30          # virtual size; qcow2 stores only what is written
PART_START = 2048            # first partition at 1 MiB, GRUB's core.img goes before it
SECTOR = 512
GRUB_PREFIX = "(hd0,msdos1)/boot/grub"
GRUB_CORE_MODULES = ("biosdisk", "part_msdos", "ext2")
MASKED_UNITS = ("apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer",
                "e2scrub_reap.service", "fstrim.timer", "getty-static.service", "getty@tty1.service")
HERE = os.path.dirname(os.path.abspath(__file__))
FILES_DIR = os.path.join(HERE, "imagefiles")


def default_cache_dir():
    """``$PFT_CACHE_DIR``, else ``~/.cache/pft`` (outside the repository)."""
    return os.environ.get("PFT_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "pft")


def _tree_digest(root):
    """(relative path, mode, sha256) of every file under root, sorted."""
    entries = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            entries.append([os.path.relpath(path, root), os.stat(path).st_mode & 0o7777, digest])
    return entries


def image_inputs(packages=PACKAGES, suite=SUITE, mirror=MIRROR, files_dir=FILES_DIR, builder=__file__):
    """Everything that decides the image's content, as a JSON-able dict."""
    with open(builder, "rb") as f:
        builder_digest = hashlib.sha256(f.read()).hexdigest()
    return {
        "suite": suite,
        "mirror": mirror,
        "packages": sorted(set(packages)),
        "files": _tree_digest(files_dir),
        "builder": builder_digest,
    }


def cache_key(inputs):
    """Short stable hash of :func:`image_inputs`; the image's cache directory name."""
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(canonical).hexdigest()[:16]


def mbr_partition_table(start, sectors, ptype=0x83, bootable=True):
    """The 66 bytes at 0x1be..0x200 of an MBR with one partition (LBA addressing, CHS maxed)."""
    entry = struct.pack("<B3sB3sII", 0x80 if bootable else 0, b"\xfe\xff\xff", ptype,
                        b"\xfe\xff\xff", start, sectors)
    return entry + b"\0" * 48 + b"\x55\xaa"


def grub_boot_sector(boot_img, mbr, core_sector=1):
    """GRUB's boot.img patched as grub-bios-setup does for a hard disk with an MBR table.

    Keeps the existing MBR's disk signature and partition table (0x1b8..0x1fe), points
    the loader at core.img's first sector (0x5c), uses the BIOS boot drive (0x64 = 0xff)
    and replaces the floppy-drive check jump with two NOPs (0x66).
    """
    if len(boot_img) != SECTOR or len(mbr) != SECTOR:
        raise ValueError("boot.img and the MBR must be 512 bytes")
    out = bytearray(boot_img)
    out[0x1b8:0x1fe] = mbr[0x1b8:0x1fe]
    out[0x5c:0x64] = struct.pack("<Q", core_sector)
    out[0x64] = 0xff
    out[0x66:0x68] = b"\x90\x90"
    return bytes(out)


def grub_core_embedded(core_img, first_sector=1, gap_sectors=PART_START - 1):
    """core.img with its first-sector blocklist set for contiguous embedding at first_sector.

    diskboot (core.img's first sector) loads the rest of core.img from the blocklist at its
    end: entries of (start u64, length u16, segment u16), growing downwards, zero-terminated.
    The rest is loaded at segment 0x820 (GRUB_BOOT_I386_PC_KERNEL_SEG 0x800 + one sector).
    """
    nsec = (len(core_img) + SECTOR - 1) // SECTOR
    if nsec > gap_sectors:
        raise TestbedError(f"GRUB core.img needs {nsec} sectors, the gap before the partition has "
                           f"{gap_sectors}")
    out = bytearray(core_img) + b"\0" * (nsec * SECTOR - len(core_img))
    entry = 12
    pos = SECTOR - entry
    while pos > 0 and struct.unpack_from("<H", out, pos + 8)[0]:     # clear old blocklists
        out[pos:pos + entry] = b"\0" * entry
        pos -= entry
    pos = SECTOR - entry
    if nsec > 1:
        struct.pack_into("<QHH", out, pos, first_sector + 1, nsec - 1, 0x820)
        pos -= entry
    out[pos:pos + entry] = b"\0" * entry
    return bytes(out)


class ImageBuilder:
    """Builds (or finds) the cached base image."""

    def __init__(self, cache_dir=None, progress=print, packages=PACKAGES):
        self.cache_dir = cache_dir or default_cache_dir()
        self.progress = progress
        self.inputs = image_inputs(packages=packages)
        self.key = cache_key(self.inputs)
        self.image_dir = os.path.join(self.cache_dir, "images", self.key)
        self.image = os.path.join(self.image_dir, "base.qcow2")

    def cached(self):
        return os.path.exists(os.path.join(self.image_dir, "manifest.json"))

    def ensure(self):
        """Path of the base image, building it first if its inputs changed."""
        os.makedirs(os.path.join(self.cache_dir, "images"), exist_ok=True)
        with open(os.path.join(self.cache_dir, "images", ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.cached():
                self.progress(f"image {self.key}: cached at {self.image}")
                return self.image
            self._build()
        return self.image

    def _build(self):
        for program, package in (("debootstrap", "debootstrap"), ("mke2fs", "e2fsprogs"),
                                 ("qemu-img", "qemu-utils")):
            host.require(program, package)
        started = time.monotonic()
        work = os.path.join(self.cache_dir, "images", f"build-{self.key}-{os.getpid()}")
        shutil.rmtree(work, ignore_errors=True)
        os.makedirs(work)
        try:
            root = os.path.join(work, "root")
            self._debootstrap(root)
            self._configure(root)
            if cache_key(image_inputs(packages=self.inputs["packages"])) != self.key:
                raise TestbedError("the image's inputs changed while it was being built; run again")
            raw = os.path.join(work, "disk.raw")
            self._pack(root, raw)
            out = os.path.join(work, "out")
            os.makedirs(out)
            self.progress("image: converting to qcow2")
            host.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, os.path.join(out, "base.qcow2")])
            manifest = dict(self.inputs, key=self.key, kernel=self._kernel_version(root),
                            build_seconds=round(time.monotonic() - started, 1))
            with open(os.path.join(out, "manifest.json"), "w") as f:
                json.dump(manifest, f, indent=2)
            shutil.rmtree(self.image_dir, ignore_errors=True)
            os.rename(out, self.image_dir)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        self.progress(f"image {self.key}: built in {time.monotonic() - started:.0f} s -> {self.image}")
        self._prune()

    def _prune(self):
        """Remove older images that no testbed's state (``<cache>/run/*/state.json``) still uses."""
        images = os.path.join(self.cache_dir, "images")
        in_use = set()
        run = os.path.join(self.cache_dir, "run")
        for name in (os.listdir(run) if os.path.isdir(run) else ()):
            try:
                with open(os.path.join(run, name, "state.json")) as f:
                    in_use.add(os.path.dirname(json.load(f).get("image", "")))
            except (OSError, ValueError):
                in_use.add("*")                  # unreadable state: keep everything
        if "*" in in_use:
            return
        for name in os.listdir(images):
            path = os.path.join(images, name)
            if name != self.key and len(name) == 16 and os.path.isdir(path) and path not in in_use:
                self.progress(f"image: removing unused old image {name}")
                shutil.rmtree(path, ignore_errors=True)

    def _debootstrap(self, root):
        debs = os.path.join(self.cache_dir, "debs")
        os.makedirs(debs, exist_ok=True)
        self.progress(f"image: debootstrap {SUITE} ({len(self.inputs['packages'])} extra packages, "
                      f"package cache {debs}); takes 1-3 minutes")
        host.run_progress(["debootstrap", "--variant=minbase", f"--cache-dir={debs}",
                           "--include=" + ",".join(self.inputs["packages"]), SUITE, root, MIRROR],
                          label="debootstrap", progress=self.progress)

    @staticmethod
    def _kernel_version(root):
        kernels = sorted(n[len("vmlinuz-"):] for n in os.listdir(os.path.join(root, "boot"))
                         if n.startswith("vmlinuz-"))
        if not kernels:
            raise TestbedError(f"no kernel in {root}/boot: did linux-image-amd64 install?")
        return kernels[-1]

    def _configure(self, root):
        self.progress("image: configuring (identity service, GRUB, initramfs)")
        shutil.copytree(FILES_DIR, root, dirs_exist_ok=True, symlinks=True)
        with open(os.path.join(root, "etc/machine-id"), "w"):
            pass                                    # empty: each node gets its own at first boot
        for stale in ("var/lib/dbus/machine-id",):
            if os.path.lexists(os.path.join(root, stale)):
                os.unlink(os.path.join(root, stale))
        for name in os.listdir(os.path.join(root, "etc/ssh")):
            if name.startswith("ssh_host_"):
                os.unlink(os.path.join(root, "etc/ssh", name))      # pft-identity makes per-node keys
        with open(os.path.join(root, "etc/hostname"), "w") as f:
            f.write("pft-node\n")
        with open(os.path.join(root, "etc/fstab"), "w") as f:
            f.write("/dev/vda1 / ext4 errors=remount-ro 0 0\n")      # no boot fsck: 10 s under TCG
        with open(os.path.join(root, "etc/initramfs-tools/modules"), "a") as f:
            f.write("".join(m + "\n" for m in INITRAMFS_MODULES))
        with open(os.path.join(root, "etc/apt/sources.list"), "w") as f:
            f.write(f"deb {MIRROR} {SUITE} main\ndeb {MIRROR} {SUITE}-updates main\n"
                    f"deb {SECURITY_MIRROR} {SUITE}-security main\n")
        chroot = ["chroot", root]
        host.run(chroot + ["systemctl", "enable", "pft-identity.service"])
        host.run(chroot + ["systemctl", "mask"] + list(MASKED_UNITS))
        host.run(chroot + ["debconf-set-selections"], input="grub-pc grub-pc/install_devices multiselect /dev/vda\n")
        host.run(chroot + ["update-initramfs", "-u", "-k", "all"])
        kernel = self._kernel_version(root)
        grub_dir = os.path.join(root, "boot/grub")
        os.makedirs(os.path.join(grub_dir, "i386-pc"), exist_ok=True)
        lib = os.path.join(root, "usr/lib/grub/i386-pc")
        for name in os.listdir(lib):
            if name.endswith((".mod", ".lst")):
                shutil.copy2(os.path.join(lib, name), os.path.join(grub_dir, "i386-pc", name))
        host.run(chroot + ["grub-editenv", "/boot/grub/grubenv", "create"])
        with open(os.path.join(grub_dir, "grub.cfg"), "w") as f:
            f.write(self.grub_cfg(kernel))
        host.run(chroot + ["grub-mkimage", "-O", "i386-pc", "-o", "/boot/grub/i386-pc/core.img",
                           "-p", GRUB_PREFIX] + list(GRUB_CORE_MODULES))
        shutil.copy2(os.path.join(lib, "boot.img"), os.path.join(grub_dir, "i386-pc", "boot.img"))
        for sub in ("var/cache/apt/archives", "var/lib/apt/lists"):
            d = os.path.join(root, sub)
            for name in os.listdir(d):
                p = os.path.join(d, name)
                if os.path.isfile(p):
                    os.unlink(p)
        # An emptied index must not look fresh: Ansible's apt module (update_cache with
        # cache_valid_time) dates the index by this directory's mtime, and an image built less than
        # cache_valid_time ago would then skip the update and find no package at all ("No package
        # matching 'ganglia-monitor'", seen on a cold CI run). Epoch 0: a node's first apt task updates.
        os.utime(os.path.join(root, "var/lib/apt/lists"), (0, 0))
        # ... and no update stamp (imagefiles' apt.conf.d/90pft-testbed writes one after each update
        # on a node): the apt module prefers the stamp's date to the directory's.
        stamp = os.path.join(root, "var/lib/apt/periodic/update-success-stamp")
        if os.path.lexists(stamp):
            os.unlink(stamp)

    @staticmethod
    def grub_cfg(kernel):
        """The first grub.cfg; ``update-grub`` on the node replaces it with a generated one."""
        return (
            "# Written by the pft testbed image build. update-grub on the node replaces it,\n"
            "# from /etc/default/grub and /etc/default/grub.d/*.cfg.\n"
            "serial --unit=0 --speed=115200\n"
            "terminal_input serial console\n"
            "terminal_output serial console\n"
            "set default=0\nset timeout=1\n"
            "insmod part_msdos\ninsmod ext2\nset root=(hd0,msdos1)\n"
            f"menuentry 'Debian GNU/Linux, with Linux {kernel}' {{\n"
            f"    linux /boot/vmlinuz-{kernel} root=/dev/vda1 ro console=ttyS0,115200n8 net.ifnames=0\n"
            f"    initrd /boot/initrd.img-{kernel}\n"
            "}\n"
        )

    def _pack(self, root, raw):
        self.progress("image: packing (mke2fs -d, no loop device) and installing GRUB to the MBR")
        fs_bytes = DISK_SIZE - PART_START * SECTOR
        with open(raw, "wb") as f:
            f.truncate(DISK_SIZE)
        host.run(["mke2fs", "-q", "-F", "-t", "ext4", "-L", "pftroot", "-d", root,
                  "-E", f"offset={PART_START * SECTOR}", raw, f"{fs_bytes // 1024}k"])
        mbr = bytearray(SECTOR)
        mbr[0x1b8:0x1bc] = struct.pack("<I", 0x70667400)          # disk signature "pft"
        mbr[0x1be:] = mbr_partition_table(PART_START, fs_bytes // SECTOR)
        grub = os.path.join(root, "boot/grub/i386-pc")
        with open(os.path.join(grub, "boot.img"), "rb") as f:
            boot_img = f.read()
        with open(os.path.join(grub, "core.img"), "rb") as f:
            core_img = f.read()
        with open(raw, "r+b") as f:
            f.write(grub_boot_sector(boot_img, bytes(mbr)))
            f.seek(SECTOR)
            f.write(grub_core_embedded(core_img))
