"""Tiled whole-slide inference: the tile grid and blend weights, the engine, and the model process."""
