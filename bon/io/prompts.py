"""Prompt templates: load them from `prompts/`, fill them with user text verbatim.

A template file is TOML with a `system` and a `user` string, and for a judge optionally
`thinking = true`: the judge reasons inside `<think>…</think>` before its verdict, so a
completion that never closes the thought is no vote (bon/verdict.py). Placeholders are `{name}`
for the names a role defines; they are replaced in a single pass, so braces, `%`,
backslashes or placeholder-like text inside user data reach the model unchanged (never
`str.format` on a string that holds user text).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from bon.errors import BonError

JUDGE_FIELDS = ("question", "answer1", "answer2")
POLICY_FIELDS = ("query",)


class TemplateError(BonError, ValueError):
    pass


def prompts_dir() -> Path:
    """The shipped templates: inside the wheel as bon/prompts, or the repo's prompts/."""
    packaged = resources.files("bon") / "prompts"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[2] / "prompts"


@dataclass(frozen=True)
class Template:
    system: str
    user: str
    source: str
    thinking: bool = False  # the judge thinks first; its verdict counts only after `</think>`

    def render(self, **values: str) -> list[dict[str, str]]:
        """Chat messages with every `{name}` replaced by values[name], verbatim."""
        pattern = re.compile("|".join(re.escape("{" + name + "}") for name in values))

        def fill(text: str) -> str:
            return pattern.sub(lambda m: values[m.group(0)[1:-1]], text)

        messages = []
        if self.system:
            messages.append({"role": "system", "content": fill(self.system)})
        messages.append({"role": "user", "content": fill(self.user)})
        return messages


def load_template(path: str | Path, fields: tuple[str, ...]) -> Template:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TemplateError(f"cannot read template {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise TemplateError(f"template {path} is not valid TOML: {exc}") from None
    system, user = data.get("system", ""), data.get("user")
    if not isinstance(user, str) or not isinstance(system, str):
        raise TemplateError(f"template {path} needs a string `user` (and optional string `system`)")
    thinking = data.get("thinking", False)
    if not isinstance(thinking, bool):
        raise TemplateError(f"template {path}: `thinking` must be true or false")
    missing = [name for name in fields if "{" + name + "}" not in system + user]
    if missing:
        raise TemplateError(f"template {path} lacks placeholder(s): {', '.join('{' + m + '}' for m in missing)}")
    return Template(system=system, user=user, source=str(path), thinking=thinking)


def judge_template(path: str | Path | None = None) -> Template:
    return load_template(path or prompts_dir() / "rrm.toml", JUDGE_FIELDS)


def policy_template(path: str | Path | None = None) -> Template:
    return load_template(path or prompts_dir() / "policy.toml", POLICY_FIELDS)
