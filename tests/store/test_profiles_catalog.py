"""The preference catalog: defaults, user files in TOML and YAML, and clear errors for bad files."""

from __future__ import annotations

from pathlib import Path

import pytest

from profiles import CatalogError, PreferenceCatalog, PreferenceContext, UnknownDimensionError, UnknownPoleError

YAML_CATALOG = """
dimensions:
  - name: tone
    poles:
      - name: blunt
        description: A blunt, direct answer.
        examples: ["Just tell me straight."]
      - name: gentle
        description: A gentle, tactful answer.
        examples: ["Please be kind about it."]
        reward: {kind: head, path: heads/gentle.safetensors}
  - name: humour
    poles:
      - {name: serious, description: Serious., examples: ["No jokes."]}
      - {name: playful, description: Playful., examples: ["Make it funny!"]}
"""


def test_the_default_catalog_has_three_zero_shot_dimensions() -> None:
    catalog = PreferenceCatalog.default()
    assert catalog.names == ["expertise", "verbosity", "tone"]
    assert [d.pole_names for d in catalog.dimensions] == [
        ["elementary", "expert"],
        ["concise", "detailed"],
        ["friendly", "formal"],
    ]
    assert all(p.reward.kind == "zero_shot" and p.examples for d in catalog.dimensions for p in d.poles)
    assert catalog.vector_layout()[:3] == ["expertise.elementary", "expertise.expert", "expertise.confidence"]


def test_a_yaml_file_adds_and_replaces_dimensions(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(YAML_CATALOG, encoding="utf-8")
    catalog = PreferenceCatalog.from_file(path)
    assert catalog.names == ["expertise", "verbosity", "tone", "humour"]
    assert catalog.dimension("tone").pole_names == ["blunt", "gentle"]
    assert catalog.dimension("tone").pole("gentle").reward.path == "heads/gentle.safetensors"
    neutral = PreferenceContext.neutral(catalog, "u")
    assert len(neutral.vector) == 12 and neutral.dimensions["humour"].weights == {"serious": 0.5, "playful": 0.5}


def test_a_toml_file_can_replace_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "catalog.toml"
    path.write_text(
        'replace_defaults = true\n[[dimensions]]\nname = "pace"\n'
        '[[dimensions.poles]]\nname = "slow"\ndescription = "Slow."\nexamples = ["take your time"]\n'
        '[[dimensions.poles]]\nname = "fast"\ndescription = "Fast."\nexamples = ["hurry"]\n',
        encoding="utf-8",
    )
    assert PreferenceCatalog.from_file(path).names == ["pace"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.toml", "dimensions = [", "not valid TOML"),
        ("bad.yaml", "dimensions: [", "not valid YAML"),
        (
            "one_pole.toml",
            ('[[dimensions]]\nname = "x"\n[[dimensions.poles]]\nname = "a"\ndescription = "A"\nexamples = ["a"]\n'),
            "dimensions.0.poles",
        ),
        (
            "head.yaml",
            (
                "dimensions:\n - name: x\n   poles:\n    - {name: a, description: A, examples: [a], "
                "reward: {kind: head}}\n    - {name: b, description: B, examples: [b]}\n"
            ),
            "needs a path",
        ),
        ("catalog.json", "{}", "must end in .toml, .yaml or .yml"),
        ("list.yaml", "- a\n- b\n", "must map `dimensions` to a list; it holds a list"),
    ],
)
def test_bad_catalog_files_give_one_line_errors(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(CatalogError, match=message) as error:
        PreferenceCatalog.from_file(path)
    assert "\n" not in str(error.value)


def test_a_catalog_file_that_is_not_utf8_is_named_in_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('[[dimensions]]\nname = "caf\u00e9"\n'.encode("latin-1"))
    with pytest.raises(CatalogError, match="is not UTF-8 text") as error:
        PreferenceCatalog.from_file(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_lookups_of_unknown_names_fail_clearly() -> None:
    catalog = PreferenceCatalog.default()
    with pytest.raises(UnknownDimensionError, match="choose one of: expertise, verbosity, tone"):
        catalog.dimension("mood")
    with pytest.raises(UnknownPoleError, match="for dimension 'verbosity'"):
        catalog.dimension("verbosity").pole("medium")
