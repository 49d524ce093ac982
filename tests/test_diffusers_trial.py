"""The trial of issue 32: diffusers' own tiny test configurations (tests/diffusers_test_configs.py), built
random, saved with ``save_pretrained`` and put through ``dardiag inspect`` and ``dardiag profile`` as a
user would, with no size flag: every DiT-style class profiles at the sizes its config allows, anything
else ends in one line (a class refused by name, a config its own forward rejects), never a traceback.

Profiling runs in-process through the CLI with one level, one image and no optional analysis. A config
whose no-flag plan carries more than ``BUDGET`` tokens per block (the pipelines' defaults: up to 475k
video tokens) is profiled at a small ``--input-size``/``--frames`` instead, on CPU; its no-flag sizes
are still the ones ``inspect`` checks, and tests/test_diffusers_fit.py pins the size rules themselves.
"""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from helpers import run_cli  # noqa: E402
from diffusers_test_configs import CONFIGS  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

BUDGET = 1300  # tokens per block profiled as they are on CPU; larger plans get the small flags below
SMALL = ("--input-size", "16")  # a multiple of every patch unit (1, 2, 4, 8); 1 frame token row at most 256
MINIMAL = ("--samples", "1", "--batch-size", "1", "--levels", "1", "--no-cka", "--no-sublayers", "--no-routes",
           "--no-probe", "--no-outliers", "--no-figures", "--device", "cpu", "--no-progress", "--threads", "1")

# configs whose own forward rejects every input (in this environment): said in one line naming the class
ONE_LINE = {
    "AllegroTransformerTests": "rotary",  # head dim 8: its 3-D rotary split does not add up
    "CogVideoX1_5TransformerTests": "rotary",  # head dim 8: get_1d_rotary_pos_embed asserts an even split
    "SanaWMTransformer3DTesterConfig": "chunk_plucker_channels",  # 8 is not 6 x a VAE time stride
}
if importlib.util.find_spec("torchvision") is None:  # concat_padding_mask resizes with torchvision
    ONE_LINE.update(dict.fromkeys(("CosmosTransformerTesterConfig", "CosmosTransformerVideoToWorldTesterConfig"),
                                  "pip install torchvision"))


def _class(name: str):
    cls = getattr(diffusers, name, None)
    return cls if cls is not None else getattr(diffusers.models, name)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("trial")
    cache = {}

    def get(name: str):
        if name not in cache:
            case = CONFIGS[name]
            torch.manual_seed(0)
            _class(case.cls)(**case.config).save_pretrained(root / name)
            cache[name] = root / name
        return cache[name]
    return get


def one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if not line.startswith("warning:")]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize("name", sorted(n for n, c in CONFIGS.items() if not c.heavy))
def test_real_configs_profile_or_say_why_in_one_line(saved, capsys, tmp_path, name):
    case = CONFIGS[name]
    path = saved(name)
    code, out, err = run_cli(capsys, "inspect", path, "--json")
    if case.expect == "refused":
        assert code == 2 and "dardiag profiles" in one_line(err)
        return
    assert code == 0, err
    plan = json.loads(out)
    assert plan["class_name"] == case.cls and plan["depth"] >= 1
    small = () if plan["stream_tokens"] <= BUDGET else SMALL + (
        ("--frames", "2") if len(plan["input_shape"]) == 4 and plan["input_shape"][1] > 2 else ())
    code, out, err = run_cli(capsys, "profile", path, "--out", tmp_path / "run", *MINIMAL, *small)
    if name in ONE_LINE:
        line = one_line(err)
        assert code == 2 and case.cls in line and ONE_LINE[name] in line
        return
    assert code == 0, err
    assert "wrote" in out


@pytest.mark.parametrize("name", sorted(n for n, c in CONFIGS.items() if c.heavy))
def test_heavy_real_configs_plan_on_the_meta_device(name):
    """A configuration too large for the fast suite (PRX's test file builds it 1792 wide): its plan, built on
    the meta device without a weight, is what inspect shows."""
    from dardiag.adapters.diffusers import diffusers_model_subject

    case = CONFIGS[name]
    with torch.device("meta"):
        model = _class(case.cls)(**case.config)
    s = diffusers_model_subject(model, class_name=case.cls)
    assert s.spec.depth >= 1 and s.info["plan"]["stacks"]
