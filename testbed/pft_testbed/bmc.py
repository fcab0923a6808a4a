# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Real simulated BMCs: OpenIPMI ``ipmi_sim`` instances on loopback.

Each :class:`SimBmc` is one ``ipmi_sim`` process that speaks real RMCP+
(IPMI v2.0 LAN) on its own 127.x.y.z address, with a sensor repository
compiled by OpenIPMI's ``sdrcomp`` and a TCP console on the same address
through which sensors are changed at run time.

The helper is used by the tests, by the benchmarks and by the virtual-cluster
testbed, so it is a component with a small API::

    with BmcFarm(count=4, workdir=tmp) as farm:
        bmc = farm.bmcs[0]
        bmc.set_sensor("CPU1 Temp", 92)      # engineering units
        bmc.set_unavailable("FAN1")          # reads "not available"
        bmc.reset_sensors()                  # back to nominal values
        bmc.pause(); bmc.resume()            # unreachable, and back
        bmc.stop()                           # gone

Facts this relies on (verified on Debian 12, openipmi 2.0.33):

* ``sdrcomp -8 -r`` must be used: without ``-8`` all-uppercase names are
  packed as 6-bit ASCII, on which pyghmi's decoder loops forever.
* ``ipmi_sim -n`` must be used (without it stdin EOF stops it), and ``-n``
  hides errors in the .emu file, so :meth:`SimBmc.start` checks the console.
* The console kills the process with SIGPIPE when a client leaves early; the
  process is started with SIGPIPE ignored, so a port probe cannot kill it.
* ipmi_sim binds its UDP socket with SO_REUSEADDR, so two instances on the
  same address would both start; :func:`address_in_use` checks first.
"""

import dataclasses
import errno
import hashlib
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

__all__ = [
    "BmcError", "Sensor", "DEFAULT_SENSORS", "SimBmc", "BmcFarm",
    "address_in_use", "find_free_address", "require_tools",
]

IPMI_SIM = "ipmi_sim"
SDRCOMP = "sdrcomp"
BMC_IPMB = 0x20

# Event-support masks of ipmi_sim's sensor_set_event_support: 15 characters,
# one per threshold event offset, highest offset first. Offsets 0-5 are the
# lower thresholds going low/high, 6-11 the upper ones.
_LOWER_EVENTS = "000000000111111"
_UPPER_EVENTS = "000111111000000"
_ALL_EVENTS = "000111111111111"

_THRESHOLD_KEYS = ("lnr", "lc", "lnc", "unc", "uc", "unr")


class BmcError(RuntimeError):
    """A simulated BMC could not be built, started or driven."""


@dataclasses.dataclass(frozen=True)
class Sensor:
    """One threshold sensor of a simulated BMC, in engineering units.

    The linear conversion is ``value = m * raw * 10**r_exp`` (b = 0), so
    ``raw = value / (m * 10**r_exp)``; raw readings are one byte.
    """

    name: str
    number: int
    sensor_type: str          # sdrcomp name: Temperature, Fan, Voltage, ...
    entity: str               # sdrcomp entity name: processor, fan_cooling_device, ...
    entity_instance: int
    unit: str                 # sdrcomp base unit: degrees_C, RPM, Volts
    nominal: float
    m: int = 1
    r_exp: int = 0
    lnr: float = None
    lc: float = None
    lnc: float = None
    unc: float = None
    uc: float = None
    unr: float = None

    def raw(self, value):
        """The one-byte raw reading for an engineering value."""
        raw = round(float(value) / (self.m * 10 ** self.r_exp))
        if not 0 <= raw <= 255:
            lo, hi = self.value(0), self.value(255)
            raise BmcError(f"sensor {self.name!r}: value {value} is outside {lo}..{hi}")
        return raw

    def value(self, raw):
        """The engineering value of a raw reading."""
        return round(raw * self.m * 10 ** self.r_exp, 6)

    @property
    def thresholds(self):
        return {k: getattr(self, k) for k in _THRESHOLD_KEYS if getattr(self, k) is not None}


DEFAULT_SENSORS = (
    Sensor("CPU1 Temp", 1, "Temperature", "processor", 1, "degrees_C", 45, unc=75, uc=85, unr=95),
    Sensor("CPU2 Temp", 2, "Temperature", "processor", 2, "degrees_C", 45, unc=75, uc=85, unr=95),
    Sensor("FAN1", 3, "Fan", "fan_cooling_device", 1, "RPM", 6000, m=60, lnr=300, lc=600, lnc=900),
    Sensor("FAN2", 4, "Fan", "fan_cooling_device", 2, "RPM", 6000, m=60, lnr=300, lc=600, lnc=900),
    Sensor("12V", 5, "Voltage", "power_supply", 1, "Volts", 12.0, m=6, r_exp=-2,
           lc=10.8, lnc=11.4, unc=12.6, uc=13.2),
)


def require_tools():
    """Raise a clear error naming the Debian package when a tool is missing."""
    for tool in (IPMI_SIM, SDRCOMP):
        if shutil.which(tool) is None:
            raise BmcError(f"{tool} not found: install the Debian package 'openipmi' (make setup does)")


def _sdr_source(sensors):
    lines = []
    for s in sensors:
        th = s.thresholds
        lines += [
            "sdr type 1",
            f"  sensor_owner_id 0x{BMC_IPMB:02x}",
            "  channel_number 0",
            "  sensor_owner_lun 0",
            f"  sensor_number {s.number}",
            f"  entity_id {s.entity}",
            f"  entity_instance {s.entity_instance}",
            "  init_scanning true",
            "  init_events true",
            "  init_thresholds true",
            "  init_sensor_type true",
            "  default_event_gen_on true",
            "  default_sensor_scan_on true",
            "  sensor_auto_rearm true",
            "  sensor_threshold_access readable",
            "  sensor_event_msg_ctrl per_state",
            f"  sensor_type {s.sensor_type}",
            "  event_reading_type_code 1",
            "  analog_data_format unsigned",
            f"  base_unit {s.unit}",
            "  linearization linear",
            f"  m {s.m}",
            "  b 0",
            f"  r_exp {s.r_exp}",
            "  b_exp 0",
            "  sensor_maximum 255",
            "  sensor_minimum 0",
        ]
        for key, value in th.items():
            lines.append(f"  {key}_thrsh_readable true")
            lines.append(f"  {key}_fthresh {value}")
        for key in th:
            # assertion/deassertion of "going high" for upper and "going low"
            # for lower thresholds, and the threshold comparison returned
            direction = "gh" if key.startswith("u") else "gl"
            lines.append(f"  assert_{key}{direction} true")
            lines.append(f"  deassert_{key}{direction} true")
        lines += [f'  id_string "{s.name}"', "endsdr", ""]
    return "\n".join(lines)


_sdr_cache = {}
_sdr_cache_lock = threading.Lock()


def compile_sdrs(sensors):
    """Compile the sensors' full-sensor records with ``sdrcomp -8 -r``.

    Returns the list of raw records (bytes). Results are cached per sensor set.
    """
    source = _sdr_source(sensors)
    key = hashlib.sha256(source.encode()).hexdigest()
    with _sdr_cache_lock:
        if key in _sdr_cache:
            return _sdr_cache[key]
    require_tools()
    with tempfile.TemporaryDirectory(prefix="pft-sdr-") as tmp:
        src = os.path.join(tmp, "sensors.sdrs")
        out = os.path.join(tmp, "sensors.bin")
        with open(src, "w") as f:
            f.write(source)
        proc = subprocess.run([SDRCOMP, "-8", "-r", "-o", out, src],
                              capture_output=True, text=True, timeout=30)
        if proc.returncode != 0:
            raise BmcError(f"sdrcomp failed on the sensor definitions: {proc.stderr.strip()}")
        with open(out, "rb") as f:
            blob = f.read()
    records = []
    pos = 0
    while pos < len(blob):
        length = blob[pos + 4] + 5
        records.append(blob[pos:pos + length])
        pos += length
    if len(records) != len(sensors):
        raise BmcError(f"sdrcomp produced {len(records)} records for {len(sensors)} sensors")
    with _sdr_cache_lock:
        _sdr_cache[key] = records
    return records


def _mask(sensor):
    """sensor_set_threshold's 6-character mask and values, highest first."""
    bits = ""
    values = []
    for key in ("unr", "uc", "unc", "lnr", "lc", "lnc"):
        v = getattr(sensor, key)
        bits += "0" if v is None else "1"
        values.append("0" if v is None else str(sensor.raw(v)))
    return bits, values


def _event_mask(sensor):
    has_upper = any(getattr(sensor, k) is not None for k in ("unc", "uc", "unr"))
    has_lower = any(getattr(sensor, k) is not None for k in ("lnc", "lc", "lnr"))
    if has_upper and has_lower:
        return _ALL_EVENTS
    return _UPPER_EVENTS if has_upper else _LOWER_EVENTS


def render_emu(sensors, product_id):
    """The ipmi_sim startup commands: one BMC at IPMB 0x20 with the sensors."""
    records = compile_sdrs(sensors)
    lines = [
        "# Generated by pft_testbed.bmc",
        f"mc_setbmc 0x{BMC_IPMB:02x}",
        f"mc_add 0x{BMC_IPMB:02x} 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0x{product_id:04x}",
        f"sel_enable 0x{BMC_IPMB:02x} 1000 0x0a",
    ]
    for sensor, record in zip(sensors, records):
        bits, values = _mask(sensor)
        events = _event_mask(sensor)
        lines += [
            f"# {sensor.name}",
            f"sensor_add 0x20 0 {sensor.number} {_SENSOR_TYPE_CODES[sensor.sensor_type]} 0x01",
            f"sensor_set_threshold 0x20 0 {sensor.number} settable {bits} {' '.join(values)}",
            f"sensor_set_event_support 0x20 0 {sensor.number} enable scanning per-state"
            f" {events} {events} {events} {events}",
            f"sensor_set_value 0x20 0 {sensor.number} {sensor.raw(sensor.nominal)} 0",
            "main_sdr_add 0x20 " + " ".join(f"0x{b:02x}" for b in record),
        ]
    lines.append(f"mc_enable 0x{BMC_IPMB:02x}")
    return "\n".join(lines) + "\n"


_SENSOR_TYPE_CODES = {"Temperature": 1, "Voltage": 2, "Current": 3, "Fan": 4}


def _quote(text):
    if '"' in text or "\n" in text:
        raise BmcError(f"value {text!r} cannot be written to lan.conf")
    return f'"{text}"'


def render_lan_conf(name, address, port, console_port, username, password, extra_lines=()):
    """The ipmi_sim LAN configuration: one RMCP+ channel and one admin user."""
    guid = hashlib.md5(f"{name}@{address}:{port}".encode()).hexdigest()
    lines = [
        "# Generated by pft_testbed.bmc; holds a password: keep mode 0600",
        f"name {_quote(name)}",
        f"set_working_mc 0x{BMC_IPMB:02x}",
        "  startlan 1",
        f"    addr {address} {port}",
        "    priv_limit admin",
        "    allowed_auths_callback md5",
        "    allowed_auths_user md5",
        "    allowed_auths_operator md5",
        "    allowed_auths_admin md5",
        f"    guid {guid}",
        "  endlan",
        f"  user 2 true {_quote(username)} {_quote(password)} admin 10 md5",
    ]
    lines += [f"  {line}" for line in extra_lines]
    lines.append(f"console {address} {console_port}")
    return "\n".join(lines) + "\n"


def address_in_use(address, port):
    """True when something already listens on UDP address:port.

    ipmi_sim sets SO_REUSEADDR, so a plain bind (without it) fails when an
    instance is already there; binding it ourselves would not.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((address, port))
    except OSError as exc:
        if exc.errno in (errno.EADDRINUSE, errno.EACCES):
            return True
        raise
    finally:
        sock.close()
    return False


def find_free_address(network="127.77.0.0/16", port=623, skip=()):
    """The first address of ``network`` (after .0.1) where ``port`` is free."""
    net = ipaddress.ip_network(network)
    for host in net.hosts():
        addr = str(host)
        if addr in skip or addr.endswith(".0.1"):
            continue
        if not address_in_use(addr, port):
            return addr
    raise BmcError(f"no free address for a BMC in {network}")


class SimBmc:
    """One ``ipmi_sim`` BMC on its own loopback address.

    ``extra_lan_conf`` adds lines to the BMC's lan.conf section, for example
    ``serial 15 127.0.0.1 9002 codec VM`` for QEMU's ipmi-bmc-extern, or
    ``startcmd``/``poweroff_wait`` for chassis power control of a VM.
    """

    def __init__(self, name, address, workdir, port=623, username="admin", password=None,
                 sensors=DEFAULT_SENSORS, console_port=9000, extra_lan_conf=(), product_id=None):
        self.name = name
        self.address = address
        self.port = port
        self.username = username
        self.password = password if password is not None else hashlib.sha256(os.urandom(16)).hexdigest()[:16]
        self.sensors = tuple(sensors)
        self.console_port = console_port
        self.extra_lan_conf = tuple(extra_lan_conf)
        self.workdir = os.path.join(workdir, name)
        digest = hashlib.sha256(repr(self.sensors).encode()).digest()
        self.product_id = product_id if product_id is not None else int.from_bytes(digest[:2], "big")
        self.proc = None
        self._paused = False
        self._console_lock = threading.Lock()
        self._by_name = {s.name: s for s in self.sensors}
        if len(self._by_name) != len(self.sensors):
            raise BmcError(f"BMC {name}: duplicate sensor names")

    # -- life cycle ----------------------------------------------------------
    def start(self, timeout=10.0):
        """Write the configuration, start ipmi_sim and wait until it answers."""
        require_tools()
        if self.running:
            return self
        if address_in_use(self.address, self.port):
            raise BmcError(f"BMC {self.name}: {self.address}:{self.port}/udp is already in use")
        os.makedirs(os.path.join(self.workdir, "state"), exist_ok=True)
        lan = os.path.join(self.workdir, "lan.conf")
        emu = os.path.join(self.workdir, "node.emu")
        fd = os.open(lan, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(render_lan_conf(self.name, self.address, self.port, self.console_port,
                                    self.username, self.password, self.extra_lan_conf))
        with open(emu, "w") as f:
            f.write(render_emu(self.sensors, self.product_id))
        self.log_path = os.path.join(self.workdir, "ipmi_sim.log")
        log = open(self.log_path, "ab")
        try:
            # restore_signals=False keeps SIGPIPE ignored in the child: a
            # console client that leaves early must not kill the BMC.
            self.proc = subprocess.Popen(
                [IPMI_SIM, "-n", "-c", lan, "-f", emu, "-s", os.path.join(self.workdir, "state")],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.workdir, restore_signals=False, start_new_session=True)
        finally:
            log.close()
        self._paused = False
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise BmcError(f"BMC {self.name}: ipmi_sim exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                self.console("", timeout=1.0)
                break
            except (OSError, BmcError):
                if time.monotonic() > deadline:
                    self.kill()
                    raise BmcError(f"BMC {self.name}: console at {self.address}:{self.console_port} "
                                   f"did not answer within {timeout}s: {self.log_tail()}") from None
                time.sleep(0.05)
        return self

    def log_tail(self, lines=10):
        try:
            with open(self.log_path, errors="replace") as f:
                return " | ".join(f.read().splitlines()[-lines:])
        except OSError:
            return "(no log)"

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def pause(self):
        """Make the BMC unreachable (SIGSTOP): requests get no answer."""
        if self.running and not self._paused:
            self.proc.send_signal(signal.SIGSTOP)
            self._paused = True

    def resume(self):
        if self.running and self._paused:
            self.proc.send_signal(signal.SIGCONT)
            self._paused = False

    def stop(self, timeout=5.0):
        """Stop the BMC and wait for it to exit."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.resume()
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        self._paused = False

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    # -- console ---------------------------------------------------------------
    def console(self, command, timeout=5.0):
        """Run one console command; returns its output. Errors raise BmcError."""
        if self._paused:
            raise BmcError(f"BMC {self.name} is paused")
        with self._console_lock:
            with socket.create_connection((self.address, self.console_port), timeout=timeout) as sock:
                sock.settimeout(timeout)
                self._read_prompt(sock)
                sock.sendall(command.encode() + b"\n")
                out = self._read_prompt(sock)
        text = out.decode(errors="replace")
        if "**" in text or "Unknown command" in text or "Invalid" in text:
            raise BmcError(f"BMC {self.name}: console command {command!r} failed: {text.strip()}")
        return text

    @staticmethod
    def _read_prompt(sock):
        buf = b""
        while not buf.endswith(b"> "):
            chunk = sock.recv(4096)
            if not chunk:
                raise BmcError("console closed the connection")
            buf += chunk
        return buf[:-2]

    # -- sensors ---------------------------------------------------------------
    def sensor(self, name):
        try:
            return self._by_name[name]
        except KeyError:
            raise BmcError(f"BMC {self.name} has no sensor {name!r}; it has {sorted(self._by_name)}") from None

    def set_sensor(self, name, value, events=True):
        """Set a sensor's reading in engineering units; returns the value set."""
        s = self.sensor(name)
        raw = s.raw(value)
        self.set_available(name)
        self.console(f"sensor_set_value 0x20 0 {s.number} {raw} {1 if events else 0}")
        return s.value(raw)

    def set_unavailable(self, name):
        """Make a sensor read as 'not available' (scanning disabled)."""
        s = self.sensor(name)
        m = _event_mask(s)
        self.console(f"sensor_set_event_support 0x20 0 {s.number} enable no-scanning per-state {m} {m} {m} {m}")

    def set_available(self, name):
        s = self.sensor(name)
        m = _event_mask(s)
        self.console(f"sensor_set_event_support 0x20 0 {s.number} enable scanning per-state {m} {m} {m} {m}")

    def reset_sensors(self):
        """Every sensor available again, at its nominal value."""
        for s in self.sensors:
            self.set_sensor(s.name, s.nominal, events=False)

    def target(self):
        """This BMC as a node entry of the ipmi_health_info module."""
        return {"name": self.name, "address": self.address, "port": self.port,
                "username": self.username, "password": self.password}

    def __repr__(self):
        return f"SimBmc({self.name!r}, {self.address}:{self.port})"


class BmcFarm:
    """N simulated BMCs on consecutive free loopback addresses.

    ``network`` is the loopback range to take addresses from; each BMC gets
    its own address (port 623, console 9000 on the same address).
    """

    def __init__(self, count, workdir=None, network="127.77.0.0/16", prefix="node",
                 sensors=DEFAULT_SENSORS, password=None, port=623):
        self.count = count
        self._own_workdir = workdir is None
        self.workdir = workdir or tempfile.mkdtemp(prefix="pft-bmcs-")
        self.network = network
        self.prefix = prefix
        self.sensors = sensors
        self.password = password
        self.port = port
        self.bmcs = []

    def start(self, timeout=30.0):
        used = set()
        width = max(2, len(str(self.count)))
        for i in range(self.count):
            addr = find_free_address(self.network, self.port, skip=used)
            used.add(addr)
            bmc = SimBmc(f"{self.prefix}{i + 1:0{width}d}", addr, self.workdir, port=self.port,
                         password=self.password, sensors=self.sensors)
            self.bmcs.append(bmc)
        # start in parallel: each start waits for its own console
        errors = []

        def _start(b):
            try:
                b.start(timeout=timeout)
            except Exception as exc:  # collected and re-raised below
                errors.append(exc)

        threads = [threading.Thread(target=_start, args=(b,)) for b in self.bmcs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            self.stop()
            raise errors[0]
        return self

    def stop(self):
        for b in self.bmcs:
            b.resume()
            if b.running:
                b.proc.terminate()
        for b in self.bmcs:
            b.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def __getitem__(self, name):
        for b in self.bmcs:
            if b.name == name:
                return b
        raise KeyError(name)

    def targets(self):
        return [b.target() for b in self.bmcs]
