"""Sections (data) -> OUT/report.md with OUT/figures/*.png, and one self-contained OUT/report.html (figures
embedded as PNG, a few lines of inline script for sorting, nothing loaded from the network). Both end with
the report's own provenance: the code and versions that rendered it, and when."""

from __future__ import annotations

import base64
import html
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..atomic import remove_stale_temps, write_atomic
from ..locks import hold
from ..provenance import stamp
from ..userfiles import check_output_dir
from .inputs import Inputs, ReportSources, UnusedFile, describe_code, load_inputs, relative
from .untrusted import foreign_strings, markdown, render_text, visible
from .contents import build_sections
from .document import Cell, Figure, Kind, Paragraph, Section, Table

TITLE = "q4bench report: 4-bit vs FP32 training"
FIGURE_NAMES = {"gap_vs_budget", "accuracy_per_epoch", "distinct_codes", "throughput", "accuracy_vs_time",
                "paper_curves", "time_to_accuracy"}
DETAILS_INTRO = ("The evidence behind the page above: per-run tables, per-epoch curves, every method, scaling, ONNX "
                 "and each input file with its code. Each part opens on a click.")
LEGEND = ("Every figure says how it was obtained: *measured* (by the command named in its file), *derived* "
          "(arithmetic on measured figures, the formula in a footnote), *estimated* (a model, named in a footnote) "
          "or *not measured* (with why). Accuracies carry their budget; the paper's numbers appear only as its claims.")
FIXTURE_BANNER = ("FIXTURE INPUT PRESENT: some inputs were generated (their command starts with `fixture:`); every "
                  "figure from them is marked FIXTURE and is not a measurement.")


def footnote_numbers(table: Table) -> dict[str, int]:
    """Footnote key -> number, in order of first use in the table's rows."""
    numbers: dict[str, int] = {}
    for row in table.rows:
        for cell in row:
            if cell.note and cell.note in table.footnotes and cell.note not in numbers:
                numbers[cell.note] = len(numbers) + 1
    return numbers


def _provenance_line(p: dict) -> str:
    v = p["versions"]
    return (f"Rendered {p['written_at']} by q4bench {v['suite']} at commit {describe_code(p)} "
            f"({p['code']['source']}); Python {v['python']}.")


# ---------------------------------------------------------------------------------------------
# Markdown


def _md_cell(text: str, foreign: frozenset[str]) -> str:
    return markdown(text, foreign, table_cell=True).replace("\n", "<br>")


def _md_text(cell: Cell, numbers: dict[str, int], foreign: frozenset[str]) -> str:
    out = _md_cell(cell.text, foreign)
    if cell.fixture and not out.startswith("FIXTURE"):
        out = "FIXTURE " + out
    if cell.note in numbers:
        out += f" [{numbers[cell.note]}]"
    return out


def markdown_table(table: Table, foreign: frozenset[str] = frozenset()) -> str:
    if not table.rows:
        return "_not measured_"
    numbers = footnote_numbers(table)
    lines = ["| " + " | ".join(_md_cell(c, foreign) for c in table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(_md_text(c, numbers, foreign) for c in row) + " |" for row in table.rows]
    lines += [""] + [f"[{n}] {markdown(table.footnotes[key], foreign)}  " for key, n in numbers.items()]
    return "\n".join(lines).rstrip()


def _markdown_blocks(s: Section, figure_dir: str, foreign: frozenset[str]) -> list[str]:
    lines = []
    for b in s.blocks:
        if isinstance(b, Paragraph):
            lines += [markdown(b.text, foreign), ""]
        elif isinstance(b, Table):
            caption = [f"_{markdown(b.caption, foreign)}_", ""] if b.caption and not b.sortable else []
            lines += caption + [markdown_table(b, foreign), ""]
        elif isinstance(b, Figure):
            title = markdown(b.title, foreign).replace("[", "\\[").replace("]", "\\]")
            lines += [f"![{title}]({figure_dir}/{b.name}.png)", "", f"_{markdown(b.caption, foreign)}_", ""]
    return lines


def render_markdown(sections: list[Section], fixture: bool, provenance: dict, figure_dir: str = "figures",
                    foreign: frozenset[str] = frozenset()) -> str:
    """The main sections as '##', then a 'Details' heading with the rest as '###' under it. The strings in
    foreign (from result files) are escaped wherever they occur: shown, never read as Markdown or HTML."""
    lines = [f"# {TITLE}", ""]
    if fixture:
        lines += [f"**{FIXTURE_BANNER}**", ""]
    details_started = False
    for s in sections:
        if s.details and not details_started:
            lines += ["---", "", '<a id="details"></a>', "## Details", "", DETAILS_INTRO, "", LEGEND, ""]
            details_started = True
        lines += [f'<a id="{s.anchor}"></a>', f"{'###' if s.details else '##'} {markdown(s.title, foreign)}", ""]
        lines += _markdown_blocks(s, figure_dir, foreign)
    lines += ["---", markdown(_provenance_line(provenance), foreign), ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# HTML


_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:1em auto;max-width:1500px;padding:0 1em;color:#222}
h1{font-size:1.3em;margin:.2em 0}h2{font-size:1.15em;border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.5em}
table{border-collapse:collapse;font-size:.8em;margin:.5em 0;display:block;overflow-x:auto}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top;white-space:pre-line}
th{background:#f2f2f2;white-space:normal}table.sortable th{cursor:pointer}table.sortable th:hover{background:#e0e8ff}
table.sortable th::after{content:' \\2195';color:#999}
td.k-notmeasured{color:#888;font-style:italic}td.k-estimated{font-style:italic;color:#5a4a00}
td.k-derived{color:#114}td.k-paper{color:#555}td.fixture{color:#a00}
td.v-confirmed{background:#e3f4e3}td.v-contradicted{background:#fbe1e1}td.v-notmeasurable{background:#f4f4f4}td.v-notyetdecided{background:#fff6db}
sup{color:#06c;font-size:.75em}
.banner{background:#fff3cd;border:1px solid #e0c060;padding:.5em;margin:.6em 0}
#answer h2{display:none}#answer p{margin:.25em 0}.question{font-size:1.05em}.notyet{font-size:.88em;color:#5a3a00}
#answer table{font-size:.88em;display:table;width:100%;table-layout:fixed;margin:.3em 0}#answer td{padding:3px 6px}
#answer th:nth-child(1){width:17%}#answer td:nth-child(1){font-weight:600}
#answer td.k-notmeasured{color:#8a4b00;font-style:normal}#answer .notes{margin:.1em 0 .2em}
#answer figure{margin:.3em 0}#hosts table{display:table;width:100%;table-layout:fixed}
#hosts th:nth-child(1){width:16%}#hosts th:nth-child(2){width:38%}#hosts th:nth-child(3){width:24%}
hr.divider{margin:2.5em 0 .5em;border:0;border-top:3px double #999}
details{margin:.4em 0;border:1px solid #ddd;border-radius:4px;padding:.2em .6em}
details>summary{cursor:pointer;font-weight:600;font-size:1.02em;padding:.2em 0}
.glossary{font-size:.88em}
.notes{font-size:.78em;color:#444;margin:.2em 0 1em}.notes p{margin:.15em 0}
.legend{font-size:.85em;color:#444}
figure{margin:1em 0}figcaption{font-size:.85em;color:#555}img{max-width:100%}
nav{font-size:.85em;margin:.4em 0}nav a{margin-right:.9em}footer{margin-top:2em;font-size:.8em;color:#666}
"""

# Sorting without a library; a link to a folded detail section opens it.
# Sorting: a cell's data-sort (its number) when it has one, else its leading number,
# else its text; click again to reverse.
_JS = """
document.querySelectorAll('table.sortable').forEach(function(t){
 t.querySelectorAll('th').forEach(function(th,i){th.addEventListener('click',function(){
  var b=t.tBodies[0],rows=Array.from(b.rows),asc=th.dataset.dir!=='asc';
  var key=function(r){var c=r.cells[i],s=c.dataset.sort!==undefined?c.dataset.sort:c.textContent.trim(),
   n=parseFloat(s.replace(/,/g,''));return isNaN(n)?[1,s]:[0,n];};
  rows.sort(function(x,y){var a=key(x),z=key(y);var c=a[0]-z[0]||(a[0]===0?a[1]-z[1]:String(a[1]).localeCompare(String(z[1])));
   return asc?c:-c;});
  th.dataset.dir=asc?'asc':'desc';rows.forEach(function(r){b.appendChild(r);});});});
});
function openTarget(){var t=location.hash&&document.getElementById(location.hash.slice(1));
 if(t&&t.tagName==='DETAILS'){t.open=true;t.scrollIntoView();}}
window.addEventListener('hashchange',openTarget);openTarget();
"""


def _own_markup(text: str) -> str:
    out = html.escape(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    out = re.sub(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])", r"<em>\1</em>", out)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", out)


def _inline_md(text: str, foreign: frozenset[str] = frozenset()) -> str:
    """The little Markdown the report's own text uses (**bold**, *italic*, `code`), on escaped text; the strings
    in foreign (from result files) only escaped."""
    return render_text(text, foreign, _own_markup, html.escape)


def _html_cell(cell: Cell, numbers: dict[str, int], foreign: frozenset[str]) -> str:
    classes = []
    if cell.kind is not Kind.TEXT:
        classes.append("k-" + cell.kind.value.replace(" ", ""))
    if cell.fixture:
        classes.append("fixture")
    if cell.verdict is not None:
        classes.append("v-" + cell.verdict.value.split(" at ")[0].replace(" ", ""))
    attrs = f' class="{" ".join(classes)}"' if classes else ""
    if cell.value is not None:
        attrs += f' data-sort="{cell.value!r}"'
    body = _inline_md(("FIXTURE " if cell.fixture and not cell.text.startswith("FIXTURE") else "") + cell.text, foreign)
    if cell.note in numbers:
        body += f"<sup>{numbers[cell.note]}</sup>"
    return f"<td{attrs}>{body}</td>"


MAX_HTML_ROWS = 200  # a table's rows in report.html, so the page stays small with any number of results


def html_table(table: Table, foreign: frozenset[str] = frozenset()) -> str:
    """The table; past MAX_HTML_ROWS rows it says how many it left to report.md, which has them all."""
    if not table.rows:
        return "<p><em>not measured</em></p>"
    numbers = footnote_numbers(table)
    cls = ' class="sortable"' if table.sortable else ""
    head = "".join(f"<th>{html.escape(visible(c))}</th>" for c in table.columns)
    rows = "".join("<tr>" + "".join(_html_cell(c, numbers, foreign) for c in row) + "</tr>"
                   for row in table.rows[:MAX_HTML_ROWS])
    cut = ""
    if len(table.rows) > MAX_HTML_ROWS:  # in <tfoot>, so sorting never moves it
        cut = (f"<tfoot><tr><td colspan='{len(table.columns)}'><em>The first {MAX_HTML_ROWS} of {len(table.rows):,} "
               "rows; report.md beside this page has every row.</em></td></tr></tfoot>")
    caption = f"<caption>{html.escape(visible(table.caption))}</caption>" if table.caption else ""
    notes = "".join(f"<p><sup>{n}</sup> {_inline_md(table.footnotes[key], foreign)}</p>" for key, n in numbers.items())
    return (f"<table{cls} id='t-{table.name}'>{caption}<thead><tr>{head}</tr></thead><tbody>{rows}</tbody>{cut}</table>"
            + (f"<div class='notes'>{notes}</div>" if notes else ""))


def _html_blocks(s: Section, foreign: frozenset[str]) -> list[str]:
    parts = []
    for b in s.blocks:
        if isinstance(b, Paragraph):
            parts.append(f"<p{f' class={chr(39)}{b.css}{chr(39)}' if b.css else ''}>{_inline_md(b.text, foreign)}</p>")
        elif isinstance(b, Table):
            parts.append(html_table(b, foreign))
        elif isinstance(b, Figure):
            data = base64.b64encode(b.png).decode()
            parts.append(f"<figure id='f-{b.name}'><img alt='{html.escape(visible(b.title), quote=True)}' "
                         f"src='data:image/png;base64,{data}'><figcaption>{html.escape(visible(b.caption))}"
                         "</figcaption></figure>")
    return parts


def _nav(sections: list[Section]) -> str:
    main = "".join(f"<a href='#{x.anchor}'>{html.escape(x.title.split(':')[0].split(',')[0])}</a>"
                   for x in sections[1:] if not x.details)
    details = "".join(f"<a href='#{x.anchor}'>{html.escape(x.title.split(':')[0].split(',')[0])}</a>"
                      for x in sections if x.details)
    return f"<nav>{main}<a href='#details'>Details:</a>{details}</nav>"


def render_html(sections: list[Section], fixture: bool, provenance: dict, foreign: frozenset[str] = frozenset()) -> str:
    """The main sections open; below a divider each detail section folded in a <details> element. The strings
    in foreign (from result files) are escaped and never read as the report's own emphasis or code."""
    meta = html.escape(json.dumps(provenance, sort_keys=True), quote=True)
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             f"<meta name='viewport' content='width=device-width,initial-scale=1'>"
             f"<meta name='q4bench-provenance' content=\"{meta}\"><title>{html.escape(TITLE)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{html.escape(TITLE)}</h1>"]
    if fixture:
        parts.append(f"<div class='banner'>{_inline_md(FIXTURE_BANNER)}</div>")
    details_started = False
    for i, s in enumerate(sections):
        if s.details and not details_started:
            parts.append(f"<hr class='divider'><section id='details'><h2>Details</h2><p class='legend'>"
                         f"{_inline_md(DETAILS_INTRO)} {_inline_md(LEGEND)}</p></section>")
            details_started = True
        if s.details:
            parts.append(f"<details id='{s.anchor}'><summary>{html.escape(visible(s.title))}</summary>")
            parts += _html_blocks(s, foreign)
            parts.append("</details>")
        else:
            parts.append(f"<section id='{s.anchor}'><h2>{html.escape(visible(s.title))}</h2>")
            parts += _html_blocks(s, foreign)
            parts.append("</section>")
        if i == 0:  # the answer first, then the way to everything else
            parts.append(_nav(sections))
    parts.append(f"<footer>{html.escape(visible(_provenance_line(provenance)))}</footer><script>{_JS}</script></body></html>")
    return "\n".join(parts)


@dataclass(frozen=True)
class RenderedReport:
    written: list[Path]  # figures, report.md, report.html
    unused: list[UnusedFile]  # inputs found and not used, each with its reason (listed in the report too)


def render_report(sources: ReportSources, out: str | os.PathLike) -> RenderedReport:
    """Write OUT/report.md, OUT/figures/*.png and OUT/report.html.

    Each file is written atomically, figures first and report.html last, under OUT's lock (one report at a
    time); after a kill the set may mix the old report and the new one until the command is rerun."""
    check_output_dir(out, "--out")
    inputs: Inputs = load_inputs(sources)
    sections = build_sections(inputs)
    provenance = stamp()
    with hold(out, "report"):
        remove_stale_temps(Path(out) / "figures")
        return RenderedReport(_write_report(sections, inputs, provenance, Path(out)), list(inputs.unused))


def _foreign(inputs: Inputs) -> frozenset[str]:
    """Every string the inputs brought in, as Markdown and HTML must escape it."""
    docs = [*(r.data for r in inputs.results), *(c.data for c in inputs.compares), *(r.history for r in inputs.runs),
            *(v.data for v in inputs.verifies), inputs.notes, [u.why for u in inputs.unused]]
    files = [*(x.path for x in [*inputs.results, *inputs.compares, *inputs.runs, *inputs.verifies, *inputs.unused])]
    return foreign_strings(docs, [*files, *map(relative, files)])


def _write_report(sections: list[Section], inputs: Inputs, provenance: dict, out: Path) -> list[Path]:
    written = []
    figures = [b for s in sections for b in s.blocks if isinstance(b, Figure)]
    for f in figures:
        written.append(write_atomic(out / "figures" / f"{f.name}.png", lambda fo, png=f.png: fo.write(png)))
    for stale in FIGURE_NAMES - {f.name for f in figures}:  # a figure of an earlier report that has no data now
        (out / "figures" / f"{stale}.png").unlink(missing_ok=True)
    foreign = _foreign(inputs)
    md = render_markdown(sections, inputs.has_fixture, provenance, foreign=foreign).encode()
    page = render_html(sections, inputs.has_fixture, provenance, foreign).encode()
    written.append(write_atomic(out / "report.md", lambda f: f.write(md)))
    written.append(write_atomic(out / "report.html", lambda f: f.write(page)))
    return written
