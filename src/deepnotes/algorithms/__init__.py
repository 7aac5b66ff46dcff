"""Classic algorithms with exact O(n) kernels (numba).

Algorithm modules here are pure: no file I/O, printing, plotting or CLI."""
