"""Dock widgets: the only modules that import Qt or magicgui. Each is thin over the core."""
