"""A reader of single-shard TensorFlow (TF1) checkpoints without TensorFlow: the LevelDB-style index table and its
protobuf entries parsed by hand, the values read from the data file (musicnn's weights ship this way)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


_TF_DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 9: np.int64, 10: np.bool_}


def _varint(buffer: bytes, position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buffer[position]
        position += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return result, position


def _table_block(index: bytes, handle: bytes):
    """Key/value entries of one uncompressed block of a TensorFlow (LevelDB-style) table."""
    offset, position = _varint(handle, 0)
    size, _ = _varint(handle, position)
    if index[offset + size] != 0:
        raise ValueError("compressed TensorFlow checkpoint index blocks are not supported")
    block = index[offset: offset + size]
    n_restarts = int.from_bytes(block[-4:], "little")
    end, position, key = len(block) - 4 - 4 * n_restarts, 0, b""
    while position < end:
        shared, position = _varint(block, position)
        unshared, position = _varint(block, position)
        length, position = _varint(block, position)
        key = key[:shared] + block[position: position + unshared]
        position += unshared
        yield key, block[position: position + length]
        position += length


def _proto_fields(buffer: bytes):
    """(field number, value) pairs of a serialised protobuf message (varints and length-delimited only)."""
    position = 0
    while position < len(buffer):
        tag, position = _varint(buffer, position)
        if tag & 7 == 0:
            value, position = _varint(buffer, position)
        elif tag & 7 == 2:
            length, position = _varint(buffer, position)
            value, position = buffer[position: position + length], position + length
        else:
            value, position = None, position + (4 if tag & 7 == 5 else 8)
        yield tag >> 3, value


def read_tf_checkpoint(prefix: str | Path) -> dict[str, np.ndarray]:
    """Every numeric variable of a single-shard TensorFlow checkpoint (`PREFIX.index` + `PREFIX.data-00000-of-
    00001`), read without TensorFlow: the index is a LevelDB-style table of BundleEntryProto (dtype, shape,
    offset, size) keyed by variable name; the data file holds the raw little-endian values."""
    index = Path(f"{prefix}.index").read_bytes()
    data = Path(f"{prefix}.data-00000-of-00001").read_bytes()
    if int.from_bytes(index[-8:], "little") != 0xDB4775248B80FB57:
        raise ValueError(f"{prefix}.index is not a TensorFlow checkpoint index")
    footer = index[-48:]
    _, position = _varint(footer, 0)
    _, position = _varint(footer, position)  # skip the metaindex handle; what follows is the index handle
    variables = {}
    for _, handle in _table_block(index, footer[position:]):
        for key, value in _table_block(index, handle):
            fields = dict(_proto_fields(value)) if key else {}
            dtype = _TF_DTYPES.get(fields.get(1, 1))
            if not key or dtype is None:
                continue
            shape = [dict(_proto_fields(dim)).get(1, 0) for number, dim in _proto_fields(fields.get(2, b""))
                     if number == 2]
            offset, size = fields.get(4, 0), fields.get(5, 0)
            variables[key.decode()] = np.frombuffer(data[offset: offset + size], dtype).reshape(shape).copy()
    return variables
