"""Rewrite a committed compare.json from its committed runs with today's statistics (suite.stats), keeping the
host and device that trained them: what `q4bench compare` would write now for the same study, without
retraining anything and without claiming the runs for the machine that rebuilds the file.

    python tools/rebuild_compare.py FOLDER [FOLDER ...] --data-dir ~/.cache/q4bench

FOLDER holds compare.json and runs/<method>-seed<k>/ (history.json, predictions.npy); the request is read back
from compare.json itself (methods, seeds, budget, network, precision, margin).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from suite.atomic import write_json_atomic
from suite.compare import CompareRequest, build_result, summary_line, validate_result
from suite.spec import CIFAR10_TRAIN_IMAGES, PAPER_ARCH


def request_of(doc: dict, folder: Path, data_dir: str) -> CompareRequest:
    budget, seeds = doc["budget"], sorted({run["seed"] for run in doc["runs"]})
    subset = budget["train_images"] if budget["train_images"] < CIFAR10_TRAIN_IMAGES else None
    return CompareRequest(
        methods=tuple(c["candidate"] for c in doc["comparisons"]), reference=doc["reference"], seeds=len(seeds),
        first_seed=seeds[0], epochs=budget["epochs"], recipe=budget["recipe"], subset=subset,
        batch_size=budget["batch_size"], data_dir=data_dir, device=doc["device"], precision=doc["precision"],
        margin=doc["margin_points"], arch=doc.get("arch", PAPER_ARCH), out=str(folder))


def rebuild(folder: Path, data_dir: str) -> dict:
    old = json.loads((folder / "compare.json").read_text())
    new = build_result(request_of(old, folder, data_dir), old["budget"]["epochs"], folder)
    new["host"], new["device_name"] = old["host"], old["device_name"]  # the machine that trained the runs
    new["budget"]["hours"] = old["budget"].get("hours")
    new["provenance"]["rebuilt_by"] = ("tools/rebuild_compare.py from the committed runs; the runs' own provenance "
                                       f"is in their histories; first written {old['provenance'].get('written_at')}")
    validate_result(new)
    write_json_atomic(folder / "compare.json", new)
    return new


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", help="compare folders: compare.json beside runs/")
    parser.add_argument("--data-dir", required=True, help="the same CIFAR-10 copy, for the test labels")
    args = parser.parse_args()
    for folder in map(Path, args.folders):
        doc = rebuild(folder, args.data_dir)
        for comparison in doc["comparisons"]:
            print(f"{folder}: {summary_line(doc, comparison)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
