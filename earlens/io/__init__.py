"""Reading and writing: decoded audio and its content fingerprint, the data and cache folders, padding-aware frame
counts and masks, and voice activity output (speech regions, pyannote scoring).
"""
