"""The report's sections in reading order: the answer first, then the evidence behind it."""

from __future__ import annotations

from .inputs import Inputs
from .sections import (Section, section_accuracy, section_answer, section_claims, section_compare,
                       section_cross_hardware, section_epochs, section_methods, section_onnx, section_profiles,
                       section_runs, section_scaling)
from .time_to_accuracy import section_time_to_accuracy


def build_sections(inputs: Inputs) -> list[Section]:
    return [section_answer(inputs), section_claims(inputs), section_compare(inputs), section_time_to_accuracy(inputs),
            section_runs(inputs), section_accuracy(inputs), section_epochs(inputs), section_profiles(inputs),
            section_scaling(inputs), section_methods(inputs), section_onnx(inputs), section_cross_hardware(inputs)]
