"""Optional plotting (matplotlib comes with the `dev` extra): a headless pyplot, and atomic PNG writes."""

from __future__ import annotations

from pathlib import Path

from icae.utils.io import atomic_path


def pyplot():
    """matplotlib.pyplot on the headless Agg backend, or None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def save_png(fig, path: str | Path, dpi: int = 100) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)
