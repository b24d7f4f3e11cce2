"""Learnable spectro-temporal frontends: the log-mel spectrogram, the Gabor STRF bank and its separable fast path, the
frontend modules, and statistics of learned filters.
"""
