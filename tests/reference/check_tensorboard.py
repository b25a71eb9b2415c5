"""Checks a run's TensorBoard events against its metrics.jsonl with TensorBoard's reader.

usage: check_tensorboard.py RUN_DIR [--images N [--same-images-as OTHER_RUN_DIR]]

Runs in the environment of launch/python-env.sh (the pinned `tensorboard` package). The
expected tags follow the rule of framework/train/tensorboard.h, written again here from
that description: top-level numbers are train/<key> (eval/<key> for val_* and test_*),
numbers in objects are <key>/<key>/..., entries of a list of objects with a "layer" are
<key>/layer_<l>/..., lists of numbers are histograms with count i in bin i.
"""

import argparse
import glob
import io
import json
import math
import sys

import numpy as np
from PIL import Image
from tensorboard.backend.event_processing import event_accumulator as ea
from tensorboard.compat.tensorflow_stub import errors, pywrap_tensorflow


def is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def expected_summaries(record):
    scalars, histograms = {}, {}

    def walk(tag, v):
        if is_number(v):
            scalars[tag] = v
        elif isinstance(v, dict):
            for k, child in v.items():
                walk(f"{tag}/{k}", child)
        elif isinstance(v, list) and all(is_number(x) for x in v):
            histograms[tag] = v
        elif isinstance(v, list):
            for i, item in enumerate(v):
                layered = isinstance(item, dict) and is_number(item.get("layer"))
                prefix = f"{tag}/layer_{item['layer']}" if layered else f"{tag}/{i}"
                if not isinstance(item, dict):
                    walk(prefix, item)
                    continue
                for k, child in item.items():
                    if not (layered and k == "layer"):
                        walk(f"{prefix}/{k}", child)

    for key, value in record.items():
        if key == "step":
            continue
        if is_number(value):
            group = "eval" if key.startswith(("val_", "test_")) else "train"
            scalars[f"{group}/{key}"] = value
        else:
            walk(key, value)
    return scalars, histograms


def check_records(files):
    """Every record of every events file passes the reader's CRC checks."""
    total = 0
    for path in files:
        reader = pywrap_tensorflow.PyRecordReader_New(path)
        while True:
            try:
                reader.GetNext()  # raises DataLossError on a bad CRC
            except errors.OutOfRangeError:
                break
            total += 1
    return total


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir")
    parser.add_argument("--images", type=int, default=0, help="sample grids expected")
    parser.add_argument("--same-images-as", metavar="RUN_DIR",
                        help="another layout's run: its sample grids must match (2 levels)")
    args = parser.parse_args()
    files = sorted(glob.glob(f"{args.run_dir}/tb/events.out.tfevents.*"))
    assert files, "no events file"
    records_read = check_records(files)

    acc = ea.EventAccumulator(f"{args.run_dir}/tb",
                              size_guidance={ea.SCALARS: 0, ea.HISTOGRAMS: 0, ea.IMAGES: 0})
    acc.Reload()
    records = [json.loads(line) for line in open(f"{args.run_dir}/metrics.jsonl")]
    want_scalars, want_hist = {}, {}
    for r in records:
        s, h = expected_summaries(r)
        for tag, v in s.items():
            want_scalars.setdefault(tag, {})[r["step"]] = v
        for tag, v in h.items():
            want_hist.setdefault(tag, {})[r["step"]] = v

    tags = acc.Tags()
    assert sorted(tags["scalars"]) == sorted(want_scalars), (
        f"scalar tags differ: only in events {sorted(set(tags['scalars']) - set(want_scalars))}, "
        f"only in metrics {sorted(set(want_scalars) - set(tags['scalars']))}")
    compared = 0
    for tag, by_step in want_scalars.items():
        got = {e.step: e.value for e in acc.Scalars(tag)}
        assert sorted(got) == sorted(by_step), f"{tag}: steps {sorted(got)} vs {sorted(by_step)}"
        for step, value in by_step.items():
            want = float(np.float32(value))
            assert got[step] == want or (math.isnan(want) and math.isnan(got[step])), \
                f"{tag} at step {step}: events {got[step]!r}, metrics.jsonl {value!r}"
            compared += 1
    assert sorted(tags["histograms"]) == sorted(want_hist), (tags["histograms"], list(want_hist))
    bins = 0
    for tag, by_step in want_hist.items():
        got = {e.step: e.histogram_value for e in acc.Histograms(tag)}
        assert sorted(got) == sorted(by_step), f"{tag}: steps differ"
        for step, counts in by_step.items():
            h = got[step]
            assert list(h.bucket) == [float(c) for c in counts], f"{tag} at {step}: {h.bucket}"
            assert list(h.bucket_limit) == [i + 0.5 for i in range(len(counts))]
            assert h.num == sum(counts)
            bins += len(counts)

    images = acc.Images("samples") if "samples" in tags["images"] else []
    assert len(images) == args.images, f"{len(images)} sample grids, expected {args.images}"
    eval_steps = sorted(r["step"] for r in records if "val_loss" in r)
    if args.images:
        assert [i.step for i in images] == eval_steps, ([i.step for i in images], eval_steps)
    for image in images:
        pixels = np.asarray(Image.open(io.BytesIO(image.encoded_image_string)))
        assert pixels.shape == (image.height, image.width), (pixels.shape, image)
        assert pixels.std() > 0, "a blank sample grid"
    if args.same_images_as:
        other = ea.EventAccumulator(f"{args.same_images_as}/tb", size_guidance={ea.IMAGES: 0})
        other.Reload()
        theirs = other.Images("samples")
        assert len(theirs) == len(images), (len(theirs), len(images))
        for a, b in zip(images, theirs):
            pa, pb = (np.asarray(Image.open(io.BytesIO(i.encoded_image_string)), dtype=float)
                      for i in (a, b))
            # the same weights to float rounding: pixels within 2 of 255 levels
            assert pa.shape == pb.shape and np.abs(pa - pb).max() <= 2, \
                f"sample grid at step {a.step} differs from {args.same_images_as}'s"
    print(f"{args.run_dir}: {len(files)} events file(s), {records_read} records with valid "
          f"CRC-32C; {compared} scalars in {len(want_scalars)} tags equal metrics.jsonl; "
          f"{bins} histogram bins equal the expert token counts; {len(images)} sample grids")


if __name__ == "__main__":
    sys.exit(main())
