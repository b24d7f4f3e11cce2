"""Probes of frozen layers: the feature cache, the linear probe protocols, the helix fit and the helicality test with
its nulls, and handcrafted features probed like a backbone.
"""
