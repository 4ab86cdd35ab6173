"""docs/api.md is what docs/make_api.py writes from the code, and the library modules document
every public name."""

import inspect
import os
import subprocess
import sys

import pytest

import invtransfer.git
import invtransfer.invariance

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def test_api_page_is_current():
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "docs", "make_api.py"), "--check"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("module", [invtransfer.git, invtransfer.invariance])
def test_every_public_name_exists_and_is_documented(module):
    for name in module.__all__:
        obj = getattr(module, name)
        if callable(obj):
            assert inspect.getdoc(obj), f"{module.__name__}.{name} has no docstring"
            if inspect.isclass(obj):
                for attr, value in vars(obj).items():
                    if not attr.startswith("_") and (callable(value) or isinstance(value, property)):
                        assert inspect.getdoc(value), f"{module.__name__}.{name}.{attr} has no docstring"
    private = [n for n in vars(module) if not n.startswith("_") and n not in module.__all__
               and getattr(vars(module)[n], "__module__", None) == module.__name__]
    assert private in ([], ["Transform"]), f"public-looking names not in __all__: {private}"
