"""Shared helpers of the dataset converters: the manifest columns of mama.h
(mama.h, "Manifest CSV") and a CSV writer for them."""
import csv
import os
import re

# mama.h's manifest columns, in the order mama_manifest_write uses; `pretrain` is an extra
# column (mama.h ignores unknown columns): 1 when the row has everything SPEC A.6 requires
# of a pretraining caption.
MANIFEST_COLUMNS = ["path", "patient", "study", "side", "view", "procedure", "age", "race", "ethnicity",
                    "image_type", "density", "birads", "mass_shape", "mass_density", "calc_type",
                    "calc_distribution", "cancer", "split"]

BIRADS_LETTERS = "ANBPSMK"            # categories 0..6 (SPEC A.6)
MISSING = {"", "nan", "none", "null", "na", "n/a", "unknown"}


def missing(v):
    return v is None or str(v).strip().lower() in MISSING


def clean(v):
    return "" if missing(v) else str(v).strip()


def as_int(v):
    """'57', '57.0', '57.9' -> 57; missing or not a number -> None."""
    if missing(v):
        return None
    try:
        return int(float(str(v).strip()))
    except ValueError:
        return None


def reason_of(procedure):
    """SPEC A.6: "screening" if the procedure mentions "screen", "diagnostic" if "diag", else ""."""
    p = (procedure or "").lower()
    return "screening" if "screen" in p else "diagnostic" if "diag" in p else ""


def parse_mapping(items, what):
    """["key=Column", ...] -> dict."""
    out = {}
    for it in items or []:
        if "=" not in it:
            raise SystemExit("%s: expected KEY=VALUE, got %r" % (what, it))
        k, v = it.split("=", 1)
        out[k.strip()] = v
    return out


def transform_path(p, replace=None, ext=None, root=None):
    """Path rewriting: prefix replacement OLD=NEW, extension change (".png"), and a root
    directory joined in front of relative paths."""
    if replace:
        for old, new in replace.items():
            if p.startswith(old):
                p = new + p[len(old):]
                break
    if ext:
        p = re.sub(r"\.[A-Za-z0-9]+$", "", p) + (ext if ext.startswith(".") else "." + ext)
    if root and not os.path.isabs(p):
        p = os.path.join(root, p)
    return p


def write_manifest(path, rows, extra=()):
    cols = MANIFEST_COLUMNS + list(extra)
    tmp = path + ".tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(cols)
        for r in rows:
            w.writerow(["" if r.get(c) is None else r.get(c) for c in cols])
    os.replace(tmp, path)


def read_csv(path):
    with open(path, newline="", encoding="utf-8-sig") as f:
        return list(csv.DictReader(f))
