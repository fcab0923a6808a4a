# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The watch's settings cannot drift: roles/pft_watch/defaults/main.yml (every default, the one place)
and meta/argument_specs.yml (their types, checked by every run) list the same settings, with the same
defaults, and the playbooks spell neither a default nor the state directory's layout themselves."""
import glob
import os
import re

import yaml
from pft_paths import REPO

ROLE = os.path.join(REPO, "roles", "pft_watch")


def load(*path):
    with open(os.path.join(ROLE, *path)) as fh:
        return yaml.safe_load(fh)


DEFAULTS = load("defaults", "main.yml")
SPECS = load("meta", "argument_specs.yml")["argument_specs"]
VARS = load("vars", "main.yml")
OPTIONS = {**SPECS["main"]["options"], **SPECS["settings"]["options"]}


def test_the_argument_spec_lists_exactly_the_keys_of_the_defaults_file():
    public = {k for k in DEFAULTS if "__" not in k}
    assert public - set(OPTIONS) == set(), "defaults without an argument spec"
    # a setting of the spec not in the defaults file is unset by default: it must not claim a default
    unset = set(OPTIONS) - public
    assert {k for k in unset if "default" in OPTIONS[k]} == set()
    assert unset == {"pft_state_dir", "pft_health_policy", "pft_alert_mail", "pft_alert_webhook",
                     "pft_alert_syslog_socket"}


def test_the_defaults_of_the_spec_are_those_of_the_defaults_file():
    for name, option in OPTIONS.items():
        if "default" in option:
            assert DEFAULTS[name] == option["default"], name


def test_the_spec_entries_of_both_entry_points_agree():
    shared = set(SPECS["main"]["options"]) & set(SPECS["settings"]["options"])
    assert shared == {"pft_watch_state_dir"}
    for name in shared:
        main, settings = SPECS["main"]["options"][name], SPECS["settings"]["options"][name]
        assert (main["type"], main.get("default")) == (settings["type"], settings.get("default")), name


def test_every_setting_has_the_checked_prefix_or_is_known_to_the_check():
    prefix = re.compile(VARS["pft_watch__checked_prefix"])
    for name in OPTIONS:
        assert name.startswith("pft_"), name
    # the check would refuse these, were they not known
    assert all(prefix.match(n) for n in VARS["pft_watch__foreign_settings"])
    # every bound is on a setting with a default
    assert set(VARS["pft_watch__bounds"]) <= set(DEFAULTS)


def playbook_text():
    for path in sorted(glob.glob(os.path.join(REPO, "playbooks", "*.yml"))
                       + glob.glob(os.path.join(REPO, "playbooks", "tasks", "*.yml"))):
        with open(path) as fh:
            yield os.path.relpath(path, REPO), fh.read()


def test_the_playbooks_give_no_setting_a_default_of_their_own():
    settings = {k for k in OPTIONS if "__" not in k}
    for path, text in playbook_text():
        if path == "playbooks/health.yml":        # its own settings (pft_watch__foreign_settings)
            continue
        for name in settings:
            assert not re.search(r"\b%s\s*\|\s*default\((?!omit\))" % name, text), (path, name)


def test_the_playbooks_never_spell_the_state_directory_layout():
    names = {os.path.basename(p) for p in VARS["pft_watch__paths"].values() if "/" in p}
    assert names >= {"reservations", "journal", "audit.jsonl", "quarantine.json"}
    for path, text in playbook_text():
        code = "\n".join(line.split(" #")[0] for line in text.splitlines() if not line.lstrip().startswith("#"))
        for name in names:
            assert not re.search(r"[\"'/{]\s*%s\b|/%s" % (re.escape(name), re.escape(name)), code), (path, name)
