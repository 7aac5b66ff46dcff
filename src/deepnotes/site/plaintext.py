"""TeX as a reader would type it: the search index holds this instead of raw TeX.

The engines index a page before KaTeX renders it, so the search entries carry ``\\(\\bar v\\)``
and ``\\frac12 \\left[ ... \\right]``. :func:`tex_to_text` turns a formula into readable plain
text (Greek letters and operators as Unicode, fractions as ``a/b``, layout commands dropped), and
:func:`strip_tex` applies it to every formula of an HTML or text fragment.
"""

from __future__ import annotations

import re

SYMBOLS = {
    "alpha": "α", "beta": "β", "gamma": "γ", "delta": "δ", "epsilon": "ε", "varepsilon": "ε",
    "zeta": "ζ", "eta": "η", "theta": "θ", "vartheta": "θ", "iota": "ι", "kappa": "κ",
    "lambda": "λ", "mu": "μ", "nu": "ν", "xi": "ξ", "pi": "π", "rho": "ρ", "sigma": "σ",
    "tau": "τ", "upsilon": "υ", "phi": "φ", "varphi": "φ", "chi": "χ", "psi": "ψ", "omega": "ω",
    "Gamma": "Γ", "Delta": "Δ", "Theta": "Θ", "Lambda": "Λ", "Xi": "Ξ", "Pi": "Π", "Sigma": "Σ",
    "Phi": "Φ", "Psi": "Ψ", "Omega": "Ω", "nabla": "∇", "partial": "∂", "infty": "∞",
    "sum": "∑", "prod": "∏", "int": "∫", "sqrt": "√", "cdot": "·", "times": "×", "pm": "±",
    "le": "≤", "leq": "≤", "ge": "≥", "geq": "≥", "ne": "≠", "neq": "≠", "approx": "≈",
    "sim": "∼", "propto": "∝", "in": "∈", "notin": "∉", "subset": "⊂", "subseteq": "⊆",
    "cup": "∪", "cap": "∩", "to": "→", "rightarrow": "→", "leftarrow": "←", "mapsto": "↦",
    "Rightarrow": "⇒", "iff": "⇔", "forall": "∀", "exists": "∃", "mid": "|", "|": "‖",
    "ldots": "…", "cdots": "⋯", "dots": "…", "top": "⊤", "circ": "∘", "odot": "⊙",
    "otimes": "⊗", "oplus": "⊕", "star": "⋆", "ell": "ℓ", "log": "log", "ln": "ln",
    "exp": "exp", "max": "max", "min": "min", "arg": "arg", "sin": "sin", "cos": "cos",
    "tanh": "tanh", "det": "det", "lim": "lim", "sup": "sup", "inf": "inf", "Pr": "Pr",
    "{": "{", "}": "}", "%": "%", "_": "_", "&": "&", "#": "#", "lvert": "|", "rvert": "|",
    "lVert": "‖", "rVert": "‖", "langle": "⟨", "rangle": "⟩", "lfloor": "⌊", "rfloor": "⌋",
    "lceil": "⌈", "rceil": "⌉", "quad": " ", "qquad": " ", ",": " ", ";": " ", ":": " ",
    "!": "", " ": " ", "\\": " ",
}
#: Commands whose argument is kept as it is (fonts, decorations, text).
KEEP_ARGUMENT = {
    "mathrm", "mathbf", "mathit", "mathsf", "mathtt", "mathcal", "mathbb", "boldsymbol",
    "text", "textrm", "textbf", "textit", "operatorname", "underline", "bm",
}
#: Accents, written as the argument followed by a combining mark (``\bar v`` -> ``v̄``).
ACCENTS = {"bar": "\u0304", "overline": "\u0304", "hat": "\u0302", "widehat": "\u0302",
           "tilde": "\u0303", "widetilde": "\u0303", "vec": "\u20d7", "dot": "\u0307",
           "ddot": "\u0308", "mathring": "\u030a"}
#: Layout commands dropped with no trace (sizes, spacing, alignment, environments).
DROP = {
    "left", "right", "big", "Big", "bigg", "Bigg", "bigl", "bigr", "Bigl", "Bigr", "displaystyle",
    "textstyle", "limits", "nolimits", "nonumber", "notag", "hline", "middle",
}
#: Commands dropped together with their argument.
DROP_WITH_ARGUMENT = {"begin", "end", "tag", "label"}
_MATH = re.compile(r"\\\((.+?)\\\)|\\\[(.+?)\\\]|\$\$(.+?)\$\$|(?<![\\$])\$([^$\n]+?)\$",
                   re.DOTALL)


def _group(tex: str, i: int) -> tuple[str, int]:
    """The braced group (or single character/command) starting at ``tex[i]`` and the index after."""
    while i < len(tex) and tex[i] == " ":
        i += 1
    if i >= len(tex):
        return "", i
    if tex[i] == "{":
        depth = 0
        for j in range(i, len(tex)):
            depth += tex[j] == "{"
            depth -= tex[j] == "}"
            if depth == 0:
                return tex[i + 1:j], j + 1
        return tex[i + 1:], len(tex)
    if tex[i] == "\\":
        match = re.match(r"\\([A-Za-z]+|.)", tex[i:])
        return match.group(0), i + len(match.group(0))
    return tex[i], i + 1


def tex_to_text(tex: str) -> str:
    """A formula as plain text: ``\\frac{a}{b}`` -> ``a/b``, ``\\theta_t`` -> ``θ_t``."""
    out: list[str] = []
    i = 0
    while i < len(tex):
        ch = tex[i]
        if ch == "\\":
            match = re.match(r"\\([A-Za-z]+|.)", tex[i:])
            name = match.group(1)
            i += len(match.group(0))
            if name in ("frac", "dfrac", "tfrac"):
                top, i = _group(tex, i)
                bottom, i = _group(tex, i)
                top, bottom = tex_to_text(top), tex_to_text(bottom)
                wrap = lambda s: s if len(s) <= 1 or s.isalnum() else f"({s})"  # noqa: E731
                out.append(f"{wrap(top)}/{wrap(bottom)}")
            elif name in DROP_WITH_ARGUMENT:
                _, i = _group(tex, i)
            elif name in ACCENTS:
                arg, i = _group(tex, i)
                out.append(tex_to_text(arg) + ACCENTS[name])
            elif name in KEEP_ARGUMENT:
                arg, i = _group(tex, i)
                out.append(tex_to_text(arg))
            elif name == "sqrt":
                arg, i = _group(tex, i)
                out.append(f"√({tex_to_text(arg)})")
            elif name in DROP:
                continue
            elif name in SYMBOLS:
                out.append(SYMBOLS[name])
            else:
                out.append(name)
        elif ch in "{}":
            i += 1
        elif ch == "&":
            out.append(" ")
            i += 1
        elif ch in "^_":
            arg, i = _group(tex, i + 1)
            text = tex_to_text(arg)
            out.append(ch + (text if len(text) <= 1 else f"({text})"))
        else:
            out.append(ch)
            i += 1
    return re.sub(r"\s+", " ", "".join(out)).strip()


def strip_tex(text: str) -> str:
    """Replace every ``\\(...\\)``, ``\\[...\\]``, ``$$...$$`` and ``$...$`` by plain text."""
    return _MATH.sub(lambda m: tex_to_text(next(g for g in m.groups() if g is not None)), text)


__all__ = ["strip_tex", "tex_to_text"]
