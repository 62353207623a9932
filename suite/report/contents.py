"""The report's sections in reading order: the main page (the answer, the gap-versus-budget figure, per-host
summary, claim checks, terms), then, below a divider, the details behind it."""

from __future__ import annotations

from .document import Section
from .inputs import Inputs
from .sections import (section_accuracy, section_answer, section_claims, section_compare, section_cross_hardware,
                       section_epochs, section_glossary, section_hosts, section_methods, section_more_hosts,
                       section_onnx, section_profiles, section_runs, section_scaling, section_time_to_accuracy,
                       section_unused)
from .untrusted import plain_text_figures


def build_sections(inputs: Inputs) -> list[Section]:
    """The sections; "Files not used" on the main page when any input was refused. Figures are drawn with
    matplotlib's mathtext off: a '$' in a method or layer name is shown as written."""
    with plain_text_figures():
        main = [section_answer(inputs), section_hosts(inputs), section_claims(inputs), section_unused(inputs),
                section_glossary()]
        more_hosts = section_more_hosts(inputs)  # past the main page's rows: hosts beyond the first dozen
        details = [more_hosts, section_compare(inputs), section_time_to_accuracy(inputs), section_accuracy(inputs),
                   section_epochs(inputs), section_profiles(inputs), section_methods(inputs), section_scaling(inputs),
                   section_onnx(inputs), section_cross_hardware(inputs), section_runs(inputs)]
    main = [s for s in main if s is not None]
    details = [s for s in details if s is not None]
    for s in details:
        s.details = True
    return main + details
