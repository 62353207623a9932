"""Write compare.json for paired runs that trained elsewhere (a lent GPU, by tools/gpu_evidence.py) with
exactly the layout `q4bench compare` gives them (RUNS/<method>-seed<k>/): every statistic comes from
suite.compare.build_result, so the file is what compare itself would have written on that machine; only
"host" is the machine the runs record (its host.json), not the one assembling the file.

    python tools/assemble_gpu_compare.py FOLDER HOST_JSON --seeds 5 --epochs 3 --data-dir ~/.cache/q4bench
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from suite.atomic import write_json_atomic
from suite.compare import CompareRequest, build_result, summary_line, validate_result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="holds runs/<method>-seed<k>/ (history.json, predictions.npy)")
    parser.add_argument("host_json", help="the machine's facts as tools/gpu_evidence.py recorded them")
    parser.add_argument("--host-id", required=True, help="the folder name the evidence is filed under")
    parser.add_argument("--seeds", type=int, required=True)
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--recipe", default="short")
    parser.add_argument("--method", default="tathe4")
    parser.add_argument("--data-dir", required=True, help="the same CIFAR-10 copy, for the test labels")
    args = parser.parse_args()
    out = Path(args.folder)
    req = CompareRequest(methods=(args.method,), seeds=args.seeds, epochs=args.epochs, recipe=args.recipe,
                         data_dir=args.data_dir, device="cuda", out=str(out))
    doc = build_result(req, args.epochs, out)
    facts = json.loads(Path(args.host_json).read_text())
    doc["host"] = dict(facts["host"], host_id=args.host_id, gpu=facts["gpu"], driver=facts.get("nvidia_smi"))
    doc["provenance"]["assembled_by"] = "tools/assemble_gpu_compare.py on another machine; the runs' own provenance is in their histories"
    validate_result(doc)
    write_json_atomic(out / "compare.json", doc)
    for comparison in doc["comparisons"]:
        print(summary_line(doc, comparison))
    return 0


if __name__ == "__main__":
    sys.exit(main())
