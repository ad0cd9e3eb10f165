"""The fast tar reader against Python's tarfile, on archives tarfile writes in every format."""

from __future__ import annotations

import io
import tarfile

import pytest

from hypernym.data.reader import read_shard
from hypernym.data.tar import TarFormatError, iter_tar
from hypernym.errors import HypernymError
from tests.tars import add_member, tar_bytes

MEMBERS = [
    ("s0.cls", b"7"),
    ("s0.jpg", bytes(range(256)) * 5),  # not a multiple of 512: padding is skipped
    ("s1.jpg", b""),  # empty member
    ("dir/" + "long" * 40 + ".jpg", b"x" * 512),  # over 100 characters: needs an extension
    ("ünï/cödé.json", b"{}"),
]


def archive(fmt: int, *, extra_dir: bool = True) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        if extra_dir:
            info = tarfile.TarInfo("dir")
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for name, data in MEMBERS:
            add_member(tar, name, data)
        link = tarfile.TarInfo("link.jpg")
        link.type, link.linkname = tarfile.SYMTYPE, "s0.jpg"
        tar.addfile(link)
    return out.getvalue()


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_regular_files_come_out_as_tarfile_reads_them(fmt):
    if fmt == tarfile.USTAR_FORMAT:  # ustar can't hold the long or non-ASCII names
        data, expected = tar_bytes(MEMBERS[:3], format=fmt), MEMBERS[:3]
    else:
        data, expected = archive(fmt), MEMBERS
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        reference = [(m.name, tar.extractfile(m).read()) for m in tar if m.isfile()]
    assert reference == expected
    assert list(iter_tar(io.BytesIO(data))) == expected


def test_truncated_and_corrupt_archives_fail_loudly():
    data = archive(tarfile.GNU_FORMAT)
    with pytest.raises(TarFormatError, match="truncated"):
        list(iter_tar(io.BytesIO(data[:1500]), name="t.tar"))  # inside a member's data
    with pytest.raises(TarFormatError, match="truncated"):
        list(iter_tar(io.BytesIO(data[:700])))  # inside a header
    corrupt = bytearray(data)
    corrupt[512 + 10] ^= 0xFF  # a byte of the second header's name
    with pytest.raises(TarFormatError, match="checksum"):
        list(iter_tar(io.BytesIO(bytes(corrupt))))
    with pytest.raises(TarFormatError):
        list(iter_tar(io.BytesIO(b"this is not a tar archive at all" * 32)))


def test_read_shard_names_the_shard_it_cannot_read(tmp_path):
    path = tmp_path / "train-000003.tar"
    data = tar_bytes([("a.cls", b"4"), ("a.jpg", b"J" * 600), ("b.cls", b"5"),
                      ("b.jpg", b"K" * 600)])
    path.write_bytes(data)
    assert list(read_shard(str(path))) == [(b"J" * 600, 4), (b"K" * 600, 5)]
    assert list(read_shard(data)) == [(b"J" * 600, 4), (b"K" * 600, 5)]
    path.write_bytes(data[:2000])
    with pytest.raises(HypernymError, match=r"train-000003\.tar.*truncated.*prepare"):
        list(read_shard(str(path)))
