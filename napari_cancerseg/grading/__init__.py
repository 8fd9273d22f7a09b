"""Gleason classes, colours and grading (research use only, not for diagnosis)."""
