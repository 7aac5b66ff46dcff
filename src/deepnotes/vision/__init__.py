"""Detection and video: metrics and online action detection.

Algorithm modules here are pure: no file I/O, printing, plotting or CLI."""
