"""``dardiag latents``: a folder of real images -> the latents file ``dardiag profile --inputs`` reads.

A tiny random AutoencoderKL (2 blocks: downsampling 2) saved to a temp dir stands in for the model's
VAE; real PNG/JPEG files are written with PIL. The invariant pinned first: the file's latents equal
diffusers' own encoding of DiT's preprocessing, written here again from its description.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

pytest.importorskip("diffusers")
from diffusers import AutoencoderKL  # noqa: E402

from dardiag.errors import DardiagError  # noqa: E402
from dardiag.latents import encode_folder  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 16  # pixels; the tiny VAE's latents are then 8 x 8


def tiny_vae(**config) -> AutoencoderKL:
    torch.manual_seed(0)
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=4,
                         norm_num_groups=8, sample_size=32, **config).eval()


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("vae")
    tiny_vae().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def shifted_vae_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("vae_shift")
    tiny_vae(scaling_factor=0.7, shift_factor=0.25).save_pretrained(path)
    return path


def noise_image(w: int, h: int, seed: int, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "L": 1, "RGBA": 4, "LA": 2}[mode]
    a = rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
    return Image.fromarray(a[..., 0] if channels == 1 else a)


def write(folder, name, img: Image.Image, **kw):
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)
    return path


@pytest.fixture
def class_folder(tmp_path):
    """Two classes created out of order; one has a nested subfolder; sizes exercise the BOX halving."""
    root = tmp_path / "imgs"
    write(root, "zebra/b.png", noise_image(70, 40, 1))  # shorter side 40 >= 2 * 16: halved once
    write(root, "zebra/a.jpg", noise_image(30, 50, 2), quality=95)
    write(root, "zebra/sub/c.png", noise_image(17, 17, 3))
    write(root, "apple/x.png", noise_image(100, 130, 4))  # halved twice
    (root / "apple" / "notes.txt").write_text("not an image")
    return root


#################################################################################
#               The reference: DiT's preprocessing, written again               #
#################################################################################


def reference_crop(path, size: int) -> torch.Tensor:
    img = Image.open(path).convert("RGB")
    while min(img.size) >= 2 * size:
        img = img.resize(tuple(s // 2 for s in img.size), resample=Image.BOX)
    scale = size / min(img.size)
    img = img.resize(tuple(round(s * scale) for s in img.size), resample=Image.BICUBIC)
    arr = np.array(img)  # (H, W, 3)
    top, left = (arr.shape[0] - size) // 2, (arr.shape[1] - size) // 2
    arr = arr[top:top + size, left:left + size]
    return torch.tensor(arr).permute(2, 0, 1).float() / 127.5 - 1  # (3, size, size)


def reference_latents(vae_path, paths, size=SIZE) -> torch.Tensor:
    vae = AutoencoderKL.from_pretrained(vae_path).eval()
    x = torch.stack([reference_crop(p, size) for p in paths])  # (N, 3, size, size)
    with torch.no_grad():
        mean = vae.encode(x).latent_dist.mean  # (N, 4, size/2, size/2)
    shift = vae.config.shift_factor or 0.0
    return (mean - shift) * vae.config.scaling_factor


def load(path) -> dict:
    return torch.load(path, weights_only=True)


#################################################################################
#                                  Tests                                        #
#################################################################################


# (a) + (c): the latents are diffusers' encoding of DiT's crop; labels follow sorted folder names
def test_latents_equal_diffusers_encoding_and_labels_follow_sorted_folders(class_folder, vae_dir, tmp_path):
    out = tmp_path / "lat.pt"
    summary = encode_folder(class_folder, vae_dir, out, size=SIZE, batch_size=3)
    order = ["apple/x.png", "zebra/a.jpg", "zebra/b.png", "zebra/sub/c.png"]  # ImageFolder walk order
    data = load(out)
    assert summary["count"] == 4 and summary["skipped"] == 0 and summary["path"] == str(out)
    assert data["meta"]["files"] == order
    assert data["meta"]["class_names"] == ["apple", "zebra"]
    assert data["y"].dtype == torch.int64 and data["y"].tolist() == [0, 1, 1, 1]
    assert data["x0"].dtype == torch.float32 and data["x0"].shape == (4, 4, 8, 8)
    expected = reference_latents(vae_dir, [class_folder / f for f in order])
    torch.testing.assert_close(data["x0"], expected, rtol=0, atol=1e-5)


# (b) a config with shift_factor: (mean - shift) * scale
def test_shift_factor_is_subtracted_before_scaling(class_folder, shifted_vae_dir, tmp_path):
    out = tmp_path / "lat.pt"
    encode_folder(class_folder, shifted_vae_dir, out, size=SIZE)
    data = load(out)
    assert data["meta"]["shift_factor"] == 0.25 and data["meta"]["scaling_factor"] == 0.7
    expected = reference_latents(shifted_vae_dir, [class_folder / f for f in data["meta"]["files"]])
    torch.testing.assert_close(data["x0"], expected, rtol=0, atol=1e-5)


# (c) a flat folder: no labels, or one label with --class; images beside folders is ambiguous
def test_flat_folder_labels(tmp_path, vae_dir):
    flat = tmp_path / "flat"
    for i in range(3):
        write(flat, f"{i}.PNG", noise_image(20, 24, i))  # the extension check ignores case
    encode_folder(flat, vae_dir, tmp_path / "a.pt", size=SIZE)
    assert "y" not in load(tmp_path / "a.pt")
    encode_folder(flat, vae_dir, tmp_path / "b.pt", size=SIZE, class_index=7)
    data = load(tmp_path / "b.pt")
    assert data["y"].tolist() == [7, 7, 7] and data["meta"]["class_index"] == 7
    write(flat, "cls/x.png", noise_image(20, 20, 9))
    with pytest.raises(DardiagError, match="both images"):
        encode_folder(flat, vae_dir, tmp_path / "c.pt", size=SIZE)


def test_class_flag_with_class_subfolders_is_an_error(class_folder, vae_dir, tmp_path):
    with pytest.raises(DardiagError, match="--class"):
        encode_folder(class_folder, vae_dir, tmp_path / "lat.pt", size=SIZE, class_index=1)


# (d) every bad kind of image is converted or skipped and counted; none crashes
def test_bad_images_are_converted_or_skipped_and_counted(tmp_path, vae_dir):
    root = tmp_path / "bad"
    good = write(root, "c/good.png", noise_image(20, 20, 0))
    buf = io.BytesIO()
    noise_image(40, 40, 1).save(buf, format="PNG")
    (root / "c" / "truncated.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (root / "c" / "random.jpg").write_bytes(np.random.default_rng(0).bytes(500))
    write(root, "c/gray.png", noise_image(20, 20, 2, "L"))
    write(root, "c/gray_alpha.png", noise_image(20, 20, 3, "LA"))
    write(root, "c/palette.gif", noise_image(20, 20, 4).convert("P"))
    write(root, "c/rgba.png", noise_image(20, 20, 5, "RGBA"))
    write(root, "c/cmyk.jpg", Image.new("CMYK", (20, 20), (10, 80, 30, 40)))
    write(root, "c/sixteen.png", Image.fromarray(np.full((20, 20), 100 * 257, dtype=np.uint16)))  # I;16
    write(root, "c/thirtytwo.tif", Image.fromarray(np.full((20, 20), 100 * 257, dtype=np.int32)))  # I
    write(root, "c/eight.png", Image.fromarray(np.full((20, 20), 100, dtype=np.uint8)))  # the 8-bit twin
    write(root, "c/tiny.png", noise_image(4, 4, 6))
    (root / "c" / "readme.txt").write_text("ignored by extension")
    assert Image.open(root / "c" / "sixteen.png").mode == "I;16" and Image.open(root / "c" / "cmyk.jpg").mode == "CMYK"

    out = tmp_path / "lat.pt"
    before = ImageFile.LOAD_TRUNCATED_IMAGES
    s = encode_folder(root, vae_dir, out, size=SIZE, batch_size=4)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is before is False  # not switched on behind the user's back
    assert (s["count"], s["skipped"]) == (9, 3)
    reasons = "\n".join(s["skipped_examples"])
    assert "truncated.png: truncated" in reasons and "random.jpg: not a readable image" in reasons
    assert "tiny.png: too small: 4x4" in reasons
    data = load(out)
    files = data["meta"]["files"]
    assert data["meta"]["skipped"] == 3 and "readme.txt" not in " ".join(files)
    x0 = dict(zip(files, data["x0"]))
    # 16- and 32-bit gray keep their tone (100 * 257 -> 100), not PIL's saturation at 255
    torch.testing.assert_close(x0["c/sixteen.png"], x0["c/eight.png"], rtol=0, atol=1e-6)
    torch.testing.assert_close(x0["c/thirtytwo.tif"], x0["c/eight.png"], rtol=0, atol=1e-6)
    # RGBA drops alpha (as ImageFolder's convert("RGB")): it encodes like its own RGB channels
    rgb = tmp_path / "rgb.png"
    noise_image(20, 20, 5, "RGBA").convert("RGB").save(rgb)
    torch.testing.assert_close(x0["c/rgba.png"], reference_latents(vae_dir, [rgb])[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(x0["c/good.png"], reference_latents(vae_dir, [good])[0], rtol=0, atol=1e-5)


def test_all_images_skipped_writes_nothing(tmp_path, vae_dir):
    root = tmp_path / "junk"
    root.mkdir()
    (root / "a.png").write_bytes(b"not a png")
    write(root, "b.png", noise_image(3, 30, 0))
    with pytest.raises(DardiagError, match="every one of the 2 images was skipped"):
        encode_folder(root, vae_dir, tmp_path / "lat.pt", size=SIZE)
    assert not (tmp_path / "lat.pt").exists() and not list(tmp_path.glob(".lat.pt*"))


# (e) an existing file survives without --force, and is replaced with it
def test_existing_out_needs_force(class_folder, vae_dir, tmp_path):
    out = tmp_path / "lat.pt"
    out.write_bytes(b"precious")
    with pytest.raises(DardiagError, match="--force"):
        encode_folder(class_folder, vae_dir, out, size=SIZE)
    assert out.read_bytes() == b"precious"
    encode_folder(class_folder, vae_dir, out, size=SIZE, force=True)
    assert load(out)["x0"].shape[0] == 4


# (g) the file is weights_only-loadable with plain meta; --sample is a seeded, batch-independent draw
def test_sample_is_deterministic_and_file_is_plain(class_folder, vae_dir, tmp_path):
    def run(name, **kw):
        encode_folder(class_folder, vae_dir, tmp_path / name, size=SIZE, **kw)
        return load(tmp_path / name)

    mean = run("mean.pt")
    a, again = run("a.pt", sample=True, seed=3, batch_size=4), run("again.pt", sample=True, seed=3, batch_size=4)
    b, c = run("b.pt", sample=True, seed=3, batch_size=1), run("c.pt", sample=True, seed=4)
    assert torch.equal(a["x0"], again["x0"])
    # another batch size draws the same noise per image (convolutions may differ in the last bits)
    torch.testing.assert_close(a["x0"], b["x0"], rtol=0, atol=1e-5)
    assert not torch.equal(a["x0"], c["x0"]) and not torch.equal(a["x0"], mean["x0"])
    assert a["meta"]["posterior"] == "sample" and mean["meta"]["posterior"] == "mean" and a["meta"]["seed"] == 3
    meta = mean["meta"]
    for key in ("folder", "class_names", "vae", "vae_class", "scaling_factor", "shift_factor", "size", "count",
                "skipped", "skipped_examples", "posterior", "seed", "dtype", "dardiag_version"):
        assert key in meta, key
    for key, value in meta.items():
        assert isinstance(value, (str, int, float, bool)) or (
            isinstance(value, list) and all(isinstance(v, str) for v in value)), key
    assert meta["folder"] == str(class_folder) and meta["vae_class"] == "AutoencoderKL" and meta["shift_factor"] == 0.0


# (h) --samples with a seed: a deterministic subset, in folder order
def test_samples_pick_a_seeded_subset(tmp_path, vae_dir):
    flat = tmp_path / "flat"
    for i in range(8):
        write(flat, f"{i}.png", noise_image(20, 20, i))

    def files(seed):
        s = encode_folder(flat, vae_dir, tmp_path / f"s{seed}.pt", size=SIZE, samples=3, seed=seed, force=True)
        assert "3 of 8 images chosen at random" in s["selection"]
        return load(tmp_path / f"s{seed}.pt")["meta"]["files"]

    first = files(0)
    assert len(first) == 3 and first == sorted(first) and files(0) == first
    assert any(files(seed) != first for seed in (1, 2, 3))
    s = encode_folder(flat, vae_dir, tmp_path / "all.pt", size=SIZE, samples=100)
    assert s["count"] == 8 and s["selection"] == "all 8 images"


#################################################################################
#                        The CLI: one-line errors, exit 2                       #
#################################################################################


def cli(capsys, *args) -> tuple[int, str, str]:
    from dardiag.cli.app import app

    try:
        app(["latents", *map(str, args)])
        code = 0
    except SystemExit as e:
        code = e.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code, err, *needles):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_cli_encodes_and_reports(capsys, class_folder, vae_dir, tmp_path):
    code, out, err = cli(capsys, class_folder, "--vae", vae_dir, "--out", tmp_path / "lat.pt", "--size", SIZE)
    assert code == 0, err
    assert "encoded 4 of 4 images\n" in out and "images read: all 4 found; 2 classes" in out
    assert load(tmp_path / "lat.pt")["x0"].shape == (4, 4, 8, 8)


@pytest.mark.parametrize("case", ["missing folder", "empty folder", "hub id", "size too small", "size not a multiple",
                                  "bad dtype", "bad device", "no diffusers", "existing out"])
def test_cli_one_line_errors(case, capsys, class_folder, vae_dir, tmp_path, monkeypatch):
    images, vae, out, extra, needle = class_folder, str(vae_dir), tmp_path / "lat.pt", [], None
    if case == "missing folder":
        images, needle = tmp_path / "nowhere", "no such folder"
    elif case == "empty folder":
        images, needle = tmp_path / "empty", "is empty"
        images.mkdir()
    elif case == "hub id":
        vae, needle = "stabilityai/sd-vae-ft-ema", "offline"
    elif case == "size too small":
        extra, needle = ["--size", "4"], "--size must be at least 8"
    elif case == "size not a multiple":
        extra, needle = ["--size", "17"], "not a multiple of 2"
    elif case == "bad dtype":
        extra, needle = ["--dtype", "float8"], "unknown --dtype"
    elif case == "bad device":
        extra, needle = ["--device", "tpu"], "unknown --device"
    elif case == "no diffusers":
        monkeypatch.setitem(__import__("sys").modules, "diffusers", None)  # import diffusers -> ImportError
        needle = "pip install 'dardiag[diffusers]'"
    elif case == "existing out":
        out.write_bytes(b"keep")
        needle = "--force"
    code, _, err = cli(capsys, images, "--vae", vae, "--out", out, "--size", SIZE, *extra)
    assert_one_line_error(code, err, needle)
    assert not out.exists() or out.read_bytes() == b"keep"


def test_a_full_disk_is_one_line_and_the_same_command_writes_the_file(capsys, class_folder, vae_dir, tmp_path,
                                                                     monkeypatch):
    from helpers import full_disk

    out = tmp_path / "lat.pt"
    hit = full_disk(monkeypatch, "lat.pt")
    code, _, err = cli(capsys, class_folder, "--vae", vae_dir, "--out", out, "--size", SIZE)
    assert_one_line_error(code, err, "the disk is full", "run the same command again")
    assert hit and not out.exists() and not list(tmp_path.glob(".*"))
    monkeypatch.undo()
    code, _, err = cli(capsys, class_folder, "--vae", vae_dir, "--out", out, "--size", SIZE)
    assert code == 0 and load(out)["x0"].shape == (4, 4, 8, 8), err


def test_profile_reads_a_latents_file_and_says_what_it_is(class_folder, vae_dir, tmp_path):
    """The workflow end to end: images -> latents -> profile; the inputs are named in the table."""
    from dardiag.engine.config import Analyses
    from dardiag.api import profile
    from dardiag.models import DiT, DiTConfig

    out = tmp_path / "lat.pt"
    encode_folder(class_folder, vae_dir, out, size=SIZE)
    torch.manual_seed(0)
    model = DiT(DiTConfig(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=4,
                          num_classes=2))
    df = profile(model, family="sit", inputs=out, noise_levels=[0.5], batch_size=4,
                 analyses=Analyses(cka=False, probe=False))
    assert set(df.inputs) == {f"latents of imgs/ (4 images, VAE {vae_dir.name})"}
    meta = df.attrs["dardiag"]["config"]
    assert meta["inputs_kind"] == "image latents" and str(class_folder) in meta["inputs"]
    assert set(df.n_samples) == {4}


def test_a_stop_keeps_the_encoded_batches_and_the_same_command_continues(class_folder, vae_dir, tmp_path):
    """The first SIGTERM finishes the batch, keeps it in .OUT.partial (OUT itself is not written) and stops;
    the same call continues after it, and the file holds the same images and latents."""
    import signal

    from dardiag.runs.stop import Stopped, stop_on_signals

    whole = tmp_path / "whole.pt"
    encode_folder(class_folder, vae_dir, whole, size=SIZE, batch_size=2)
    out = tmp_path / "lat.pt"

    def signal_at_2(done, total):  # while the first batch is read: it still gets encoded
        if done == 2:
            signal.raise_signal(signal.SIGTERM)

    with stop_on_signals(notify=lambda line: None), pytest.raises(Stopped) as e:
        encode_folder(class_folder, vae_dir, out, size=SIZE, batch_size=2, progress=signal_at_2)
    assert e.value.exit_code == 143 and not out.exists()
    kept = torch.load(tmp_path / ".lat.pt.partial", weights_only=True)
    assert kept["read"] == 2 and kept["x0"].shape[0] == 2
    encode_folder(class_folder, vae_dir, out, size=SIZE, batch_size=2)
    assert not (tmp_path / ".lat.pt.partial").exists()
    a, b = load(whole), load(out)
    assert a["meta"]["files"] == b["meta"]["files"] and torch.equal(a["y"], b["y"])
    torch.testing.assert_close(a["x0"], b["x0"], rtol=0, atol=1e-6)
