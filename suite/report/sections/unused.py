"""The "Files not used" section: every input the report found and refused, with the one-line reason, so a
hostile or broken file costs its own figures and nothing else."""

from __future__ import annotations

from ..document import Paragraph, Section, Table, text
from ..inputs import Inputs, relative


def section_unused(inputs: Inputs) -> Section | None:
    """None when every file found was used."""
    if not inputs.unused:
        return None
    s = Section("unused", f"Files not used: {len(inputs.unused)}")
    s.blocks.append(Paragraph("These inputs were found and left out: each figure above is made without them. "
                              "Mend or remove a file and rerun `make report`."))
    table = Table("unused", ["file", "why not used"])
    for u in inputs.unused:
        table.add({"file": text(relative(u.path)), "why not used": text(u.why)})
    s.blocks.append(table)
    return s
