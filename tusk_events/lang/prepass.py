"""Line-oriented passes that run before the grammar, keeping every line and column in place.

``cut_blocks`` cuts out multi-line triple-quoted values (their lines become blank);
``indented_blocks`` reads YAML-style nesting as ``{ }`` blocks and ``[ ]`` arrays.
"""

from __future__ import annotations

import re

from tusk_events.lang.values import CLOSERS, fail

# A delimiter at the end of a line (trailing blanks allowed): a candidate opener.
_DELIM_AT_EOL = re.compile(r"""(?:'''|\"\"\")(?=[ \t]*$)""", re.MULTILINE)
# What may precede an opening delimiter on its line: anything but a comment, with
# quoted strings skipped whole, ending in the key's ':' or '='.
_OPENER_PREFIX = re.compile(r"""(?:[^#"'\n]|"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')*?[:=][ \t]*""")


def cut_blocks(text: str, path: str | None) -> tuple[str, dict[int, str]]:
    """Replace each multi-line ''' / \"\"\" value by blank lines; return the content by line.

    The opening line is left alone (lark lexes its delimiter as BLOCK and the
    transformer looks the content up by that line), so positions do not move.
    """
    blocks: dict[int, str] = {}
    pieces: list[str] = []
    done = 0  # text[:done] has been copied to pieces
    line, counted = 1, 0  # line number at offset `counted`
    for m in _DELIM_AT_EOL.finditer(text):
        start = m.start()
        if start < done:
            continue  # inside a block already cut out
        line_start = text.rfind("\n", 0, start) + 1
        if not _OPENER_PREFIX.fullmatch(text, line_start, start):
            continue
        line += text.count("\n", counted, start)
        counted = start
        delim = m.group()
        body_start = text.index("\n", start) + 1
        close = CLOSERS[delim].search(text, body_start)
        if close is None:
            fail(
                f"unterminated {delim}-string opened here",
                text, path, line, start - line_start + 1,
            )
        close_start = close.start()
        blocks[line] = text[body_start : close_start - 1] if close_start > body_start else ""
        end = close.end()  # at the closing line's '\n' (or the end of the text)
        pieces.append(text[done:body_start])
        pieces.append("\n" * text.count("\n", body_start, end))
        done = end
    if not blocks:
        return text, blocks
    pieces.append(text[done:])
    return "".join(pieces), blocks

# `key:` alone on its line, then a deeper-indented line: YAML-style nesting.
YAML_OPENER = re.compile(r"^[ \t]*[\w-]+[ \t]*:[ \t]*(?:#[^\n]*)?\n[ \t]+[^\s#]", re.MULTILINE)
_YAML_KEY = re.compile(r"[ \t]*([\w-]+[ \t]*):[ \t]*(?:#.*)?")
_YAML_ITEM = re.compile(r"[ \t]*-(?=[ \t]|$)")
# A line up to its comment (quoted strings skipped whole).
_BEFORE_COMMENT = re.compile(r"""(?:[^#"'\n]|"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|["'])*""")


def indented_blocks(text: str) -> str:
    """Read YAML-style nesting: ``key:`` over deeper-indented lines is a ``key { }`` block,
    or an array when those lines are ``- item``s.

    The text is edited in place of characters, so every line and column stays where it
    was: the ``:`` becomes ``{`` (or ``:[``), an item's ``-`` becomes a blank, and the
    closers go at the end of the block's last line, before any comment.
    """
    lines = text.split("\n")

    def indent(s: str) -> int:
        return len(s) - len(s.lstrip(" \t"))

    content = [i for i, s in enumerate(lines) if s.strip() and not s.lstrip().startswith("#")]
    stack: list[tuple[int, str]] = []  # (indent of the opening key, closer)
    closers: dict[int, str] = {}
    last = -1
    for n, i in enumerate(content):
        line = lines[i]
        depth = indent(line)
        while stack and depth <= stack[-1][0]:
            closers[last] = closers.get(last, "") + stack.pop()[1]
        if stack and stack[-1][1] == "]":
            item = _YAML_ITEM.match(line)
            if item is not None:
                line = lines[i] = line[: item.end() - 1] + " " + line[item.end():]
        key = _YAML_KEY.fullmatch(line)
        if key is not None and n + 1 < len(content) and indent(lines[content[n + 1]]) > depth:
            at = key.end(1)
            if _YAML_ITEM.match(lines[content[n + 1]]):
                lines[i] = line[:at] + ":[" + line[at + 1:]
                stack.append((depth, "]"))
            else:
                lines[i] = line[:at] + "{" + line[at + 1:]
                stack.append((depth, "}"))
        last = i
    while stack:
        closers[last] = closers.get(last, "") + stack.pop()[1]
    for i, closer in closers.items():
        line = lines[i]
        m = _BEFORE_COMMENT.match(line)
        cut = len(line.rstrip(" \t")) if m is None else len(line[: m.end()].rstrip(" \t"))
        lines[i] = line[:cut] + closer + line[cut:]
    return "\n".join(lines)


# A /* ... */ comment that starts its line (the guides' multi-line comment).
_BLOCK_COMMENT = re.compile(r"^[ \t]*/\*.*?\*/", re.MULTILINE | re.DOTALL)


def blank_block_comments(text: str) -> str:
    """Blank out ``/* ... */`` comments that start a line, keeping their line breaks."""
    return _BLOCK_COMMENT.sub(lambda m: re.sub(r"[^\n]", " ", m.group()), text)
