"""Evaluating text-to-image samples on the shapes world: a caption score and edge conditions.

Two kinds of tool, both pure:

**Does an image show its caption?** (a small GenEval, Ghosh et al. 2023, "GenEval: An
Object-Focused Framework for Evaluating Text-to-Image Alignment"). An :class:`AttributeClassifier`
reads an image as a detector does: the 32×32 image is cut into a :data:`GRID` × :data:`GRID`
grid of 4×4-pixel cells, and for every cell the network predicts whether a shape's centre lies in
it (objectness) and the kind, colour, size and centre pixel of the shape centred in or next to
it (CenterNet's recipe, Zhou et al. 2019, "Objects as Points", on a coarse grid). Two shapes of
:mod:`deepnotes.data.shapes` never have their centres in the same or in adjacent cells (their
boxes are separated, so the centres are at least 10 pixels apart along one axis), so peak
picking over 3×3 cells loses nothing. :func:`predict_shapes` decodes the grid into a tuple of
:class:`~deepnotes.data.shapes.Shape` per image (a *predicted scene*: the shapes, without an
order), and :func:`match_caption` compares it with :func:`~deepnotes.data.shapes.parse_caption`
of the caption: the multiset of ``(size, colour, kind)`` must be the caption's, and some
assignment of the predicted shapes to the caption's objects must satisfy every relation
(``A left of B``: ``A``'s centre has the smaller column and the horizontal offset dominates the
vertical one). :func:`caption_score` is the fraction of images that match fully;
:func:`caption_score_details` adds the partial checks (count, kinds, colours, sizes, objects).
The classifier's pooled last hidden map (:meth:`AttributeClassifier.features`) is the feature
space of the shapes FID.

**Spatial conditions for ControlNet** (Zhang et al. 2023, "Adding Conditional Control to
Text-to-Image Diffusion Models", Sec. 4: Canny edges, segmentation masks). :func:`edge_map`
thresholds a colour Sobel gradient (:func:`sobel_magnitude`) into a binary edge map;
:func:`shape_masks` turns an instance map into a binary foreground mask; :func:`edge_f1` scores
how well the edges of a generated image agree with the condition's (F1 of edge pixels, a match
being an edge pixel of the other map within ``tolerance`` pixels, as in the BSDS boundary
benchmark of Martin et al. 2004, here with a square window instead of a bipartite matching).
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from deepnotes.data.shapes import (
    COLOURS,
    IMAGE_SIZE,
    KINDS,
    RELATIONS,
    SIZES,
    Scene,
    Shape,
    parse_caption,
)
from deepnotes.diffusion.metrics import frechet_distance, gaussian_moments

GRID = 8
"""Cells per side of the classifier's output grid."""

CELL = IMAGE_SIZE // GRID
"""Pixels per side of one cell (4)."""

HEADS = {"object": 1, "kind": len(KINDS), "colour": len(COLOURS), "size": len(SIZES),
         "dx": 3 * CELL, "dy": 3 * CELL}
"""Output channels of each prediction head, in the order they are stacked. ``dx``/``dy``: the
centre's column/row relative to the cell's first pixel, ``-CELL .. 2·CELL - 1`` (class index
``offset + CELL``), so a cell next to the centre's own cell can name the centre too."""

NEIGHBOUR_OBJECTNESS = 0.5
"""Objectness target of the 8 cells around a centre's cell (1 at the cell itself)."""

IGNORE = -100
"""Target of the attribute heads at cells without a shape centre (``F.cross_entropy`` skips it)."""

EDGE_THRESHOLD = 0.2
"""Default threshold of :func:`edge_map` on the normalised colour Sobel magnitude."""

_COLOUR_NAMES = tuple(COLOURS)
_SIZE_NAMES = tuple(SIZES)


# --- the attribute classifier ------------------------------------------------------------------
class AttributeClassifier(nn.Module):
    """A fully convolutional per-cell attribute predictor for 32×32 RGB images.

    ``x (B, 3, 32, 32) → (B, 37, 8, 8)`` logits: objectness (1), kind (5), colour (5), size (2),
    the centre's column and row relative to the cell (12 each), stacked in :data:`HEADS` order.
    Two 3×3 convolutions at 32×32, a stride-2 convolution and one more 3×3 at 16×16, a
    stride-2 convolution and two 3×3 at 8×8 (SiLU after each; receptive field 37 pixels, so the
    centre cell sees the whole of the largest 15×15 shape), then a 1×1 head.

    Parameters
    ----------
    channels : int
        Width at 32×32; the 16×16 and 8×8 stages have ``2 * channels``.
    """

    def __init__(self, channels: int = 32):
        super().__init__()
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ValueError(f"channels must be a positive int, got {channels!r}")
        c, c2 = channels, 2 * channels
        self.body = nn.Sequential(
            nn.Conv2d(3, c, 3, padding=1), nn.SiLU(),
            nn.Conv2d(c, c, 3, padding=1), nn.SiLU(),
            nn.Conv2d(c, c2, 3, stride=2, padding=1), nn.SiLU(),           # 16×16
            nn.Conv2d(c2, c2, 3, padding=1), nn.SiLU(),
            nn.Conv2d(c2, c2, 3, stride=2, padding=1), nn.SiLU(),          # 8×8
            nn.Conv2d(c2, c2, 3, padding=1), nn.SiLU(),
            nn.Conv2d(c2, c2, 3, padding=1), nn.SiLU(),
        )
        self.head = nn.Conv2d(c2, sum(HEADS.values()), 1)
        self.feature_dim = c2

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """The last hidden map, shape (B, 2·channels, 8, 8)."""
        _check_images(x, "x")
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of every head, shape (B, 37, GRID, GRID); ``x`` (B, 3, 32, 32) in [-1, 1]."""
        return self.head(self.hidden(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """FID features: the last hidden map averaged over the grid, shape (B, 2·channels)."""
        return self.hidden(x).mean((2, 3))


def split_heads(logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """``(B, 37, G, G)`` logits → ``{head: (B, n_head, G, G)}``; objectness is (B, G, G)."""
    if logits.ndim != 4 or logits.shape[1] != sum(HEADS.values()):
        raise ValueError(f"logits must have shape (B, {sum(HEADS.values())}, G, G), got "
                         f"{tuple(logits.shape)}")
    parts = dict(zip(HEADS, logits.split(list(HEADS.values()), dim=1), strict=True))
    parts["object"] = parts["object"][:, 0]
    return parts


def scene_targets(scenes: Sequence[Scene], device=None) -> dict[str, torch.Tensor]:
    """Per-cell training targets of ``scenes``.

    Returns
    -------
    dict of Tensor, each of shape (B, GRID, GRID)
        ``object``: float, 1 at the cell holding a shape's centre, :data:`NEIGHBOUR_OBJECTNESS`
        at the 8 cells around it, else 0; ``kind``, ``colour``, ``size`` (indices into
        :data:`KINDS`, :data:`COLOURS`, :data:`SIZES`), ``dx``, ``dy`` (class ``offset + CELL``
        of the centre's column/row relative to the cell, see :data:`HEADS`): long, on the centre's
        cell and its 8 neighbours, :data:`IGNORE` elsewhere and on a cell next to two centres.

    Why neighbours: whether a centre at a cell border lies in one cell or the next is a one-pixel
    decision; training every cell around it to name the shape lets :func:`predict_shapes` read
    the shape from whichever cell peaks. Two centres' own cells are never neighbours (centres
    are at least 10 pixels apart along one axis), so the 3×3 peak picking is exact.
    """
    b = len(scenes)
    obj = torch.zeros(b, GRID, GRID)
    attrs = {k: torch.full((b, GRID, GRID), IGNORE, dtype=torch.long)
             for k in ("kind", "colour", "size", "dx", "dy")}
    for i, scene in enumerate(scenes):
        claimed = torch.zeros(GRID, GRID, dtype=torch.long)
        for s in _shapes_of(scene, f"scenes[{i}]"):
            gy, gx = s.cy // CELL, s.cx // CELL
            if not (0 <= gx < GRID and 0 <= gy < GRID):
                raise ValueError(f"scenes[{i}]: centre ({s.cx}, {s.cy}) is outside the image")
            for y in range(max(gy - 1, 0), min(gy + 2, GRID)):
                for x in range(max(gx - 1, 0), min(gx + 2, GRID)):
                    own = (y, x) == (gy, gx)
                    obj[i, y, x] = max(float(obj[i, y, x]), 1.0 if own else NEIGHBOUR_OBJECTNESS)
                    claimed[y, x] += 1
                    attrs["kind"][i, y, x] = KINDS.index(s.kind)
                    attrs["colour"][i, y, x] = _COLOUR_NAMES.index(s.colour)
                    attrs["size"][i, y, x] = _SIZE_NAMES.index(s.size)
                    attrs["dx"][i, y, x] = s.cx - CELL * x + CELL
                    attrs["dy"][i, y, x] = s.cy - CELL * y + CELL
        for v in attrs.values():
            v[i][claimed > 1] = IGNORE
    out = {"object": obj, **attrs}
    return {k: v.to(device) for k, v in out.items()} if device is not None else out


def attribute_loss(model: nn.Module, images: torch.Tensor, targets: dict[str, torch.Tensor]
                   ) -> tuple[torch.Tensor, dict[str, float]]:
    """Objectness BCE over all cells (soft targets) plus the cross-entropy of each attribute head
    at the cells around a centre (the CenterNet/YOLO split of a detection loss).

    Parameters
    ----------
    model : AttributeClassifier (or any module with its output layout)
    images : Tensor, shape (B, 3, 32, 32), in [-1, 1]
    targets : dict from :func:`scene_targets`

    Returns
    -------
    loss : scalar Tensor
    metrics : dict
        ``object_bce`` and ``attr_ce`` (the sum of the five attribute cross-entropies).
    """
    heads = split_heads(model(images))
    bce = F.binary_cross_entropy_with_logits(heads["object"], targets["object"])
    ce = sum(F.cross_entropy(heads[k], targets[k], ignore_index=IGNORE)
             for k in ("kind", "colour", "size", "dx", "dy"))
    return bce + ce, {"object_bce": float(bce.detach()), "attr_ce": float(ce.detach())}


def predict_shapes(logits: torch.Tensor, threshold: float = 0.5) -> list[tuple[Shape, ...]]:
    """Decode classifier logits (B, 37, G, G) into one predicted scene per image.

    A cell whose ``p = sigmoid(objectness)`` exceeds ``threshold`` and is the largest of its 3×3
    cell neighbourhood (peak picking, as CenterNet's 3×3 max-pool) yields a :class:`Shape` with
    the arg-max kind, colour and size and centre ``(CELL·col + dx, CELL·row + dy)`` (offsets
    from :data:`HEADS`); shapes are listed in raster order of their cells (a predicted scene has
    no caption order).
    """
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    heads = split_heads(logits.detach())
    p = torch.sigmoid(heads["object"])                                   # (B, G, G)
    peak = p == F.max_pool2d(p[:, None], 3, stride=1, padding=1)[:, 0]
    present = peak & (p > threshold)
    picks = {k: heads[k].argmax(1) for k in ("kind", "colour", "size", "dx", "dy")}
    out = []
    for i in range(logits.shape[0]):
        shapes = []
        for gy, gx in present[i].nonzero().tolist():
            a = {k: int(v[i, gy, gx]) for k, v in picks.items()}
            shapes.append(Shape(KINDS[a["kind"]], _COLOUR_NAMES[a["colour"]],
                                _SIZE_NAMES[a["size"]], CELL * gx + a["dx"] - CELL,
                                CELL * gy + a["dy"] - CELL))
        out.append(tuple(shapes))
    return out


@torch.no_grad()
def predict_scenes(model: AttributeClassifier, images: torch.Tensor, batch_size: int = 512,
                   threshold: float = 0.5) -> list[tuple[Shape, ...]]:
    """:func:`predict_shapes` of ``model`` on ``images`` (B, 3, 32, 32), clamped to [-1, 1], in
    chunks of ``batch_size`` on the model's device (eval mode for the call)."""
    _check_images(images, "images")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        out = []
        for chunk in images.split(batch_size):
            out += predict_shapes(model(chunk.to(device).float().clamp(-1, 1)).cpu(), threshold)
    finally:
        model.train(was_training)
    return out


# --- the caption score -------------------------------------------------------------------------
def _shapes_of(scene, name: str) -> tuple[Shape, ...]:
    shapes = scene.shapes if isinstance(scene, Scene) else scene
    if not isinstance(shapes, Sequence) or not all(isinstance(s, Shape) for s in shapes):
        raise TypeError(f"{name} must be a Scene or a sequence of Shape, got "
                        f"{type(scene).__name__}")
    return tuple(shapes)


def relation_holds(rel: str, a: Shape, b: Shape) -> bool:
    """Whether ``a`` lies ``rel`` (one of :data:`RELATIONS`) ``b``: the centre offset's sign along
    the relation's axis is right and that axis dominates strictly (``|dx| > |dy|`` for left/right).

    This is :func:`~deepnotes.data.shapes.relation` with margin 0: the generator keeps a margin
    of 3 pixels, so ground-truth scenes pass with room for a pixel of error in either centre.
    """
    dx, dy = a.cx - b.cx, a.cy - b.cy
    if rel == "left of":
        return dx < 0 and abs(dx) > abs(dy)
    if rel == "right of":
        return dx > 0 and abs(dx) > abs(dy)
    if rel == "above":
        return dy < 0 and abs(dy) > abs(dx)
    if rel == "below":
        return dy > 0 and abs(dy) > abs(dx)
    raise ValueError(f"rel must be one of {RELATIONS}, got {rel!r}")


def match_caption(scene, caption: str) -> dict[str, bool]:
    """Compare a predicted scene with ``caption``.

    Parameters
    ----------
    scene : Scene or sequence of Shape
        The shapes seen in the image (order ignored).
    caption : str
        A sentence of the shapes grammar (:func:`~deepnotes.data.shapes.parse_caption`).

    Returns
    -------
    dict of bool
        ``count`` (as many shapes as the caption names), ``kinds``, ``colours``, ``sizes`` (the
        multiset of each attribute equals the caption's), ``objects`` (the multiset of
        ``(size, colour, kind)`` triples equals the caption's) and ``full``: some one-to-one
        assignment of the shapes to the caption's objects has equal attributes and satisfies
        every relation (:func:`relation_holds`).
    """
    shapes = _shapes_of(scene, "scene")
    objects, relations = parse_caption(caption)
    seen = [(s.size, s.colour, s.kind) for s in shapes]
    out = {"count": len(shapes) == len(objects),
           "sizes": Counter(o[0] for o in objects) == Counter(t[0] for t in seen),
           "colours": Counter(o[1] for o in objects) == Counter(t[1] for t in seen),
           "kinds": Counter(o[2] for o in objects) == Counter(t[2] for t in seen),
           "objects": Counter(objects) == Counter(seen)}
    full = False
    if out["objects"]:
        for perm in itertools.permutations(shapes):
            if ([(s.size, s.colour, s.kind) for s in perm] == list(objects)
                    and all(relation_holds(r, perm[0], other)
                            for r, other in zip(relations, perm[1:], strict=True))):
                full = True
                break
    out["full"] = full
    return out


def caption_score_details(pred_scenes: Sequence, captions: Sequence[str]) -> dict[str, float]:
    """Fraction of images passing each check of :func:`match_caption` (keys as there)."""
    if len(pred_scenes) != len(captions):
        raise ValueError(f"pred_scenes and captions must have the same length, got "
                         f"{len(pred_scenes)} and {len(captions)}")
    if not captions:
        raise ValueError("captions must not be empty")
    rows = [match_caption(s, c) for s, c in zip(pred_scenes, captions, strict=True)]
    return {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}


def caption_score(pred_scenes: Sequence, captions: Sequence[str]) -> float:
    """The caption score: the fraction of images whose predicted scene matches its caption
    fully (every object with its size, colour and kind, no extra shape, every relation)."""
    return caption_score_details(pred_scenes, captions)["full"]


# --- spatial conditions: edges and masks -------------------------------------------------------
def _check_images(x, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4 or x.shape[1] != 3 or x.shape[2:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"{name} must have shape (B, 3, {IMAGE_SIZE}, {IMAGE_SIZE}), got "
                         f"{tuple(x.shape)}")


def sobel_magnitude(images: torch.Tensor) -> torch.Tensor:
    """Colour Sobel gradient magnitude, shape (B, 1, H, W).

    Each channel of ``(images + 1) / 2`` (intensities in [0, 1]) is filtered with the 3×3 Sobel
    kernels ``G_x = [1, 2, 1]ᵀ [-1, 0, 1]`` and ``G_y = G_xᵀ`` (zero padding: black background
    beyond the border, so a shape touching the border has its outline there); the magnitude is
    ``sqrt(Σ_c G_x² + G_y²) / 4``, so a unit step in one channel gives 1 on the pixels on both
    sides of it.

    Parameters
    ----------
    images : Tensor, shape (B, C, H, W), values in [-1, 1]
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise ValueError("images must be a (B, C, H, W) tensor")
    x = (images.float() + 1) / 2
    b, c, h, w = x.shape
    gx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=x.device)
    kernels = torch.stack([gx, gx.T])[:, None]                           # (2, 1, 3, 3)
    padded = F.pad(x.reshape(b * c, 1, h, w), (1, 1, 1, 1))
    grad = F.conv2d(padded, kernels).reshape(b, c * 2, h, w)
    return grad.pow(2).sum(1, keepdim=True).sqrt() / 4


def edge_map(images: torch.Tensor, threshold: float = EDGE_THRESHOLD) -> torch.Tensor:
    """Binary edges ``sobel_magnitude(images) > threshold``, shape (B, 1, H, W), float in {0, 1}.

    The default threshold sits below the weakest edge of a rendered shape (a colour step of norm
    ≥ 0.8 seen only diagonally gives ≈ 0.28) and above mild decoder noise.
    """
    if not threshold > 0:
        raise ValueError(f"threshold must be > 0, got {threshold}")
    return (sobel_magnitude(images) > threshold).float()


def shape_masks(instances: torch.Tensor) -> torch.Tensor:
    """Foreground mask of an instance map (B, H, W) (0 = background): (B, 1, H, W) in {0, 1}."""
    if not isinstance(instances, torch.Tensor) or instances.ndim != 3:
        raise ValueError("instances must be a (B, H, W) tensor")
    if instances.is_floating_point():
        raise TypeError(f"instances must be an integer tensor, got {instances.dtype}")
    return (instances > 0).float()[:, None]


def edge_f1(pred: torch.Tensor, target: torch.Tensor, tolerance: int = 1) -> torch.Tensor:
    """Per-image F1 of two binary edge maps with a spatial tolerance.

    Precision: the share of ``pred``'s edge pixels within ``tolerance`` pixels (Chebyshev
    distance, a ``(2t+1)²`` window) of an edge pixel of ``target``; recall: the same with the
    roles swapped; ``F1 = 2PR / (P + R)``. Two empty maps score 1, one empty map 0.

    Parameters
    ----------
    pred, target : Tensor, shape (B, 1, H, W), values in {0, 1}
    tolerance : int ≥ 0

    Returns
    -------
    Tensor, shape (B,)
    """
    if pred.shape != target.shape or pred.ndim != 4 or pred.shape[1] != 1:
        raise ValueError(f"pred and target must both have shape (B, 1, H, W), got "
                         f"{tuple(pred.shape)} and {tuple(target.shape)}")
    if isinstance(tolerance, bool) or not isinstance(tolerance, int) or tolerance < 0:
        raise ValueError(f"tolerance must be a non-negative int, got {tolerance!r}")
    p, t = (pred > 0.5).float(), (target > 0.5).float()
    k = 2 * tolerance + 1

    def near(m):
        return F.max_pool2d(m, k, stride=1, padding=tolerance)

    n_p, n_t = p.sum((1, 2, 3)), t.sum((1, 2, 3))
    precision = (p * near(t)).sum((1, 2, 3)) / n_p.clamp(min=1)
    recall = (t * near(p)).sum((1, 2, 3)) / n_t.clamp(min=1)
    f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
    both_empty = (n_p == 0) & (n_t == 0)
    return torch.where(both_empty, torch.ones_like(f1), f1)


# --- shapes FID --------------------------------------------------------------------------------
class ShapesFID:
    """Fréchet distance of :meth:`AttributeClassifier.features` against reference images.

    The classifier's pooled last hidden map plays the part of Inception's pool3 in FID (Heusel
    et al. 2017): ``fid(x)`` fits a Gaussian to the features of ``x`` and returns its squared
    Fréchet distance (:func:`~deepnotes.diffusion.metrics.frechet_distance`) to the Gaussian of
    the reference features. Like FID it is biased upwards for small ``n``: compare sets of equal
    size, and read it beside the floor of real images (the same ``n``) against the reference.

    Parameters
    ----------
    net : AttributeClassifier
        Trained; used in eval mode on its own device.
    reference : Tensor, shape (N, 3, 32, 32), values in [-1, 1]
        Real images (N ≥ 2), e.g. a held-out split.
    """

    def __init__(self, net: AttributeClassifier, reference: torch.Tensor):
        if not hasattr(net, "features"):
            raise TypeError(f"net must have a features() method (an AttributeClassifier), got "
                            f"{type(net).__name__}")
        self.net = net
        self.ref = gaussian_moments(self.features(reference))

    @torch.no_grad()
    def features(self, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """Features (n, d) of ``images`` (n, 3, 32, 32), clamped to [-1, 1], on the CPU."""
        _check_images(images, "images")
        device = next(self.net.parameters()).device
        was_training = self.net.training
        self.net.eval()
        try:
            return torch.cat([self.net.features(c.to(device).float().clamp(-1, 1)).cpu()
                              for c in images.split(batch_size)])
        finally:
            self.net.train(was_training)

    def fid(self, images: torch.Tensor) -> float:
        """Squared Fréchet distance of ``images`` (n ≥ 2) to the reference."""
        return frechet_distance(*gaussian_moments(self.features(images)), *self.ref)
