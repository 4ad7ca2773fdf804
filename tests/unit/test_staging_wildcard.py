"""Wildcard outputs: POSIX pattern components, expansion over a tree, and path_prefix → URL."""

from __future__ import annotations

import fnmatch
import posixpath

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capsule_runtime.staging.wildcard import (
    component_regex,
    expand,
    has_wildcard,
    literal_base,
    match_name,
    output_url,
    relative_to_prefix,
)


@pytest.mark.parametrize(
    ("pattern", "name", "matches"),
    [
        ("*.csv", "a.csv", True),
        ("*.csv", "a.csv.gz", False),
        ("*.csv", ".hidden.csv", False),  # a leading '.' must be matched literally
        (".*.csv", ".hidden.csv", True),
        ("?.txt", "a.txt", True),
        ("?.txt", "ab.txt", False),
        ("?.txt", ".txt", False),
        ("x[0-9].txt", "x7.txt", True),
        ("x[0-9].txt", "xa.txt", False),
        ("x[!0-9].txt", "xa.txt", True),
        ("x[^0-9].txt", "x1.txt", False),
        ("x[]a].txt", "x].txt", True),
        ("x[!]].txt", "x].txt", False),
        ("[[:digit:]][[:alpha:]]", "1a", True),
        ("[[:digit:]][[:alpha:]]", "a1", False),
        ("[[:upper:]]*", "Readme", True),
        (r"a\*b", "a*b", True),
        (r"a\*b", "axb", False),
        ("a[b", "a[b", True),  # an unclosed bracket is an ordinary character
        ("a.b", "aXb", False),  # '.' is not a regex wildcard
        ("(x)+", "(x)+", True),
        ("*", "anything at all", True),
        ("**", "x", True),
    ],
)
def test_component_matching(pattern: str, name: str, matches: bool) -> None:
    assert match_name(name, pattern) is matches


def test_literal_base_and_has_wildcard() -> None:
    assert literal_base("/work/*.csv") == "/work"
    assert literal_base("/work/out/*/x?.txt") == "/work/out"
    assert literal_base("/*.txt") == "/"
    assert has_wildcard("/a/[x]") and not has_wildcard("/a/b")


def test_nextflow_output_url() -> None:
    url = "file:///home/u/proj/work/3a/7f2c"
    assert output_url(url, "/work/res/a.csv", "/work") == f"{url}/res/a.csv"
    assert output_url("s3://b/run/", "/work/a b.csv", "/work/") == "s3://b/run/a b.csv"
    assert output_url("/out", "/work/x", "/work") == "/out/x"
    assert output_url("https://h/up?sig=1", "/w/a b", "/w") == "https://h/up/a%20b?sig=1"


# -- expansion over a tree -------------------------------------------------------------------


def fake_fs(files: set[str]) -> tuple[dict[str, set[str]], set[str]]:
    dirs: dict[str, set[str]] = {"/": set()}
    present = {"/"}
    for f in files:
        present.add(f)
        parent, name = posixpath.split(f)
        child = f
        while True:
            dirs.setdefault(parent, set()).add(name)
            present.add(parent)
            if parent == "/":
                break
            child = parent
            parent, name = posixpath.split(child)
    return dirs, present


def run_expand(pattern: str, files: set[str]) -> list[str]:
    dirs, present = fake_fs(files)
    return expand(pattern, lambda p: sorted(dirs[p]) if p in dirs else None, present.__contains__)


def test_expand_examples() -> None:
    files = {"/work/a.csv", "/work/b.csv", "/work/.h.csv", "/work/sub/c.csv", "/work/x.txt"}
    assert run_expand("/work/*.csv", files) == ["/work/a.csv", "/work/b.csv"]
    assert run_expand("/work/*/*.csv", files) == ["/work/sub/c.csv"]
    assert run_expand("/work/*", files) == [
        "/work/a.csv",
        "/work/b.csv",
        "/work/sub",
        "/work/x.txt",
    ]
    assert run_expand("/nope/*.csv", files) == []
    assert run_expand("/work/sub/c.csv", files) == ["/work/sub/c.csv"]


NAME = st.text(alphabet="abc.", min_size=1, max_size=4).filter(lambda n: n not in (".", ".."))
FILES = st.sets(
    st.lists(NAME, min_size=1, max_size=3).map(lambda p: "/r/" + "/".join(p)), max_size=25
)
PART = st.text(alphabet="abc.*?", min_size=1, max_size=4).filter(lambda n: n not in (".", ".."))
PATTERN = st.lists(PART, min_size=1, max_size=3).map(lambda p: "/r/" + "/".join(p))


def reference(pattern: str, files: set[str]) -> list[str]:
    """Every path (file or directory) whose components match the pattern's, by fnmatch."""
    _, present = fake_fs(files)
    parts = pattern.strip("/").split("/")
    out = []
    for path in present:
        names = path.strip("/").split("/")
        if len(names) == len(parts) and all(
            fnmatch.fnmatchcase(n, p) and not (n.startswith(".") and not p.startswith("."))
            for n, p in zip(names, parts, strict=True)
        ):
            out.append(path)
    return sorted(out)


@settings(max_examples=50, deadline=None)
@given(FILES, PATTERN)
def test_expand_agrees_with_fnmatch(files: set[str], pattern: str) -> None:
    assert run_expand(pattern, files) == reference(pattern, files)


@settings(max_examples=50, deadline=None)
@given(st.lists(NAME, min_size=1, max_size=3), st.lists(NAME, min_size=1, max_size=3))
def test_prefix_is_removed_and_the_rest_appended(prefix: list[str], rest: list[str]) -> None:
    path_prefix = "/" + "/".join(prefix)
    path = path_prefix + "/" + "/".join(rest)
    assert relative_to_prefix(path, path_prefix) == "/".join(rest)
    assert relative_to_prefix(path, path_prefix + "/") == "/".join(rest)
    assert output_url("s3://bucket/dir", path, path_prefix) == "s3://bucket/dir/" + "/".join(rest)
    assert output_url("/host/dir/", path, path_prefix) == "/host/dir/" + "/".join(rest)


@settings(max_examples=50, deadline=None)
@given(st.text(alphabet="ab*?[]!^-\\", min_size=1, max_size=6), NAME)
def test_component_regex_never_fails_and_never_matches_a_slash(pattern: str, name: str) -> None:
    regex = component_regex(pattern)
    assert regex.match(name + "/" + name) is None or "/" in pattern
