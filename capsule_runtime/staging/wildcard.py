"""Wildcard outputs: POSIX pattern matching (IEEE 1003.1-2017, 2.13) over container paths, and the
URL of each match (the output's `url` is a directory; the match's path below `path_prefix` is
appended to it).

Supported: `*`, `?`, bracket expressions (`[abc]`, `[a-z]`, `[!x]`/`[^x]`, `[[:digit:]]` and the
other character classes), backslash escapes. A wildcard never matches '/', and a leading '.' in a
name must be matched by a literal '.' (as in the shell: `*.txt` does not match `.hidden.txt`).
Matching is a pure function over `list_dir`/`exists` callables, so it is tested without a disk.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache

from capsule_runtime.staging.urls import child_url

MAGIC = frozenset("*?[")
CLASSES = {
    "alpha": "a-zA-Z",
    "digit": "0-9",
    "alnum": "a-zA-Z0-9",
    "upper": "A-Z",
    "lower": "a-z",
    "space": " \\t\\n\\r\\f\\v",
    "blank": " \\t",
    "xdigit": "0-9A-Fa-f",
    "punct": re.escape("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"),
    "cntrl": "\\x00-\\x1f\\x7f",
    "print": "\\x20-\\x7e",
    "graph": "\\x21-\\x7e",
}


def has_wildcard(path: str) -> bool:
    """True if `path` has a wildcard character (the validator's rule: `*`, `?` or `[`)."""
    return any(c in MAGIC for c in path)


def components(path: str) -> list[str]:
    return [p for p in path.split("/") if p and p != "."]


def join(base: str, name: str) -> str:
    return base.rstrip("/") + "/" + name


def literal_base(pattern: str) -> str:
    """The directory named by the components before the first one with a wildcard."""
    parts = []
    for part in components(pattern):
        if has_wildcard(part) or "\\" in part:
            break
        parts.append(part)
    return "/" + "/".join(parts)


def _bracket(part: str, start: int) -> tuple[str, int] | None:
    """The regex class for the bracket expression at part[start] == '[', and the index after it;
    None when the '[' has no closing ']' (then it is an ordinary character). Never matches '/'."""
    i = start + 1
    negate = i < len(part) and part[i] in "!^"
    if negate:
        i += 1
    items: list[str] = []
    first = True
    while i < len(part):
        c = part[i]
        if c == "]" and not first:
            body = "".join(items)
            if negate:
                return f"[^/{body}]", i + 1
            return (f"[{body}]" if body else "[^\\s\\S]"), i + 1
        first = False
        if c == "[" and part.startswith("[:", i):
            end = part.find(":]", i + 2)
            if end != -1:
                items.append(CLASSES.get(part[i + 2 : end], ""))
                i = end + 2
                continue
        if c == "\\" and i + 1 < len(part):
            i += 1
            c = part[i]
        if i + 2 < len(part) and part[i + 1] == "-" and part[i + 2] != "]":
            hi = part[i + 2]
            if ord(c) <= ord(hi):
                items.append(f"{re.escape(c)}-{re.escape(hi)}")
            i += 3
            continue
        items.append(re.escape(c))
        i += 1
    return None


@lru_cache(maxsize=1024)
def component_regex(part: str) -> re.Pattern[str]:
    """A compiled regex matching exactly the names the POSIX pattern `part` matches."""
    out: list[str] = []
    i = 0
    while i < len(part):
        c = part[i]
        if c == "\\" and i + 1 < len(part):
            out.append(re.escape(part[i + 1]))
            i += 2
        elif c == "*":
            if not out or out[-1] != "[^/]*":
                out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[" and (found := _bracket(part, i)) is not None:
            out.append(found[0])
            i = found[1]
        else:
            out.append(re.escape(c))
            i += 1
    return re.compile("(?s:" + "".join(out) + ")\\Z")


def match_name(name: str, part: str) -> bool:
    """Does the file name `name` match the pattern component `part`?"""
    if name.startswith(".") and not (part.startswith(".") or part.startswith("\\.")):
        return False
    return component_regex(part).match(name) is not None


def expand(
    pattern: str,
    list_dir: Callable[[str], list[str] | None],
    exists: Callable[[str], bool],
) -> list[str]:
    """The existing container paths matching `pattern`, sorted. `list_dir(path)` gives the names
    in a directory (None if it is not one); `exists(path)` says whether a path exists."""
    found = ["/"]
    for part in components(pattern):
        step: list[str] = []
        if not has_wildcard(part) and "\\" not in part:
            step = [join(base, part) for base in found]
        else:
            for base in found:
                names = list_dir(base) or []
                step.extend(join(base, n) for n in sorted(names) if match_name(n, part))
        found = step
    return sorted(p for p in found if exists(p))


def relative_to_prefix(path: str, prefix: str) -> str:
    """`path` without the leading components of `prefix` (validated: whole components)."""
    return "/".join(components(path)[len(components(prefix)) :])


def output_url(url: str, path: str, prefix: str) -> str:
    """Where the match `path` of a wildcard output goes: `url` + '/' + its path below `prefix`."""
    return child_url(url, relative_to_prefix(path, prefix))
