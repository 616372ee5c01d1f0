"""upo: learn the order in which a masked diffusion model unmasks (UPO, arXiv 2510.05725)."""

__version__ = "0.1.0"
