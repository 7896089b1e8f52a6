"""inference components."""
