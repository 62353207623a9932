"""The report's inputs as tidy tables (pandas): one row per bench arm (host, result, profile, method, precision)
and one per history, made by suite.frames' row builders, the rows `q4bench results` writes, so the report and
that table read a result one way. The sections that aggregate results (a mean over seeds, fp32 beside each
method, the newest result per host) group and pivot these tables instead of looping by hand. pandas is imported
here only, when a table is first built: the CLI imports the report package to build its parser.

Columns beyond suite.frames.COLUMNS lead back to the input a row came from: `result` (its position in
inputs.results), `profile_index` and `arm` for bench rows, `run` (its position in the runs given) for
histories. Where a file does not say, suite.frames leaves a cell empty and the report reads the default the
file was written under: a bench arm's precision is its own, else its profile's, else fp32 (cells.device_of); a
history's host is the recorded one, else the reports/submitted/<host>/ folder it was filed in
(hosts.history_host), and an old history trained the paper's network on cpu in fp32."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import frames
from ..spec import BASELINE, PAPER_ARCH, REFERENCE_4BIT
from .hosts import history_host
from .inputs import Inputs, ResultFile, RunHistory, device_of

if TYPE_CHECKING:
    import pandas as pd


def bench_table(results: list[ResultFile]) -> pd.DataFrame:
    import pandas as pd

    rows, where = [], []
    for i, r in enumerate(results):
        rows += frames.bench_rows(r.path, r.data)
        where += [(i, index, arm, device_of(p, m)[1]) for index, p in enumerate(r.data["profiles"])
                  for arm, m in p["methods"].items()]
    table = frames.table(rows)
    for column, position, dtype in (("result", 0, "int64"), ("profile_index", 1, "int64"), ("arm", 2, "string"),
                                    ("precision", 3, "string")):
        table[column] = pd.Series([w[position] for w in where], dtype=dtype)
    return table


def history_table(runs: list[RunHistory]) -> pd.DataFrame:
    import pandas as pd

    table = frames.table([frames.history_row(r.path, r.history) for r in runs])
    table["run"] = pd.Series(range(len(runs)), dtype="int64")
    for column, values in (("host_id", [history_host(r) for r in runs]), ("arch", [r.arch for r in runs]),
                           ("device", [r.device for r in runs]), ("precision", [r.precision for r in runs])):
        table[column] = pd.Series(values, dtype="string")
    return table


def object_table(rows: list[dict], columns: list[str]) -> pd.DataFrame:
    """Rows as a table of object columns: every value stays the Python value it was (None, not NaN; an int, not
    a float), for keys a GapPoint or a cell holds as they are."""
    import pandas as pd

    return pd.DataFrame(rows, columns=columns, dtype=object)


def missing(value) -> bool:
    """None, or a cell a table left empty (NaN, <NA>)."""
    import pandas as pd

    return bool(pd.isna(value))


def newest_profiles(bench: pd.DataFrame, arm: str = REFERENCE_4BIT) -> pd.DataFrame:
    """Per host (the index), the bench row of `arm` in the host's newest result measuring its training
    throughput on the paper's network, in that result's profile with the most threads: where the per-host
    summary reads speed (the paper's claims are about that network)."""
    timed = bench[(bench["arm"] == arm) & (bench["arch"] == PAPER_ARCH)
                  & bench["train_images_per_s"].fillna(0).astype(bool)]
    newest = timed.sort_values(["written_utc", "result", "threads"], ascending=[False, True, False], kind="stable")
    return newest.drop_duplicates("host_id").set_index("host_id")


def newest_speed_profile(inputs: Inputs, host: str) -> tuple[ResultFile, dict] | None:
    """(result, profile) of newest_profiles for one host; None where no bench result timed tathe4 there."""
    newest = newest_profiles(inputs.bench)
    if host not in newest.index:
        return None
    row = newest.loc[host]
    result = inputs.results[row["result"]]
    return result, result.data["profiles"][row["profile_index"]]


def hosts_with_rapl(bench: pd.DataFrame) -> set[str]:
    """Hosts with an arm whose energy RAPL measured, in any of their bench results."""
    return set(bench.loc[bench["energy_method"] == "measured_rapl", "host_id"])


def newest_arms(bench: pd.DataFrame) -> pd.DataFrame:
    """One bench row per host, network, profile, device, precision and arm, from the newest result measuring it (of
    results written at the same time, the last); in the order the combinations first appear, oldest first."""
    keys = ["host_id", "arch", "profile", "device", "precision", "arm"]
    ordered = bench.sort_values("written_utc", kind="stable")
    ordered = ordered.assign(first_seen=ordered.groupby(keys, sort=False, dropna=False).ngroup())
    return ordered.drop_duplicates(keys, keep="last").sort_values("first_seen", kind="stable")


def fp32_beside(table: pd.DataFrame, group: str, values: list[str]) -> pd.DataFrame:
    """For every row, `values` of the first fp32 row of its group (columns "<value>_fp32"; empty where the
    group has no fp32 row): the pivot gaps at equal budget are taken from."""
    reference = table[table["method"] == BASELINE].drop_duplicates(group).set_index(group)[values]
    return table.join(reference.add_suffix("_fp32"), on=group)
