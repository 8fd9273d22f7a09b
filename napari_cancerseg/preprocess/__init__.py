"""Image preprocessing in numpy/scikit-image: stain, tissue, contrast, geometry, augmentation.

Nothing here imports Keras or Qt, so the napari process and data loaders use it freely.
"""
