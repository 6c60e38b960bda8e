"""TFRecord files of `tf.train.Example` records, read and written without TensorFlow.

A TFRecord file is a sequence of records, each framed as
`uint64 length | uint32 masked_crc32c(length) | data | uint32 masked_crc32c(data)` (little
endian; TensorFlow's `core/lib/io/record_writer.cc`). `masked(c) = ((c >> 15) | (c << 17)) +
0xa282ead8` over CRC-32C (Castagnoli). Each record's data is a serialized `tf.train.Example`
protobuf (`tensorflow/core/example/example.proto` and `feature.proto`):

    Example  { Features features = 1; }
    Features { map<string, Feature> feature = 1; }      # entries: key = 1, value = 2
    Feature  { oneof { BytesList bytes_list = 1; FloatList float_list = 2;
                       Int64List int64_list = 3; } }
    BytesList { repeated bytes value = 1; }
    FloatList { repeated float value = 1 [packed]; }   # float32
    Int64List { repeated int64 value = 1 [packed]; }

The protobuf wire format is parsed here directly (varints, length-delimited fields, packed and
unpacked repeated scalars), so RichHF-18K (`data/richhf.py`) reads with no TensorFlow install.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from ..config import InputError

Value = list[bytes] | list[float] | list[int]

_POLY = 0x82F63B78  # CRC-32C, reflected
_TABLE = []
for _n in range(256):
    _c = _n
    for _ in range(8):
        _c = (_c >> 1) ^ _POLY if _c & 1 else _c >> 1
    _TABLE.append(_c)


class TFRecordError(InputError):
    """A corrupt or truncated TFRecord file, or a record that is not a tf.train.Example. An
    `InputError` (a `ValueError`): the file is the user's to fix or replace, so the CLI prints
    the message (which names the file, record and byte offset) rather than a traceback."""


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of `data`; `crc32c(b"123456789") == 0xE3069283`."""
    crc = 0xFFFFFFFF
    table = _TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_records(path: str | Path, *, verify: bool = True) -> Iterator[bytes]:
    """The data of each record in `path`. The length's CRC is always checked; the data's when
    `verify` (pure Python, about 1 s per 10 MB). A truncated or corrupt frame raises naming the
    record index and byte offset."""
    with open(path, "rb") as f:
        index = 0
        while True:
            offset = f.tell()
            head = f.read(12)
            if not head:
                return
            if len(head) < 12:
                raise TFRecordError(f"{path}: record {index} at byte {offset}: truncated header")
            (length,) = struct.unpack("<Q", head[:8])
            (length_crc,) = struct.unpack("<I", head[8:])
            if masked_crc(head[:8]) != length_crc:
                raise TFRecordError(
                    f"{path}: record {index} at byte {offset}: bad length checksum "
                    "(not a TFRecord file, or corrupt)"
                )
            data = f.read(length)
            tail = f.read(4)
            if len(data) < length or len(tail) < 4:
                raise TFRecordError(f"{path}: record {index} at byte {offset}: truncated data")
            if verify and masked_crc(data) != struct.unpack("<I", tail)[0]:
                raise TFRecordError(f"{path}: record {index} at byte {offset}: bad data checksum")
            yield data
            index += 1


def write_records(path: str | Path, records: Sequence[bytes]) -> Path:
    """Write `records` framed as TFRecord (what `tf.io.TFRecordWriter` writes, uncompressed)."""
    path = Path(path)
    with open(path, "wb") as f:
        for data in records:
            length = struct.pack("<Q", len(data))
            f.write(length + struct.pack("<I", masked_crc(length)))
            f.write(data + struct.pack("<I", masked_crc(data)))
    return path


# ----------------------------------------------------------------- protobuf wire format


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise TFRecordError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 70:
            raise TFRecordError("varint longer than 10 bytes")


def _fields(buf: bytes) -> Iterator[tuple[int, int, bytes | int]]:
    """(field number, wire type, value): bytes for length-delimited and fixed-width fields,
    an int for varints. Unknown fields are yielded too; callers skip what they do not read."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            yield number, wire, value
        elif wire == 2:
            size, pos = _varint(buf, pos)
            if pos + size > len(buf):
                raise TFRecordError("truncated length-delimited field")
            yield number, wire, buf[pos : pos + size]
            pos += size
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            if pos + size > len(buf):
                raise TFRecordError("truncated fixed-width field")
            yield number, wire, buf[pos : pos + size]
            pos += size
        else:
            raise TFRecordError(f"unsupported protobuf wire type {wire}")


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _feature(buf: bytes) -> Value:
    values: Value = []
    for number, _, payload in _fields(buf):
        if not isinstance(payload, bytes):
            continue
        if number == 1:  # BytesList
            values = [p for n, _, p in _fields(payload) if n == 1 and isinstance(p, bytes)]
        elif number == 2:  # FloatList: packed float32s, or one float per fixed32 field
            floats: list[float] = []
            for n, wire, p in _fields(payload):
                if n == 1 and isinstance(p, bytes):
                    floats += struct.unpack(f"<{len(p) // 4}f", p[: len(p) // 4 * 4])
                    if wire == 2 and len(p) % 4:
                        raise TFRecordError("packed FloatList is not a whole number of floats")
            values = floats
        elif number == 3:  # Int64List: packed varints, or one varint per field
            ints: list[int] = []
            for n, wire, p in _fields(payload):
                if n != 1:
                    continue
                if wire == 0 and isinstance(p, int):
                    ints.append(_signed64(p))
                elif isinstance(p, bytes):
                    pos = 0
                    while pos < len(p):
                        v, pos = _varint(p, pos)
                        ints.append(_signed64(v))
            values = ints
    return values


def parse_example(data: bytes) -> dict[str, Value]:
    """A serialized `tf.train.Example` as `{feature name: list of bytes | floats | ints}`.
    Bytes that are not one raise `TFRecordError` (the caller names the record: only it knows
    the file and index)."""
    out: dict[str, Value] = {}
    for number, _, features in _fields(data):
        if number != 1 or not isinstance(features, bytes):
            continue
        for n, _, entry in _fields(features):
            if n != 1 or not isinstance(entry, bytes):
                continue
            key, value = None, b""
            for m, _, p in _fields(entry):
                if m == 1 and isinstance(p, bytes):
                    try:
                        key = p.decode("utf-8")
                    except UnicodeDecodeError as err:
                        raise TFRecordError(f"feature name is not UTF-8 ({err})") from err
                elif m == 2 and isinstance(p, bytes):
                    value = p
            if key is None:
                raise TFRecordError("a feature map entry has no key")
            out[key] = _feature(value)
    return out


def _key(number: int, wire: int) -> bytes:
    return _encode_varint(number << 3 | wire)


def _encode_varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _delimited(number: int, payload: bytes) -> bytes:
    return _key(number, 2) + _encode_varint(len(payload)) + payload


def encode_example(features: Mapping[str, bytes | str | float | int | Sequence]) -> bytes:
    """Serialize `{name: value}` as a `tf.train.Example`: bytes/str -> BytesList, float ->
    FloatList, int -> Int64List (a list of one kind for several values), packed like
    TensorFlow's own writer."""
    entries = b""
    for name, raw in features.items():
        items = list(raw) if isinstance(raw, list | tuple) else [raw]
        if all(isinstance(v, bytes | str) for v in items):
            body = b"".join(_delimited(1, v.encode() if isinstance(v, str) else v) for v in items)
            feature = _delimited(1, body)
        elif all(isinstance(v, int) and not isinstance(v, bool) for v in items):
            feature = _delimited(3, _delimited(1, b"".join(_encode_varint(v) for v in items)))
        elif all(isinstance(v, int | float) for v in items):
            feature = _delimited(2, _delimited(1, struct.pack(f"<{len(items)}f", *items)))
        else:
            raise TypeError(f"feature {name!r}: values must be all bytes, all ints or all floats")
        entries += _delimited(1, _delimited(1, name.encode()) + _delimited(2, feature))
    return _delimited(1, entries)
