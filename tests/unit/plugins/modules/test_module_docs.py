# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Every module's DOCUMENTATION matches its argument_spec, and its EXAMPLES
and RETURN parse: the parts of ansible-test's validate-modules that pft,
which is not a collection, can check itself."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest
import yaml
from ansible.module_utils import basic
from pft_paths import MODULES, REPO

MODULE_NAMES = sorted(f[:-3] for f in os.listdir(MODULES) if f.endswith(".py") and not f.startswith("_"))


class _Captured(Exception):
    pass


def _argument_spec(name, monkeypatch):
    captured = {}

    def fake_init(self, argument_spec=None, **kwargs):
        captured["spec"] = argument_spec
        captured["kwargs"] = kwargs
        raise _Captured()
    monkeypatch.setattr(basic.AnsibleModule, "__init__", fake_init)
    spec = importlib.util.spec_from_file_location("pft_module_" + name, os.path.join(MODULES, name + ".py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with pytest.raises(_Captured):
        mod.main()
    return mod, captured["spec"], captured["kwargs"]


def _compare(doc_options, spec, path):
    assert set(doc_options) == set(spec), "%s: documented %s, argument_spec %s" % (
        path, sorted(doc_options), sorted(spec))
    for key, arg in spec.items():
        doc = doc_options[key]
        where = "%s.%s" % (path, key)
        assert doc.get("description"), where + " has no description"
        assert doc.get("type", "str") == arg.get("type", "str"), where + " type"
        assert doc.get("required", False) == arg.get("required", False), where + " required"
        assert doc.get("default") == arg.get("default"), where + " default"
        assert doc.get("choices") == arg.get("choices"), where + " choices"
        if arg.get("type") == "list":
            assert doc.get("elements") == arg.get("elements"), where + " elements"
        if "password" in key or "secret" in key:
            assert arg.get("no_log") is True, where + " must be no_log"
        if "options" in arg:
            _compare(doc.get("suboptions") or {}, arg["options"], where)


def _with_fragments(doc):
    """The module's options plus those of its pft.* doc fragments, as ansible-doc merges them."""
    options = dict(doc.get("options") or {})
    spec = importlib.util.spec_from_file_location("pft_doc_fragments", os.path.join(REPO, "plugins", "doc_fragments",
                                                                                  "pft.py"))
    frag = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(frag)
    for name in doc.get("extends_documentation_fragment", []):
        if name.startswith("pft."):
            text = getattr(frag.ModuleDocFragment, name.split(".", 1)[1].upper())
            options.update((yaml.safe_load(text) or {}).get("options") or {})
    return options


@pytest.mark.parametrize("name", MODULE_NAMES)
def test_documentation_matches_argument_spec(name, monkeypatch):
    mod, spec, kwargs = _argument_spec(name, monkeypatch)
    doc = yaml.safe_load(mod.DOCUMENTATION)
    assert doc["module"] == name
    assert doc.get("short_description") and doc.get("description") and doc.get("author")
    assert "check_mode" in doc.get("attributes", {}), "attributes block needs check_mode"
    assert "pft.attributes" in doc.get("extends_documentation_fragment", []), "use the shared pft.attributes fragment"
    assert kwargs.get("supports_check_mode") is True, "every pft module supports check mode"
    _compare(_with_fragments(doc), spec, name)
    assert yaml.safe_load(mod.EXAMPLES), "EXAMPLES must parse and not be empty"
    ret = yaml.safe_load(mod.RETURN)
    assert isinstance(ret, dict) and ret, "RETURN must document the result"
    for key, value in ret.items():
        assert value.get("description") and value.get("returned") and value.get("type"), "RETURN." + key


def test_ansible_doc_merges_the_shared_attributes():
    """What ansible-doc shows: the module's support/details over the fragment's text."""
    out = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-doc"), "-t", "module", "--json"]
                         + MODULE_NAMES, capture_output=True, text=True, cwd=REPO, timeout=300,
                         env=dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg")))
    assert out.returncode == 0, out.stderr
    docs = json.loads(out.stdout)
    for name in MODULE_NAMES:
        attrs = docs[name]["doc"]["attributes"]
        for key in ("check_mode", "diff_mode", "platform"):
            assert attrs[key]["description"] and attrs[key]["support"], (name, key)
        assert attrs["platform"]["platforms"] == "posix"
