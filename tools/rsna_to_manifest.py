#!/usr/bin/env python3
"""RSNA Screening Mammography (Kaggle 2022) train.csv -> a mama.h manifest CSV.

    python3 tools/rsna_to_manifest.py train.csv --image-dir rsna_png -o rsna_manifest.csv

train.csv columns used (configurable with --col KEY=COLUMN): patient_id, image_id,
laterality (L/R), view (CC, MLO, ...), age, cancer (0/1), density (A-D -> 1-4), BIRADS
(0/1/2 -> letters A/N/B when present).  Each image's path is --pattern (default
"{patient_id}/{image_id}.png", the layout tools/dicom_to_png.py writes for the RSNA DICOM
tree) under --image-dir.  The study is the patient (RSNA has one screening exam per
patient), the procedure "unknown" (the zeroshot cancer captions of SPEC A.7 need no
metadata), the image type "2D".  --views CC,MLO keeps only those views.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from manifest_io import as_int, clean, parse_mapping, read_csv, write_manifest  # noqa: E402

DEFAULT_COLUMNS = {"patient": "patient_id", "image": "image_id", "side": "laterality", "view": "view", "age": "age",
                   "cancer": "cancer", "density": "density", "birads": "BIRADS", "split": "split"}
DENSITY = {"A": 1, "B": 2, "C": 3, "D": 4}
BIRADS = {0: "A", 1: "N", 2: "B", 3: "P", 4: "S", 5: "M", 6: "K"}


def convert(rows, col, image_dir="", pattern="{patient_id}/{image_id}.png", views=None, split=None):
    out = []
    for r in rows:
        view = clean(r.get(col["view"])).upper()
        if views and view not in views:
            continue
        fields = {k: clean(v) for k, v in r.items()}
        fields.setdefault("patient_id", clean(r.get(col["patient"])))
        fields.setdefault("image_id", clean(r.get(col["image"])))
        path = pattern.format(**fields)
        if image_dir:
            path = os.path.join(image_dir, path)
        d = clean(r.get(col["density"])).upper()
        b = as_int(r.get(col["birads"]))
        c = as_int(r.get(col["cancer"]))
        out.append(dict(path=path, patient=clean(r.get(col["patient"])), study=clean(r.get(col["patient"])),
                        side=clean(r.get(col["side"])).upper(), view=view, procedure="", age=as_int(r.get(col["age"])),
                        race="", ethnicity="", image_type="2D", density=DENSITY.get(d, as_int(d)),
                        birads=BIRADS.get(b, "") if b is not None else "",
                        cancer=c if c in (0, 1) else None,
                        split=split if split else clean(r.get(col["split"]))))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("csv", help="RSNA train.csv")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--image-dir", default="", help="directory of the converted images")
    ap.add_argument("--pattern", default="{patient_id}/{image_id}.png",
                    help="image path under --image-dir, with {column} fields (default %(default)s)")
    ap.add_argument("--views", help="comma-separated views to keep (e.g. CC,MLO)")
    ap.add_argument("--split", help="split of every row (default: the csv's split column, else hashed by patient)")
    ap.add_argument("--col", action="append", default=[], metavar="KEY=COLUMN",
                    help="column names (keys: %s)" % ", ".join(DEFAULT_COLUMNS))
    args = ap.parse_args(argv)
    col = dict(DEFAULT_COLUMNS)
    col.update(parse_mapping(args.col, "--col"))
    rows = read_csv(args.csv)
    if rows:
        for k in ("patient", "image", "side", "view"):
            if col[k] not in rows[0]:
                raise SystemExit("%s has no column %r (use --col %s=NAME)" % (args.csv, col[k], k))
    views = set(v.strip().upper() for v in args.views.split(",")) if args.views else None
    out = convert(rows, col, args.image_dir, args.pattern, views, args.split)
    write_manifest(args.output, out)
    print("rows: %d, written: %d, cancer: %d" % (len(rows), len(out), sum(1 for r in out if r["cancer"] == 1)),
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
