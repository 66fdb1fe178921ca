"""Parse an ONNX model file piece by piece, straight from the protobuf wire format.

Why: `onnx.load` reads the whole file into memory and then parses it, so a model costs twice its
size at peak. Merging the file's top-level fields one run at a time keeps the peak near the model's
own size (bench/bench_open_model.py).
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import onnx

_MODEL_GRAPH_FIELD = 7  # ModelProto.graph in onnx.proto
PARSE_RUN_BYTES = 16 * 2**20  # a model file is parsed in runs of about this many bytes


def parse_model_file(path: Path) -> onnx.ModelProto:
    """Parse a model file piece by piece, so the file's bytes and the parsed model are never both in memory.

    Protobuf merges concatenated messages field by field (repeated fields append), so merging each top-level
    field of ModelProto, and runs of GraphProto fields (nodes, initializers) wrapped as ModelProto.graph, one
    after the other, gives the same message as parsing the whole file. Peak memory is the model plus one run.
    """
    model = onnx.ModelProto()
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        for number, wire_type, start, payload, end in _wire_fields(file, 0, size):
            if number == _MODEL_GRAPH_FIELD and wire_type == 2:
                run = payload
                for _, _, _, _, field_end in _wire_fields(file, payload, end):
                    if field_end - run >= PARSE_RUN_BYTES:
                        model.MergeFromString(_graph_piece(file, run, field_end))
                        run = field_end
                if run < end:
                    model.MergeFromString(_graph_piece(file, run, end))
            else:
                file.seek(start)
                model.MergeFromString(file.read(end - start))
    return model


def _graph_piece(file, start: int, end: int) -> bytes:
    """GraphProto fields file[start:end] wrapped as a ModelProto with only its `graph` field."""
    file.seek(start)
    body = file.read(end - start)
    return bytes([_MODEL_GRAPH_FIELD << 3 | 2]) + _varint_bytes(len(body)) + body


def _wire_fields(file, start: int, end: int) -> Iterator[tuple[int, int, int, int, int]]:
    """Yield (number, wire type, start, payload start, end) of each protobuf field in file[start:end]."""
    position = start
    while position < end:
        file.seek(position)
        header = file.read(20)
        tag, offset = _read_varint(header, 0)
        number, wire_type = tag >> 3, tag & 7
        if wire_type == 0:
            _, offset = _read_varint(header, offset)
            payload, field_end = position + offset, position + offset
        elif wire_type == 1:
            payload, field_end = position + offset, position + offset + 8
        elif wire_type == 2:
            length, offset = _read_varint(header, offset)
            payload, field_end = position + offset, position + offset + length
        elif wire_type == 5:
            payload, field_end = position + offset, position + offset + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire_type} at byte {position}")
        if number == 0 or field_end > end:
            raise ValueError(f"field at byte {position} runs past the end of its message")
        yield number, wire_type, position, payload, field_end
        position = field_end


def _read_varint(data: bytes, offset: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if offset >= len(data) or shift > 63:
            raise ValueError("truncated or malformed varint")
        byte = data[offset]
        value |= (byte & 0x7F) << shift
        offset += 1
        if byte < 0x80:
            return value, offset
        shift += 7


def _varint_bytes(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
