"""napari-cancerseg: cancer segmentation for whole-slide images, MRI and mammograms.

The package is importable without Qt and without TensorFlow; napari-specific
glue lives in ``_reader.py``, ``_writer.py``, ``_sample_data.py`` and ``widgets/``.
"""

__version__ = "0.1.0"


def resource_path(name: str) -> str:
    """Path of a file bundled with the package (model bundles and their cards)."""
    import os

    path = os.path.join(os.path.dirname(__file__), "resources", name)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: not bundled with this installation of napari-cancerseg")
    return path


#: The bundled nucleus U-Net (trained on real H&E, see resources/nuclei_unet.md).
NUCLEI_MODEL = "nuclei_unet.keras"
