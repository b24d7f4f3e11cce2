"""Audio with known answers: SynTheory's concepts (their options, what each clip plays) rendered with FluidSynth and
cached, your own recordings as a stimulus table, and tones and mixtures with known partials.
"""
