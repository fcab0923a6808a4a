# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""pft's virtual cluster testbed: QEMU/TCG nodes, ipmi_sim BMCs, a private L2 network.

Entry points: the ``testbed/testbed`` CLI, and :class:`pft_testbed.testbed.Testbed` for tests.
"""
