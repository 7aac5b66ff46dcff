"""Device selection: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"`` / ``"cuda:N"``."""

from __future__ import annotations


def resolve_device(name: str = "auto"):
    """Return a ``torch.device``; raise ``ValueError`` for an unknown name or a missing GPU."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {name!r} requested but torch {torch.__version__} sees no CUDA GPU; "
                "use --device cpu or auto"
            )
        return torch.device(name)
    raise ValueError(f"unknown device {name!r}: expected 'auto', 'cpu', 'cuda' or 'cuda:N'")
