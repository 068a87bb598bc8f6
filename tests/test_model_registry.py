"""Every named model and every ``module:factory`` example through one contract (timm's test_models.py style).

The contract (docs/export.md): RGB float32 in [0, 1], NCHW, in; a finite depth map (N, 1, H, W)
out; training-only heads can be stripped without changing the depth map; the parameter count
is the one the model card reports, where it reports one. Small inputs keep this in the default tier.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SMALL = (64, 96)  # H != W catches a transposed output; both multiples of 32

# Parameters of the deployed model (heads excluded), counted from today's code: a change to a
# spec or to a block shows up here. mdepth-mnv2-fbnet: 2.63 M as its description says (paper 2.6 M).
PARAMS = {
    "fastdepth": 3_960_929,
    "mdepth-mnv2-fbnet": 2_633_801,
    "mdepth-mnv2-fbnet-wide": 3_343_425,
    "mdepth-tiny": 26_377,
}
CARD_ROUNDING = 0.02  # papers print parameters to one decimal in millions


def _names() -> list[str]:
    from mobiledepth.arch import list_models

    return list_models()


@pytest.fixture(scope="module", params=_names())
def named(request):
    """(name, the model with heads, its spec), random weights from a fixed seed."""
    from mobiledepth.arch import build_model

    torch.set_num_threads(1)
    model = build_model(request.param, with_heads=True, seed=0).eval()
    return request.param, model, model.spec


def test_every_yaml_in_models_is_registered():
    stems = sorted(p.stem for p in (REPO / "models").glob("*.yaml"))
    assert stems == sorted(_names()) == sorted(PARAMS)


def test_depth_map_contract(named):
    name, model, _ = named
    x = torch.rand(2, 3, *SMALL, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        depth = model(x)
    assert depth.shape == (2, 1, *SMALL) and depth.dtype == torch.float32, name
    assert torch.isfinite(depth).all(), name
    assert depth.std() > 0, f"{name}: a constant depth map"


def test_parameters_as_counted_and_as_the_card_reports(named):
    from mobiledepth.arch.stats import count_parameters

    name, model, spec = named
    params = count_parameters(model)
    assert params == PARAMS[name]
    reported = ((spec.get("card") or {}).get("reported") or {}).get("params_m")
    if reported is not None:
        assert params / 1e6 == pytest.approx(reported, rel=CARD_ROUNDING), name
    stated = re.search(r"([\d.]+) M parameters", spec.get("description", ""))
    if stated:
        assert round(params / 1e6, 2) == float(stated.group(1)), name


def test_heads_strip_without_touching_the_depth_map(named):
    from mobiledepth.arch import build_model
    from mobiledepth.arch.stats import count_parameters

    name, model, spec = named
    x = torch.rand(1, 3, *SMALL, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = model.forward_train(x)
        stripped = build_model(spec, with_heads=True, seed=0).eval().strip_heads()
        after = stripped.forward_train(x)
    head_count = len(spec["architecture"].get("heads") or [])
    assert len(before.intermediates) == head_count and after.intermediates == []
    assert all(h.shape[:2] == (1, 1) and torch.isfinite(h).all() for h in before.intermediates)
    assert torch.equal(before.depth, after.depth) and torch.equal(model(x), after.depth)
    assert count_parameters(stripped, include_heads=True) == count_parameters(model) == PARAMS[name]
    if head_count:
        assert count_parameters(model, include_heads=True) > PARAMS[name]
    no_heads = build_model(spec, with_heads=False)
    assert {k: v.shape for k, v in no_heads.state_dict().items()} == {k: v.shape for k, v in stripped.state_dict().items()}


def test_export_source_of_every_name(named):
    """What `mobiledepth export --model NAME` starts from: heads gone, eval mode, the spec's default size."""
    from mobiledepth.arch.stats import count_parameters
    from mobiledepth.export.source import deploy_module, load_model_source

    name, _, spec = named
    source = load_model_source(name)
    assert (source.kind, source.name) == ("zoo", name)
    assert source.default_input_size == tuple(spec["input_size"])
    assert not source.model.training and count_parameters(source.model, include_heads=True) == PARAMS[name]
    with torch.no_grad():
        assert deploy_module(source.model)(torch.rand(1, 3, *SMALL)).shape == (1, 1, *SMALL)


# ----------------------------------------------------------------------------- module:factory
def doc_factory_example() -> str:
    """The python block of docs/export.md's "Your own model" section, verbatim."""
    text = (REPO / "docs" / "export.md").read_text()
    section = text.split("## Your own model", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


# MyNet is the reader's own network in the docs; each variant returns one output form the contract allows.
MYNET = '''
import torch


class MyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.depth = torch.nn.Conv2d(4, 1, 1)
        self.aux = torch.nn.Conv2d(4, 2, 1)  # training-only

    def forward(self, x):
        features = torch.relu(self.body(x))
        depth = self.depth(features)
        aux = self.aux(features) if self.aux is not None else depth[:, :0]  # stripped: an empty stand-in
        return {OUTPUT}
'''
OUTPUTS = {"tensor": "depth", "tuple": "depth, aux", "list": "[depth, aux]", "dict": '{"aux": aux, "depth": depth}'}
STRIP = '''
    def strip_heads(self):
        self.aux = None
        return self
'''


@pytest.fixture()
def factory_module(tmp_path, monkeypatch):
    """Write my_depth.py = a MyNet variant + the docs' example, importable from the current directory."""
    def write(output: str, strip: bool) -> str:
        name = f"my_depth_{output}_{int(strip)}"
        code = MYNET.replace("{OUTPUT}", OUTPUTS[output]) + (STRIP if strip else "") + doc_factory_example()
        (tmp_path / f"{name}.py").write_text(code)
        return f"{name}:make"

    monkeypatch.chdir(tmp_path)
    return write


def test_the_docs_example_is_a_factory():
    example = doc_factory_example()
    assert "def make():" in example and "return model" in example and "input_size" in example


@pytest.mark.parametrize("strip", [False, True], ids=["keeps-heads", "strip_heads"])
@pytest.mark.parametrize("output", sorted(OUTPUTS))
def test_factory_contract(factory_module, output, strip):
    from mobiledepth.export.source import deploy_module, load_model_source

    ref = factory_module(output, strip)
    source = load_model_source(ref, seed=0)
    assert (source.kind, source.name, source.default_input_size) == ("factory", ref, (256, 320))
    assert (source.model.aux is None) == strip  # strip_heads() was called when the model has one
    assert not source.model.training
    x = torch.rand(2, 3, *SMALL, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        depth = deploy_module(source.model)(x)
        reference = source.model.depth(torch.relu(source.model.body(x)))
    assert depth.shape == (2, 1, *SMALL) and torch.isfinite(depth).all()
    assert torch.equal(depth, reference)
    assert load_model_source(ref, seed=0).spec_hash == source.spec_hash  # the fingerprint is stable
