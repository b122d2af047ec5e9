"""MkDocs hook: configuration.md and cli.md take their tables from the code when the site is built.

configuration.md lists each variable's meaning between `<!-- settings -->` marks; the hook
replaces that list with one table per settings concern, whose variables, defaults and accepted
values come from the settings classes (worker/settings.py). cli.md gets the reference of every
`outbox` command from its argparse parser at `<!-- outbox-commands -->`. The build fails when the
meanings and the classes disagree (a variable without a meaning, a meaning without a variable),
or when the overview table of cli.md and the parser name different commands.
"""

from __future__ import annotations

import argparse
import functools
import re
from datetime import timedelta
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

SETTINGS_BLOCK = re.compile(r"<!-- settings -->\n(.*?)<!-- /settings -->\n", re.S)
MEANING = re.compile(r"^- `(?P<name>[A-Z0-9_]+)`(?: \(default: (?P<default>[^)]*)\))?: ", re.M)
COMMANDS_MARK = "<!-- outbox-commands -->"
OVERVIEW_ROW = re.compile(r"^\| (?:`|<code>)outbox (?P<name>[a-z-]+)", re.M)
# The composite classes and the processes that read them.
READERS = {
    "Settings": "the worker, beat and Flower",
    "OperatorSettings": "the `outbox` CLI and `outbox metrics`",
    "ReceiverSettings": "`outbox receiver`",
}


class DocsError(Exception):
    """A generated page cannot be built: the message names the variable or command and why."""


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    """MkDocs' event: fill the generated parts of the two pages, leave the others alone."""
    try:
        return render(page.file.src_uri, markdown)
    except DocsError as error:
        from mkdocs.exceptions import PluginError

        raise PluginError(f"{page.file.src_uri}: {error}") from None


def render(name: str, markdown: str) -> str:
    """The page ``name`` (a path under docs/) as MkDocs renders it."""
    if name == "configuration.md":
        return settings_page(markdown)
    if name == "cli.md":
        return cli_page(markdown)
    return markdown


# -- configuration.md ------------------------------------------------------------------------


def settings_page(markdown: str) -> str:
    """Replace the meanings list with a table per concern, checked against the classes."""
    found = SETTINGS_BLOCK.search(markdown)
    if found is None:
        raise DocsError("no <!-- settings --> ... <!-- /settings --> block")
    meanings = _meanings(found.group(1))
    concerns = _concerns()
    variables = {field.alias: field for concern in concerns for field in _fields(concern)}
    if unknown := sorted(set(meanings) - set(variables)):
        raise DocsError(f"a meaning for {', '.join(unknown)}, which no settings class reads")
    if missing := sorted(set(variables) - set(meanings)):
        raise DocsError(f"{', '.join(missing)}: read by the settings, without a meaning here")
    tables = "\n".join(_concern_table(concern, meanings) for concern in concerns)
    return markdown[: found.start()] + tables + markdown[found.end() :]


def _meanings(block: str) -> dict[str, tuple[str | None, str]]:
    """Each variable's (default as written, or None; meaning) from the list in the page."""
    starts = list(MEANING.finditer(block))
    meanings = {}
    for here, after in zip(starts, [*starts[1:], None], strict=True):
        text = block[here.end() : after.start() if after else len(block)]
        written = " ".join(here["default"].split()) if here["default"] else None
        meanings[here["name"]] = (written, " ".join(text.split()))
    return meanings


def _concerns() -> list[type[BaseModel]]:
    """The settings classes of one concern each, in the order the module defines them."""
    from worker import settings

    root = settings.DatabaseSettings.__bases__[0]
    classes = [value for value in vars(settings).values() if isinstance(value, type)]
    return [cls for cls in classes if cls.__bases__ == (root,)]


def _fields(concern: type[BaseModel]) -> list[FieldInfo]:
    return [field for field in concern.model_fields.values() if field.alias]


def _concern_table(concern: type[BaseModel], meanings: dict[str, tuple[str | None, str]]) -> str:
    title = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", concern.__name__.removesuffix("Settings"))
    readers = [text for name, text in READERS.items() if _reads(name, concern)]
    lines = [
        f"## {title.replace('Api', 'API')} settings",
        "",
        " ".join((concern.__doc__ or "").split()) + f" Read by {'; '.join(readers)}.",
        "",
        "| variable | meaning | default | accepted |",
        "|---|---|---|---|",
    ]
    for field in _fields(concern):
        written, meaning = meanings[str(field.alias)]
        default = _default(str(field.alias), field, written)
        lines.append(f"| `{field.alias}` | {meaning} | {default} | {_accepted(field)} |")
    return "\n".join(lines) + "\n"


def _reads(composite: str, concern: type[BaseModel]) -> bool:
    from worker import settings

    return issubclass(getattr(settings, composite), concern)


def _default(name: str, field: FieldInfo, written: str | None) -> str:
    """The class's default; a default in words only where the class has none (None)."""
    value = field.default
    if value is None:
        if written is None:
            raise DocsError(f"{name}: no default in the class: say what stands for it")
        return written
    if written is not None:
        raise DocsError(f"{name}: the class's default is {value!r}: do not write one")
    if isinstance(value, timedelta):
        return _seconds(value)
    if isinstance(value, Enum):
        return f"`{value.value}`"
    if isinstance(value, frozenset | set) and not value:
        return "none"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _number(value)
    return f"`{value}`"


def _seconds(value: timedelta) -> str:
    seconds = value.total_seconds()
    shown = _number(int(seconds) if seconds.is_integer() else seconds)
    for unit, size in (("day", 86_400), ("hour", 3_600)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f"{shown} ({count} {unit}{'s' if count > 1 else ''})"
    return shown


def _number(value: float) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2)):
        if isinstance(value, int) and value >= size and value % size == 0:
            return f"{value} ({value // size} {unit})"
    return str(value)


def _accepted(field: FieldInfo) -> str:
    """What the class accepts: the kind of value and its bounds."""
    annotation = field.annotation
    bounds = {
        name: getattr(item, name)
        for item in field.metadata
        for name in ("ge", "gt", "le")
        if getattr(item, name, None) is not None
    }
    if annotation is timedelta:
        kind = "seconds, > 0"
        if "le" in bounds:
            kind += f", at most {_seconds(bounds['le'])}"
        return kind
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return ", ".join(f"`{member.value}`" for member in annotation)
    text = str(annotation)
    if annotation is SecretStr or "SecretStr" in text:
        return "text, never logged"
    if "frozenset" in text:
        return "host names, comma-separated"
    if "int" in text or "float" in text:
        kind = "number" if "float" in text else "whole number"
        low = bounds.get("ge", bounds.get("gt"))
        return f"{kind}, {_number(low)}-{_number(bounds['le'])}" if "le" in bounds else kind
    if "Path" in text:
        return "a folder"
    return "text"


# -- cli.md ----------------------------------------------------------------------------------


def cli_page(markdown: str) -> str:
    """Put every command's usage and options at the mark, after checking the overview table."""
    if COMMANDS_MARK not in markdown:
        raise DocsError(f"no {COMMANDS_MARK} mark")
    from sandbox.cli import build_parser as sandbox_parser
    from worker.ops.cli import build_parser

    parser = build_parser()
    commands = _subcommands(parser)
    listed = set(OVERVIEW_ROW.findall(markdown))
    if unlisted := sorted(set(commands) - listed):
        raise DocsError(f"outbox {', '.join(unlisted)}: in the parser, not in the overview table")
    if unknown := sorted(listed - set(commands)):
        raise DocsError(f"outbox {', '.join(unknown)}: in the overview table, not in the parser")
    commands["sandbox"] = sandbox_parser("outbox sandbox")
    sections = [_command(parser, "outbox", top=True)]
    sections += [_command(sub, f"outbox {name}") for name, sub in commands.items()]
    return markdown.replace(COMMANDS_MARK, "\n".join(sections))


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices) if actions else {}


def _command(parser: argparse.ArgumentParser, title: str, top: bool = False) -> str:
    parser.formatter_class = functools.partial(argparse.HelpFormatter, width=96)
    summary = parser.description or _help_of(title)
    lines = [f"### `{title}`", "", summary or "", "", "```text", parser.format_usage().strip()]
    lines += ["```", ""]
    options = [action for action in parser._actions if _shown(action, top)]
    if options:
        lines += ["| argument | what | default |", "|---|---|---|"]
        lines += [_option_row(action) for action in options]
    return "\n".join(lines) + "\n"


def _shown(action: argparse.Action, top: bool) -> bool:
    hidden = isinstance(action, argparse._HelpAction | argparse._SubParsersAction)
    return not hidden and (top or action.dest != "database_url")


def _help_of(title: str) -> str | None:
    from worker.ops.cli import build_parser

    name = title.removeprefix("outbox ")
    actions = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    for choice in actions[0]._choices_actions:
        if choice.dest == name:
            return _sentence(choice.help)
    return None


def _option_row(action: argparse.Action) -> str:
    name = ", ".join(action.option_strings) or str(action.metavar or action.dest)
    if action.option_strings and action.nargs != 0:
        name += f" {action.metavar or action.dest.upper()}"
    if action.choices and action.option_strings:
        name = f"{', '.join(action.option_strings)} {{{','.join(map(str, action.choices))}}}"
    value = action.default
    shown = value is not None and value is not False and value != argparse.SUPPRESS
    shown = shown and action.nargs != 0 and not isinstance(value, list)
    default = f"`{value}`" if shown else ""
    what = _sentence(action.help).replace("|", "\\|")
    return f"| `{name}` | {what} | {default} |"


def _sentence(text: str | None) -> str:
    text = (text or "").strip()
    return text[:1].upper() + text[1:] + ("." if text and not text.endswith(".") else "")


def on_config(config: Any, **_: Any) -> Any:
    """Make the project importable when MkDocs runs from another directory."""
    import sys

    root = str(Path(__file__).resolve().parents[2])
    if root not in sys.path:
        sys.path.insert(0, root)
    return config
