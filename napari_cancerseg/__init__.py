"""napari-cancerseg: cancer segmentation for whole-slide images, MRI and mammograms.

The package is importable without Qt and without TensorFlow; napari-specific
glue lives in ``_reader.py``, ``_writer.py``, ``_sample_data.py`` and ``widgets/``.
"""

__version__ = "0.1.0"
