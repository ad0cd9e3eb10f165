"""Write-side boxes: the checks a box must pass, PASCAL VOC XML, and boxes following prepare's
resize into the stored image exactly, in each resize mode (JPEG draft decoding included)."""

from __future__ import annotations

import io
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from hypernym.data.boxes import (
    AnnotationStats,
    ImageAnnotation,
    ObjectBox,
    check_box,
    parse_voc_xml,
    stored_boxes,
)
from hypernym.data.images import process_image, process_image_geometry
from tests.annotated import found_box, voc_xml


def test_check_box_reasons_and_edge_slack():
    assert check_box([1, 2, 3, 4], (10, 10)) == ((1.0, 2.0, 3.0, 4.0), None)
    assert check_box([5, 2, 3, 4], (10, 10)) == (None, "box_inverted")
    assert check_box([1, 6, 3, 4], None) == (None, "box_inverted")
    assert check_box([3, 2, 3, 4], (10, 10)) == (None, "box_empty")
    assert check_box([1, 2, 3, 40], (10, 10)) == (None, "box_outside_image")
    assert check_box([-5, 2, 3, 4], (10, 10)) == (None, "box_outside_image")
    assert check_box([20, 2, 30, 4], None) == ((20.0, 2.0, 30.0, 4.0), None)  # size unknown
    assert check_box(["a", 2, 3, 4], (10, 10)) == (None, "box_not_numbers")
    assert check_box([1, 2, 3], (10, 10)) == (None, "box_not_numbers")
    assert check_box([1, 2, float("nan"), 4], (10, 10)) == (None, "box_not_numbers")
    # within a pixel of the edge (0- or 1-based sources): clipped, not skipped
    assert check_box([-1, -0.5, 11, 10.5], (10, 10)) == ((0.0, 0.0, 10.0, 10.0), None)


def test_voc_xml_is_one_based_and_keeps_flags():
    xml = voc_xml("a.jpg", (50, 40), [("cat", (0, 0, 10, 20)), ("dog", (20, 5, 50, 40))],
                  difficult={1})
    skipped = Counter()
    ann = parse_voc_xml(xml, skipped)
    assert ann == ImageAnnotation(("cat", "dog"), (
        ObjectBox("cat", (0.0, 0.0, 10.0, 20.0)),
        ObjectBox("dog", (20.0, 5.0, 50.0, 40.0), ("difficult",))), (50, 40))
    assert not skipped
    # a box past the edge and an inverted one are left out, with their classes, and counted
    bad = voc_xml("b", (50, 40), [("cat", (0, 0, 10, 20)), ("dog", (0, 0, 1, 1)),
                                  ("bus", (0, 0, 1, 1))],
                  raw=[(1, 1, 10, 20), (30, 1, 80, 10), (9, 1, 3, 10)])
    ann = parse_voc_xml(bad, skipped)
    assert ann.labels == ("cat",) and len(ann.boxes) == 1
    assert skipped == Counter(box_outside_image=1, box_inverted=1)
    with pytest.raises(ValueError, match="not XML"):
        parse_voc_xml(b"<annotation><obj", skipped)
    with pytest.raises(ValueError, match="not <annotation>"):
        parse_voc_xml(b"<html/>", skipped)


def rectangle_image(size: tuple[int, int], box: tuple[int, int, int, int]) -> bytes:
    pixels = np.full((size[1], size[0], 3), 20, np.uint8)
    pixels[box[1] : box[3], box[0] : box[2]] = (255, 255, 255)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=95)
    return out.getvalue()


@pytest.mark.parametrize(("resize", "size", "source", "stored"), [
    ("squish", 48, (120, 90), (48, 48)),
    ("shorter", 48, (120, 90), (64, 48)),
    ("none", 48, (120, 90), (120, 90)),
    ("shorter", 200, (120, 90), (120, 90)),  # shorter never upscales
    # large enough for the JPEG draft decode (1/2 scale): 401 -> 201 decoded columns
    ("squish", 48, (401, 301), (48, 48)),
    ("shorter", 48, (401, 301), (64, 48)),
])
def test_boxes_follow_each_resize_mode(resize, size, source, stored):
    box = (37, 21, 101, 77)
    data = rectangle_image(source, box)
    jpeg, geometry = process_image_geometry(data, size=size, resize=resize, quality=95)
    assert jpeg == process_image(data, size=size, resize=resize, quality=95)  # same image
    assert (geometry.out_width, geometry.out_height) == stored
    assert Image.open(io.BytesIO(jpeg)).size == stored
    ann = ImageAnnotation(("cat",), (ObjectBox("cat", box, ("crowd",)),), source)
    skipped = Counter()
    [out] = stored_boxes(ann, geometry, {"cat": 3}, skipped)
    assert out["class"] == 3 and out["flags"] == ["crowd"] and not skipped
    # where the resize put the rectangle's edges: the stored over the source size per axis,
    # up to the draft decode's rounding (it decodes ceil(401 / 2) columns)
    sx, sy = stored[0] / source[0], stored[1] / source[1]
    want = [box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy]
    assert np.allclose(out["box"], want, atol=0.15), (out["box"], want)
    # and where the rectangle is in the stored pixels
    assert np.allclose(out["box"], found_box(jpeg, out["box"], (255, 255, 255)), atol=1.0)


def test_draft_decode_scale_is_exact():
    """At 1/2 draft scale, the 401 source columns are 200.5 of the 201 decoded ones."""
    _, geometry = process_image_geometry(rectangle_image((401, 301), (0, 0, 8, 8)), size=48,
                                         resize="squish", quality=90)
    assert geometry.scale_x == pytest.approx(0.5 * 48 / 201)
    assert geometry.scale_y == pytest.approx(0.5 * 48 / 151)


def test_stored_boxes_skips_what_does_not_fit_the_decoded_image():
    _, geometry = process_image_geometry(rectangle_image((60, 40), (1, 1, 5, 5)), size=30,
                                         resize="squish", quality=90)
    skipped = Counter()
    ann = ImageAnnotation(("cat",), (ObjectBox("cat", (1, 1, 5, 5)),), (61, 40))
    assert stored_boxes(ann, geometry, {"cat": 0}, skipped) == []
    assert skipped == Counter(image_size_mismatch=1)
    ann = ImageAnnotation(("cat", "eel"), (ObjectBox("eel", (1, 1, 5, 5)),
                                           ObjectBox("cat", (50, 1, 90, 5)),
                                           ObjectBox("cat", (10, 10, 30, 20))), None)
    out = stored_boxes(ann, geometry, {"cat": 0}, skipped)
    assert [b["box"] for b in out] == [[5.0, 7.5, 15.0, 15.0]]
    assert skipped == Counter(image_size_mismatch=1, box_class_unknown=1, box_outside_image=1)


def test_annotation_stats_survive_the_shard_record():
    stats = AnnotationStats()
    stats.add([0, 2], [{"class": 0, "box": [0, 0, 1, 1], "flags": []}] * 2)
    stats.add([1], [])
    stats.add([], [])
    again = AnnotationStats.from_record(stats.to_record())
    assert again == stats
    total = AnnotationStats()
    total.merge(again)
    total.merge(stats)
    summary = total.summary(["a", "b", "c"])
    assert summary["images"] == 6 and summary["images_with_boxes"] == 2
    assert summary["boxes_per_class"] == {"a": 4}
    assert summary["images_per_class"] == {"a": 2, "b": 2, "c": 2}
    assert summary["label_cardinality"] == {"mean": 1.0, "max": 2,
                                            "histogram": {"0": 2, "1": 2, "2": 2}}
