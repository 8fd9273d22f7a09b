"""Keras 3 models, losses, metrics and model bundles.

Importing this package imports Keras (and so the configured backend): do it in
the model process or the CLI, never in the napari process.  ``bundle_info``
reads a bundle's metadata without Keras for the GUI.
"""

from __future__ import annotations


def load_bundle(path):
    """Load a model bundle (weights, architecture, recipe, classes, card) in Keras safe mode."""
    from .bundle import load_bundle as _load

    return _load(path)
