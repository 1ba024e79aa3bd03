"""Registering a probe: what the decorator checks, and what the registry says about it."""

import warnings

import pytest

from bnprobe.errors import BnprobeError
from bnprobe.probes import _registry as base
from bnprobe.probes import get_probe, list_probes
from bnprobe.probes.base import Probe, register_probe


@pytest.fixture(autouse=True)
def registry(monkeypatch):
    """Each test registers into a copy: the built-ins stay as they are for the rest of the session."""
    base._load_plugins()
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))


def _probe_class(qualname="MeanProbe", **attributes):
    def measure(self, layer, context):
        return {"mean": float(layer.vectors().mean())}

    return type(qualname, (Probe,), {"__module__": "__main__", "measure": measure, **attributes})


def test_a_notebook_probe_is_listed_with_its_module_and_built_ins_as_built_in():
    register_probe("mean_here")(_probe_class())
    sources = {info.name: info.source for info in list_probes()}
    assert sources["mean_here"] == "__main__" and sources["sparsity"] == "built-in"


def test_taking_over_a_name_warns_but_redefining_the_same_class_does_not():
    with pytest.warns(UserWarning, match="probe 'sparsity' .*SparsityProbe.* is replaced by __main__.MeanProbe"):
        register_probe("sparsity")(_probe_class())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        register_probe("sparsity")(_probe_class())  # the cell run again: a new class object, same class
    assert type(get_probe("sparsity")).__module__ == "__main__"


def test_a_notebook_probe_registered_before_the_plugins_load_is_not_replaced_by_one(monkeypatch):
    """The installed bnprobe-cka plugin also provides 'cka'; the user's class, registered first, wins."""
    monkeypatch.setattr(base, "_PLUGINS_LOADED", False)
    with pytest.warns(UserWarning, match=r"probe 'cka' .bnprobe_cka\._probe\.CKAProbe. is replaced by __main__.MyCKA"):
        register_probe("cka")(_probe_class("MyCKA"))
    assert type(get_probe("cka")).__qualname__ == "MyCKA"


@pytest.mark.parametrize(("attribute", "value"), [("needs", "pixels"), ("scope", "network")])
def test_needs_and_scope_are_checked_at_the_decorator(attribute, value):
    with pytest.raises(TypeError, match=f"probe 'odd': {attribute} must be one of .*, got '{value}'"):
        register_probe("odd")(_probe_class(**{attribute: value}))


def test_a_parameter_not_stored_under_its_name_is_named_not_dropped():
    def init(self, k: int = 5):
        super(cls, self).__init__()
        self.kay = k

    cls = _probe_class("ForgetfulProbe", __init__=init, needs="vectors")
    register_probe("forgetful")(cls)
    with pytest.raises(BnprobeError, match="probe 'forgetful' .__main__.ForgetfulProbe.: __init__ must store each "
                                           "parameter as self.<name>; missing: k"):
        _ = get_probe("forgetful", k=3).key
