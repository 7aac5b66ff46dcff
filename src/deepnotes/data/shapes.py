"""A captioned world of coloured shapes: 32×32 RGB images with the sentences that describe them.

Every image holds one to three shapes (:data:`KINDS`) of distinct kind-and-colour, each in one of
:data:`COLOURS` and :data:`SIZES`, on a black background, with non-overlapping bounding boxes (at
least one background pixel between any two). Its caption names the shapes and where the first
one lies relative to the others:

- one shape: ``"a small red circle"``;
- two: ``"a small red circle left of a large blue square"``;
- three: ``"a small red circle left of a large blue square and above a small green cross"``.

A relation ``A left of B`` means that the centres differ more horizontally than vertically, by a
margin of :data:`RELATION_MARGIN` pixels, and that ``A``'s centre is the left one (``above``: the
upper one; image rows grow downwards). Such a pair's bounding boxes are separated along that axis,
so the relation holds for every pixel of the two shapes, not only for their centres.

Everything is generated from a seed (nothing is downloaded): :meth:`ShapesWorld.batch` draws batch
``step`` of a split from ``numpy.random.default_rng([seed, split, step])``, so the stream is
infinite, any batch can be drawn again in any order (resume needs no state), and the splits are
disjoint streams. Each :class:`Scene` keeps the attributes (kind, colour, size, centre, bounding
box) for evaluation; :func:`render` draws a scene and its instance map (which pixel belongs to
which shape, for masks and edge maps). :class:`CaptionTokenizer` maps the fixed word-level
vocabulary to ids and back and rejects a word it does not know, naming it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

IMAGE_SIZE = 32
"""Height and width of every image, in pixels."""

KINDS = ("circle", "square", "triangle", "cross", "diamond")
"""Shape names, as they appear in captions."""

COLOURS = {
    "red": (230, 40, 40),
    "green": (40, 190, 70),
    "blue": (50, 90, 235),
    "yellow": (235, 210, 40),
    "purple": (165, 60, 210),
}
"""Colour name → RGB (uint8) of a shape's pixels; the background is black ``(0, 0, 0)``."""

SIZES = {"small": 4, "large": 7}
"""Size name → half-extent ``r`` in pixels: a shape fills (part of) a ``(2r+1)``² box."""

RELATIONS = ("left of", "right of", "above", "below")
"""Spatial relations of the first shape to another, as they appear in captions."""

MAX_SHAPES = 3
"""At most this many shapes per image."""

RELATION_MARGIN = 3
"""Pixels by which the dominant axis of a centre offset must exceed the other one."""

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>")
"""Token ids 0, 1, 2: padding, start and end of a caption."""

VOCABULARY = SPECIAL_TOKENS + tuple(sorted(
    {"a", "and"} | set(SIZES) | set(COLOURS) | set(KINDS)
    | {w for rel in RELATIONS for w in rel.split()}))
"""Every token, id = position: the special tokens, then the words in alphabetical order."""

MAX_CAPTION_WORDS = 4 + (MAX_SHAPES - 1) * 6 + (MAX_SHAPES - 2)
"""Words of the longest caption: 4 for the first shape, then per other shape a relation (up to 2
words) and 4, with ``and`` between two such clauses."""

CONTEXT_LENGTH = MAX_CAPTION_WORDS + 2
"""Tokens of the longest caption with ``<bos>`` and ``<eos>``; the default padded length."""

_SPLITS = {"train": 0, "val": 1, "test": 2}
_MAX_TRIES = 200


@dataclass(frozen=True)
class Shape:
    """One shape's attributes: what the caption names and where the pixels are.

    Attributes
    ----------
    kind : str, one of :data:`KINDS`
    colour : str, one of :data:`COLOURS`
    size : str, one of :data:`SIZES`
    cx, cy : int
        Centre pixel (column, row); the shape's colour is always at ``image[cy, cx]``.
    """

    kind: str
    colour: str
    size: str
    cx: int
    cy: int

    @property
    def radius(self) -> int:
        """Half-extent ``r`` in pixels (:data:`SIZES`)."""
        return SIZES[self.size]

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        """Inclusive pixel bounding box ``(x0, y0, x1, y1)``; every shape touches all four sides."""
        r = self.radius
        return self.cx - r, self.cy - r, self.cx + r, self.cy + r

    @property
    def phrase(self) -> str:
        """``"a {size} {colour} {kind}"``."""
        return f"a {self.size} {self.colour} {self.kind}"


@dataclass(frozen=True)
class Scene:
    """One image's content.

    Attributes
    ----------
    shapes : tuple of Shape
        In caption order; ``shapes[0]`` is the subject of every relation.
    relations : tuple of str
        ``relations[i]`` is where ``shapes[0]`` lies relative to ``shapes[i + 1]``.
    """

    shapes: tuple[Shape, ...]
    relations: tuple[str, ...]

    @property
    def caption(self) -> str:
        """The sentence describing the scene (module docstring grammar)."""
        parts = [self.shapes[0].phrase]
        for i, (rel, other) in enumerate(zip(self.relations, self.shapes[1:], strict=True)):
            parts.append(("and " if i else "") + f"{rel} {other.phrase}")
        return " ".join(parts)


def relation(a: Shape, b: Shape, margin: int = RELATION_MARGIN) -> str | None:
    """Where ``a`` lies relative to ``b`` (:data:`RELATIONS`), or None when too close to diagonal.

    The dominant axis of the centre offset must exceed the other by ``margin`` pixels.
    """
    dx, dy = a.cx - b.cx, a.cy - b.cy
    if abs(dx) >= abs(dy) + margin:
        return "left of" if dx < 0 else "right of"
    if abs(dy) >= abs(dx) + margin:
        return "above" if dy < 0 else "below"
    return None


def _separated(a: Shape, b: Shape) -> bool:
    """Bounding boxes do not touch: at least one background pixel between them."""
    ax0, ay0, ax1, ay1 = a.bbox
    bx0, by0, bx1, by1 = b.bbox
    return ax1 + 1 < bx0 or bx1 + 1 < ax0 or ay1 + 1 < by0 or by1 + 1 < ay0


def _template(kind: str, r: int) -> np.ndarray:
    """Boolean ``(2r+1, 2r+1)`` mask of a shape of half-extent ``r`` centred in its box."""
    d = np.arange(-r, r + 1)
    dy, dx = d[:, None], np.abs(d[None, :])
    ady = np.abs(dy)
    if kind == "circle":
        return dx * dx + dy * dy <= r * r + r
    if kind == "square":
        return np.ones((2 * r + 1, 2 * r + 1), bool)
    if kind == "diamond":
        return dx + ady <= r
    if kind == "triangle":
        return 2 * dx <= dy + r
    if kind == "cross":
        t = max(1, r // 3)
        return (dx <= t) | (ady <= t)
    raise ValueError(f"shape.kind must be one of {KINDS}, got {kind!r}")


_TEMPLATES = {(k, s): _template(k, r) for k in KINDS for s, r in SIZES.items()}


def shape_mask(shape: Shape, size: int = IMAGE_SIZE) -> np.ndarray:
    """Boolean ``(size, size)`` mask of the pixels ``shape`` covers.

    With offsets ``dx, dy`` from the centre and ``r`` the half-extent: circle
    ``dx² + dy² ≤ r² + r`` (the disc of radius about ``r + ½`` through the box's edge midpoints);
    square ``max(|dx|, |dy|) ≤ r``; diamond ``|dx| + |dy| ≤ r``; triangle (apex up)
    ``|dx| ≤ (dy + r) / 2``; cross: two bars of half-width ``max(1, r // 3)``. Each touches all
    four sides of its bounding box :attr:`Shape.bbox`.
    """
    if (shape.kind, shape.size) not in _TEMPLATES:
        raise ValueError(f"shape must have kind in {KINDS} and size in {tuple(SIZES)}, got "
                         f"{shape.kind!r}, {shape.size!r}")
    x0, y0, x1, y1 = shape.bbox
    if x0 < 0 or y0 < 0 or x1 >= size or y1 >= size:
        raise ValueError(f"shape bounding box {shape.bbox} leaves the {size}x{size} image")
    mask = np.zeros((size, size), bool)
    mask[y0:y1 + 1, x0:x1 + 1] = _TEMPLATES[shape.kind, shape.size]
    return mask


def render(scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``scene``.

    Returns
    -------
    image : ndarray of uint8, shape (IMAGE_SIZE, IMAGE_SIZE, 3)
        RGB, black background.
    instances : ndarray of uint8, shape (IMAGE_SIZE, IMAGE_SIZE)
        ``0`` for background, ``k + 1`` where ``scene.shapes[k]`` is drawn.
    """
    image = np.zeros((IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    instances = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    for k, shape in enumerate(scene.shapes):
        x0, y0, x1, y1 = shape.bbox
        mask = _TEMPLATES[shape.kind, shape.size]
        image[y0:y1 + 1, x0:x1 + 1][mask] = COLOURS[shape.colour]
        instances[y0:y1 + 1, x0:x1 + 1][mask] = k + 1
    return image, instances


_GRID = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE]


def _valid_centres(r: int, placed: list[Shape]) -> np.ndarray:
    """Flat indices ``cy * IMAGE_SIZE + cx`` where a shape of half-extent ``r`` may go.

    Inside the image, separated from every placed shape (:func:`_separated`), and in a clear
    relation (:func:`relation`) to the first placed shape.
    """
    cy, cx = _GRID
    ok = (cx >= r) & (cx < IMAGE_SIZE - r) & (cy >= r) & (cy < IMAGE_SIZE - r)
    for p in placed:
        x0, y0, x1, y1 = p.bbox
        ok &= (cx + r + 1 < x0) | (x1 + 1 < cx - r) | (cy + r + 1 < y0) | (y1 + 1 < cy - r)
    if placed:
        adx, ady = np.abs(placed[0].cx - cx), np.abs(placed[0].cy - cy)
        ok &= (adx >= ady + RELATION_MARGIN) | (ady >= adx + RELATION_MARGIN)
    return np.flatnonzero(ok)


def sample_scene(rng: np.random.Generator, n_shapes: int | None = None) -> Scene:
    """A random scene.

    The number of shapes (uniform over ``1..MAX_SHAPES`` unless given), their distinct
    kind-and-colour pairs and their sizes are drawn first; then the shapes are placed one at a
    time, each centre uniform over every position that keeps the constraints (inside the image,
    separated from the shapes placed before, a clear relation to the first shape). When no
    position is left for a shape, the placement starts again from the first shape.

    Parameters
    ----------
    rng : numpy Generator
    n_shapes : int in 1..MAX_SHAPES, optional
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy Generator, got {type(rng).__name__}")
    if n_shapes is None:
        n_shapes = int(rng.integers(1, MAX_SHAPES + 1))
    if not 1 <= n_shapes <= MAX_SHAPES:
        raise ValueError(f"n_shapes must be in 1..{MAX_SHAPES}, got {n_shapes}")
    pairs = [(k, c) for k in KINDS for c in COLOURS]
    chosen = rng.choice(len(pairs), size=n_shapes, replace=False)   # distinct kind-and-colour
    sizes = [str(s) for s in rng.choice(list(SIZES), size=n_shapes)]
    for _ in range(_MAX_TRIES):
        shapes: list[Shape] = []
        for j, size in zip(chosen, sizes, strict=True):
            free = _valid_centres(SIZES[size], shapes)
            if free.size == 0:
                break
            cy, cx = divmod(int(free[rng.integers(free.size)]), IMAGE_SIZE)
            shapes.append(Shape(*pairs[j], size, cx, cy))
        else:
            rels = tuple(relation(shapes[0], other) for other in shapes[1:])
            return Scene(tuple(shapes), rels)
    raise RuntimeError(f"could not place {n_shapes} shapes of sizes {sizes}")  # pragma: no cover


def parse_caption(caption: str) -> tuple[list[tuple[str, str, str]], list[str]]:
    """Invert :attr:`Scene.caption`: ``([(size, colour, kind), ...], [relation, ...])``.

    Raises
    ------
    ValueError
        A word outside the vocabulary (named), or a sentence the grammar does not produce.
    """
    words = caption.split()
    CaptionTokenizer().check(words, caption)

    def phrase(i: int) -> tuple[tuple[str, str, str], int]:
        chunk = words[i:i + 4]
        if (len(chunk) < 4 or chunk[0] != "a" or chunk[1] not in SIZES
                or chunk[2] not in COLOURS or chunk[3] not in KINDS):
            raise ValueError(f"caption {caption!r}: expected 'a SIZE COLOUR KIND' at word {i}")
        return (chunk[1], chunk[2], chunk[3]), i + 4

    objects, relations = [], []
    first, i = phrase(0)
    objects.append(first)
    while i < len(words):
        if relations:
            if words[i] != "and":
                raise ValueError(f"caption {caption!r}: expected 'and' at word {i}")
            i += 1
        rel = next((r for r in RELATIONS if words[i:i + len(r.split())] == r.split()), None)
        if rel is None:
            raise ValueError(f"caption {caption!r}: expected a relation {RELATIONS} at word {i}")
        relations.append(rel)
        obj, i = phrase(i + len(rel.split()))
        objects.append(obj)
    return objects, relations


class CaptionTokenizer:
    """Word-level tokenizer over :data:`VOCABULARY` (id = position; ``<pad>`` is 0).

    Words are separated by whitespace and matched exactly (lower case); a word outside the
    vocabulary raises ``ValueError`` naming it.
    """

    def __init__(self):
        self.vocabulary = VOCABULARY
        self.ids = {w: i for i, w in enumerate(VOCABULARY)}
        self.pad_id, self.bos_id, self.eos_id = (self.ids[t] for t in SPECIAL_TOKENS)

    @property
    def vocab_size(self) -> int:
        return len(self.vocabulary)

    def check(self, words: list[str], caption: str) -> None:
        """Raise ``ValueError`` naming the first word of ``words`` not in the vocabulary."""
        for w in words:
            if w not in self.ids or w in SPECIAL_TOKENS:
                known = ", ".join(VOCABULARY[len(SPECIAL_TOKENS):])
                raise ValueError(f"unknown word {w!r} in caption {caption!r}; "
                                 f"the vocabulary is: {known}")

    def encode(self, caption: str) -> list[int]:
        """``[<bos>, ids of the words..., <eos>]``."""
        if not isinstance(caption, str):
            raise TypeError(f"caption must be a str, got {type(caption).__name__}")
        words = caption.split()
        self.check(words, caption)
        return [self.bos_id, *(self.ids[w] for w in words), self.eos_id]

    def decode(self, ids) -> str:
        """The words of ``ids`` joined by spaces; special tokens are dropped."""
        skip = {self.pad_id, self.bos_id, self.eos_id}
        out = []
        for i in np.asarray(ids).reshape(-1).tolist():
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"token id {i} is outside the vocabulary (0..{self.vocab_size})")
            if i not in skip:
                out.append(self.vocabulary[i])
        return " ".join(out)

    def __call__(self, captions: list[str] | str, max_length: int = CONTEXT_LENGTH
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode and right-pad a batch.

        Returns
        -------
        tokens : LongTensor, shape (B, max_length)
            ``<pad>`` (0) after ``<eos>``.
        attention_mask : BoolTensor, shape (B, max_length)
            True on real tokens (``<bos>`` … ``<eos>``).
        """
        if isinstance(captions, str):
            captions = [captions]
        encoded = [self.encode(c) for c in captions]
        too_long = [c for c, e in zip(captions, encoded, strict=True) if len(e) > max_length]
        if too_long:
            raise ValueError(f"caption {too_long[0]!r} needs more than max_length={max_length} "
                             "tokens")
        tokens = torch.full((len(encoded), max_length), self.pad_id, dtype=torch.long)
        for row, ids in enumerate(encoded):
            tokens[row, :len(ids)] = torch.tensor(ids)
        return tokens, tokens != self.pad_id


@dataclass
class ShapesBatch:
    """A batch of the shapes world.

    Attributes
    ----------
    images : FloatTensor, shape (B, 3, IMAGE_SIZE, IMAGE_SIZE)
        RGB in ``[-1, 1]`` (``pixel / 127.5 - 1``): the range latent diffusion works in.
    tokens : LongTensor, shape (B, CONTEXT_LENGTH)
    attention_mask : BoolTensor, shape (B, CONTEXT_LENGTH)
    instances : LongTensor, shape (B, IMAGE_SIZE, IMAGE_SIZE)
        ``0`` background, ``k + 1`` for ``scenes[b].shapes[k]`` (see :func:`render`).
    captions : list of str
    scenes : list of Scene
    """

    images: torch.Tensor
    tokens: torch.Tensor
    attention_mask: torch.Tensor
    instances: torch.Tensor
    captions: list[str]
    scenes: list[Scene]

    def tensors(self) -> dict[str, torch.Tensor]:
        """The tensor fields as a dict (what ``fit`` can shard over data-parallel ranks)."""
        return {"images": self.images, "tokens": self.tokens,
                "attention_mask": self.attention_mask, "instances": self.instances}


class ShapesWorld:
    """Infinite, seeded stream of captioned shape images.

    Parameters
    ----------
    seed : int
    split : {"train", "val", "test"}
        Independent streams of the same distribution.
    n_shapes : int or None
        Fixed number of shapes per image, or None for uniform over ``1..MAX_SHAPES``.
    """

    def __init__(self, seed: int = 0, split: str = "train", n_shapes: int | None = None):
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {tuple(_SPLITS)}, got {split!r}")
        if n_shapes is not None and not 1 <= n_shapes <= MAX_SHAPES:
            raise ValueError(f"n_shapes must be in 1..{MAX_SHAPES} or None, got {n_shapes}")
        self.seed, self.split, self.n_shapes = int(seed), split, n_shapes
        self.tokenizer = CaptionTokenizer()

    def scenes(self, step: int, batch_size: int) -> list[Scene]:
        """The scenes of batch ``step`` (a pure function of seed, split, step and batch size)."""
        if isinstance(step, bool) or not isinstance(step, int | np.integer) or step < 0:
            raise ValueError(f"step must be a non-negative int, got {step!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        rng = np.random.default_rng([self.seed, _SPLITS[self.split], int(step)])
        return [sample_scene(rng, self.n_shapes) for _ in range(batch_size)]

    def batch(self, step: int, batch_size: int) -> ShapesBatch:
        """Batch ``step``: images, tokens, instance maps, captions and scenes."""
        scenes = self.scenes(step, batch_size)
        drawn = [render(s) for s in scenes]
        images = np.stack([im for im, _ in drawn])                    # (B, H, W, 3) uint8
        images = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        instances = torch.from_numpy(np.stack([ins for _, ins in drawn])).long()
        captions = [s.caption for s in scenes]
        tokens, mask = self.tokenizer(captions)
        return ShapesBatch(images.contiguous(), tokens, mask, instances, captions, scenes)

    def stream(self, batch_size: int, start: int = 0):
        """Batches ``start, start + 1, ...`` forever."""
        step = start
        while True:
            yield self.batch(step, batch_size)
            step += 1
