"""Neural-network building blocks: optimisers, activations, attention, precision.

Algorithm modules here are pure: no file I/O, printing, plotting or CLI."""
