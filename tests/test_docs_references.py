"""Every test the documents name as evidence (``test_x.py::test_y``) exists."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = re.compile(r"(test_\w+\.py)::(test_\w+)")


def test_tests_named_in_the_documents_exist():
    defined = {
        f"{path.name}::{name}"
        for path in (ROOT / "tests").glob("test_*.py")
        for name in re.findall(r"^def (test_\w+)", path.read_text(encoding="utf-8"), re.M)
    }
    documents = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    named = {
        f"{document.name}: {match.group(0)}"
        for document in documents
        for match in REFERENCE.finditer(document.read_text(encoding="utf-8"))
    }
    assert named, "no test references found: the pattern or the documents moved"
    missing = sorted(n for n in named if n.split(": ", 1)[1] not in defined)
    assert not missing, missing
