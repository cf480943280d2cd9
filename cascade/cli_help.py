"""Help text and argument checks of the ``cascade`` command line, read from each command's signature
and Google-style docstring.

python-fire dispatches the commands; its own help shows Python type annotations, cut-off
descriptions and an ``INFO: Showing help ...`` line, and it reads the arguments only when it calls
a command. This module writes help as argparse would (a usage line, the summary, the arguments and
the options with their defaults) and checks the command, the flags and the number of arguments
before anything is imported or read. It imports nothing beyond the standard library.
"""

from __future__ import annotations

import difflib
import inspect
import re
import shutil
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

__all__ = [
    "THREE_VALUE_FLAGS", "Docstring", "parse_docstring", "overview", "command_help", "usage", "check_command",
    "check_arguments", "is_number",
]

THREE_VALUE_FLAGS = ("--shape", "--spacing")
_LEFT = 24  # width of the column of argument names, as argparse's


@dataclass
class Docstring:
    """The parts of a Google-style docstring that help shows.

    Attributes:
        summary: the first line.
        description: the paragraphs between the summary and ``Args:``.
        args: argument name -> its description (one line, joined).
        epilog: the paragraphs after the ``Args:`` section.
    """

    summary: str = ""
    description: list[str] = field(default_factory=list)
    args: dict[str, str] = field(default_factory=dict)
    epilog: list[str] = field(default_factory=list)


def _plain(text: str) -> str:
    return text.replace("``", "")


def _paragraphs(lines: list[str]) -> list[str]:
    paragraphs, current = [], []
    for line in [*lines, ""]:
        if line.strip():
            current.append(line.strip())
        elif current:
            paragraphs.append(_plain(" ".join(current)))
            current = []
    return paragraphs


def parse_docstring(doc: str | None) -> Docstring:
    """Split a Google-style docstring into summary, description, ``Args:`` entries and epilog."""
    lines = inspect.cleandoc(doc or "").splitlines()
    if not lines:
        return Docstring()
    before, after, args, name = [], [], {}, None
    section = "before"
    for line in lines[1:]:
        if line.strip() == "Args:" and section == "before":
            section = "args"
        elif section == "args" and (line.startswith(" ") or not line.strip()):
            entry = re.fullmatch(r" {4}(\w+): ?(.*)", line)
            if entry:
                name = entry.group(1)
                args[name] = entry.group(2).strip()
            elif name and line.strip():
                args[name] += " " + line.strip()
        elif section == "args":
            section = "after"
            after.append(line)
        else:
            (before if section == "before" else after).append(line)
    args = {name: _plain(text) for name, text in args.items()}
    return Docstring(_plain(lines[0].strip()), _paragraphs(before), args, _paragraphs(after))


def _width() -> int:
    return max(60, min(shutil.get_terminal_size((100, 24)).columns, 100) - 2)


def _required(function: Callable) -> list[str]:
    return [p.name for p in inspect.signature(function).parameters.values() if p.default is inspect.Parameter.empty]


def _metavar(parameter: inspect.Parameter) -> str:
    if f"--{parameter.name}" in THREE_VALUE_FLAGS:
        return " Z Y X"
    if parameter.default is False:
        return ""
    if str(parameter.annotation).replace(" ", "") in ("bool|None", "bool"):
        return " true|false"
    return f" {parameter.name.upper()}"


def _entry(name: str, text: str, width: int) -> list[str]:
    indent = " " * _LEFT
    wrapped = textwrap.wrap(text, width - _LEFT) or [""]
    if len(name) + 2 <= _LEFT - 2:
        first = f"  {name}".ljust(_LEFT) + wrapped[0]
        return [first, *(indent + line for line in wrapped[1:])]
    return [f"  {name}", *(indent + line for line in wrapped)]


def usage(name: str, function: Callable) -> str:
    """``usage: cascade NAME ARG ... [options]``: the arguments a command cannot do without, in order."""
    required = " ".join(p.upper() for p in _required(function))
    return f"usage: cascade {name} {required} [options]".replace("  ", " ")


def _default_text(parameter: inspect.Parameter) -> str:
    value = parameter.default
    if value is None or value is False:
        return ""
    if isinstance(value, (tuple, list)):
        shown = " ".join(str(v) for v in value)
    else:
        shown = "true" if value is True else str(value)
    return f"(default: {shown})"


def command_help(name: str, function: Callable, width: int | None = None) -> str:
    """A command's help: usage, summary and description, arguments, options with defaults, epilog."""
    width = width or _width()
    doc = parse_docstring(function.__doc__)
    parameters = inspect.signature(function).parameters.values()
    fill = lambda text: textwrap.fill(text, width)  # noqa: E731
    lines = [usage(name, function), "", fill(doc.summary)]
    lines += [line for paragraph in doc.description for line in ("", fill(paragraph))]
    required = [p for p in parameters if p.default is inspect.Parameter.empty]
    if required:
        lines += ["", "arguments:"]
        for p in required:
            lines += _entry(p.name.upper(), doc.args.get(p.name, ""), width)
    lines += ["", "options:"]
    for p in parameters:
        if p.default is inspect.Parameter.empty:
            continue
        text = doc.args.get(p.name, "")
        default = _default_text(p)
        if default and "default" not in text:
            text = f"{text.rstrip('.')} {default}.".strip()
        lines += _entry(f"--{p.name}{_metavar(p)}", text, width)
    lines += _entry("-h, --help", "show this help and exit", width)
    lines += [line for paragraph in doc.epilog for line in ("", fill(paragraph))]
    if required:
        last = required[-1].name
        lines += ["", fill(f"An argument may also be given as a flag: --{last} {last.upper()}.")]
    return "\n".join(lines)


def overview(commands: Mapping[str, Callable], title: str, width: int | None = None) -> str:
    """``cascade --help``: usage, ``title`` and each command's summary line."""
    width = width or _width()
    lines = ["usage: cascade COMMAND [ARGUMENTS] [options]", "", textwrap.fill(title, width), "", "commands:"]
    left = max(len(name) for name in commands) + 4
    for name, function in commands.items():
        summary = parse_docstring(function.__doc__).summary
        wrapped = textwrap.wrap(summary, width - left) or [""]
        lines += [f"  {name}".ljust(left) + wrapped[0], *(" " * left + line for line in wrapped[1:])]
    lines += ["", "options:", "  -h, --help".ljust(left) + "show this help and exit"]
    lines += ["  --version".ljust(left) + "show the version and exit"]
    lines += ["", textwrap.fill("`cascade COMMAND --help` shows the arguments of a command.", width)]
    return "\n".join(lines)


def check_command(argv: list[str], commands: Mapping[str, Callable]) -> None:
    """Refuse an unknown command, naming the closest one.

    Raises:
        ValueError: ``argv[0]`` is not a command.
    """
    name = argv[0]
    if name in commands:
        return
    what = "option" if name.startswith("-") else "command"
    close = difflib.get_close_matches(name.lstrip("-"), list(commands), n=1, cutoff=0.6)
    if close:
        hint = f" (did you mean `cascade {close[0]}`?)"
    else:
        hint = f"; the commands are: {', '.join(commands)} (see cascade --help)"
    raise ValueError(f"unknown {what} {name!r}{hint}")


def is_number(token: str) -> bool:
    """Whether a command-line token reads as a number (``-3``, ``2.5``, ``1e3``)."""
    try:
        float(token)
    except ValueError:
        return False
    return True


def _is_flag(token: str) -> bool:
    """A flag as python-fire reads one: ``--name`` or ``-x``, not a negative number."""
    return token.startswith("--") or (re.match(r"^-[a-zA-Z]", token) is not None and not is_number(token))


def check_arguments(name: str, function: Callable, argv: list[str]) -> None:
    """Refuse a flag ``function`` does not take, a missing argument or one too many, as python-fire
    would bind them (``--flag value`` or ``--flag=value``; the others fill the parameters not given
    as flags, in order), before the command runs.

    Raises:
        ValueError: an unknown flag (naming the closest known one), a missing or an extra argument.
    """
    parameters = inspect.signature(function).parameters
    given, positional = set(), []
    i = 0
    while i < len(argv):
        token = argv[i]
        if token == "--":  # what follows is for python-fire itself
            break
        if _is_flag(token):
            key = token.lstrip("-").split("=", 1)[0].replace("-", "_")
            shortcuts = [p for p in parameters if len(key) == 1 and p.startswith(key)]
            key = shortcuts[0] if len(shortcuts) == 1 else key  # python-fire's -w for --workers
            if key not in parameters and not (key.startswith("no") and key[2:] in parameters):
                close = difflib.get_close_matches(key, parameters, n=1)
                known = ", ".join("--" + p for p in parameters)
                hint = f" (did you mean --{close[0]}?)" if close else f" (known: {known})"
                raise ValueError(f"cascade {name}: unknown flag --{key}{hint}")
            given.add(key[2:] if key not in parameters else key)
            if "=" not in token and i + 1 < len(argv) and not _is_flag(argv[i + 1]):
                i += 1
        else:
            positional.append(token)
        i += 1
    open_parameters = [p for p in parameters if p not in given]
    if len(positional) > len(open_parameters):
        extra = positional[len(open_parameters)]
        raise ValueError(f"cascade {name}: unexpected argument {extra!r} ({usage(name, function)})")
    missing = [p.upper() for p in open_parameters[len(positional):] if parameters[p].default is inspect.Parameter.empty]
    if missing:
        raise ValueError(f"cascade {name}: missing argument {', '.join(missing)} ({usage(name, function)})")
