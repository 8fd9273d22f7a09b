"""Correcting label stores region by region, autosaved drafts, and where to correct next."""
