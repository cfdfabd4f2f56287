"""README's figures and defaults are the results files' and the settings', not hand-copied."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from bench import report
from recommender.settings import Settings

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()


def test_the_benchmark_summary_is_the_results_files():
    block = README.split(report.README_START, 1)[1].split(report.README_END, 1)[0]
    assert block.strip() == report.readme_summary(report.load(REPO / "bench" / "results")), (
        "README's benchmark summary is stale: regenerate it with python -c 'from pathlib "
        "import Path; from bench import report; report.write_readme(Path(\"bench/results\"), "
        "Path(\"README.md\"))'")


def _config_rows() -> dict[str, str]:
    table = README.split("## Configuration", 1)[1].split("\n\n**", 1)[0]
    return {m.group(1): m.group(2) for m in re.finditer(r"^\| `(\w+)` \| (.+) \|$", table, re.M)}


def _as_readme(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def test_every_default_the_configuration_table_quotes_is_the_settings_default():
    defaults = Settings(_env_file=None).model_dump(mode="json")
    quoted = 0
    for section, cell in _config_rows().items():
        for field, value in re.findall(r"`(\w+)` \(([^)]*)\)", cell):
            if field not in defaults[section]:
                continue  # a nested table's name (model.ranking: ...)
            shown = value.split(": ", 1)[0].strip()  # "20000: what it bounds"
            assert shown == _as_readme(defaults[section][field]) or (
                shown == '""' and defaults[section][field] == ""), (section, field, shown)
            quoted += 1
    assert quoted >= 15  # the table quotes defaults; an empty match would check nothing


def test_every_page_the_readme_links_exists_and_it_stays_short():
    links = re.findall(r"\]\(((?:docs/|BENCHMARKS)[^)#]*)", README)
    assert links, "README links no docs page"
    assert [link for link in links if not (REPO / link).is_file()] == []
    assert len(README.splitlines()) <= 250
