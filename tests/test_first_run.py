"""A first real run: the cost line and OUT's fate before any work, ``--device auto``, and faults that must
be one line (a full disk, a ``_run.json`` of binary garbage, a run failing before its first unit, the
latents summary), plus a SIGTERM to ``dardiag train``. Tiny models, in process.
"""

from __future__ import annotations

import errno
import signal

import pandas as pd
import pytest
import torch

import dardiag
import dardiag.api as api
import dardiag.store.parquet as parquet
import dardiag.train.trainer as trainer
from dardiag.checkpoints import save_checkpoint
from dardiag.engine import cost
from dardiag.engine.devices import describe_device, resolve_device
from dardiag.errors import DardiagError
from dardiag.runs.layout import RUN_FILE
from tests.helpers import randomised_dit
from tests.test_train_cli_errors import TINY_FLAGS, run_cli
from tests.test_train_outdir import same_weights, weights

TINY = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=4, num_classes=10)
KW = dict(noise_levels=[0.2, 0.8], samples=8, batch_size=4, device="cpu")

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("first")
    save_checkpoint(d / "res.pt", randomised_dit(TINY, 0, scale=0.05), family="sit", step=1)
    return d / "res.pt"


def cli(capsys, *args) -> tuple[int, str, str]:
    return run_cli(capsys, *args)


def one_line(code: int, err: str, *needles: str) -> str:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in err, err
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


# ----------------------------------------------------------------------------- said before any work


def test_the_first_lines_give_the_device_the_plan_its_cost_and_what_happens_to_out(ckpt, tmp_path, capsys):
    out = tmp_path / "p"
    args = ["profile", ckpt, "--out", out, "--levels", "2", "--samples", "8", "--batch-size", "4", "--no-figures",
            "--no-progress"]
    code, text, err = cli(capsys, *args)
    assert code == 0, err
    lines = text.splitlines()
    assert lines[0].startswith(f"OUT: {out}  (device cpu (auto: no CUDA here)")  # --device auto, said first
    assert lines[1].startswith("loaded res.pt")  # loading is a step of its own, before the plan
    plan = next(line for line in lines if line.startswith("plan: "))
    for part in ("res (sit, 2 blocks, width 32, 16 tokens", "2 levels x 8 images = 4 minibatches of 4",
                 "(16 image forward+backward passes)", "memory ~", "weights", "one minibatch's backward", "CKA"):
        assert part in plan, plan
    assert f"OUT {out}: fresh run (3 units: 2 noise levels + the timestep probe)" in text
    assert lines.index(plan) < lines.index(f"OUT {out}: fresh run (3 units: 2 noise levels + the timestep probe)")

    code, text, _ = cli(capsys, *args)  # complete: read back
    assert f"OUT {out}: complete (3 units" in text
    code, text, err = cli(capsys, *args[:-4], "--batch-size", "8", "--force", "--no-figures", "--no-progress")
    assert code == 0 and "replacing a complete profile run, kept in p/_replaced until this run completes" in text, err


def test_a_plan_over_the_free_memory_warns_and_names_a_batch_size_that_fits(ckpt, monkeypatch):
    subject = api.open_subject(str(ckpt))
    from dardiag.engine.config import ProfileConfig
    from dardiag.engine.plan import plan_models

    config = ProfileConfig(samples=64, batch_size=16, noise_levels=[0.5], device="cpu")
    plan = plan_models([subject], config, None, None, "cpu")[0]
    c = cost.estimate(plan, config, "cpu")
    assert c.minibatch_bytes == cost.ACT_WORDS * 4 * 32 * 16 * 2 * 16  # words x bytes x D x T x depth x B
    assert c.passes == 64 and c.minibatches == 4 and c.warning() is None
    room = int((c.cka_bytes + c.minibatch_bytes / 2) / cost.HEADROOM) + 1  # half a minibatch fits
    monkeypatch.setattr(cost, "free_memory", lambda device: room)
    tight = cost.estimate(plan, config, "cpu")
    b = tight.suggested_batch_size()
    assert b == 8 and f"pass --batch-size {b}" in tight.warning()
    assert tight.minibatch_bytes * b / 16 + tight.cka_bytes <= cost.HEADROOM * tight.free_bytes


def test_a_model_that_fits_one_image_at_a_time_takes_batch_1_when_cka_is_over_tokens(ckpt, monkeypatch):
    from dardiag.engine.config import Analyses, ProfileConfig
    from dardiag.engine.plan import plan_models

    subject = api.open_subject(str(ckpt))
    config = ProfileConfig(samples=8, batch_size=16, noise_levels=[0.5], device="cpu")
    plan = plan_models([subject], config, None, None, "cpu")[0]
    images = ProfileConfig(samples=8, batch_size=16, noise_levels=[0.5], device="cpu",
                           analyses=Analyses(cka_rows="images"))
    for cfg, fits in ((config, 1), (images, None)):  # over tokens, B x T >= 4 rows already; over images B >= 4
        c = cost.estimate(plan, cfg, "cpu")
        room = int((c.cka_bytes + 1.5 * c.minibatch_bytes / c.batch_size) / cost.HEADROOM)  # 1.5 images fit
        monkeypatch.setattr(cost, "free_memory", lambda device: room)
        assert cost.estimate(plan, cfg, "cpu").suggested_batch_size() == fits
    with pytest.raises(DardiagError, match="too small for CKA"):
        ProfileConfig(batch_size=2, analyses=Analyses(cka_rows="images"))
    one = dardiag.profile(str(ckpt), samples=3, batch_size=1, noise_levels=[0.5], analyses={"probe": False})
    two = dardiag.profile(str(ckpt), samples=3, batch_size=3, noise_levels=[0.5], analyses={"probe": False})
    key = ["metric", "block", "noise_level"]
    cka = [d[d.metric == "cka"].set_index(key + ["other_block"]).value for d in (one, two)]
    assert len(cka[0]) > 0 and cka[0].notna().all()  # three minibatches of one image, T rows each
    act = [d[d.metric == "act_rms"].set_index(key).value for d in (one, two)]
    pd.testing.assert_series_equal(act[0], act[1], rtol=1e-5)  # per-image statistics: B does not matter


def test_device_auto_is_cuda_when_present_else_cpu(monkeypatch):
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu") and describe_device("auto") == "device cpu (auto: no CUDA here)"
    with pytest.raises(DardiagError, match="auto, cpu, cuda"):
        resolve_device("tpu")


# ----------------------------------------------------------------------------- faults: one line each


@pytest.mark.parametrize("where", ["part", "run file"])
def test_a_full_disk_is_one_line_and_the_same_command_continues(ckpt, tmp_path, capsys, monkeypatch, where):
    out = tmp_path / "full"
    args = ["profile", ckpt, "--out", out, "--levels", "3", "--samples", "8", "--batch-size", "4", "--no-figures",
            "--no-progress", "--no-probe", "--device", "cpu"]
    ref = tmp_path / "ref"
    assert cli(capsys, *[a if a != out else ref for a in args])[0] == 0
    real_table = parquet.pq.write_table
    calls = []

    def full_table(table, f, **kw):  # the 2nd part meets a full disk
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_table(table, f, **kw)

    import dardiag.runs.profile_run as profile_run

    real_json = profile_run._write_json

    def full_json(path, obj):  # _run.json after the 2nd part: the disk is full
        if len(obj.get("completed", [])) == 2:
            from dardiag.atomic import atomic_write

            def write(f):
                raise OSError(errno.ENOSPC, "No space left on device")
            atomic_write(path, write)
        return real_json(path, obj)

    if where == "part":
        monkeypatch.setattr(parquet.pq, "write_table", full_table)
    else:
        monkeypatch.setattr(profile_run, "_write_json", full_json)
    code, _, err = cli(capsys, *args)
    one_line(code, err, "cannot write", "the disk is full", "run the same command again")
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]  # no half-written file left
    assert dardiag.read_profile(out).noise_level.nunique() == 1  # the first level is kept
    monkeypatch.undo()
    assert cli(capsys, *args)[0] == 0
    drop = ["run_id"]
    pd.testing.assert_frame_equal(dardiag.read_profile(out).drop(columns=drop).sort_values(
        ["metric", "noise_level", "site", "block", "other_block", "sublayer", "source"]).reset_index(drop=True),
        dardiag.read_profile(ref).drop(columns=drop).sort_values(
        ["metric", "noise_level", "site", "block", "other_block", "sublayer", "source"]).reset_index(drop=True))


def test_a_run_file_of_binary_garbage_is_one_line_in_plot_read_profile_and_profile(ckpt, tmp_path, capsys):
    out = tmp_path / "g"
    dardiag.profile(str(ckpt), out=out, **KW)
    (out / RUN_FILE).write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe garbage" * 20)
    with pytest.raises(DardiagError, match="damaged .not text"):
        dardiag.read_profile(out)
    one_line(*cli(capsys, "plot", out)[::2], "damaged (not text")
    one_line(*cli(capsys, "profile", ckpt, "--out", out, "--levels", "2", "--samples", "8", "--batch-size", "4",
                  "--no-progress")[::2], "damaged (not text", "--force")


def test_a_run_failing_before_its_first_unit_leaves_no_out(tmp_path, capsys):
    model = randomised_dit(TINY, 1)
    with torch.no_grad():
        model.blocks[0].mlp.fc1.weight[0, 0] = float("nan")
    save_checkpoint(tmp_path / "nan.pt", model, family="sit", step=1)
    out = tmp_path / "never"
    with pytest.warns(UserWarning, match="non-finite"):  # said first, then the one-line error
        code, _, err = cli(capsys, "profile", tmp_path / "nan.pt", "--out", out, "--levels", "2", "--samples", "8",
                           "--batch-size", "4", "--no-progress")
    one_line(code, err, "not finite")
    assert not out.exists()


# ----------------------------------------------------------------------------- train: SIGTERM


def test_sigterm_to_train_finishes_the_step_saves_it_exits_143_and_the_same_command_continues(tmp_path, capsys,
                                                                                             monkeypatch):
    steps = ["--steps", "6", "--save-every", "4"]
    ref, out = tmp_path / "ref", tmp_path / "run"
    assert cli(capsys, "train", "--out", ref, *steps, *TINY_FLAGS)[0] == 0
    real = trainer.update_ema
    calls = []

    def signal_at_step_3(ema, model, decay):
        real(ema, model, decay)
        calls.append(1)
        if len(calls) == 3:
            signal.raise_signal(signal.SIGTERM)  # mid-step 3: the step finishes first

    monkeypatch.setattr(trainer, "update_ema", signal_at_step_3)
    code, text, err = cli(capsys, "train", "--out", out, *steps, *TINY_FLAGS)
    assert code == 143 and "SIGTERM: stopping after this step" in err and "Traceback" not in err, err
    assert text.startswith(f"OUT: {out}  (device ")
    assert weights(out / "last.pt")["step"] == 3 and not (out / "ckpt_0000003.pt").exists()  # between saves
    monkeypatch.undo()
    assert cli(capsys, "train", "--out", out, *steps, *TINY_FLAGS)[0] == 0
    assert same_weights(out / "last.pt", ref / "last.pt")
    assert pd.read_csv(out / "loss.csv")["loss"].equals(pd.read_csv(ref / "loss.csv")["loss"])


# ----------------------------------------------------------------------------- latents: the summary adds up


def test_the_latents_summary_counts_add_up():
    from dardiag.cli.cmd_latents import summary_lines

    s = {"count": 1, "chosen": 2, "found": 2, "skipped": 1, "skipped_examples": ["z.png: not a readable image"],
         "classes": None, "labelled": False, "shape": [1, 4, 8, 8], "path": "lat.pt", "seed": 0}
    first, second = summary_lines(s).splitlines()
    assert first == "encoded 1 of 2 images, skipped 1 (z.png: not a readable image)"
    assert second.startswith("images read: all 2 found; no labels")
    s.update(count=3, chosen=3, found=10, skipped=0, skipped_examples=[])
    assert summary_lines(s).splitlines()[0] == "encoded 3 of 3 images"
    assert "3 of 10 found, chosen at random (seed 0)" in summary_lines(s)
