"""The SIF container format (apptainer/sif's pkg/sif, read at e306d8b16220e1022b8fe3452e3a5771c438e955).

A SIF file is a 128-byte global header, a table of fixed-size descriptors, then the data objects
the descriptors point to.  All integers are little-endian, and Go's encoding/binary packs the
structs without padding (sif.go `header`, descriptor.go `rawDescriptor`, `partition`):

header (128 B): launch[32] magic[10]="SIF_MAGIC\\0" version[3]="01\\0" arch[3] uuid[16]
                created:i64 modified:i64 descr_free:i64 descr_total:i64 descr_offset:i64
                descr_size:i64 data_offset:i64 data_size:i64
descriptor (585 B): datatype:i32 used:u8 id:u32 group:u32 link:u32 offset:i64 size:i64
                size_with_padding:i64 created:i64 modified:i64 uid:i64 gid:i64 name[128] extra[384]
partition extra: fstype:i32 parttype:i32 arch[3]

Layout as sif.CreateContainer makes it: descriptors at 4096, room for 48 of them, data right
after; a partition object starts on a 4096-byte boundary (descriptor_input.go), others unaligned.
"""

from __future__ import annotations

import struct

import attrs

LAUNCH_SCRIPT = b"#!/usr/bin/env run-singularity\n"  # what apptainer's assemblers/sif.go writes
MAGIC = b"SIF_MAGIC\x00"
VERSION = b"01\x00"
DESCRIPTORS_OFFSET = 4096
DESCRIPTOR_CAPACITY = 48
PARTITION_ALIGNMENT = 4096

DATA_DEFFILE = 0x4001
DATA_LABELS = 0x4003
DATA_PARTITION = 0x4004
FS_SQUASH = 1
PART_PRIMSYS = 2
DEFAULT_GROUP = 1 | 0xF0000000  # DefaultObjectGroup with descrGroupMask, as fillDescriptor stores it

_HEADER = struct.Struct("<32s10s3s3s16s8q")
_DESCRIPTOR = struct.Struct("<i?III7q128s384s")
_PARTITION = struct.Struct("<ii3s")
HEADER_SIZE = _HEADER.size  # 128
DESCRIPTOR_SIZE = _DESCRIPTOR.size  # 585
DATA_OFFSET = DESCRIPTORS_OFFSET + DESCRIPTOR_CAPACITY * DESCRIPTOR_SIZE

# arch.go: Go/Docker architecture names -> the header's two-digit code.
ARCH_CODES = {
    "386": b"01",
    "amd64": b"02",
    "arm": b"03",
    "arm64": b"04",
    "ppc64": b"05",
    "ppc64le": b"06",
    "mips": b"07",
    "mipsle": b"08",
    "mips64": b"09",
    "mips64le": b"10",
    "s390x": b"11",
    "riscv64": b"12",
    "loong64": b"13",
}


@attrs.frozen
class DataObject:
    """One descriptor's object: its type, where it lies, and (partitions) its metadata."""

    datatype: int
    offset: int
    size: int
    size_with_padding: int
    extra: bytes = b""


def arch_code(arch: str) -> bytes:
    return ARCH_CODES[arch] + b"\x00"


def partition_extra(arch: str) -> bytes:
    return _PARTITION.pack(FS_SQUASH, PART_PRIMSYS, arch_code(arch))


def layout(small: list[tuple[int, bytes]], partition_size: int, arch: str) -> tuple[list[DataObject], int]:
    """Place the small objects from DATA_OFFSET on, then the partition on the next 4096 boundary.

    Returns the objects and the partition's offset (where the squashfs image goes)."""
    objects, offset = [], DATA_OFFSET
    for datatype, data in small:
        objects.append(DataObject(datatype, offset, len(data), len(data)))
        offset += len(data)
    start = -(-offset // PARTITION_ALIGNMENT) * PARTITION_ALIGNMENT
    objects.append(
        DataObject(DATA_PARTITION, start, partition_size, start - offset + partition_size, partition_extra(arch))
    )
    return objects, start


def header_and_descriptors(objects: list[DataObject], arch: str, uuid: bytes, when: int) -> bytes:
    """The bytes from offset 0 up to DATA_OFFSET: the header, the zero gap, the descriptor table."""
    descriptors = b"".join(
        _DESCRIPTOR.pack(
            obj.datatype,
            True,
            index + 1,
            DEFAULT_GROUP,
            0,
            obj.offset,
            obj.size,
            obj.size_with_padding,
            when,
            when,
            0,
            0,
            b"",
            obj.extra,
        )
        for index, obj in enumerate(objects)
    )
    descriptors += bytes(DESCRIPTOR_SIZE * (DESCRIPTOR_CAPACITY - len(objects)))
    data_end = max(obj.offset + obj.size for obj in objects)
    header = _HEADER.pack(
        LAUNCH_SCRIPT,
        MAGIC,
        VERSION,
        arch_code(arch),
        uuid,
        when,
        when,
        DESCRIPTOR_CAPACITY - len(objects),
        DESCRIPTOR_CAPACITY,
        DESCRIPTORS_OFFSET,
        DESCRIPTOR_CAPACITY * DESCRIPTOR_SIZE,
        DATA_OFFSET,
        data_end - DATA_OFFSET,
    )
    return header + bytes(DESCRIPTORS_OFFSET - HEADER_SIZE) + descriptors
