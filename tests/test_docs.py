"""The docs a newcomer walks: the recipe reference is current, every linked doc exists, the
README stays short and keeps CI's test command where .ci/run reads it."""

from __future__ import annotations

import re

import yaml

from sweeper.recipe import parse_recipe
from sweeper.recipedoc import EXAMPLE, render
from tests.conftest import REPO

README = REPO / "README.md"


def test_recipe_reference_is_regenerated_from_the_schema() -> None:
    checked_in = (REPO / "docs" / "recipe.md").read_text()
    assert checked_in == render(), "docs/recipe.md is stale: run python -m sweeper.recipedoc docs/recipe.md"


def test_recipe_reference_names_every_field_and_its_example_is_a_valid_recipe() -> None:
    text = render()
    for field in ("warmup_steps", "divergence_factor", "max_failed_fraction", "memory_gb", "per_param"):
        assert f"| `{field}` |" in text
    parse_recipe(yaml.safe_load(EXAMPLE))


def test_every_local_link_of_the_readme_and_docs_exists() -> None:
    documents = [README, *sorted((REPO / "docs").glob("*.md"))]
    checked = 0
    for document in documents:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", document.read_text()):
            if re.match(r"^[a-z]+://", target):
                continue
            assert (document.parent / target).exists(), (
                f"{document.name} links {target}, which does not exist"
            )
            checked += 1
    assert checked >= 6


def test_readme_is_short_and_keeps_the_two_commands() -> None:
    text = README.read_text()
    assert len(text.encode()) < 12 * 1024
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block is not None
    commands = block.group(1).strip().splitlines()
    assert len(commands) == 2 and "pytest" in commands[1] and " && " in commands[1]
