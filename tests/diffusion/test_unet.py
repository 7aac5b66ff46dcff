"""The digits U-Net: shapes, the null class of classifier-free guidance, zero-initialised
output (so EDMPrecond starts at the skip path), label pass-through in EDMPrecond, errors, and a
few training steps that lower the EDM loss."""

from __future__ import annotations

import pytest
import torch

from deepnotes.diffusion.parameterizations import EDMPrecond, edm_loss
from deepnotes.diffusion.unet import NoisyClassifier, UNet


def _perturb(module, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))


def test_shapes_and_levels():
    gen = torch.Generator().manual_seed(0)
    for mult, side in (((1, 2), 8), ((1, 2, 2), 16), ((1,), 6)):
        net = UNet(1, 8, mult, n_classes=10, emb_dim=16)
        x = torch.randn(3, 1, side, side, generator=gen)
        out = net(x, torch.zeros(3), torch.tensor([0, 5, 10]))
        assert out.shape == x.shape
    two = UNet(2, 8, (1, 2), n_classes=0, emb_dim=16)
    assert two(torch.randn(2, 2, 4, 4), torch.zeros(2)).shape == (2, 2, 4, 4)


def test_output_starts_at_zero_so_precond_is_the_skip_path():
    net = UNet(1, 8, (1, 2), n_classes=10, emb_dim=16)
    x = torch.randn(4, 1, 8, 8)
    assert torch.equal(net(x, torch.randn(4), torch.arange(4)), torch.zeros_like(x))
    pre = EDMPrecond(net, sigma_data=0.5)
    sigma = torch.tensor([0.1, 1.0, 5.0, 20.0])
    c_skip = 0.25 / (sigma ** 2 + 0.25)
    torch.testing.assert_close(pre(x, sigma), c_skip[:, None, None, None] * x)


def test_null_class_and_label_pass_through():
    torch.manual_seed(0)
    net = UNet(1, 8, (1, 2), n_classes=10, emb_dim=16)
    _perturb(net)
    assert net.null_label == 10
    x, c = torch.randn(4, 1, 8, 8), torch.randn(4)
    # None means ∅ for every image
    torch.testing.assert_close(net(x, c), net(x, c, torch.full((4,), 10)))
    # labels change the output (the class embedding is used) and each image reads its own label
    with torch.no_grad():
        a = net(x, c, torch.tensor([1, 2, 3, 4]))
        b = net(x, c, torch.tensor([1, 2, 3, 7]))
    # GroupNorm and attention act per image, so changing image 3's label leaves 0..2 alone
    torch.testing.assert_close(a[:3], b[:3])
    assert float((a[3] - b[3]).abs().max()) > 1e-4
    # EDMPrecond forwards labels: D(x; σ, y) = c_skip x + c_out F(c_in x; c_noise, y)
    pre = EDMPrecond(net, 0.5)
    s = torch.full((4,), 2.0)
    y = torch.tensor([0, 1, 2, 3])
    c_skip, c_out, c_in, c_noise = (v[:, None, None, None] for v in pre.coefficients(s))
    expected = c_skip * x + c_out * net(c_in * x, c_noise.view(-1), y)
    torch.testing.assert_close(pre(x, s, y), expected)
    assert not torch.allclose(pre(x, s, y), pre(x, s))


def test_edm_loss_with_labels_decreases():
    torch.manual_seed(1)
    gen = torch.Generator().manual_seed(1)
    x0 = torch.zeros(64, 1, 8, 8)
    y = torch.randint(0, 2, (64,), generator=gen)
    x0[y == 1, :, 2:6, 3:5] = 1.0  # two "classes": blank and a bar
    x0 = x0 - 0.25
    pre = EDMPrecond(UNet(1, 8, (1, 2), n_classes=2, emb_dim=16), sigma_data=0.5)
    opt = torch.optim.Adam(pre.parameters(), 3e-3)

    def loss_at(seed):
        with torch.no_grad():
            return float(edm_loss(pre, x0, generator=torch.Generator().manual_seed(seed),
                                  class_labels=y))

    before = sum(loss_at(s) for s in range(5))
    for _ in range(60):
        loss = edm_loss(pre, x0, generator=gen, class_labels=y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = sum(loss_at(s) for s in range(5))
    # same evaluation noise before and after; 60 Adam steps on a 2-image-type set must help
    assert after < 0.7 * before, (before, after)


def test_noisy_classifier_shapes_and_gradient():
    clf = NoisyClassifier(10, 1, 8, (1, 2), emb_dim=16, sigma_data=0.5)
    x = torch.randn(5, 1, 8, 8, requires_grad=True)
    logits = clf(x, torch.full((5,), 0.7))
    assert logits.shape == (5, 10)
    logits.log_softmax(1)[:, 3].sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape
    assert clf(x.detach(), torch.tensor(0.5)).shape == (5, 10)  # one σ broadcast


def test_errors():
    net = UNet(1, 8, (1, 2), n_classes=10, emb_dim=16)
    x = torch.randn(2, 1, 8, 8)
    with pytest.raises(ValueError, match="shape"):
        net(torch.randn(2, 8, 8), torch.zeros(2))
    with pytest.raises(ValueError, match="divisible"):
        net(torch.randn(2, 1, 7, 7), torch.zeros(2))
    with pytest.raises(ValueError, match="0..10"):
        net(x, torch.zeros(2), torch.tensor([0, 11]))
    with pytest.raises(ValueError, match="integer"):
        net(x, torch.zeros(2), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="entries"):
        net(x, torch.zeros(3))
    with pytest.raises(ValueError, match="unconditional"):
        UNet(1, 8, (1, 2), n_classes=0, emb_dim=16)(x, torch.zeros(2), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="channel_mult"):
        UNet(1, 8, ())
    with pytest.raises(ValueError, match="dropout"):
        UNet(1, 8, dropout=1.0)
    with pytest.raises(ValueError, match="n_classes"):
        NoisyClassifier(1)
