"""Terms: the words the main page uses, said once."""

from __future__ import annotations

from ..claims import FULL_BUDGET_NOISE
from ..document import Paragraph, Section
from ..hosts import NETWORK_NOTE


GLOSSARY = (
    ("gap", "fp32 minus tathe4 test accuracy, in points; above 0 tathe4 is lower."),
    ("paired seeds", "seed k of both methods starts from the same weights, data order and augmentation, so each "
                     "seed gives one gap."),
    ("95% CI", "the range that holds the mean gap with 95% confidence, given the seeds measured; compare's "
               "intervals count both noise sources, seeds and the sampling of the 10,000 test images."),
    ("TOST", "two one-sided tests: p < 0.05 shows the gap lies inside +-margin (equivalence); p >= 0.05 shows "
             "nothing either way."),
    ("power", "the chance that n seed pairs show equivalence (TOST p < 0.05) if the true gap were 0, at the "
              "measured seed-to-seed spread of the gap. With high power, equivalence not shown means a gap of this "
              "size is likely real; with low power, equivalence may have been missed by chance."),
    ("margin", f"+-{FULL_BUDGET_NOISE:g} points, about the run-to-run noise of one full CIFAR-10 training."),
    ("SGEMM", "single-precision general matrix multiply: a float32 matrix product timed on the host. Newer "
              "results take the best of several shapes (the network's convolutions as GEMMs among them), per "
              "precision, as the ceiling; older ones one square product."),
    ("efficiency", "a method's counted training FLOP rate over the ceiling of its precision (fp32 or bf16); each "
                   "table's note names the ceiling used. Above 100% is flagged as an anomaly, or, in older results, "
                   "means the one-shape probe was not the host's peak."),
    ("flip TTA", "test-time augmentation: each test image scored as is and mirrored, the two averaged."),
    ("unfinished", "a run with fewer epochs than planned (stopped, or still training)."),
    ("networks", NETWORK_NOTE),
)


def section_glossary() -> Section:
    s = Section("glossary", "Terms")
    s.blocks.append(Paragraph(" · ".join(f"**{term}**: {words}" for term, words in GLOSSARY), css="glossary"))
    return s
