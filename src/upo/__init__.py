"""upo: learn the order in which a masked diffusion model unmasks (UPO, arXiv 2510.05725).

The public API (upo.api):

    import upo

    mdm = upo.load_mdm("sudoku9-mdm")          # shipped by name, a directory, or "GSAI-ML/LLaDA-8B-Instruct"
    policy = upo.load_policy("sudoku9-policy", mdm)
    out = upo.generate(mdm, tokens_or_prompts, policy=policy)   # out.tokens / .texts, .order, .nfe

`upo.Denoiser` is the protocol a model must satisfy to be decoded (docs/models.md).
"""


def _installed_version() -> str:
    """The installed distribution's version (pyproject.toml's), never a second copy of it."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("upo")
    except PackageNotFoundError:  # a source tree on sys.path that was never installed
        return "0+unknown"


__version__ = _installed_version()

__all__ = ["Denoiser", "GenerateOutput", "__version__", "generate", "load_mdm", "load_policy"]

# Imported on first use, so that `import upo` (and `upo --help`) does not wait for torch.
_LAZY = {
    "generate": "upo.api",
    "load_mdm": "upo.api",
    "load_policy": "upo.api",
    "GenerateOutput": "upo.api",
    "Denoiser": "upo.models.denoiser",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'upo' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
