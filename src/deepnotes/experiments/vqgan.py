"""VQ-VAE and VQGAN on the 8×8 digits, then a transformer prior over their code grids.

1. ``codebook_usage``: the same VQ autoencoder (64 codes, a 4×4 grid) trained four ways — codebook
   loss or EMA codebook, each with and without dead-code restarts — and the share of codes the
   training set uses and their perplexity (Eq. 6) along training.
2. ``reconstructions`` and ``vqgan_training``: the EMA + restarts model is copied; one copy keeps
   training as a VQ-VAE (squared error only), the other becomes a VQGAN (squared error + a
   perceptual-style loss from a digits classifier + a patch discriminator weighted by the adaptive
   λ of Eq. 8) for the same number of steps. Reconstructions of the test split, their squared
   error and their digits FID; λ along training.
3. ``prior_samples`` and ``prior_bits``: a causal transformer (Eq. 9) fitted to each model's code
   grids of the training split; its bits/dim on the test split's codes (Eq. 10, a rate, not a
   pixel likelihood) and the digits FID of decoded samples ("compress, then generate").

The digits FID uses the diffusion topics' feature classifier (cached, seed 0); the perceptual loss
a second classifier of the same architecture trained with seed 1, so that the VQGAN is not trained
on the very features its FID is measured in.
Headline: the digits FID of samples from the VQGAN's prior; peer: the same for the VQ-VAE.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from deepnotes.core.experiment import ExperimentConfig, Result, make_presets, start_run
from deepnotes.core.plotting import PALETTE, new_figure
from deepnotes.experiments._diffusion_digits import image_grid, one_thread, train_classifier
from deepnotes.generative import gan, vq
from deepnotes.nn.digits_models import ClassifierSpec, DigitsFID, digits
from deepnotes.nn.training import fit

#: variant -> (EMA codebook, dead-code restarts)
VARIANTS = {"loss": (False, False), "loss_restart": (False, True), "ema": (True, False),
            "ema_restart": (True, True)}
LABELS = {"loss": "codebook loss", "loss_restart": "codebook loss + restarts",
          "ema": "EMA codebook", "ema_restart": "EMA codebook + restarts",
          "vqvae": "VQ-VAE", "vqgan": "VQGAN"}
COLORS = dict(zip(VARIANTS, PALETTE, strict=False)) | {"vqvae": PALETTE[4], "vqgan": PALETTE[3]}
N_PIXELS = 64


@dataclass
class Config(ExperimentConfig):
    variants: tuple[str, ...] = tuple(VARIANTS)
    """Codebook variants of part 1 (loss, loss_restart, ema, ema_restart); parts 2-3 start from
    ema_restart, which must be among them."""
    n_codes: int = 64
    """Codebook size K."""
    code_dim: int = 8
    """Code dimension D."""
    channels: int = 32
    """Hidden width of the encoder and decoder."""
    beta: float = 0.25
    """Commitment weight β (Eq. 3)."""
    ema_decay: float = 0.99
    """Decay γ of the EMA codebook update (Eq. 4)."""
    restart_threshold: float = 1.0
    """A code is restarted when its running count of vectors per batch falls below this."""
    batch: int = 64
    """Images per step (each gives 16 vectors to quantise)."""
    lr: float = 1e-3
    """Adam learning rate of the autoencoders."""
    usage_steps: int = 600
    """Steps of each codebook variant (part 1)."""
    n_usage_evals: int = 12
    """Evaluations of the codebook usage along part 1, besides step 0."""
    finetune_steps: int = 600
    """Steps of the VQ-VAE and of the VQGAN after part 1 (part 2), each."""
    perceptual_weight: float = 1.0
    """Weight of the perceptual-style distance (Eq. 7) in the VQGAN's reconstruction loss."""
    gan_weight: float = 0.8
    """Factor on λ·L_GAN (Eq. 8): the discriminator weight of Esser et al."""
    disc_channels: int = 32
    """Width of the patch discriminator."""
    lr_disc: float = 2e-4
    """Adam learning rate (β = (0.5, 0.9)) of the discriminator."""
    prior_d_model: int = 64
    """Width of the prior's transformer."""
    prior_heads: int = 4
    """Attention heads of the prior."""
    prior_layers: int = 2
    """Transformer blocks of the prior."""
    prior_dropout: float = 0.1
    """Dropout of the prior (embeddings and residual branches) while it trains."""
    prior_steps: int = 1200
    """AdamW steps of each prior."""
    prior_batch: int = 64
    """Code grids per prior step."""
    prior_lr: float = 1e-3
    """Peak learning rate of the prior (cosine decay to zero)."""
    prior_weight_decay: float = 0.01
    """AdamW weight decay of the prior."""
    n_prior_evals: int = 8
    """Evaluations of the prior's bits/dim along its training."""
    n_fid: int = 1000
    """Prior samples per FID."""
    clf_steps: int = 800
    """Training steps of the two digits classifiers (FID network, perceptual network)."""


PRESETS = make_presets(
    smoke=Config(n_codes=16, code_dim=4, channels=8, usage_steps=6, n_usage_evals=2,
                 finetune_steps=4, disc_channels=4, prior_d_model=16, prior_heads=2,
                 prior_layers=1, prior_steps=6, prior_batch=16, n_prior_evals=2, n_fid=64,
                 clf_steps=10, batch=16),
    quick=Config(variants=("loss", "ema_restart"), usage_steps=60, n_usage_evals=3,
                 finetune_steps=30, prior_steps=60, prior_batch=32, n_prior_evals=2, n_fid=200),
    full=Config(),
)
HEADLINE = "vqgan/sample_fid"
PEER = "vqvae/sample_fid"


def _schedule(steps: int, n: int) -> list[int]:
    """``n`` evaluation steps, evenly spaced, ending at ``steps`` (and step 0)."""
    return sorted({0} | {round(steps * (i + 1) / n) for i in range(max(n, 1))})


def _build(config: Config, variant: str) -> vq.VQAutoencoder:
    ema, restart = VARIANTS[variant]
    quantizer = vq.VectorQuantizer(
        config.n_codes, config.code_dim, config.beta, ema=ema, decay=config.ema_decay,
        restart_threshold=config.restart_threshold if restart else None)
    return vq.VQAutoencoder(quantizer, config.channels)


def _vq_loss(model, x):
    x_hat, q = model(x)
    rec = F.mse_loss(x_hat, x)
    return rec + q.loss, {"rec_mse": float(rec.detach()), "perplexity": q.perplexity}


@torch.no_grad()
def _usage(model: vq.VQAutoencoder, x: torch.Tensor, k: int) -> tuple[float, float]:
    idx = model.encode(x)
    return vq.codebook_usage(idx, k), float(vq.perplexity(idx, k))


@torch.no_grad()
def _reconstruct(model: vq.VQAutoencoder, x: torch.Tensor) -> torch.Tensor:
    return model.decode(model.encode(x)).clamp(-1, 1)


def train_usage(config: Config, variant: str, x_train, batches, run) -> tuple[vq.VQAutoencoder,
                                                                            dict]:
    """Part 1: train one codebook variant; its codebook usage on the train split along training."""
    torch.manual_seed(int(run.rng.integers(2**31)))
    model = _build(config, variant).to(run.device)
    evals = set(_schedule(config.usage_steps, config.n_usage_evals))
    curve = {"steps": [], "usage": [], "perplexity": []}

    def evaluate(step):
        model.eval()
        usage, ppl = _usage(model, x_train, config.n_codes)
        model.train()
        curve["steps"].append(step)
        curve["usage"].append(usage)
        curve["perplexity"].append(ppl)

    evaluate(0)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.lr)
    fit(model, _vq_loss, batches, opt, config.usage_steps, progress=run.track,
        description=f"VQ-VAE, {LABELS[variant]}",
        callback=lambda step, _m: evaluate(step + 1) if step + 1 in evals else None)
    model.eval()
    curve["restarts"] = model.quantizer.restarts
    return model, curve


def train_vqgan(config: Config, model: vq.VQAutoencoder, percep_net, x_train, gen, run) -> dict:
    """Part 2, VQGAN: alternate an autoencoder step on ``L_rec + λ·w·L_GAN`` (Eq. 8) and a
    discriminator step (non-saturating GAN losses of :mod:`deepnotes.generative.gan`)."""
    device = run.device
    torch.manual_seed(int(run.rng.integers(2**31)))
    disc = vq.PatchDiscriminator(config.disc_channels).to(device)
    opt_g = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.lr)
    opt_d = torch.optim.Adam(disc.parameters(), lr=config.lr_disc, betas=(0.5, 0.9))
    history = {k: [] for k in ("rec_mse", "perceptual", "lambda", "g_loss", "d_loss", "d_real",
                               "d_fake")}
    model.train()
    for step in run.track(range(config.finetune_steps), "VQGAN (adversarial)"):
        idx = torch.randint(0, x_train.shape[0], (config.batch,), generator=gen)
        x = x_train[idx.to(device)]
        x_hat, q = model(x)
        rec = F.mse_loss(x_hat, x)
        percep = vq.perceptual_distance(vq.feature_maps(percep_net, x_hat),
                                        vq.feature_maps(percep_net, x)).mean()
        rec_total = rec + config.perceptual_weight * percep
        disc.requires_grad_(False)  # the autoencoder step leaves the discriminator alone
        g_loss = gan.generator_loss(disc(x_hat).flatten(), "non_saturating")
        lam = vq.adaptive_weight(rec_total, g_loss, model.last_layer)
        loss = rec_total + q.loss + config.gan_weight * lam * g_loss
        _check_finite(loss, "autoencoder (generator)", step)
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()
        disc.requires_grad_(True)
        real_logits, fake_logits = disc(x).flatten(), disc(x_hat.detach()).flatten()
        d_loss = gan.discriminator_loss(real_logits, fake_logits)
        _check_finite(d_loss, "discriminator", step)
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        with torch.no_grad():
            record = {"rec_mse": rec, "perceptual": percep, "lambda": lam, "g_loss": g_loss,
                      "d_loss": d_loss, "d_real": torch.sigmoid(real_logits).mean(),
                      "d_fake": torch.sigmoid(fake_logits).mean()}
        for key, value in record.items():
            history[key].append(float(value.detach()))
    model.eval()
    return history


def _check_finite(loss: torch.Tensor, who: str, step: int) -> None:
    if not bool(torch.isfinite(loss.detach()).all()):
        raise gan.NonFiniteLossError(f"{who} loss is {float(loss.detach())} at step {step}: "
                                     f"training stopped (lower gan_weight or lr_disc)")


def train_prior(config: Config, codes_train, codes_test, name: str, run) -> tuple[vq.CodePrior,
                                                                                 dict]:
    """Part 3: fit a :class:`~deepnotes.generative.vq.CodePrior` to the training code grids
    (n, 16); its bits/dim (Eq. 10) on train and test codes along training."""
    device = run.device
    seq_len = codes_train.shape[1]
    torch.manual_seed(int(run.rng.integers(2**31)))
    prior = vq.CodePrior(config.n_codes, seq_len, config.prior_d_model, config.prior_heads,
                         config.prior_layers, config.prior_dropout).to(device)
    gen = torch.Generator().manual_seed(int(run.rng.integers(2**31)))
    opt = torch.optim.AdamW(prior.parameters(), lr=config.prior_lr,
                            weight_decay=config.prior_weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, config.prior_steps)
                                           / config.prior_steps)))

    def batches(step):
        idx = torch.randint(0, codes_train.shape[0], (config.prior_batch,), generator=gen)
        return codes_train[idx.to(device)]

    def loss_fn(model, s):
        return -model.log_prob(s).mean() / seq_len  # nats per code

    evals = set(_schedule(config.prior_steps, config.n_prior_evals)) - {0}
    curve = {"steps": [], "train": [], "test": []}

    @torch.no_grad()
    def bpd(s):
        return float(vq.code_bits_per_dim(prior.log_prob(s), N_PIXELS).mean())

    def callback(step, _metrics):
        if step + 1 in evals:
            prior.eval()
            curve["steps"].append(step + 1)
            curve["train"].append(bpd(codes_train))
            curve["test"].append(bpd(codes_test))
            prior.train()

    fit(prior, loss_fn, batches, opt, config.prior_steps, scheduler=sched, progress=run.track,
        description=f"prior over the {LABELS[name]} codes", callback=callback, generators=[gen])
    prior.eval()
    return prior, curve


# --------------------------------------------------------------------------- figures --
def _usage_figure(curves: dict, k: int):
    fig, axes = new_figure(1, 2, size="column_tall", constrained_layout=True)
    for name, c in curves.items():
        axes[0].plot(c["steps"], 100 * np.asarray(c["usage"]), marker="o", ms=3,
                     color=COLORS[name], label=LABELS[name])
        axes[1].plot(c["steps"], c["perplexity"], marker="o", ms=3, color=COLORS[name])
    axes[0].set(xlabel="training step", ylabel="codes in use (%)", ylim=(0, 105),
                title="Codebook usage, train split")
    axes[1].axhline(k, color="0.5", ls=":", label=f"$K = {k}$ (uniform use)")
    axes[1].set(xlabel="training step", ylabel="perplexity (codes)", title="Code perplexity",
                ylim=(0, 1.05 * k))
    handles, labels = axes[0].get_legend_handles_labels()
    handles += axes[1].get_legend_handles_labels()[0]
    labels += axes[1].get_legend_handles_labels()[1]
    fig.legend(handles, labels, loc="outside lower center", fontsize=9, ncol=3)
    return fig


def _recon_figure(x, recons: dict):
    fig, axes = new_figure(len(recons) + 1, 1, size=(7.0, 0.8 * (len(recons) + 1)),
                           constrained_layout=True)
    image_grid(axes[0], x, nrow=len(x), title="test digits")
    for ax, (name, r) in zip(axes[1:], recons.items(), strict=True):
        image_grid(ax, r, nrow=len(r), title=f"{LABELS[name]} reconstruction")
    return fig


def _vqgan_figure(history: dict, vqvae_rec: list[float], window: int):
    def smooth(v):
        v = np.asarray(v, dtype=float)
        w = max(1, min(window, len(v)))
        return np.convolve(v, np.ones(w) / w, mode="valid")

    fig, axes = new_figure(1, 2, size=(7.0, 3.0), constrained_layout=True)
    lam = smooth(history["lambda"])
    axes[0].plot(np.arange(len(lam)) + 1, lam, color=COLORS["vqgan"])
    axes[0].set(xlabel="VQGAN step", ylabel=r"$\lambda$", yscale="log",
                title=r"Adaptive weight $\lambda$ (Eq. 8)")
    for name, values in (("vqvae", vqvae_rec), ("vqgan", history["rec_mse"])):
        s = smooth(values)
        axes[1].plot(np.arange(len(s)) + 1, s, color=COLORS[name], label=LABELS[name])
    axes[1].set(xlabel="step after part 1", ylabel="train squared error", yscale="log",
                title="Reconstruction error (smoothed)")
    axes[1].legend(fontsize=9)
    return fig


def _samples_figure(x_train, samples: dict):
    fig, axes = new_figure(1, len(samples) + 1, size=(7.0, 2.9), constrained_layout=True)
    image_grid(axes[0], x_train, nrow=6, title="training digits")
    for ax, (name, s) in zip(axes[1:], samples.items(), strict=True):
        image_grid(ax, s, nrow=6, title=f"prior + {LABELS[name]} decoder")
    return fig


def _bits_figure(curves: dict, uniform: float):
    fig, ax = new_figure(size="column", constrained_layout=True)
    for name, c in curves.items():
        ax.plot(c["steps"], c["train"], color=COLORS[name], ls="--",
                label=f"{LABELS[name]} codes, train")
        ax.plot(c["steps"], c["test"], color=COLORS[name], marker="o", ms=3,
                label=f"{LABELS[name]} codes, test")
    ax.axhline(uniform, color="0.5", ls=":", label="uniform over all codes")
    ax.set(xlabel="prior step", ylabel="code bits per pixel", title="Prior's rate (Eq. 10)")
    fig.legend(*ax.get_legend_handles_labels(), fontsize=9, loc="outside right upper")
    return fig


# ------------------------------------------------------------------------------- run --
def _check(config: Config) -> None:
    unknown = set(config.variants) - set(VARIANTS)
    if unknown or "ema_restart" not in config.variants:
        raise ValueError(f"variants must be among {sorted(VARIANTS)} and include ema_restart, "
                         f"got {config.variants}")
    for name in ("n_codes", "code_dim", "channels", "batch", "usage_steps", "finetune_steps",
                 "prior_steps", "prior_batch", "n_fid", "clf_steps", "disc_channels"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}")
    if config.n_fid < 2:
        raise ValueError("n_fid must be >= 2 (a covariance needs two samples)")


def run(config: Config) -> Result:
    _check(config)
    with start_run(__name__, config) as run, one_thread():
        device = run.device
        x_train, _ = digits("train")
        x_test, _ = digits("test")
        x_train, x_test = x_train.to(device), x_test.to(device)
        k = config.n_codes

        fid_net, meta = train_classifier(ClassifierSpec(n_steps=config.clf_steps), 0.5,
                                         config.out, run.log, run.track)
        fid = DigitsFID(fid_net.to(device), x_train)
        percep_net, pmeta = train_classifier(ClassifierSpec(n_steps=config.clf_steps, seed=1),
                                             0.5, config.out, run.log, run.track)
        percep_net = percep_net.to(device)
        run.log_metrics({"digits/fid_classifier_test_accuracy": meta["test_accuracy"],
                         "digits/perceptual_classifier_test_accuracy": pmeta["test_accuracy"],
                         "digits/fid_test_split": fid.fid(x_test)})

        gen = torch.Generator().manual_seed(int(run.rng.integers(2**31)))

        def batches(step):
            idx = torch.randint(0, x_train.shape[0], (config.batch,), generator=gen)
            return x_train[idx.to(device)]

        # part 1: codebook usage of the four variants
        curves, models = {}, {}
        for variant in config.variants:
            models[variant], curves[variant] = train_usage(config, variant, x_train, batches, run)
            usage, ppl = curves[variant]["usage"][-1], curves[variant]["perplexity"][-1]
            mse = float(F.mse_loss(_reconstruct(models[variant], x_test), x_test))
            run.log_metrics({f"usage/{variant}_codes_used_fraction": usage,
                             f"usage/{variant}_perplexity_codes": ppl,
                             f"usage/{variant}_test_mse": mse,
                             f"usage/{variant}_restarts_count": curves[variant]["restarts"]})
            run.log(f"{variant}: {100 * usage:.0f}% codes used, perplexity {ppl:.1f}, "
                    f"test MSE {mse:.4f}")
        run.save_figure(_usage_figure(curves, k), "codebook_usage")

        # part 2: VQ-VAE and VQGAN from the same starting point
        base = models["ema_restart"]
        vqvae, vqgan = copy.deepcopy(base), copy.deepcopy(base)
        opt = torch.optim.Adam([p for p in vqvae.parameters() if p.requires_grad], lr=config.lr)
        res = fit(vqvae, _vq_loss, batches, opt, config.finetune_steps, progress=run.track,
                  description="VQ-VAE (squared error)")
        vqvae.eval()
        history = train_vqgan(config, vqgan, percep_net, x_train, gen, run)
        tail = max(1, len(history["lambda"]) // 10)
        run.log_metrics({"vqgan/adaptive_weight_final": float(np.mean(history["lambda"][-tail:])),
                         "vqgan/d_real_final": float(np.mean(history["d_real"][-tail:])),
                         "vqgan/d_fake_final": float(np.mean(history["d_fake"][-tail:]))})
        autoencoders = {"vqvae": vqvae, "vqgan": vqgan}
        recons = {}
        for name, model in autoencoders.items():
            r = _reconstruct(model, x_test)
            recons[name] = r
            with torch.no_grad():
                percep = vq.perceptual_distance(vq.feature_maps(percep_net, r),
                                                vq.feature_maps(percep_net, x_test)).mean()
            usage, ppl = _usage(model, x_train, k)
            run.log_metrics({f"{name}/test_mse": float(F.mse_loss(r, x_test)),
                             f"{name}/test_perceptual": float(percep),
                             f"{name}/recon_fid": fid.fid(r),
                             f"{name}/recon_accuracy": fid.accuracy(r.cpu(), digits("test")[1]),
                             f"{name}/codes_used_fraction": usage,
                             f"{name}/perplexity_codes": ppl})
        run.save_figure(_recon_figure(x_test[:16], {n: r[:16] for n, r in recons.items()}),
                        "reconstructions")
        run.save_figure(_vqgan_figure(history, res.history["rec_mse"],
                                      max(1, config.finetune_steps // 30)), "vqgan_training")

        # part 3: a transformer prior over each model's codes, then decode its samples
        grid_hw = tuple(vqvae.encode(x_test[:1]).shape[1:])  # (4, 4)
        uniform = math.prod(grid_hw) * math.log2(k) / N_PIXELS
        run.log_metrics({"rate/uniform_code_bits_per_dim": uniform,
                         "rate/raw_pixels_bits_per_dim": math.log2(17)})
        bit_curves, samples = {}, {}
        sample_gen = torch.Generator(device=device).manual_seed(int(run.rng.integers(2**31)))
        for name, model in autoencoders.items():
            codes_train = model.encode(x_train).flatten(1)  # (n, 16) raster order
            codes_test = model.encode(x_test).flatten(1)
            prior, bit_curves[name] = train_prior(config, codes_train, codes_test, name, run)
            grids = prior.sample(config.n_fid, sample_gen).view(-1, *grid_hw)
            with torch.no_grad():
                x_gen = model.decode(grids).clamp(-1, 1)
            samples[name] = x_gen[:36]
            memorised = (grids.flatten(1)[:, None, :] == codes_train[None]).all(-1).any(1)
            run.log_metrics({
                f"{name}/prior_test_bits_per_dim": bit_curves[name]["test"][-1],
                f"{name}/prior_train_bits_per_dim": bit_curves[name]["train"][-1],
                f"{name}/sample_fid": fid.fid(x_gen),
                f"{name}/samples_copying_a_train_grid_fraction": float(memorised.double().mean()),
            })
            run.log(f"{name}: prior test {bit_curves[name]['test'][-1]:.3f} bits/dim, sample "
                    f"FID {fid.fid(x_gen):.3f}")
        run.save_figure(_samples_figure(x_train[:36], samples), "prior_samples")
        run.save_figure(_bits_figure(bit_curves, uniform), "prior_bits")
    return run.result
