"""Dataset metadata: classes, thing ids, label divisor, ignore label, colors.

One `DatasetMetadata` per dataset, built by the functions of this module (the
single place where a dataset's label facts live). Converters write it as
`metadata.json` beside the TFRecord shards; training and evaluation read it
back with `DatasetMetadata.load`.

Label conventions of the project:
  - semantic train ids are contiguous, 0 .. num_classes - 1;
  - the ignore label is separate from the train ids (default 255);
  - panoptic id = semantic * label_divisor + instance_id, instance ids of a
    class start at 1; stuff pixels have instance 0; a thing pixel with
    instance 0 is crowd; ignored pixels are ignore_label * label_divisor.

This module has no TensorFlow dependency so converter worker processes stay
light.
"""

import dataclasses
import json
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from axial_deeplab_tf.utils import io as io_lib

METADATA_FILENAME = "metadata.json"

_TASKS = ("panoptic", "semantic", "classification")

Color = Tuple[int, int, int]


@dataclasses.dataclass(frozen=True)
class DatasetMetadata:
  """Label facts of one dataset.

  Attributes:
    name: dataset name, e.g. "coco_panoptic".
    task: "panoptic", "semantic" or "classification".
    class_names: name of each train id, length num_classes.
    original_category_ids: the dataset's own id of each train id (COCO
      category id, Cityscapes labelId, ADE20K label value, ImageNet synset).
    thing_class_ids: train ids of the thing classes (sorted).
    colors: an RGB color per train id, for visualisation.
    label_divisor: panoptic id = semantic * label_divisor + instance; 0 when
      the dataset has no instances.
    ignore_label: the semantic label of pixels that are not evaluated.
  """
  name: str
  task: str
  class_names: Tuple[str, ...]
  original_category_ids: Tuple[Union[int, str], ...]
  thing_class_ids: Tuple[int, ...]
  colors: Tuple[Color, ...]
  label_divisor: int
  ignore_label: int

  def __post_init__(self):
    # Normalise containers so that metadata read back from JSON compares
    # equal to metadata built in code.
    object.__setattr__(self, "class_names", tuple(self.class_names))
    object.__setattr__(self, "original_category_ids",
                       tuple(self.original_category_ids))
    object.__setattr__(self, "thing_class_ids",
                       tuple(int(i) for i in self.thing_class_ids))
    object.__setattr__(self, "colors",
                       tuple(tuple(int(v) for v in c) for c in self.colors))
    if self.task not in _TASKS:
      raise ValueError(f"task must be one of {_TASKS}, got {self.task!r}.")
    n = len(self.class_names)
    if n == 0:
      raise ValueError(f"class_names of {self.name!r} must not be empty.")
    for field_name in ("original_category_ids", "colors"):
      if len(getattr(self, field_name)) != n:
        raise ValueError(
            f"{field_name} of {self.name!r} has "
            f"{len(getattr(self, field_name))} entries, expected one per "
            f"class ({n}).")
    if len(set(self.original_category_ids)) != n:
      raise ValueError(f"original_category_ids of {self.name!r} must be "
                       f"unique, got {self.original_category_ids}.")
    for c in self.colors:
      if len(c) != 3 or any(not 0 <= v <= 255 for v in c):
        raise ValueError(f"colors of {self.name!r} must be RGB triples in "
                         f"0..255, got {c}.")
    if list(self.thing_class_ids) != sorted(set(self.thing_class_ids)):
      raise ValueError(f"thing_class_ids of {self.name!r} must be sorted and "
                       f"unique, got {self.thing_class_ids}.")
    if any(not 0 <= t < n for t in self.thing_class_ids):
      raise ValueError(f"thing_class_ids of {self.name!r} must lie in "
                       f"0..{n - 1}, got {self.thing_class_ids}.")
    if 0 <= self.ignore_label < n:
      raise ValueError(
          f"ignore_label of {self.name!r} is {self.ignore_label}, which is a "
          f"train id (0..{n - 1}); the ignore label must be separate.")
    if self.task == "panoptic":
      if self.label_divisor <= 0:
        raise ValueError(f"label_divisor of panoptic dataset {self.name!r} "
                         f"must be positive, got {self.label_divisor}.")
      if self.ignore_label < 0:
        raise ValueError(f"ignore_label of {self.name!r} must be >= 0 for "
                         f"panoptic ids, got {self.ignore_label}.")
      if (self.ignore_label + 1) * self.label_divisor > 2**31 - 1:
        raise ValueError(
            f"ignore_label {self.ignore_label} * label_divisor "
            f"{self.label_divisor} of {self.name!r} overflows int32 panoptic "
            f"ids.")
    elif self.thing_class_ids:
      raise ValueError(f"thing_class_ids of {self.task} dataset {self.name!r} "
                       f"must be empty, got {self.thing_class_ids}.")

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  @property
  def stuff_class_ids(self) -> Tuple[int, ...]:
    things = set(self.thing_class_ids)
    return tuple(i for i in range(self.num_classes) if i not in things)

  @property
  def panoptic_ignore_id(self) -> int:
    """Panoptic id of ignored pixels: ignore_label * label_divisor."""
    return self.ignore_label * self.label_divisor

  def original_to_train_id(self) -> Dict[Union[int, str], int]:
    """Maps the dataset's own category ids to train ids."""
    return {o: i for i, o in enumerate(self.original_category_ids)}

  def to_dict(self) -> Dict[str, Any]:
    return {
        "name": self.name,
        "task": self.task,
        "num_classes": self.num_classes,
        "class_names": list(self.class_names),
        "original_category_ids": list(self.original_category_ids),
        "thing_class_ids": list(self.thing_class_ids),
        "stuff_class_ids": list(self.stuff_class_ids),
        "colors": [list(c) for c in self.colors],
        "label_divisor": self.label_divisor,
        "ignore_label": self.ignore_label,
    }

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "DatasetMetadata":
    """Inverse of `to_dict`; checks the derived fields it contains."""
    meta = cls(name=d["name"], task=d["task"], class_names=d["class_names"],
               original_category_ids=d["original_category_ids"],
               thing_class_ids=d["thing_class_ids"], colors=d["colors"],
               label_divisor=int(d["label_divisor"]),
               ignore_label=int(d["ignore_label"]))
    if "num_classes" in d and int(d["num_classes"]) != meta.num_classes:
      raise ValueError(f"num_classes {d['num_classes']} disagrees with the "
                       f"{meta.num_classes} class_names of {meta.name!r}.")
    return meta

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), indent=1)

  def save(self, output_dir: str) -> str:
    """Writes `metadata.json` into `output_dir` atomically; returns its path.

    Raises:
      ValueError: if a different metadata.json is already there (two datasets
        must not share one directory).
    """
    path = os.path.join(output_dir, METADATA_FILENAME)
    if os.path.exists(path):
      existing = DatasetMetadata.load(path)
      if existing != self:
        raise ValueError(
            f"{path} already holds metadata of dataset {existing.name!r} "
            f"that differs from {self.name!r}; use another output_dir.")
      return path
    io_lib.write_text_atomically(path, self.to_json())
    return path

  @classmethod
  def load(cls, path: str) -> "DatasetMetadata":
    """Reads metadata from a JSON file or a directory holding metadata.json."""
    if os.path.isdir(path):
      path = os.path.join(path, METADATA_FILENAME)
    with open(path) as f:
      return cls.from_dict(json.load(f))


def from_categories(categories: Sequence[Mapping[str, Any]], *, name: str,
                    label_divisor: int, ignore_label: int = 255,
                    task: str = "panoptic") -> DatasetMetadata:
  """Builds metadata from a COCO-style category list, train ids in list order.

  Args:
    categories: dicts with "id" (int), "name" (str), optional "isthing"
      (0/1, default 0) and optional "color" ([r, g, b]; a deterministic
      palette color is used when absent).
    name: dataset name.
    label_divisor: panoptic label divisor.
    ignore_label: ignore label (must not be a train id).
    task: "panoptic" or "semantic".

  Returns:
    DatasetMetadata with train id i for categories[i].
  """
  if not isinstance(categories, (list, tuple)) or not categories:
    raise ValueError(f"categories must be a non-empty list of dicts, got "
                     f"{categories!r:.100}.")
  names, ids, colors, things = [], [], [], []
  for i, cat in enumerate(categories):
    if not isinstance(cat, Mapping) or "id" not in cat or "name" not in cat:
      raise ValueError(f"categories[{i}] must be a dict with 'id' and 'name', "
                       f"got {cat!r}.")
    if not isinstance(cat["id"], int) or isinstance(cat["id"], bool):
      raise ValueError(f"categories[{i}]['id'] must be an int, got "
                       f"{cat['id']!r}.")
    isthing = cat.get("isthing", 0)
    if isthing not in (0, 1, True, False):
      raise ValueError(f"categories[{i}]['isthing'] must be 0 or 1, got "
                       f"{isthing!r}.")
    names.append(str(cat["name"]))
    ids.append(cat["id"])
    colors.append(tuple(cat["color"]) if "color" in cat else _palette(i))
    if isthing and task == "panoptic":
      things.append(i)
  return DatasetMetadata(name=name, task=task, class_names=names,
                         original_category_ids=ids, thing_class_ids=things,
                         colors=colors,
                         label_divisor=label_divisor if task == "panoptic"
                         else 0, ignore_label=ignore_label)


def _palette(index: int) -> Color:
  # Well-spread colors from the bits of the index (as in the PASCAL palette).
  r = g = b = 0
  c = index + 1
  for shift in range(7, -1, -1):
    r |= ((c >> 0) & 1) << shift
    g |= ((c >> 1) & 1) << shift
    b |= ((c >> 2) & 1) << shift
    c >>= 3
  return (r, g, b)


# COCO panoptic 2017: (category id, isthing, name, color). Train ids follow
# this order: the 80 things (0..79) then the 53 stuff classes (80..132).
_COCO_PANOPTIC_CATEGORIES = (
    (1, 1, "person", (220, 20, 60)), (2, 1, "bicycle", (119, 11, 32)),
    (3, 1, "car", (0, 0, 142)), (4, 1, "motorcycle", (0, 0, 230)),
    (5, 1, "airplane", (106, 0, 228)), (6, 1, "bus", (0, 60, 100)),
    (7, 1, "train", (0, 80, 100)), (8, 1, "truck", (0, 0, 70)),
    (9, 1, "boat", (0, 0, 192)), (10, 1, "traffic light", (250, 170, 30)),
    (11, 1, "fire hydrant", (100, 170, 30)),
    (13, 1, "stop sign", (220, 220, 0)),
    (14, 1, "parking meter", (175, 116, 175)), (15, 1, "bench", (250, 0, 30)),
    (16, 1, "bird", (165, 42, 42)), (17, 1, "cat", (255, 77, 255)),
    (18, 1, "dog", (0, 226, 252)), (19, 1, "horse", (182, 182, 255)),
    (20, 1, "sheep", (0, 82, 0)), (21, 1, "cow", (120, 166, 157)),
    (22, 1, "elephant", (110, 76, 0)), (23, 1, "bear", (174, 57, 255)),
    (24, 1, "zebra", (199, 100, 0)), (25, 1, "giraffe", (72, 0, 118)),
    (27, 1, "backpack", (255, 179, 240)), (28, 1, "umbrella", (0, 125, 92)),
    (31, 1, "handbag", (209, 0, 151)), (32, 1, "tie", (188, 208, 182)),
    (33, 1, "suitcase", (0, 220, 176)), (34, 1, "frisbee", (255, 99, 164)),
    (35, 1, "skis", (92, 0, 73)), (36, 1, "snowboard", (133, 129, 255)),
    (37, 1, "sports ball", (78, 180, 255)), (38, 1, "kite", (0, 228, 0)),
    (39, 1, "baseball bat", (174, 255, 243)),
    (40, 1, "baseball glove", (45, 89, 255)),
    (41, 1, "skateboard", (134, 134, 103)),
    (42, 1, "surfboard", (145, 148, 174)),
    (43, 1, "tennis racket", (255, 208, 186)),
    (44, 1, "bottle", (197, 226, 255)),
    (46, 1, "wine glass", (171, 134, 1)), (47, 1, "cup", (109, 63, 54)),
    (48, 1, "fork", (207, 138, 255)), (49, 1, "knife", (151, 0, 95)),
    (50, 1, "spoon", (9, 80, 61)), (51, 1, "bowl", (84, 105, 51)),
    (52, 1, "banana", (74, 65, 105)), (53, 1, "apple", (166, 196, 102)),
    (54, 1, "sandwich", (208, 195, 210)), (55, 1, "orange", (255, 109, 65)),
    (56, 1, "broccoli", (0, 143, 149)), (57, 1, "carrot", (179, 0, 194)),
    (58, 1, "hot dog", (209, 99, 106)), (59, 1, "pizza", (5, 121, 0)),
    (60, 1, "donut", (227, 255, 205)), (61, 1, "cake", (147, 186, 208)),
    (62, 1, "chair", (153, 69, 1)), (63, 1, "couch", (3, 95, 161)),
    (64, 1, "potted plant", (163, 255, 0)), (65, 1, "bed", (119, 0, 170)),
    (67, 1, "dining table", (0, 182, 199)), (70, 1, "toilet", (0, 165, 120)),
    (72, 1, "tv", (183, 130, 88)), (73, 1, "laptop", (95, 32, 0)),
    (74, 1, "mouse", (130, 114, 135)), (75, 1, "remote", (110, 129, 133)),
    (76, 1, "keyboard", (166, 74, 118)), (77, 1, "cell phone", (219, 142, 185)),
    (78, 1, "microwave", (79, 210, 114)), (79, 1, "oven", (178, 90, 62)),
    (80, 1, "toaster", (65, 70, 15)), (81, 1, "sink", (127, 167, 115)),
    (82, 1, "refrigerator", (59, 105, 106)), (84, 1, "book", (142, 108, 45)),
    (85, 1, "clock", (196, 172, 0)), (86, 1, "vase", (95, 54, 80)),
    (87, 1, "scissors", (128, 76, 255)), (88, 1, "teddy bear", (201, 57, 1)),
    (89, 1, "hair drier", (246, 0, 122)),
    (90, 1, "toothbrush", (191, 162, 208)),
    (92, 0, "banner", (255, 255, 128)), (93, 0, "blanket", (147, 211, 203)),
    (95, 0, "bridge", (150, 100, 100)), (100, 0, "cardboard", (168, 171, 172)),
    (107, 0, "counter", (146, 112, 198)), (109, 0, "curtain", (210, 170, 100)),
    (112, 0, "door-stuff", (92, 136, 89)),
    (118, 0, "floor-wood", (218, 88, 184)),
    (119, 0, "flower", (241, 129, 0)), (122, 0, "fruit", (217, 17, 255)),
    (125, 0, "gravel", (124, 74, 181)), (128, 0, "house", (70, 70, 70)),
    (130, 0, "light", (255, 228, 255)), (133, 0, "mirror-stuff", (154, 208, 0)),
    (138, 0, "net", (193, 0, 92)), (141, 0, "pillow", (76, 91, 113)),
    (144, 0, "platform", (255, 180, 195)),
    (145, 0, "playingfield", (106, 154, 176)),
    (147, 0, "railroad", (230, 150, 140)), (148, 0, "river", (60, 143, 255)),
    (149, 0, "road", (128, 64, 128)), (151, 0, "roof", (92, 82, 55)),
    (154, 0, "sand", (254, 212, 124)), (155, 0, "sea", (73, 77, 174)),
    (156, 0, "shelf", (255, 160, 98)), (159, 0, "snow", (255, 255, 255)),
    (161, 0, "stairs", (104, 84, 109)), (166, 0, "tent", (169, 164, 131)),
    (168, 0, "towel", (225, 199, 255)), (171, 0, "wall-brick", (137, 54, 74)),
    (175, 0, "wall-stone", (135, 158, 223)),
    (176, 0, "wall-tile", (7, 246, 231)),
    (177, 0, "wall-wood", (107, 255, 200)),
    (178, 0, "water-other", (58, 41, 149)),
    (180, 0, "window-blind", (183, 121, 142)),
    (181, 0, "window-other", (255, 73, 97)),
    (184, 0, "tree-merged", (107, 142, 35)),
    (185, 0, "fence-merged", (190, 153, 153)),
    (186, 0, "ceiling-merged", (146, 139, 141)),
    (187, 0, "sky-other-merged", (70, 130, 180)),
    (188, 0, "cabinet-merged", (134, 199, 156)),
    (189, 0, "table-merged", (209, 226, 140)),
    (190, 0, "floor-other-merged", (96, 36, 108)),
    (191, 0, "pavement-merged", (96, 96, 96)),
    (192, 0, "mountain-merged", (64, 170, 64)),
    (193, 0, "grass-merged", (152, 251, 152)),
    (194, 0, "dirt-merged", (208, 229, 228)),
    (195, 0, "paper-merged", (206, 186, 171)),
    (196, 0, "food-other-merged", (152, 161, 64)),
    (197, 0, "building-other-merged", (116, 112, 0)),
    (198, 0, "rock-merged", (0, 114, 143)),
    (199, 0, "wall-other-merged", (102, 102, 156)),
    (200, 0, "rug-merged", (250, 141, 255)),
)


def coco_panoptic(label_divisor: int = 256,
                  ignore_label: int = 255) -> DatasetMetadata:
  """COCO panoptic 2017: 133 classes (80 things, 53 stuff), divisor 256."""
  return DatasetMetadata(
      name="coco_panoptic", task="panoptic",
      class_names=[c[2] for c in _COCO_PANOPTIC_CATEGORIES],
      original_category_ids=[c[0] for c in _COCO_PANOPTIC_CATEGORIES],
      thing_class_ids=[i for i, c in enumerate(_COCO_PANOPTIC_CATEGORIES)
                       if c[1]],
      colors=[c[3] for c in _COCO_PANOPTIC_CATEGORIES],
      label_divisor=label_divisor, ignore_label=ignore_label)


# Cityscapes: (labelId, name, color) of the 19 evaluated classes in trainId
# order; trainIds 11..18 have instances.
_CITYSCAPES_CLASSES = (
    (7, "road", (128, 64, 128)), (8, "sidewalk", (244, 35, 232)),
    (11, "building", (70, 70, 70)), (12, "wall", (102, 102, 156)),
    (13, "fence", (190, 153, 153)), (17, "pole", (153, 153, 153)),
    (19, "traffic light", (250, 170, 30)), (20, "traffic sign", (220, 220, 0)),
    (21, "vegetation", (107, 142, 35)), (22, "terrain", (152, 251, 152)),
    (23, "sky", (70, 130, 180)), (24, "person", (220, 20, 60)),
    (25, "rider", (255, 0, 0)), (26, "car", (0, 0, 142)),
    (27, "truck", (0, 0, 70)), (28, "bus", (0, 60, 100)),
    (31, "train", (0, 80, 100)), (32, "motorcycle", (0, 0, 230)),
    (33, "bicycle", (119, 11, 32)),
)
_CITYSCAPES_THINGS = tuple(range(11, 19))


def cityscapes(task: str = "panoptic", label_divisor: int = 1000,
               ignore_label: int = 255) -> DatasetMetadata:
  """Cityscapes: 19 train ids, things 11-18, divisor 1000, ignore 255.

  Args:
    task: "panoptic" or "semantic" (same classes, no things/divisor).
    label_divisor: panoptic label divisor.
    ignore_label: ignore label.
  """
  if task not in ("panoptic", "semantic"):
    raise ValueError(f"task must be 'panoptic' or 'semantic', got {task!r}.")
  return DatasetMetadata(
      name="cityscapes" if task == "panoptic" else "cityscapes_semantic",
      task=task, class_names=[c[1] for c in _CITYSCAPES_CLASSES],
      original_category_ids=[c[0] for c in _CITYSCAPES_CLASSES],
      thing_class_ids=_CITYSCAPES_THINGS if task == "panoptic" else (),
      colors=[c[2] for c in _CITYSCAPES_CLASSES],
      label_divisor=label_divisor if task == "panoptic" else 0,
      ignore_label=ignore_label)


# Mapillary Vistas v1.2 panoptic categories (panoptic_2018.json): category id
# = position + 1; (isthing, readable name, label name, color). The label name
# is the "name" of config.json and the "supercategory" of the panoptic JSON.
_MAPILLARY_V12_CATEGORIES = (
    (1, "Bird", "animal--bird", (165, 42, 42)),
    (1, "Ground Animal", "animal--ground-animal", (0, 192, 0)),
    (0, "Curb", "construction--barrier--curb", (196, 196, 196)),
    (0, "Fence", "construction--barrier--fence", (190, 153, 153)),
    (0, "Guard Rail", "construction--barrier--guard-rail", (180, 165, 180)),
    (0, "Barrier", "construction--barrier--other-barrier", (90, 120, 150)),
    (0, "Wall", "construction--barrier--wall", (102, 102, 156)),
    (0, "Bike Lane", "construction--flat--bike-lane", (128, 64, 255)),
    (1, "Crosswalk - Plain", "construction--flat--crosswalk-plain",
     (140, 140, 200)),
    (0, "Curb Cut", "construction--flat--curb-cut", (170, 170, 170)),
    (0, "Parking", "construction--flat--parking", (250, 170, 160)),
    (0, "Pedestrian Area", "construction--flat--pedestrian-area", (96, 96, 96)),
    (0, "Rail Track", "construction--flat--rail-track", (230, 150, 140)),
    (0, "Road", "construction--flat--road", (128, 64, 128)),
    (0, "Service Lane", "construction--flat--service-lane", (110, 110, 110)),
    (0, "Sidewalk", "construction--flat--sidewalk", (244, 35, 232)),
    (0, "Bridge", "construction--structure--bridge", (150, 100, 100)),
    (0, "Building", "construction--structure--building", (70, 70, 70)),
    (0, "Tunnel", "construction--structure--tunnel", (150, 120, 90)),
    (1, "Person", "human--person", (220, 20, 60)),
    (1, "Bicyclist", "human--rider--bicyclist", (255, 0, 0)),
    (1, "Motorcyclist", "human--rider--motorcyclist", (255, 0, 100)),
    (1, "Other Rider", "human--rider--other-rider", (255, 0, 200)),
    (1, "Lane Marking - Crosswalk", "marking--crosswalk-zebra",
     (200, 128, 128)),
    (0, "Lane Marking - General", "marking--general", (255, 255, 255)),
    (0, "Mountain", "nature--mountain", (64, 170, 64)),
    (0, "Sand", "nature--sand", (230, 160, 50)),
    (0, "Sky", "nature--sky", (70, 130, 180)),
    (0, "Snow", "nature--snow", (190, 255, 255)),
    (0, "Terrain", "nature--terrain", (152, 251, 152)),
    (0, "Vegetation", "nature--vegetation", (107, 142, 35)),
    (0, "Water", "nature--water", (0, 170, 30)),
    (1, "Banner", "object--banner", (255, 255, 128)),
    (1, "Bench", "object--bench", (250, 0, 30)),
    (1, "Bike Rack", "object--bike-rack", (100, 140, 180)),
    (1, "Billboard", "object--billboard", (220, 220, 220)),
    (1, "Catch Basin", "object--catch-basin", (220, 128, 128)),
    (1, "CCTV Camera", "object--cctv-camera", (222, 40, 40)),
    (1, "Fire Hydrant", "object--fire-hydrant", (100, 170, 30)),
    (1, "Junction Box", "object--junction-box", (40, 40, 40)),
    (1, "Mailbox", "object--mailbox", (33, 33, 33)),
    (1, "Manhole", "object--manhole", (100, 128, 160)),
    (1, "Phone Booth", "object--phone-booth", (142, 0, 0)),
    (0, "Pothole", "object--pothole", (70, 100, 150)),
    (1, "Street Light", "object--street-light", (210, 170, 100)),
    (1, "Pole", "object--support--pole", (153, 153, 153)),
    (1, "Traffic Sign Frame", "object--support--traffic-sign-frame",
     (128, 128, 128)),
    (1, "Utility Pole", "object--support--utility-pole", (0, 0, 80)),
    (1, "Traffic Light", "object--traffic-light", (250, 170, 30)),
    (1, "Traffic Sign (Back)", "object--traffic-sign--back", (192, 192, 192)),
    (1, "Traffic Sign (Front)", "object--traffic-sign--front", (220, 220, 0)),
    (1, "Trash Can", "object--trash-can", (140, 140, 20)),
    (1, "Bicycle", "object--vehicle--bicycle", (119, 11, 32)),
    (1, "Boat", "object--vehicle--boat", (150, 0, 255)),
    (1, "Bus", "object--vehicle--bus", (0, 60, 100)),
    (1, "Car", "object--vehicle--car", (0, 0, 142)),
    (1, "Caravan", "object--vehicle--caravan", (0, 0, 90)),
    (1, "Motorcycle", "object--vehicle--motorcycle", (0, 0, 230)),
    (0, "On Rails", "object--vehicle--on-rails", (0, 80, 100)),
    (1, "Other Vehicle", "object--vehicle--other-vehicle", (128, 64, 64)),
    (1, "Trailer", "object--vehicle--trailer", (0, 0, 110)),
    (1, "Truck", "object--vehicle--truck", (0, 0, 70)),
    (1, "Wheeled Slow", "object--vehicle--wheeled-slow", (0, 0, 192)),
    (0, "Car Mount", "void--car-mount", (32, 32, 32)),
    (0, "Ego Vehicle", "void--ego-vehicle", (120, 10, 10)),
)

MAPILLARY_VERSIONS = ("v1.2", "v2.0")


def mapillary_vistas(version: str = "v1.2",
                     categories: Optional[Sequence[Mapping[str, Any]]] = None,
                     label_divisor: int = 1000,
                     ignore_label: int = 255) -> DatasetMetadata:
  """Mapillary Vistas panoptic metadata for category set v1.2 or v2.0.

  v1.2 has 65 panoptic categories (ids 1..65; 37 things) and is built in.
  The v2.0 category set is read from the dataset's own panoptic JSON
  (panoptic_2020.json "categories", which carry id, name, isthing, color),
  so `categories` is required for v2.0. When given for v1.2, the categories
  are checked against the built-in set.

  Args:
    version: "v1.2" or "v2.0".
    categories: the "categories" list of the dataset's panoptic JSON.
    label_divisor: panoptic label divisor.
    ignore_label: ignore label.
  """
  if version not in MAPILLARY_VERSIONS:
    raise ValueError(f"version must be one of {MAPILLARY_VERSIONS}, got "
                     f"{version!r}.")
  name = f"mapillary_vistas_{version.replace('.', '_')}"
  if version == "v2.0":
    if categories is None:
      raise ValueError("categories (the 'categories' of panoptic_2020.json) "
                       "are required for Mapillary Vistas v2.0.")
    return from_categories(categories, name=name, label_divisor=label_divisor,
                           ignore_label=ignore_label)
  meta = DatasetMetadata(
      name=name, task="panoptic",
      class_names=[c[1] for c in _MAPILLARY_V12_CATEGORIES],
      original_category_ids=list(range(1, len(_MAPILLARY_V12_CATEGORIES) + 1)),
      thing_class_ids=[i for i, c in enumerate(_MAPILLARY_V12_CATEGORIES)
                       if c[0]],
      colors=[c[3] for c in _MAPILLARY_V12_CATEGORIES],
      label_divisor=label_divisor, ignore_label=ignore_label)
  if categories is not None:
    check_categories_match(meta, categories)
  return meta


def check_categories_match(meta: DatasetMetadata,
                           categories: Sequence[Mapping[str, Any]],
                           source: str = "categories") -> None:
  """Checks a JSON category list against metadata (ids, names, isthing).

  Every category of the list must exist in `meta` with the same name (the
  "name" or, for Mapillary, the "supercategory" label name may match) and the
  same isthing flag. Categories of `meta` absent from the list are allowed.

  Raises:
    ValueError: naming `source` and the first mismatching category.
  """
  known = meta.original_to_train_id()
  label_names = {}
  if meta.name == "mapillary_vistas_v1_2":
    label_names = {i + 1: c[2] for i, c in enumerate(_MAPILLARY_V12_CATEGORIES)}
  things = set(meta.thing_class_ids)
  for cat in categories:
    cid = cat.get("id")
    if cid not in known:
      raise ValueError(f"{source}: category id {cid!r} ({cat.get('name')!r}) "
                       f"is not in the {meta.name} metadata (known ids: "
                       f"{sorted(known)}).")
    train_id = known[cid]
    names = {meta.class_names[train_id], label_names.get(cid)}
    if cat.get("name") not in names and cat.get("supercategory") not in names:
      raise ValueError(
          f"{source}: category id {cid} is named {cat.get('name')!r}, but the "
          f"{meta.name} metadata names it {meta.class_names[train_id]!r}.")
    if "isthing" in cat and bool(cat["isthing"]) != (train_id in things):
      raise ValueError(
          f"{source}: category {cid} ({cat.get('name')!r}) has isthing="
          f"{cat['isthing']}, but the {meta.name} metadata says "
          f"{int(train_id in things)}.")


# ADE20K (SceneParsing, ADEChallengeData2016): 150 classes; label value v in
# 1..150 is train id v - 1, value 0 ("other") is ignored.
_ADE20K_CLASSES = (
    ("wall", (120, 120, 120)), ("building", (180, 120, 120)),
    ("sky", (6, 230, 230)), ("floor", (80, 50, 50)), ("tree", (4, 200, 3)),
    ("ceiling", (120, 120, 80)), ("road, route", (140, 140, 140)),
    ("bed", (204, 5, 255)), ("window", (230, 230, 230)),
    ("grass", (4, 250, 7)), ("cabinet", (224, 5, 255)),
    ("sidewalk, pavement", (235, 255, 7)), ("person", (150, 5, 61)),
    ("earth, ground", (120, 120, 70)), ("door", (8, 255, 51)),
    ("table", (255, 6, 82)), ("mountain, mount", (143, 255, 140)),
    ("plant", (204, 255, 4)), ("curtain", (255, 51, 7)),
    ("chair", (204, 70, 3)), ("car", (0, 102, 200)), ("water", (61, 230, 250)),
    ("painting, picture", (255, 6, 51)), ("sofa", (11, 102, 255)),
    ("shelf", (255, 7, 71)), ("house", (255, 9, 224)), ("sea", (9, 7, 230)),
    ("mirror", (220, 220, 220)), ("rug", (255, 9, 92)),
    ("field", (112, 9, 255)), ("armchair", (8, 255, 214)),
    ("seat", (7, 255, 224)), ("fence", (255, 184, 6)), ("desk", (10, 255, 71)),
    ("rock, stone", (255, 41, 10)), ("wardrobe, closet, press", (7, 255, 255)),
    ("lamp", (224, 255, 8)), ("tub", (102, 8, 255)), ("rail", (255, 61, 6)),
    ("cushion", (255, 194, 7)), ("base, pedestal, stand", (255, 122, 8)),
    ("box", (0, 255, 20)), ("column, pillar", (255, 8, 41)),
    ("signboard, sign", (255, 5, 153)),
    ("chest of drawers, chest, bureau, dresser", (6, 51, 255)),
    ("counter", (235, 12, 255)), ("sand", (160, 150, 20)),
    ("sink", (0, 163, 255)), ("skyscraper", (140, 140, 140)),
    ("fireplace", (250, 10, 15)), ("refrigerator, icebox", (20, 255, 0)),
    ("grandstand, covered stand", (31, 255, 0)), ("path", (255, 31, 0)),
    ("stairs", (255, 224, 0)), ("runway", (153, 255, 0)),
    ("case, display case, showcase, vitrine", (0, 0, 255)),
    ("pool table, billiard table, snooker table", (255, 71, 0)),
    ("pillow", (0, 235, 255)), ("screen door, screen", (0, 173, 255)),
    ("stairway, staircase", (31, 0, 255)), ("river", (11, 200, 200)),
    ("bridge, span", (255, 82, 0)), ("bookcase", (0, 255, 245)),
    ("blind, screen", (0, 61, 255)), ("coffee table", (0, 255, 112)),
    ("toilet, can, commode, crapper, pot, potty, stool, throne",
     (0, 255, 133)),
    ("flower", (255, 0, 0)), ("book", (255, 163, 0)), ("hill", (255, 102, 0)),
    ("bench", (194, 255, 0)), ("countertop", (0, 143, 255)),
    ("stove", (51, 255, 0)), ("palm, palm tree", (0, 82, 255)),
    ("kitchen island", (0, 255, 41)), ("computer", (0, 255, 173)),
    ("swivel chair", (10, 0, 255)), ("boat", (173, 255, 0)),
    ("bar", (0, 255, 153)), ("arcade machine", (255, 92, 0)),
    ("hovel, hut, hutch, shack, shanty", (255, 0, 255)),
    ("bus", (255, 0, 245)), ("towel", (255, 0, 102)), ("light", (255, 173, 0)),
    ("truck", (255, 0, 20)), ("tower", (255, 184, 184)),
    ("chandelier", (0, 31, 255)), ("awning, sunshade, sunblind", (0, 255, 61)),
    ("street lamp", (0, 71, 255)), ("booth", (255, 0, 204)),
    ("tv", (0, 255, 194)), ("plane", (0, 255, 82)),
    ("dirt track", (0, 10, 255)), ("clothes", (0, 112, 255)),
    ("pole", (51, 0, 255)), ("land, ground, soil", (0, 194, 255)),
    ("bannister, banister, balustrade, balusters, handrail", (0, 122, 255)),
    ("escalator, moving staircase, moving stairway", (0, 255, 163)),
    ("ottoman, pouf, pouffe, puff, hassock", (255, 153, 0)),
    ("bottle", (0, 255, 10)), ("buffet, counter, sideboard", (255, 112, 0)),
    ("poster, posting, placard, notice, bill, card", (143, 255, 0)),
    ("stage", (82, 0, 255)), ("van", (163, 255, 0)), ("ship", (255, 235, 0)),
    ("fountain", (8, 184, 170)),
    ("conveyer belt, conveyor belt, conveyer, conveyor, transporter",
     (133, 0, 255)),
    ("canopy", (0, 255, 92)),
    ("washer, automatic washer, washing machine", (184, 0, 255)),
    ("plaything, toy", (255, 0, 31)), ("pool", (0, 184, 255)),
    ("stool", (0, 214, 255)), ("barrel, cask", (255, 0, 112)),
    ("basket, handbasket", (92, 255, 0)), ("falls", (0, 224, 255)),
    ("tent", (112, 224, 255)), ("bag", (70, 184, 160)),
    ("minibike, motorbike", (163, 0, 255)), ("cradle", (153, 0, 255)),
    ("oven", (71, 255, 0)), ("ball", (255, 0, 163)),
    ("food, solid food", (255, 204, 0)), ("step, stair", (255, 0, 143)),
    ("tank, storage tank", (0, 255, 235)), ("trade name", (133, 255, 0)),
    ("microwave", (255, 0, 235)), ("pot", (245, 0, 255)),
    ("animal", (255, 0, 122)), ("bicycle", (255, 245, 0)),
    ("lake", (10, 190, 212)), ("dishwasher", (214, 255, 0)),
    ("screen", (0, 204, 255)), ("blanket, cover", (20, 0, 255)),
    ("sculpture", (255, 255, 0)), ("hood, exhaust hood", (0, 153, 255)),
    ("sconce", (0, 41, 255)), ("vase", (0, 255, 204)),
    ("traffic light", (41, 0, 255)), ("tray", (41, 255, 0)),
    ("trash can", (173, 0, 255)), ("fan", (0, 245, 255)),
    ("pier", (71, 0, 255)), ("crt screen", (122, 0, 255)),
    ("plate", (0, 255, 184)), ("monitor", (0, 92, 255)),
    ("bulletin board", (184, 255, 0)), ("shower", (0, 133, 255)),
    ("radiator", (255, 214, 0)), ("glass, drinking glass", (25, 194, 194)),
    ("clock", (102, 255, 0)), ("flag", (92, 0, 255)),
)


def ade20k(ignore_label: int = 255) -> DatasetMetadata:
  """ADE20K SceneParsing: 150 classes; label value v (1..150) -> v - 1."""
  return DatasetMetadata(
      name="ade20k", task="semantic",
      class_names=[c[0] for c in _ADE20K_CLASSES],
      original_category_ids=list(range(1, len(_ADE20K_CLASSES) + 1)),
      thing_class_ids=(), colors=[c[1] for c in _ADE20K_CLASSES],
      label_divisor=0, ignore_label=ignore_label)


def imagenet(synsets: Sequence[str],
             names: Optional[Sequence[str]] = None) -> DatasetMetadata:
  """ImageNet-style classification: class i is synsets[i].

  Args:
    synsets: WordNet ids (or any folder names) in label order.
    names: optional readable names, one per synset; defaults to the synsets.
  """
  synsets = [str(s) for s in synsets]
  if names is not None and len(names) != len(synsets):
    raise ValueError(f"names has {len(names)} entries, expected one per "
                     f"synset ({len(synsets)}).")
  return DatasetMetadata(
      name="imagenet", task="classification",
      class_names=list(names) if names is not None else synsets,
      original_category_ids=synsets, thing_class_ids=(),
      colors=[_palette(i) for i in range(len(synsets))], label_divisor=0,
      ignore_label=-1)


def read_synsets_file(path: str) -> Tuple[List[str], Optional[List[str]]]:
  """Reads a synset list: one "n01440764" or "n01440764 tench, ..." a line.

  Returns:
    (synsets, names); names is None when no line carries a name.
  """
  synsets, names = [], []
  with open(path) as f:
    for line_no, line in enumerate(f, 1):
      line = line.strip()
      if not line:
        continue
      parts = line.split(None, 1)
      synsets.append(parts[0])
      names.append(parts[1] if len(parts) > 1 else "")
  if not synsets:
    raise ValueError(f"synset file {path} holds no synsets.")
  if len(set(synsets)) != len(synsets):
    raise ValueError(f"synset file {path} repeats synsets.")
  if not any(names):
    return synsets, None
  return synsets, [n or s for n, s in zip(names, synsets)]
