"""Language-model inference: speculative and multi-head decoding.

Algorithm modules here are pure: no file I/O, printing, plotting or CLI."""
