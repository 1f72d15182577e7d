"""Plot helpers shared by the chapters (matplotlib; each draws on a given axis)."""

from __future__ import annotations

import numpy as np


def _np(x):
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def membrane_trace(ax, mem, spikes, threshold: float, label: str = "", dt: float = 1.0):
    """Membrane potential over time with the threshold and the spike times marked."""
    mem, spikes = _np(mem).ravel(), _np(spikes).ravel()
    t = np.arange(len(mem)) * dt
    ax.plot(t, mem, lw=1.2, label=label or None)
    ax.axhline(threshold, color="grey", ls="--", lw=0.8)
    ax.plot(t[spikes > 0], np.full((spikes > 0).sum(), threshold * 1.15), "|", ms=10, mew=1.5,
            color=ax.lines[-2].get_color())
    ax.set_xlabel("time step t")
    ax.set_ylabel("membrane u[t]")


def raster(ax, spikes, title: str = ""):
    """Spike raster of ``spikes [T, N]`` (time on x, neuron on y)."""
    s = _np(spikes)
    t, n = np.nonzero(s)
    ax.scatter(t, n, marker="|", s=12, color="k", lw=0.8)
    ax.set_xlim(-0.5, s.shape[0] - 0.5)
    ax.set_ylim(-0.5, s.shape[1] - 0.5)
    ax.set_xlabel("time step")
    ax.set_ylabel("neuron")
    if title:
        ax.set_title(title)
