#!/usr/bin/env python3
"""EMBED (Emory Breast Imaging Dataset) tables -> a mama.h manifest CSV.

    python3 tools/embed_to_manifest.py \
        --clinical EMBED_OpenData_clinical.csv --metadata EMBED_OpenData_metadata.csv \
        --legend AWS_Open_Data_Clinical_Legend.csv \
        --path-replace /mnt/NAS2/mammo/anon_dicom=images --path-ext .png -o embed_manifest.csv

One output row per image of the metadata table (one row per DICOM), joined to the clinical
table (one row per finding of an exam) by the exam's accession number, as SPEC A.6 says:
  * only 2D images (FinalImageType == "2D"; --all-image-types keeps the rest);
  * the finding that describes an image: among the exam's findings those on the image's
    side, else those marked bilateral (B), else all; among them the highest BI-RADS
    category, except that when all are <= 2 and one is 0 (A), the 0;
  * age, race, ethnicity, density, BI-RADS, mass and calcification descriptors come from
    that finding; procedure (StudyDescription, else the clinical `desc`), image type, side
    and view from the image's own row;
  * rows lacking the procedure, its reason (screening / diagnostic), the density or the
    BI-RADS letter are not used for pretraining: dropped, or with --keep-incomplete kept
    with pretrain=0 (an extra column mama.h ignores).
Mass / calcification codes are spelled out with EMBED's legend table (--legend, columns
"Header in export", "Code", "Meaning", as the reference does); without it a small built-in
table is used (see CODE_MEANINGS) and unknown codes count as missing.
Every column name is configurable: --col KEY=COLUMN (keys: see DEFAULT_COLUMNS).
--metadata may be given several times as PATH or PATH:SPLIT (e.g. the reference's
train/valid/test metadata files), so the split column follows them.
"""
import argparse
import collections
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from manifest_io import (BIRADS_LETTERS, as_int, clean, missing, parse_mapping, read_csv,  # noqa: E402
                         reason_of, transform_path, write_manifest)

DEFAULT_COLUMNS = {
    # metadata table: one row per image
    "path": "anon_dicom_path", "patient": "empi_anon", "study": "acc_anon", "side": "ImageLateralityFinal",
    "view": "ViewPosition", "image_type": "FinalImageType", "procedure": "StudyDescription",
    # clinical table: one row per finding
    "clinical_study": "acc_anon", "finding_side": "side", "birads": "asses", "density": "tissueden",
    "age": "age_at_study", "race": "RACE_DESC", "ethnicity": "ETHNIC_GROUP_DESC", "mass_shape": "massshape",
    "mass_density": "massdens", "calc_type": "calcfind", "calc_distribution": "calcdistri",
    "clinical_procedure": "desc", "path_severity": "path_severity",
}

# Fallback spelling of EMBED's finding codes (BI-RADS lexicon words) for when the legend
# table is not at hand.  EMBED's own legend (--legend) is authoritative and should be used
# to reproduce the reference's captions.
CODE_MEANINGS = {
    "massshape": {"R": "round", "O": "oval", "X": "irregular", "L": "lobulated", "G": "generic",
                  "A": "architectural distortion", "Q": "questioned architectural distortion",
                  "F": "focal asymmetry", "B": "global asymmetry", "V": "developing asymmetry", "S": "asymmetry"},
    "massdens": {"+": "high density", "=": "equal density", "-": "low density", "0": "fat containing"},
    "calcfind": {"A": "amorphous", "H": "coarse heterogeneous", "P": "pleomorphic", "F": "fine linear branching",
                 "U": "punctate", "R": "round", "M": "milk of calcium", "E": "eggshell", "D": "dystrophic",
                 "V": "vascular", "K": "skin"},
    "calcdistri": {"G": "grouped", "C": "clustered", "S": "segmental", "R": "regional", "D": "diffuse",
                   "L": "linear"},
}
CODE_KEYS = {"mass_shape": "massshape", "mass_density": "massdens", "calc_type": "calcfind",
             "calc_distribution": "calcdistri"}


def load_legend(path):
    out = collections.defaultdict(dict)
    for r in read_csv(path):
        h, code, meaning = r.get("Header in export"), r.get("Code"), r.get("Meaning")
        if h and code is not None and not missing(meaning):
            out[h.strip()][code.strip()] = meaning.strip()
    return out


def category(letter):
    letter = clean(letter).upper()
    return BIRADS_LETTERS.index(letter) if len(letter) == 1 and letter in BIRADS_LETTERS else None


def choose_finding(findings, image_side, col):
    """SPEC A.6: the clinical row that describes an image of side `image_side`."""
    if not findings:
        return None
    side_of = lambda f: clean(f.get(col["finding_side"])).upper()  # noqa: E731
    same = [f for f in findings if side_of(f) == image_side.upper()]
    bil = [f for f in findings if side_of(f) == "B"]
    pool = same or bil or findings
    cats = [(category(f.get(col["birads"])), f) for f in pool]
    valid = [(c, f) for c, f in cats if c is not None]
    if not valid:
        return pool[0]
    values = [c for c, _ in valid]
    target = 0 if max(values) <= 2 and min(values) == 0 else max(values)
    return next(f for c, f in valid if c == target)


def describe(code, key, legend, unmapped):
    code = clean(code)
    if not code:
        return ""
    table = legend.get(CODE_KEYS[key], {}) if legend else CODE_MEANINGS[CODE_KEYS[key]]
    if code in table:
        return table[code]
    unmapped[(key, code)] += 1
    return ""


def cancer_label(findings, image_side, col):
    """--cancer-from-path-severity: 1 if a finding of the image's side (or bilateral) has
    path_severity 0 (invasive) or 1 (in situ), 0 if such findings have another severity,
    -1 (missing) if none was biopsied."""
    sev = []
    for f in findings:
        s = clean(f.get(col["finding_side"])).upper()
        if s in (image_side.upper(), "B"):
            v = as_int(f.get(col["path_severity"]))
            if v is not None:
                sev.append(v)
    if not sev:
        return None
    return 1 if any(v in (0, 1) for v in sev) else 0


def convert(clinical_rows, metadata, col, legend=None, keep_incomplete=False, all_types=False, path_replace=None,
            path_ext=None, path_root=None, cancer=False):
    """metadata: list of (rows, split or None).  Returns (manifest rows, stats)."""
    by_study = collections.defaultdict(list)
    for r in clinical_rows:
        by_study[clean(r.get(col["clinical_study"]))].append(r)
    out, seen = [], set()
    stats = collections.Counter()
    unmapped = collections.Counter()
    for rows, split in metadata:
        for m in rows:
            stats["images"] += 1
            itype = clean(m.get(col["image_type"]))
            if not all_types and itype != "2D":
                stats["not_2d"] += 1
                continue
            path = clean(m.get(col["path"]))
            if not path:
                stats["no_path"] += 1
                continue
            path = transform_path(path, path_replace, path_ext, path_root)
            if path in seen:
                stats["duplicate"] += 1
                continue
            seen.add(path)
            side = clean(m.get(col["side"])).upper()
            findings = by_study.get(clean(m.get(col["study"])), [])
            f = choose_finding(findings, side, col) or {}
            if not findings:
                stats["no_clinical"] += 1
            procedure = clean(m.get(col["procedure"])) if col["procedure"] in m else ""
            if not procedure:
                procedure = clean(f.get(col["clinical_procedure"]))
            density = as_int(f.get(col["density"]))
            if density is not None and not 1 <= density <= 5:
                density = None
            birads = clean(f.get(col["birads"])).upper()
            if category(birads) is None:
                birads = ""
            row = dict(path=path, patient=clean(m.get(col["patient"])), study=clean(m.get(col["study"])),
                       side=side, view=clean(m.get(col["view"])), procedure=procedure,
                       age=as_int(f.get(col["age"])), race=clean(f.get(col["race"])),
                       ethnicity=clean(f.get(col["ethnicity"])), image_type=itype, density=density, birads=birads,
                       cancer=cancer_label(findings, side, col) if cancer else None, split=split or "")
            for key in CODE_KEYS:
                row[key] = describe(f.get(col[key]), key, legend, unmapped)
            complete = bool(procedure) and bool(reason_of(procedure)) and density is not None and bool(birads)
            row["pretrain"] = int(complete)
            if not complete:
                stats["incomplete"] += 1
                if not keep_incomplete:
                    continue
            out.append(row)
    stats["written"] = len(out)
    for (key, code), n in sorted(unmapped.items()):
        stats["unmapped %s code %r" % (key, code)] = n
    return out, stats


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--clinical", required=True, help="EMBED_OpenData_clinical.csv (one row per finding)")
    ap.add_argument("--metadata", required=True, action="append",
                    help="EMBED_OpenData_metadata.csv (one row per image), PATH or PATH:SPLIT; repeatable")
    ap.add_argument("--legend", help="AWS_Open_Data_Clinical_Legend.csv (code meanings)")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--col", action="append", default=[], metavar="KEY=COLUMN",
                    help="column names (keys: %s)" % ", ".join(DEFAULT_COLUMNS))
    ap.add_argument("--keep-incomplete", action="store_true",
                    help="keep rows that miss procedure/reason/density/BI-RADS (pretrain=0)")
    ap.add_argument("--all-image-types", action="store_true", help="keep non-2D images too")
    ap.add_argument("--path-replace", action="append", default=[], metavar="OLD=NEW", help="path prefix rewrite")
    ap.add_argument("--path-ext", help="replace the image extension (e.g. .png after tools/dicom_to_png.py)")
    ap.add_argument("--path-root", help="directory joined in front of relative paths")
    ap.add_argument("--cancer-from-path-severity", action="store_true",
                    help="cancer = 1 if the side's findings have path_severity 0/1, 0 if biopsied otherwise")
    args = ap.parse_args(argv)
    col = dict(DEFAULT_COLUMNS)
    over = parse_mapping(args.col, "--col")
    bad = sorted(set(over) - set(col))
    if bad:
        raise SystemExit("unknown --col keys: %s" % ", ".join(bad))
    col.update(over)
    clinical = read_csv(args.clinical)
    metadata = []
    for spec in args.metadata:
        path, split = spec, None
        if ":" in spec and spec.rsplit(":", 1)[1].lower() in ("train", "val", "valid", "validation", "test"):
            path, split = spec.rsplit(":", 1)
            split = {"valid": "val", "validation": "val"}.get(split.lower(), split.lower())
        metadata.append((read_csv(path), split))
    for name, rows in [("clinical", clinical)] + [("metadata", r) for r, _ in metadata]:
        keys = ["clinical_study", "birads"] if name == "clinical" else ["path", "study", "side", "image_type"]
        if rows:
            for k in keys:
                if col[k] not in rows[0]:
                    raise SystemExit("%s table has no column %r (key %s; use --col %s=NAME)" % (name, col[k], k, k))
    legend = load_legend(args.legend) if args.legend else None
    rows, stats = convert(clinical, metadata, col, legend, args.keep_incomplete, args.all_image_types,
                          parse_mapping(args.path_replace, "--path-replace"), args.path_ext, args.path_root,
                          args.cancer_from_path_severity)
    write_manifest(args.output, rows, extra=["pretrain"])
    for k, v in stats.items():
        print("%s: %d" % (k, v), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
