"""`q4bench report`: bench results, compare results, training histories and verify.json files ->
OUT/report.md (figures in OUT/figures/) and one self-contained OUT/report.html.

The data's path, one module each: inputs (read files; never imports torch) -> claims (the paper's claims,
a Verdict each with its reason) -> sections/ (one module per section: tables of typed cells and figures of the
document model in document.py, no Markdown; contents puts them in reading order) -> render (Markdown and HTML,
the answer on the first screen). A file whose "command" starts with "fixture:" is
generated test input and is labelled FIXTURE wherever it appears."""

from .claims import ClaimCheck, Verdict, claim_checks
from .inputs import DEFAULT_ONNX, DEFAULT_RESULTS, DEFAULT_RUNS, Inputs, ReportSources, load_inputs
from .render import render_html, render_markdown, render_report
from .contents import build_sections
from .document import Cell, Figure, Kind, Paragraph, Section, Table

__all__ = [
    "DEFAULT_ONNX", "DEFAULT_RESULTS", "DEFAULT_RUNS", "Cell", "ClaimCheck", "Figure", "Inputs", "Kind", "Paragraph",
    "ReportSources", "Section", "Table", "Verdict", "build_sections", "claim_checks", "load_inputs", "render_html",
    "render_markdown", "render_report",
]
