"""Gradient-boosted trees and ensembles.

Algorithm modules here are pure: no file I/O, printing, plotting or CLI."""
