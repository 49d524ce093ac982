"""Noise processes around the network: one small adapter per model family (diagnostics.md §1).

Every family converts between its native timestep ``t_native`` and dardiag's canonical
``noise_level`` in [0, 1] (1 = pure noise), corrupts clean latents, and defines the *simple*
denoising loss L = mean over all elements of (prediction - target)^2 that grad_rms differentiates.
The learned-sigma channels are never part of L. Conversion happens only here.

Legend: N batch, C latent channels, F latent frames, H/W latent side.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from dardiag.errors import DardiagError


@dataclass(frozen=True)
class Family(ABC):
    """Base adapter; subclasses fill in the process. All tensors keep the caller's device."""

    name: str = ""
    description: str = ""
    t_min: float = 0.0
    t_max: float = 1.0
    integer_time: bool = False
    prediction: str = "velocity"  # what the network predicts: "epsilon", "velocity" (either sign) or "v"

    # --- time -----------------------------------------------------------------
    @abstractmethod
    def to_noise_level(self, t_native: torch.Tensor) -> torch.Tensor:
        """Each family defines this."""

    @abstractmethod
    def to_native(self, noise_level: torch.Tensor) -> torch.Tensor:
        """Each family defines this."""

    def draw_native(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` training timesteps, uniform over the native range: integers t_min..t_max, or [t_min, t_max)."""
        if self.integer_time:
            return torch.randint(int(self.t_min), int(self.t_max) + 1, (n,), generator=generator)  # (N,)
        return torch.rand(n, generator=generator) * (self.t_max - self.t_min) + self.t_min  # (N,)

    def check_native(self, t_native) -> None:
        t = torch.as_tensor(t_native, dtype=torch.float64)
        if t.numel() and (t.min() < self.t_min or t.max() > self.t_max):
            raise DardiagError(
                f"timestep outside the {self.name} range [{self.t_min:g}, {self.t_max:g}]: "
                f"got {t.min().item():g}..{t.max().item():g}"
            )
        if self.integer_time and not torch.equal(t, t.round()):
            raise DardiagError(f"{self.name} timesteps are integers 0..{self.t_max:g}; got {t.tolist()}")

    # --- process ----------------------------------------------------------------
    @abstractmethod
    def corrupt(self, x0, noise, t_native):  # -> x_t (N, C, H, W)
        """Each family defines this."""

    @abstractmethod
    def target(self, x0, noise, t_native):  # -> what the network should predict (N, C, H, W)
        """Each family defines this."""

    def loss(self, out, x0, noise, t_native) -> torch.Tensor:
        """The simple loss at these timesteps: mean of (prediction - target)^2, in float32."""
        pred = out[:, : x0.shape[1]]  # drop learned-sigma channels  (N, C, H, W)
        return (pred.float() - self.target(x0, noise, t_native).float()).pow(2).mean()

    def loss_per_image(self, out, x0, noise, t_native) -> torch.Tensor:
        """Each image's own simple loss (N,): the mean over its elements; their mean is :meth:`loss`
        (up to float rounding), so the profiler differentiates ``loss_per_image(...).mean()``."""
        pred = out[:, : x0.shape[1]]  # drop learned-sigma channels  (N, C, H, W)
        return (pred.float() - self.target(x0, noise, t_native).float()).pow(2).flatten(1).mean(dim=1)  # (N,)


def _bcast(t, x):
    return t.to(x.dtype).view(-1, *([1] * (x.dim() - 1)))  # (N, 1, 1, 1)


@dataclass(frozen=True)
class DiTFamily(Family):
    """ADM/DDPM: 1000 integer steps, linear betas 1e-4..0.02, epsilon prediction; 999 = noise."""

    name: str = "dit"
    description: str = "DDPM, linear betas, epsilon prediction, t in 0..999 (999 = noise)"
    t_min: float = 0.0
    t_max: float = 999.0
    integer_time: bool = True
    prediction: str = "epsilon"
    beta_start: float = 1e-4
    beta_end: float = 0.02
    scaled_linear: bool = False  # betas linear in sqrt(beta) (the Stable Diffusion schedule)

    def alphas_cumprod(self, device=None) -> torch.Tensor:
        if self.scaled_linear:
            betas = torch.linspace(self.beta_start**0.5, self.beta_end**0.5, 1000, dtype=torch.float64,
                                   device=device) ** 2
        else:
            betas = torch.linspace(self.beta_start, self.beta_end, 1000, dtype=torch.float64, device=device)
        return torch.cumprod(1.0 - betas, dim=0)  # (1000,)

    def to_noise_level(self, t_native):
        return torch.as_tensor(t_native, dtype=torch.float64) / 999.0

    def to_native(self, noise_level):
        return torch.round(torch.as_tensor(noise_level, dtype=torch.float64) * 999.0)

    def corrupt(self, x0, noise, t_native):
        abar = self.alphas_cumprod(x0.device)[t_native.long()]  # (N,)
        a, s = _bcast(abar.sqrt(), x0), _bcast((1 - abar).sqrt(), x0)
        return a * x0 + s * noise

    def target(self, x0, noise, t_native):
        return noise


@dataclass(frozen=True)
class SiTFamily(Family):
    """SiT linear interpolant: x_t = t x0 + (1 - t) eps, t = 1 is data, velocity x0 - eps."""

    name: str = "sit"
    description: str = "linear interpolant, velocity prediction, t in [0, 1] (1 = data)"

    def to_noise_level(self, t_native):
        return 1.0 - torch.as_tensor(t_native, dtype=torch.float64)

    def to_native(self, noise_level):
        return 1.0 - torch.as_tensor(noise_level, dtype=torch.float64)

    def corrupt(self, x0, noise, t_native):
        t = _bcast(t_native, x0)
        return t * x0 + (1 - t) * noise

    def target(self, x0, noise, t_native):
        return x0 - noise


@dataclass(frozen=True)
class FlowFamily(Family):
    """REPA / rectified flow: x_t = (1 - t) x0 + t eps, t = 1 is noise, velocity eps - x0."""

    name: str = "repa"
    description: str = "linear interpolant, velocity prediction, t in [0, 1] (1 = noise)"

    def to_noise_level(self, t_native):
        return torch.as_tensor(t_native, dtype=torch.float64) / self.t_max

    def to_native(self, noise_level):
        return torch.as_tensor(noise_level, dtype=torch.float64) * self.t_max

    def corrupt(self, x0, noise, t_native):
        s = _bcast(t_native / self.t_max, x0)
        return (1 - s) * x0 + s * noise

    def target(self, x0, noise, t_native):
        return noise - x0


@dataclass(frozen=True)
class AnchoredFlowFamily(FlowFamily):
    """Image-to-video flow matching on video latents (N, C, F, H, W) whose first ``anchor`` latent frames are
    the given image: x_t keeps them clean (the pipelines pin their timestep to 0), and L is the mean over the
    later frames only (the pipelines discard the anchor's prediction). Velocity noise - x0, as FlowFamily."""

    anchor: int = 1

    def _check(self, x0) -> None:
        if x0.dim() != 5 or x0.shape[2] <= self.anchor:
            raise DardiagError(f"{self.name}: latents (N, C, F, H, W) with more than {self.anchor} frame(s), the "
                               f"first {self.anchor} the clean anchor; got {tuple(x0.shape)}")

    def corrupt(self, x0, noise, t_native):
        self._check(x0)
        x_t = super().corrupt(x0, noise, t_native)  # (N, C, F, H, W)
        return torch.cat([x0[:, :, : self.anchor], x_t[:, :, self.anchor :]], dim=2)

    def loss(self, out, x0, noise, t_native) -> torch.Tensor:
        a = self.anchor  # the frames after the anchor: (N, C, F - a, H, W)
        return super().loss(out[:, :, a:], x0[:, :, a:], noise[:, :, a:], t_native)

    def loss_per_image(self, out, x0, noise, t_native) -> torch.Tensor:
        a = self.anchor
        return super().loss_per_image(out[:, :, a:], x0[:, :, a:], noise[:, :, a:], t_native)  # (N,)


@dataclass(frozen=True)
class VPredFamily(DiTFamily):
    """DDPM with v-prediction on the scaled-linear schedule (HunyuanDiT's scheduler: betas 0.00085..0.03),
    target v = sqrt(abar) eps - sqrt(1 - abar) x0."""

    name: str = "ddpm-v"
    description: str = "DDPM, scaled-linear betas 0.00085..0.03, v prediction, t in 0..999 (999 = noise)"
    beta_start: float = 0.00085
    beta_end: float = 0.03
    scaled_linear: bool = True
    prediction: str = "v"

    def target(self, x0, noise, t_native):
        abar = self.alphas_cumprod(x0.device)[t_native.long()]  # (N,)
        return _bcast(abar.sqrt(), x0) * noise - _bcast((1 - abar).sqrt(), x0) * x0


@dataclass(frozen=True)
class ZeroSNRVPredFamily(VPredFamily):
    """CogVideoX's DDPM (CogVideoXDDIMScheduler / CogVideoXDPMScheduler): scaled-linear betas
    0.00085..0.012, the SD3-style SNR shift abar / (s + (1 - s) abar), then rescaled to zero terminal SNR
    (abar_999 = 0: t = 999 is pure noise), v prediction."""

    name: str = "cogvideox"
    description: str = ("DDPM, scaled-linear betas 0.00085..0.012, SNR shift 1, zero terminal SNR, "
                        "v prediction, t in 0..999 (999 = noise)")
    beta_end: float = 0.012
    snr_shift: float = 1.0

    def alphas_cumprod(self, device=None) -> torch.Tensor:
        abar = super().alphas_cumprod(device)
        abar = abar / (self.snr_shift + (1 - self.snr_shift) * abar)
        root = abar.sqrt()
        first, last = root[0].clone(), root[-1].clone()
        root = (root - last) * first / (first - last)  # shift to 0 at t = 999, keep the value at t = 0
        return root**2  # (1000,)


# the noise processes of DiT / SiT / REPA checkpoints: what dardiag's own class-conditional DiT loads, trains
# and samples with (the others come with diffusers transformers)
DIT_FAMILIES = ("dit", "sit", "repa")
FAMILIES: dict[str, Family] = {
    "dit": DiTFamily(),
    "sit": SiTFamily(),
    "repa": FlowFamily(),
    # diffusers SD3/Flux transformers take sigma * 1000 as their timestep
    "flow1000": FlowFamily(name="flow1000", description="flow matching, t = sigma * 1000", t_max=1000.0),
    "flow": FlowFamily(name="flow", description="flow matching, t = sigma in [0, 1] (1 = noise), predicts noise - x0"),
    # Lumina2 / Z-Image: their pipelines pass 1 - sigma and negate the output, i.e. the SiT convention
    "flow-rev": SiTFamily(name="flow-rev", description="flow matching, t = 1 - sigma (1 = data), predicts x0 - noise"),
    # SANA-WM (first latent frame the clean image at timestep 0) and its LTX-2 refiner (the same frame as the
    # attention sink). SanaWMPipeline steps with -prediction only because the scheduler's per-token step does
    # x + (sigma - sigma_next) * output: the prediction is noise - x0, as for LTX's condition pipeline
    "flow1000-anchor": AnchoredFlowFamily(
        name="flow1000-anchor", t_max=1000.0,
        description="flow matching, t = sigma * 1000, first latent frame clean (out of the loss), predicts noise - x0"),
    "ddpm-v": VPredFamily(),
    # CogVideoX-5B, CogVideoX1.5, ConsisID: snr_shift_scale 1.0; CogVideoX-2B trained with 3.0
    "cogvideox": ZeroSNRVPredFamily(),
    "cogvideox-2b": ZeroSNRVPredFamily(
        name="cogvideox-2b", snr_shift=3.0,
        description="DDPM, scaled-linear betas 0.00085..0.012, SNR shift 3, zero terminal SNR, v prediction, "
                    "t in 0..999 (999 = noise)"),
    # CogView3-Plus: its pipeline's CogVideoXDDIMScheduler (snr_shift_scale 4, rescale_betas_zero_snr)
    "ddpm-v-zsnr4": ZeroSNRVPredFamily(
        name="ddpm-v-zsnr4", snr_shift=4.0,
        description="DDPM, scaled-linear betas 0.00085..0.012, SNR shift 4, zero terminal SNR, v prediction, "
                    "t in 0..999 (999 = noise)"),
}


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise DardiagError(f"unknown family {name!r}; known: {', '.join(FAMILIES)}") from None
