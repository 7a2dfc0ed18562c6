"""Tests of dataset metadata against independent sources of the label facts."""

import json

import pytest
from cityscapesscripts.helpers import labels as cs_labels

from axial_deeplab_tf.data import metadata as metadata_lib


def test_cityscapes_matches_cityscapesscripts():
  evaluated = sorted((l for l in cs_labels.labels if not l.ignoreInEval),
                     key=lambda l: l.trainId)
  meta = metadata_lib.cityscapes()
  assert meta.num_classes == 19
  assert list(meta.class_names) == [l.name for l in evaluated]
  assert list(meta.original_category_ids) == [l.id for l in evaluated]
  assert [tuple(c) for c in meta.colors] == [tuple(l.color) for l in evaluated]
  assert list(meta.thing_class_ids) == [l.trainId for l in evaluated
                                        if l.hasInstances]
  assert (meta.label_divisor, meta.ignore_label) == (1000, 255)
  semantic = metadata_lib.cityscapes("semantic")
  assert semantic.thing_class_ids == () and semantic.task == "semantic"


def test_coco_panoptic_facts():
  meta = metadata_lib.coco_panoptic()
  ids = list(meta.original_category_ids)
  assert meta.num_classes == 133 and len(meta.thing_class_ids) == 80
  assert ids == sorted(ids) and ids[0] == 1 and ids[-1] == 200
  assert meta.thing_class_ids == tuple(range(80))
  # Well-known entries: first/last thing, first stuff.
  assert meta.class_names[0] == "person" and ids[79] == 90
  assert meta.class_names[80] == "banner" and ids[80] == 92
  assert (meta.label_divisor, meta.ignore_label) == (256, 255)
  assert meta.panoptic_ignore_id == 255 * 256


def test_mapillary_and_ade20k_counts():
  v12 = metadata_lib.mapillary_vistas("v1.2")
  assert v12.num_classes == 65 and len(v12.thing_class_ids) == 37
  assert v12.original_category_ids == tuple(range(1, 66))
  with pytest.raises(ValueError, match="required for Mapillary Vistas v2.0"):
    metadata_lib.mapillary_vistas("v2.0")
  with pytest.raises(ValueError, match="version"):
    metadata_lib.mapillary_vistas("v3")
  ade = metadata_lib.ade20k()
  assert ade.num_classes == 150 and ade.original_category_ids[0] == 1


def test_mapillary_v12_checks_json_categories():
  good = [{"id": 20, "name": "Person", "supercategory": "human--person",
           "isthing": 1}]
  metadata_lib.mapillary_vistas("v1.2", categories=good)
  bad_thing = [dict(good[0], isthing=0)]
  with pytest.raises(ValueError, match="isthing"):
    metadata_lib.mapillary_vistas("v1.2", categories=bad_thing)
  bad_name = [{"id": 20, "name": "Car", "supercategory": "x", "isthing": 1}]
  with pytest.raises(ValueError, match="named 'Car'"):
    metadata_lib.mapillary_vistas("v1.2", categories=bad_name)


def test_json_round_trip_and_save(tmp_path):
  meta = metadata_lib.coco_panoptic()
  again = metadata_lib.DatasetMetadata.from_dict(json.loads(meta.to_json()))
  assert again == meta
  meta.save(str(tmp_path))
  assert metadata_lib.DatasetMetadata.load(str(tmp_path)) == meta
  meta.save(str(tmp_path))  # Same metadata again: fine.
  with pytest.raises(ValueError, match="differs"):
    metadata_lib.cityscapes().save(str(tmp_path))


def test_from_categories_orders_train_ids_by_list():
  cats = [{"id": 7, "name": "road", "isthing": 0},
          {"id": 3, "name": "car", "isthing": 1, "color": [1, 2, 3]}]
  meta = metadata_lib.from_categories(cats, name="x", label_divisor=100)
  assert meta.class_names == ("road", "car")
  assert meta.original_to_train_id() == {7: 0, 3: 1}
  assert meta.thing_class_ids == (1,) and meta.colors[1] == (1, 2, 3)
  assert len(set(meta.colors)) == 2


@pytest.mark.parametrize("kwargs, match", [
    (dict(ignore_label=1), "ignore label must be separate"),
    (dict(thing_class_ids=(5,)), "thing_class_ids"),
    (dict(label_divisor=0), "label_divisor"),
    (dict(colors=((0, 0, 0),)), "colors"),
    (dict(original_category_ids=(1, 1)), "unique"),
    (dict(ignore_label=255, label_divisor=2**24), "overflows"),
])
def test_invalid_metadata_is_rejected(kwargs, match):
  base = dict(name="t", task="panoptic", class_names=("a", "b"),
              original_category_ids=(1, 2), thing_class_ids=(1,),
              colors=((0, 0, 0), (1, 1, 1)), label_divisor=256,
              ignore_label=255)
  base.update(kwargs)
  with pytest.raises(ValueError, match=match):
    metadata_lib.DatasetMetadata(**base)


def test_read_synsets_file(tmp_path):
  path = tmp_path / "s.txt"
  path.write_text("n1 tench, Tinca\n\nn2\n")
  assert metadata_lib.read_synsets_file(str(path)) == (["n1", "n2"],
                                                       ["tench, Tinca", "n2"])
  path.write_text("n1\nn2\n")
  assert metadata_lib.read_synsets_file(str(path)) == (["n1", "n2"], None)
  path.write_text("n1\nn1\n")
  with pytest.raises(ValueError, match="repeats"):
    metadata_lib.read_synsets_file(str(path))
