"""The report's sections, one module per section, each a function of the inputs returning a Section of the
document model (suite/report/document.py): the main page (answer, per_host, claims, unused, glossary) and the
details below it (compare, time_to_accuracy, accuracy, epochs, profiles, methods, scaling, onnx, hardware, runs).
contents.py puts them in reading order."""

from .accuracy import section_accuracy
from .answer import section_answer
from .claims import section_claims
from .compare import section_compare
from .epochs import section_epochs
from .glossary import section_glossary
from .hardware import section_cross_hardware
from .methods import section_methods
from .onnx import section_onnx
from .per_host import section_hosts, section_more_hosts
from .profiles import section_profiles
from .runs import section_runs
from .scaling import section_scaling
from .time_to_accuracy import section_time_to_accuracy
from .unused import section_unused

__all__ = [
    "section_accuracy", "section_answer", "section_claims", "section_compare", "section_cross_hardware",
    "section_epochs", "section_glossary", "section_hosts", "section_methods", "section_more_hosts", "section_onnx",
    "section_profiles", "section_runs", "section_scaling", "section_time_to_accuracy", "section_unused",
]
