"""Write-side annotations: an image's labels and boxes as a source gives them, the checks a box
must pass, how a box follows prepare's resize into the stored image, and the counts the manifest
keeps.

Boxes are ``(x0, y0, x1, y1)`` in continuous pixel coordinates: 0 is the left (top) edge of the
first pixel, and a box over pixels 0..9 is ``(0, 10)``. PASCAL VOC XML (and ImageNet's boxes,
which use its format) number pixels from 1 and include the last: ``xmin=1, xmax=10`` is the same
box (``parse_voc_xml`` converts). COCO's ``[x, y, w, h]`` is already continuous.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field

from hypernym.data.images import Geometry

__all__ = ["FLAGS", "AnnotationStats", "ImageAnnotation", "ObjectBox", "check_box",
           "parse_voc_xml", "stored_boxes"]

# The flags a box may carry: VOC's difficult, truncated and occluded, COCO's iscrowd.
FLAGS = ("difficult", "crowd", "truncated", "occluded")
# Sources disagree whether pixels count from 0 or 1 (ImageNet's XML uses both): a box may pass
# the image's edge by this much before it counts as outside it; it is clipped to the image.
EDGE_SLACK = 1.0


@dataclass(frozen=True)
class ObjectBox:
    """One object: its class id, its box in the source image's pixels, and its flags."""

    label: str
    box: tuple[float, float, float, float]
    flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class ImageAnnotation:
    """What a source says about one image: its labels (class ids, sorted, unique), its boxes,
    and the size (width, height) the annotation was made on, when it says."""

    labels: tuple[str, ...]
    boxes: tuple[ObjectBox, ...] = ()
    size: tuple[int, int] | None = None

    @classmethod
    def of(cls, boxes: list[ObjectBox], *, size: tuple[int, int] | None = None,
           labels: tuple[str, ...] | list[str] = ()) -> ImageAnnotation:
        """An annotation whose labels are ``labels`` plus the class of every box."""
        return cls(tuple(sorted({*labels, *(b.label for b in boxes)})), tuple(boxes), size)


def check_box(box, size: tuple[int, int] | None) -> tuple[tuple | None, str | None]:
    """(the box clipped to the image, None), or (None, the reason it is skipped).

    Reasons: ``box_not_numbers``, ``box_inverted`` (x1 < x0 or y1 < y0), ``box_empty`` (no
    width or height), ``box_outside_image`` (past an edge by more than ``EDGE_SLACK``).
    ``size`` None: only the order is checked (the image's size is not known yet).
    """
    try:
        x0, y0, x1, y1 = (float(v) for v in box)
    except (TypeError, ValueError):
        return None, "box_not_numbers"
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        return None, "box_not_numbers"
    if x1 < x0 or y1 < y0:
        return None, "box_inverted"
    if x1 == x0 or y1 == y0:
        return None, "box_empty"
    if size is None:
        return (x0, y0, x1, y1), None
    w, h = size
    if x0 < -EDGE_SLACK or y0 < -EDGE_SLACK or x1 > w + EDGE_SLACK or y1 > h + EDGE_SLACK:
        return None, "box_outside_image"
    clipped = (max(x0, 0.0), max(y0, 0.0), min(x1, float(w)), min(y1, float(h)))
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        return None, "box_outside_image"
    return clipped, None


def parse_voc_xml(data: bytes, skipped: Counter) -> ImageAnnotation:
    """The image's annotation in a PASCAL VOC XML file (ImageNet's boxes use the same format).

    Boxes that fail `check_box` against the XML's ``<size>`` are left out and counted in
    ``skipped``. Raises ValueError when the file is not a VOC annotation at all.
    """
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise ValueError(f"not XML: {exc}") from None
    if root.tag != "annotation":
        raise ValueError(f"root element <{root.tag}>, not <annotation>")
    size = _xml_size(root)
    labels, boxes = set(), []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        bnd = obj.find("bndbox")
        if not name:
            skipped["object_without_name"] += 1
            continue
        if bnd is None:  # a label without a box (an image-level tag)
            labels.add(name)
            continue
        flags = tuple(f for f in ("difficult", "truncated", "occluded")
                      if (obj.findtext(f) or "0").strip() == "1")
        raw = [bnd.findtext(k) for k in ("xmin", "ymin", "xmax", "ymax")]
        try:  # 1-based inclusive pixel indices -> continuous coordinates
            raw = [float(raw[0]) - 1, float(raw[1]) - 1, float(raw[2]), float(raw[3])]
        except (TypeError, ValueError):
            skipped["box_not_numbers"] += 1
            continue
        box, reason = check_box(raw, size)
        if reason:  # the whole object is left out: its box is all it says
            skipped[reason] += 1
            continue
        labels.add(name)
        boxes.append(ObjectBox(name, box, flags))
    return ImageAnnotation(tuple(sorted(labels)), tuple(boxes), size)


def _xml_size(root) -> tuple[int, int] | None:
    try:
        w, h = int(float(root.findtext("size/width"))), int(float(root.findtext("size/height")))
    except (TypeError, ValueError):
        return None
    return (w, h) if w > 0 and h > 0 else None  # some ImageNet files say 0: unknown


def stored_boxes(annotation: ImageAnnotation, geometry: Geometry, class_index: dict[str, int],
                 skipped: Counter) -> list[dict]:
    """The annotation's boxes in the stored image's pixels, as the sample's json holds them:
    ``{"class": index, "box": [x0, y0, x1, y1], "flags": [...]}``.

    Checked against the decoded image: an annotation made on another size than the image's
    loses its boxes (``image_size_mismatch``), since they may not describe these pixels.
    """
    if not annotation.boxes:
        return []
    source = (geometry.width, geometry.height)
    if annotation.size is not None and annotation.size != source:
        skipped["image_size_mismatch"] += 1
        return []
    out = []
    for obj in annotation.boxes:
        if obj.label not in class_index:
            skipped["box_class_unknown"] += 1
            continue
        box, reason = check_box(obj.box, source)
        if reason:
            skipped[reason] += 1
            continue
        x0, y0, x1, y1 = box
        sx, sy = geometry.scale_x, geometry.scale_y
        stored = [min(x0 * sx, geometry.out_width), min(y0 * sy, geometry.out_height),
                  min(x1 * sx, geometry.out_width), min(y1 * sy, geometry.out_height)]
        out.append({"class": class_index[obj.label], "box": [round(v, 3) for v in stored],
                    "flags": list(obj.flags)})
    return out


@dataclass
class AnnotationStats:
    """What a shard's (or a split's) annotations hold, for the manifest."""

    images: int = 0
    images_with_boxes: int = 0
    boxes: int = 0
    boxes_per_class: Counter = field(default_factory=Counter)  # class index -> boxes
    images_per_class: Counter = field(default_factory=Counter)  # class index -> images
    cardinality: Counter = field(default_factory=Counter)  # labels per image -> images

    def add(self, labels: list[int], boxes: list[dict]) -> None:
        self.images += 1
        self.images_with_boxes += bool(boxes)
        self.boxes += len(boxes)
        self.boxes_per_class.update(b["class"] for b in boxes)
        self.images_per_class.update(labels)
        self.cardinality[len(labels)] += 1

    def merge(self, other: AnnotationStats) -> None:
        self.images += other.images
        self.images_with_boxes += other.images_with_boxes
        self.boxes += other.boxes
        for mine, theirs in ((self.boxes_per_class, other.boxes_per_class),
                             (self.images_per_class, other.images_per_class),
                             (self.cardinality, other.cardinality)):
            mine.update(theirs)

    def to_record(self) -> dict:
        """JSON-ready, with integer keys as strings (a shard's record in ``_parts/``)."""
        return {"images": self.images, "images_with_boxes": self.images_with_boxes,
                "boxes": self.boxes,
                **{name: {str(k): v for k, v in sorted(getattr(self, name).items())}
                   for name in ("boxes_per_class", "images_per_class", "cardinality")}}

    @classmethod
    def from_record(cls, record: dict) -> AnnotationStats:
        return cls(record["images"], record["images_with_boxes"], record["boxes"],
                   *(Counter({int(k): v for k, v in record[name].items()})
                     for name in ("boxes_per_class", "images_per_class", "cardinality")))

    def summary(self, class_ids: list[str]) -> dict:
        """The manifest's view: counts by class id, and the label cardinality."""
        n = self.images or 1
        return {
            "images": self.images, "images_with_boxes": self.images_with_boxes,
            "boxes": self.boxes,
            "boxes_per_class": {class_ids[k]: v for k, v in sorted(self.boxes_per_class.items())},
            "images_per_class": {class_ids[k]: v
                                 for k, v in sorted(self.images_per_class.items())},
            "label_cardinality": {
                "mean": round(sum(k * v for k, v in self.cardinality.items()) / n, 4),
                "max": max(self.cardinality, default=0),
                "histogram": {str(k): v for k, v in sorted(self.cardinality.items())}},
        }
