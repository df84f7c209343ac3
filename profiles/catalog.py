"""The preference catalog: which preference dimensions exist, their poles, and the reward each pole maps to.

A dimension (``tone``) has two or more poles (``friendly``, ``formal``). Each pole has a natural-language description,
example user utterances that signal it (inference compares a user's messages with these), and a ``RewardSpec`` saying
how the decoding engine should reward text for that pole. The default catalog ships three dimensions; users add their
own in a TOML or YAML file, no code needed::

    [[dimensions]]
    name = "humour"
    [[dimensions.poles]]
    name = "serious"
    description = "A serious, matter-of-fact answer."
    examples = ["No jokes please, this is important."]
    [[dimensions.poles]]
    name = "playful"
    description = "A light, playful answer with a joke or two."
    examples = ["Make it funny!", "lol tell it like a pirate"]

A file's dimensions are added after the defaults (or replace them with ``replace_defaults = true``); a dimension with
a default's name replaces that default.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from profiles.errors import CatalogError, UnknownDimensionError, UnknownPoleError

_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")


class RewardSpec(BaseModel):
    """What a pole maps to at decoding time.

    ``zero_shot``: an embedding reward built from the pole's description (no training, no file).
    ``head``: a reward head file (a small linear/MLP head on the base model's hidden states) at ``path``.
    ``model``: a reward model (folder or hub name) at ``path``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["zero_shot", "head", "model"] = "zero_shot"
    path: str | None = None

    @model_validator(mode="after")
    def _path_matches_kind(self) -> RewardSpec:
        if self.kind == "zero_shot" and self.path is not None:
            raise ValueError("a zero_shot reward takes no path (it uses the pole's description)")
        if self.kind != "zero_shot" and not self.path:
            raise ValueError(f"a {self.kind!r} reward needs a path")
        return self


class Pole(BaseModel):
    """One end of a dimension, e.g. ``formal`` in ``tone``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    description: str = Field(min_length=1)
    examples: list[str] = Field(min_length=1)
    reward: RewardSpec = RewardSpec()

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"pole name {value!r} must be lowercase letters, digits, '-' or '_'")
        return value


class Dimension(BaseModel):
    """A preference axis with two or more poles."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    description: str = ""
    poles: list[Pole] = Field(min_length=2)

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"dimension name {value!r} must be lowercase letters, digits, '-' or '_'")
        return value

    @model_validator(mode="after")
    def _unique_poles(self) -> Dimension:
        names = [pole.name for pole in self.poles]
        if len(set(names)) != len(names):
            raise ValueError(f"dimension {self.name!r} repeats a pole name")
        return self

    @property
    def pole_names(self) -> list[str]:
        return [pole.name for pole in self.poles]

    def pole(self, name: str) -> Pole:
        for pole in self.poles:
            if pole.name == name:
                return pole
        raise UnknownPoleError(
            f"unknown pole {name!r} for dimension {self.name!r}; choose one of: {', '.join(self.pole_names)}"
        )


class _CatalogFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    replace_defaults: bool = False
    dimensions: list[Dimension] = Field(default_factory=list)


class PreferenceCatalog(BaseModel):
    """An ordered set of dimensions. The order fixes the layout of ``PreferenceContext.vector``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dimensions: list[Dimension] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_dimensions(self) -> PreferenceCatalog:
        names = [dimension.name for dimension in self.dimensions]
        if len(set(names)) != len(names):
            raise ValueError("the catalog repeats a dimension name")
        return self

    @classmethod
    def default(cls) -> PreferenceCatalog:
        """``expertise`` (elementary | expert), ``verbosity`` (concise | detailed), ``tone`` (friendly | formal)."""
        return cls(dimensions=list(_DEFAULT_DIMENSIONS))

    @classmethod
    def from_file(cls, path: str | Path) -> PreferenceCatalog:
        """Read a TOML (``.toml``) or YAML (``.yaml``/``.yml``) catalog file; see the module docstring."""
        path = Path(path)
        try:
            raw_text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise CatalogError(f"cannot read catalog file {path}: {error.strerror}") from error
        except UnicodeDecodeError as error:
            raise CatalogError(
                f"catalog file {path} is not UTF-8 text (byte {error.start}): save it as UTF-8"
            ) from error
        try:
            if path.suffix.lower() == ".toml":
                data = tomllib.loads(raw_text)
            elif path.suffix.lower() in {".yaml", ".yml"}:
                data = yaml.safe_load(raw_text) or {}
            else:
                raise CatalogError(f"catalog file {path} must end in .toml, .yaml or .yml")
        except (tomllib.TOMLDecodeError, yaml.YAMLError) as error:
            detail = " ".join(str(error).split())  # YAML errors span several lines
            raise CatalogError(f"catalog file {path} is not valid {path.suffix[1:].upper()}: {detail}") from error
        if not isinstance(data, dict):
            raise CatalogError(f"catalog file {path} must map `dimensions` to a list; it holds a {type(data).__name__}")
        try:
            parsed = _CatalogFile.model_validate(data)
            return cls.default().merged(parsed.dimensions, replace=parsed.replace_defaults)
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise CatalogError(f"catalog file {path}: {where}: {first['msg']}") from error

    def merged(self, dimensions: list[Dimension], *, replace: bool = False) -> PreferenceCatalog:
        """A catalog with ``dimensions`` added (same name: replaced in place); ``replace`` drops the current ones."""
        if replace:
            return PreferenceCatalog(dimensions=dimensions)
        by_name = {dimension.name: dimension for dimension in dimensions}
        result = [by_name.pop(dimension.name, dimension) for dimension in self.dimensions]
        result.extend(dimension for dimension in dimensions if dimension.name in by_name)
        return PreferenceCatalog(dimensions=result)

    @property
    def names(self) -> list[str]:
        return [dimension.name for dimension in self.dimensions]

    def dimension(self, name: str) -> Dimension:
        for dimension in self.dimensions:
            if dimension.name == name:
                return dimension
        raise UnknownDimensionError(f"unknown dimension {name!r}; choose one of: {', '.join(self.names)}")

    def vector_layout(self) -> list[str]:
        """Names of the entries of ``PreferenceContext.vector``: per dimension, ``dim.pole`` for each pole, then
        ``dim.confidence``."""
        layout: list[str] = []
        for dimension in self.dimensions:
            layout.extend(f"{dimension.name}.{pole}" for pole in dimension.pole_names)
            layout.append(f"{dimension.name}.confidence")
        return layout


# Some verbosity and tone examples come in pairs across a dimension's poles (the same question asked in opposite
# styles): a question's topic and form then lie near both poles alike, so only its style tells them apart.
_DEFAULT_DIMENSIONS = (
    Dimension(
        name="expertise",
        description="How much background the answer may assume.",
        poles=[
            Pole(
                name="elementary",
                description="Explain simply for a beginner with no background, in plain words and without jargon.",
                examples=[
                    "Can you explain this like I'm five?",
                    "I'm new to this, what does that word even mean?",
                    "Please keep it simple, I don't know much about computers.",
                    "I'm a complete beginner, where do I start?",
                    "Sorry if this is a dumb question, I have no idea how this works.",
                    "What is a variable in programming, in plain words?",
                ],
            ),
            Pole(
                name="expert",
                description="Answer at an expert level with precise technical terminology, depth and rigour.",
                examples=[
                    "Skip the basics, I've been doing this professionally for ten years.",
                    "What's the amortised complexity of resizing a dynamic array, and why?",
                    "Compare the liveness guarantees of Raft and Multi-Paxos under a network partition.",
                    "How does the warp scheduler hide global memory latency on recent GPUs?",
                    "Derive the gradient of softmax cross-entropy with respect to the logits.",
                    "Give me the rigorous version, with the relevant theorems and edge cases.",
                ],
            ),
        ],
    ),
    Dimension(
        name="verbosity",
        description="How long and detailed the answer should be.",
        poles=[
            Pole(
                name="concise",
                description="A short, to-the-point answer without extra detail.",
                examples=[
                    "Just give me the answer, no explanation.",
                    "tl;dr please",
                    "Keep it short.",
                    "One sentence, please.",
                    "Only the command, nothing else.",
                    "Brief answer only, I'm in a hurry.",
                    "How does a compass work? Short answer please.",
                    "What is an index fund, in one line?",
                    "Explain recursion in a sentence or two.",
                    "Skip the details, just tell me what to do.",
                    "Too long, give me the short version.",
                    "Give me the bottom line, no background.",
                ],
            ),
            Pole(
                name="detailed",
                description="A thorough, detailed answer that walks through every step with examples.",
                examples=[
                    "Can you explain it in detail, step by step?",
                    "Please give me a thorough, comprehensive explanation with examples.",
                    "Walk me through every step and why it works.",
                    "I want all the background and the full reasoning.",
                    "Elaborate on each point and give several examples.",
                    "Don't leave anything out, I want the long version.",
                    "How does a compass work? Give me the long explanation, with all the physics behind it.",
                    "What is an index fund? Explain it in depth, with examples and the pros and cons.",
                    "Explain recursion at length, with several worked examples.",
                    "Your last answer was too short, please expand on it.",
                    "Give me more depth: the history, the details and the exceptions.",
                    "Cover every aspect, I have time to read a long answer.",
                ],
            ),
        ],
    ),
    Dimension(
        name="tone",
        description="The register of the answer.",
        poles=[
            Pole(
                name="friendly",
                description="A warm, casual and friendly tone.",
                examples=[
                    "hey!! thanks so much, you're awesome :)",
                    "lol that's great, can you help me with one more thing?",
                    "Hiya, quick question for ya",
                    "Thanks buddy, that made my day!",
                    "omg this is so cool haha",
                    "yo, what's up? need a hand with something",
                    "hey there! what's an index fund? thx :)",
                    "heya, how do rainbows even work?? 😊",
                    "haha awesome, you're a star!",
                    "cheers mate, appreciate it!",
                    "aw man, thanks a ton, super helpful :D",
                    "hi hi! got another q for you",
                ],
            ),
            Pole(
                name="formal",
                description="A formal, professional and courteous tone.",
                examples=[
                    "Dear assistant, I would be grateful if you could provide an assessment of the following.",
                    "Kindly provide a formal summary of the quarterly report.",
                    "Please prepare a professional response to the client's inquiry.",
                    "I would appreciate a precise and courteous reply.",
                    "Could you draft a formal letter to the board of directors?",
                    "Thank you in advance for your consideration of this request.",
                    "Good morning. Could you kindly explain what an index fund is?",
                    "I would be obliged if you could explain how the rainbow phenomenon arises.",
                    "Please find attached the documents for your review.",
                    "Could you clarify the applicable regulations, please? Thank you for your assistance.",
                    "With kind regards, and many thanks for your assistance in this matter.",
                    "Would you kindly outline the terms of the agreement?",
                ],
            ),
        ],
    ),
)
