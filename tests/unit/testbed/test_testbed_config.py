# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Testbed layout: names, indices, addresses (pft_testbed.config)."""
import ipaddress

import pytest

from pft_testbed import config


def test_default_plan_has_head_and_three_compute_with_last_as_spare():
    p = config.plan("pft", 28)
    assert [n.name for n in p.nodes] == ["head", "compute1", "compute2", "compute3"]
    assert [n.role for n in p.nodes] == ["head", "compute", "compute", "compute"]
    assert [n.name for n in p.nodes if n.spare] == ["compute3"]
    assert p.controller == "10.231.28.1"
    assert [n.address for n in p.nodes] == ["10.231.28.10", "10.231.28.11", "10.231.28.12", "10.231.28.13"]
    assert [n.bmc_address for n in p.nodes] == ["127.231.28.10", "127.231.28.11", "127.231.28.12",
                                                "127.231.28.13"]


def test_addresses_macs_and_taps_are_unique_and_in_the_subnet():
    p = config.plan("big", 7, compute=config.MAX_COMPUTE)
    net = ipaddress.ip_network(p.subnet)
    for attr in ("address", "mac", "bmc_address", "tap"):
        values = [getattr(n, attr) for n in p.nodes]
        assert len(set(values)) == len(values), attr
    assert all(ipaddress.ip_address(n.address) in net for n in p.nodes)
    assert all(ipaddress.ip_address(n.bmc_address).is_loopback for n in p.nodes)
    assert all(len(n.tap) <= 15 for n in p.nodes)
    assert len(p.veth) <= 15


def test_one_compute_node_has_no_spare():
    p = config.plan("one", 1, compute=1)
    assert [n.name for n in p.nodes if n.spare] == []


def test_spares_are_the_last_compute_nodes():
    p = config.plan("e2e", 4, compute=4, spares=2)
    assert [n.name for n in p.nodes if n.spare] == ["compute3", "compute4"]
    assert config.Plan.from_dict(p.to_dict()) == p


@pytest.mark.parametrize("compute,spares", [(3, 0), (3, 3), (4, 5), (2, -1)])
def test_spares_must_leave_a_node_for_the_guests(compute, spares):
    with pytest.raises(ValueError, match="--spares %d is out of range for %d compute nodes" % (spares, compute)):
        config.plan("pft", 1, compute=compute, spares=spares)


def test_memory_fits_the_budget():
    p = config.plan("pft", 1)
    assert sum(n.memory_mb for n in p.nodes) <= 6 * 1024 - 4 * 300   # room for QEMU's own overhead


@pytest.mark.parametrize("name", ["", "Pft", "1abc", "a-b", "abcdefghijkl", "x y"])
def test_bad_names_are_rejected_with_the_name(name):
    with pytest.raises(ValueError, match="testbed name"):
        config.check_name(name)


@pytest.mark.parametrize("count", [0, -1, config.MAX_COMPUTE + 1])
def test_bad_compute_counts_are_rejected(count):
    with pytest.raises(ValueError, match="--compute"):
        config.check_compute(count)


def test_index_is_stable_and_skips_taken_indices_and_host_networks():
    first = config.choose_index("pft", set())
    assert first == config.preferred_index("pft") == config.choose_index("pft", set())
    assert config.choose_index("pft", {first}) == (first + 1) % config.MAX_INDEX
    taken_net = config.SUBNET_FMT.format(index=first)
    assert config.choose_index("pft", set(), [taken_net]) != first


def test_no_index_left_is_an_error():
    with pytest.raises(ValueError, match="no free testbed subnet"):
        config.choose_index("pft", set(), ["10.0.0.0/8"])


def test_plan_round_trips_through_a_dict():
    p = config.plan("pft", 3, compute=2)
    assert config.Plan.from_dict(p.to_dict()) == p


def test_smbios_identity_carries_hostname_address_hosts_key_and_proxy():
    p = config.plan("pft", 3, compute=2)
    strings = config.smbios_identity(p, "compute2", "ssh-ed25519 AAAA test\n")
    assert "pft.hostname=compute2" in strings
    assert "pft.address=10.231.3.12/24" in strings
    assert "pft.hosts=head=10.231.3.10 compute1=10.231.3.11 compute2=10.231.3.12" in strings
    assert "pft.ssh_key=ssh-ed25519 AAAA test" in strings
    assert "pft.apt_proxy=http://10.231.3.1:3142" in strings
