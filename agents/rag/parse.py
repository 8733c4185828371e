"""Read a knowledge file (Markdown, plain text, HTML, PDF, FAQ) into blocks that carry where they
came from: the heading path above them, the kind of block, and the line it starts on.

Each format is first read into a flat run of raw pieces (headings, paragraphs, list items, table rows)
in reading order; one shared pass then turns those into `Block`s: it tracks the heading path, finds
FAQs (Q:/A: paragraphs, headings that ask a question), and gives list items their lead sentence.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

from pypdf import PageObject, PdfReader


class BlockKind:
    PARAGRAPH = "paragraph"  # prose: one or more sentences
    LIST_ITEM = "list_item"  # one bullet or numbered item; `lead` is the sentence that introduced the list
    TABLE_ROW = "table_row"  # one body row of a table; `header` names its columns, `cells` holds its values
    FAQ = "faq"  # a question and its answer; `question` holds the question, `text` the answer


@dataclass(frozen=True)
class Block:
    """One piece of a document, in reading order."""

    kind: str
    text: str  # the block's words, Markdown marks removed, lines joined
    headings: tuple[str, ...]  # the heading path above it, outermost first ("Opening hours", "Holidays")
    line: int  # 1-based line of the source file where it starts (for PDF: the page number)
    lead: str = ""  # LIST_ITEM: the sentence just before the list ("We accept:"), if any
    header: tuple[str, ...] = ()  # TABLE_ROW: the column names
    cells: tuple[str, ...] = ()  # TABLE_ROW: the row's values, one per column
    question: str = ""  # FAQ: the question


@dataclass
class Document:
    """A parsed file: its path relative to the knowledge folder, a title, and its blocks."""

    source: str
    title: str  # the first heading, or the file name made readable
    blocks: list[Block] = field(default_factory=list)


SUFFIXES = (".md", ".markdown", ".txt", ".html", ".htm", ".pdf")

# Plain text and PDF have no heading marks: a line alone in its paragraph, shorter than this and not
# ending like a sentence, is taken for a heading ("OPENING HOURS", "Holidays").
TITLE_MAX_CHARS = 60
# A list item indented at least this much more than the one above it is nested under it; a line
# indented this much after a blank line inside a list continues the item above.
NEST_INDENT = 2
# Tabs in indentation count as this many spaces (CommonMark's tab stop).
TAB_WIDTH = 4
# HTML elements whose text is not content a caller would ask about (menus, page chrome, code).
HTML_SKIP = frozenset({"script", "style", "nav", "header", "footer", "noscript", "template", "head", "svg"})
# HTML elements that end the running text: their text, and the text around them, are separate pieces.
HTML_BLOCKS = frozenset({"p", "div", "li", "dt", "dd", "td", "th", "tr", "table", "thead", "tbody", "tfoot"})
HTML_BLOCKS |= {"ul", "ol", "dl", "section", "article", "main", "aside", "blockquote", "pre", "body", "hr"}
HTML_BLOCKS |= {"figure", "figcaption", "address", "form", "fieldset", "caption", "h1", "h2", "h3", "h4"}
HTML_BLOCKS |= {"h5", "h6", "html"}


@dataclass
class _Raw:
    """A piece read from a file before the shared pass; `text` may still hold newlines."""

    kind: str  # "heading", "para", "code" (fenced: never a question or a lead), "item", "row" or "faq"
    text: str
    line: int
    level: int = 0  # heading: 1..6; item: nesting depth, 0 for a top-level item
    header: tuple[str, ...] = ()
    cells: tuple[str, ...] = ()
    question: str = ""


def parse_file(path: Path, knowledge_dir: Path) -> Document:
    """Read one knowledge file and split it into blocks, according to its type.

    Raises ValueError for a suffix not in SUFFIXES, and for a PDF that is encrypted or broken.
    """
    source = path.relative_to(knowledge_dir).as_posix()
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"{source}: can't read {suffix or 'extensionless'} files; use one of {SUFFIXES}")
    if suffix == ".pdf":
        raws = _pdf_raws(path, source)
    else:
        text = path.read_bytes().decode("utf-8", errors="replace").removeprefix("\ufeff")
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        if suffix in (".html", ".htm"):
            raws = _html_raws(text)
        elif suffix == ".txt":
            raws = _promote_titles(_line_raws(text.split("\n"), markdown=False))
        else:
            raws = _markdown_raws(text)
    title = next((_flat(r.text) for r in raws if r.kind == "heading" and _flat(r.text)), "")
    return Document(source=source, title=title or readable_name(path.stem), blocks=_assemble(raws))


def readable_name(stem: str) -> str:
    """A file name as words: "opening-hours" -> "Opening hours"."""
    words = re.sub(r"[-_\s]+", " ", stem).strip() or stem
    return words[:1].upper() + words[1:]


# --- Markdown and plain text: one line reader, with Markdown's marks switched on or off ---------------

_ATX = re.compile(r"^ {0,3}(#{1,6})(?:\s+(.*?))?(?:\s+#+)?\s*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)\s*$")
_BREAK = re.compile(r"^ {0,3}([-*_])(?:\s*\1){2,}\s*$")  # thematic break: ---, ***, * * *
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_MARKER = re.compile(r"^(\s*)(?:[-*+\u2022]|\d{1,3}[.)])(?:\s+(.*))?$")
_TABLE_SEPARATOR = re.compile(r"^\s*(?=.*\|)\|?\s*:?-+:?\s*(?:\|\s*:?-+:?\s*)*\|?\s*$")  # |---|:--:|
_REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*\S+")  # [id]: https://... (a link target, not text)
_QUOTE = re.compile(r"^\s*(?:>\s?)+")
_COMMENT = re.compile(r"<!--.*?-->", re.S)


def _markdown_raws(text: str) -> list[_Raw]:
    # Comments and front matter are blanked, not removed, so that line numbers still match the file.
    text = _COMMENT.sub(lambda m: "\n" * m.group().count("\n"), text)
    lines = text.split("\n")
    if lines[0].strip() == "---":
        end = next((i for i in range(1, len(lines)) if lines[i].strip() in ("---", "...")), 0)
        if end:
            lines[: end + 1] = [""] * (end + 1)
    raws = _line_raws(lines, markdown=True)
    for raw in raws:
        if raw.kind != "code":
            raw.text, raw.question = _unmark(raw.text), _unmark(raw.question)
            raw.header, raw.cells = tuple(map(_unmark, raw.header)), tuple(map(_unmark, raw.cells))
    return raws


def _line_raws(lines: list[str], markdown: bool, line_of: Callable[[int], int] = lambda n: n) -> list[_Raw]:
    """Paragraphs (split at blank lines) and list items; with `markdown`, also headings, code fences
    and pipe tables. `line_of` maps a 1-based line number to the one reported (PDF: the page)."""
    raws: list[_Raw] = []
    current: _Raw | None = None  # the paragraph or item whose lines are still coming
    indents: list[int] = []  # indentation of each open list level, outermost first
    fence, code, code_line = "", [], 0
    i = 0
    while i < len(lines):
        line = lines[i].expandtabs(TAB_WIDTH)
        number = line_of(i + 1)
        i += 1
        if fence:
            if line.strip().startswith(fence):
                raws.append(_Raw("code", "\n".join(code), code_line))
                fence = ""
            else:
                code.append(line)
            continue
        if markdown:
            line = _QUOTE.sub("", line)  # a quote's text counts as ordinary text
        stripped = line.strip()
        if markdown and (match := _FENCE.match(line)):
            current, indents = None, []
            fence, code, code_line = match.group(1), [], number
        elif not stripped:
            current = None
        elif markdown and (match := _SETEXT.match(line)) and current is not None and current.kind == "para":
            current.kind, current.level = "heading", 1 if match.group(1)[0] == "=" else 2
            current, indents = None, []
        elif markdown and (_BREAK.match(line) or _REFERENCE.match(line)):
            current = None
        elif markdown and (match := _ATX.match(line)):
            raws.append(_Raw("heading", match.group(2) or "", number, level=len(match.group(1))))
            current, indents = None, []
        elif markdown and "|" in line and i < len(lines) and _TABLE_SEPARATOR.match(lines[i]):
            header = _pipe_cells(line)
            rows = []
            i += 1  # past the separator
            while i < len(lines) and "|" in lines[i] and lines[i].strip():
                rows.append((line_of(i + 1), _pipe_cells(lines[i])))
                i += 1
            raws.extend(_table_raws(header, rows, number))
            current, indents = None, []
        elif match := _MARKER.match(line):
            indent = len(match.group(1))
            while indents and indent < indents[-1]:
                indents.pop()
            if not indents or indent >= indents[-1] + NEST_INDENT:
                indents.append(indent)
            current = _Raw("item", (match.group(2) or "").strip(), number, level=len(indents) - 1)
            raws.append(current)
        elif current is not None:
            current.text += "\n" + stripped  # a wrapped line of the same paragraph or item
        elif indents and raws[-1].kind == "item" and len(line) - len(line.lstrip()) >= NEST_INDENT:
            current = raws[-1]  # an item's second paragraph, indented under it
            current.text += "\n" + stripped
        else:
            indents = []
            current = _Raw("para", stripped, number)
            raws.append(current)
    if fence:  # an unclosed fence runs to the end of the file
        raws.append(_Raw("code", "\n".join(code), code_line))
    return raws


def _pipe_cells(line: str) -> list[str]:
    """The cells of a pipe table row; `\\|` is a literal bar inside a cell."""
    line = line.strip().removeprefix("|")
    if line.endswith("|") and not line.endswith("\\|"):
        line = line[:-1]
    return [cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", line)]


def _table_raws(header: list[str], rows: list[tuple[int, list[str]]], header_line: int) -> list[_Raw]:
    """One raw row per body row, its cells lined up with the header (missing cells are empty)."""
    if not rows:  # a header with no body: keep its words as a paragraph rather than lose them
        return [_Raw("para", "\n".join(header), header_line)]
    width = max(len(header), *(len(cells) for _, cells in rows))
    header_cells = tuple(header) + ("",) * (width - len(header))
    return [
        _Raw("row", "", line, header=header_cells, cells=tuple(cells) + ("",) * (width - len(cells)))
        for line, cells in rows
    ]


def _promote_titles(raws: list[_Raw]) -> list[_Raw]:
    """Plain text and PDF: a title-like line alone in its paragraph, followed by more text, becomes a
    heading (level 1 as the file's first line, else 2). Unless it is in capitals, it must be followed by
    something that is not title-like too, so a run of short lines ("Monday 9-5") stays text."""
    for i, raw in enumerate(raws[:-1]):
        if not _title_like(raw):
            continue
        if i == 0 or raw.text.isupper() or not _title_like(raws[i + 1]):
            raw.kind, raw.level = "heading", 1 if i == 0 else 2
    return raws


def _title_like(raw: _Raw) -> bool:
    text = raw.text
    letter = re.search(r"[^\W\d_]", text)  # the first letter: a title starts with a capital
    return (
        raw.kind == "para"
        and letter is not None  # a page number is not a title
        and letter.group().isupper()
        and "\n" not in text
        and len(text) < TITLE_MAX_CHARS
        and not text.endswith((".", ",", ";", ":"))
        and ": " not in text  # "Phone: 555 0100" is a fact, not a title
        and not _QUESTION.match(text)
    )


# Inline Markdown. Links and images keep their words; emphasis keeps its text; code spans are verbatim.
_LINK = re.compile(r"!?\[([^\]]*)\](?:\([^)]*\)|\[[^\]]*\])")  # [text](url), [text][ref], ![alt](src)
_AUTOLINK = re.compile(r"<(?:mailto:)?([^<>\s]+(?:@|://)[^<>\s]+)>")
_CODE_SPAN = re.compile(r"`+([^`]+?)`+")
_TAG = re.compile(r"</?[A-Za-z][^>]*>")
_STRONG = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1", re.S)
_EMPHASIS = re.compile(r"(?<![\w*\\])([*_])(?=\S)(.+?)(?<=\S)\1(?![\w*])", re.S)
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~", re.S)
_ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!|>~])")


def _unmark(text: str) -> str:
    text = _AUTOLINK.sub(r"\1", _LINK.sub(r"\1", text))
    pieces = _CODE_SPAN.split(text)  # even pieces are prose, odd ones code
    for n in range(0, len(pieces), 2):
        piece = _TAG.sub("", pieces[n])
        piece = _STRONG.sub(r"\2", piece)
        piece = _EMPHASIS.sub(r"\2", piece)
        piece = _STRIKE.sub(r"\1", piece)
        pieces[n] = html.unescape(_ESCAPE.sub(r"\1", piece))
    return "".join(pieces)


# --- HTML ------------------------------------------------------------------------------------------------

_HTML_CONTEXTS = ("h1", "h2", "h3", "h4", "h5", "h6", "li", "dt", "dd", "td", "th")


def _html_raws(text: str) -> list[_Raw]:
    reader = _HtmlReader()
    reader.feed(text)
    reader.close()
    reader.flush()
    return reader.raws


class _HtmlReader(HTMLParser):
    """Collects the text between block elements and files it by the element it sits in."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.raws: list[_Raw] = []
        self._open: list[tuple[str, int]] = []  # open block elements: (tag, line of the start tag)
        self._skip = 0  # how deep inside skipped elements (scripts, menus) we are
        self._text: list[str] = []
        self._text_line = 0  # line where the pending text starts, if no block start was seen since
        self._start_line = 0  # line of the block element started since the last flush
        self._lists = 0  # ul/ol depth
        self._rows: list[tuple[int, list[tuple[str, bool]]]] = []  # the table's rows: (line, [(cell, is_th)])

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in HTML_SKIP or self._skip:
            self._skip += tag in HTML_SKIP
            return
        if tag == "br":
            self._text.append(" ")
        if tag not in HTML_BLOCKS:
            return
        self.flush()
        line = self.getpos()[0]
        self._open.append((tag, line))
        self._start_line = line
        if tag in ("ul", "ol"):
            self._lists += 1
        elif tag == "table":
            self._rows = []
        elif tag == "tr":
            self._rows.append((line, []))
        elif tag in ("td", "th") and self._rows:
            self._rows[-1][1].append(("", tag == "th"))

    def handle_endtag(self, tag: str) -> None:
        if self._skip:
            self._skip -= tag in HTML_SKIP
            return
        if tag not in HTML_BLOCKS or tag not in (t for t, _ in self._open):
            return
        self.flush()
        while self._open.pop()[0] != tag:  # also closes elements left open inside it (<li> without </li>)
            pass
        if tag in ("ul", "ol"):
            self._lists -= 1
        elif tag == "table":
            self._end_table()

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        if data.strip() and not self._text_line:
            self._text_line = self.getpos()[0] + data[: len(data) - len(data.lstrip())].count("\n")
        self._text.append(data)

    def flush(self) -> None:
        """File the text gathered since the last block boundary under the element it is in."""
        text = _flat("".join(self._text))
        line = self._start_line or self._text_line or self.getpos()[0]
        self._text, self._text_line, self._start_line = [], 0, 0
        if not text:
            return
        context = next((t for t, _ in reversed(self._open) if t in _HTML_CONTEXTS), "p")
        if context in ("td", "th") and self._rows and self._rows[-1][1]:
            cell, is_th = self._rows[-1][1][-1]
            self._rows[-1][1][-1] = (_flat(f"{cell} {text}"), is_th)
        elif context.startswith("h"):
            self.raws.append(_Raw("heading", text, line, level=int(context[1])))
        elif context == "li":
            self.raws.append(_Raw("item", text, line, level=max(self._lists - 1, 0)))
        elif context == "dd" and self.raws and self.raws[-1].kind == "term":
            term = self.raws[-1]  # <dt> question, <dd> answer
            term.kind, term.question, term.text = "faq", term.text, text
        else:  # a <dt> is a "term" until its <dd> comes; a term left alone reads as a paragraph
            self.raws.append(_Raw("term" if context == "dt" else "para", text, line))

    def _end_table(self) -> None:
        rows = [(line, cells) for line, cells in self._rows if any(text for text, _ in cells)]
        if not rows:
            return
        # The header is the first row made only of <th> cells, else simply the first row.
        at = next((n for n, (_, cells) in enumerate(rows) if all(is_th for _, is_th in cells)), 0)
        header_line, header = rows.pop(at)
        body = [(line, [text for text, _ in cells]) for line, cells in rows]
        self.raws.extend(_table_raws([text for text, _ in header], body, header_line))


# --- PDF -------------------------------------------------------------------------------------------------


def _pdf_raws(path: Path, source: str) -> list[_Raw]:
    reader = None
    try:
        reader = PdfReader(path)
        if reader.is_encrypted:
            reader.decrypt("")  # many PDFs are locked only against editing, with an empty open password
        pages = [_page_text(page) for page in reader.pages]
    except Exception as err:  # pypdf raises many kinds of errors for damaged files
        problem = (
            "it is encrypted" if reader is not None and reader.is_encrypted else f"it is damaged ({err})"
        )
        raise ValueError(
            f"{source}: can't read this PDF, {problem}. Open it and export it again as a text PDF "
            "without a password, then replace the file."
        ) from err
    raws: list[_Raw] = []
    for number, text in enumerate(pages, start=1):
        raws += _line_raws(text.split("\n"), markdown=False, line_of=lambda _, page=number: page)
    return _promote_titles(raws)  # after joining the pages, so only page 1's first line is a title


def _page_text(page: PageObject) -> str:
    # Layout mode keeps the vertical gaps between paragraphs as blank lines, which plain mode drops.
    try:
        return page.extract_text(extraction_mode="layout")
    except Exception:
        return page.extract_text()


# --- the shared pass: heading paths, FAQs, list leads -------------------------------------------------------

_QUESTION = re.compile(r"(?:Q|Question)\s*:\s*", re.I)
_ANSWER = re.compile(r"(?:^|(?<=\n)|(?<=[?.!] ))(?:A|Answer)\s*:\s*", re.I)  # at a line or sentence start
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _assemble(raws: list[_Raw]) -> list[Block]:
    blocks: list[Block] = []
    path: list[tuple[int, str]] = []  # (level, text) of the headings above
    items: list[tuple[int, str]] = []  # (depth, text) of the list items above the next one
    lead = ""  # the sentence that introduced the current list
    i = 0
    while i < len(raws):
        raw, i = raws[i], i + 1
        headings = tuple(text for _, text in path)
        text = _flat(raw.text)
        if raw.kind == "heading":
            while path and path[-1][0] >= raw.level:
                path.pop()
            headings = tuple(t for _, t in path)
            if text:
                path.append((raw.level, text))
            if (
                text.endswith("?")
                and i < len(raws)
                and _is_prose(raws[i])
                and not _QUESTION.match(raws[i].text)
            ):
                answer, i = _answer(raws, i, [])
                if answer:
                    blocks.append(Block(BlockKind.FAQ, answer, headings, raw.line, question=text))
        elif raw.kind == "para" and (faq := _faq(raws, i)):
            question, answer, i = faq
            blocks.append(Block(BlockKind.FAQ, answer, headings, raw.line, question=question))
        elif raw.kind == "item" and text:
            before = raws[i - 2] if i >= 2 else None
            if before is None or before.kind != "item":  # a new list
                items, lead = [], _last_sentence(before.text) if before and before.kind == "para" else ""
            while items and items[-1][0] >= raw.level:
                items.pop()
            item_lead = _last_sentence(items[-1][1]) if items else lead  # nested: the item above
            items.append((raw.level, text))
            blocks.append(Block(BlockKind.LIST_ITEM, text, headings, raw.line, lead=item_lead))
        elif raw.kind == "row":
            header, cells = tuple(map(_flat, raw.header)), tuple(map(_flat, raw.cells))
            if row_text := _row_text(header, cells):
                blocks.append(
                    Block(BlockKind.TABLE_ROW, row_text, headings, raw.line, header=header, cells=cells)
                )
        elif raw.kind == "faq" and text:
            blocks.append(Block(BlockKind.FAQ, text, headings, raw.line, question=_flat(raw.question)))
        elif raw.kind in ("para", "code", "term") and text:
            blocks.append(Block(BlockKind.PARAGRAPH, text, headings, raw.line))
    return blocks


def _faq(raws: list[_Raw], i: int) -> tuple[str, str, int] | None:
    """For a "Q: ..." paragraph at raws[i - 1] answered by "A: ..." (in it or next): the question,
    the answer and where reading goes on; None if it is not a question and answer."""
    match = _QUESTION.match(raws[i - 1].text)
    if not match:
        return None
    rest = raws[i - 1].text[match.end() :]
    if answer := _ANSWER.search(rest):
        question, first = rest[: answer.start()], rest[answer.end() :]
    elif i < len(raws) and raws[i].kind == "para" and (answer := _ANSWER.match(raws[i].text)):
        question, first, i = rest, raws[i].text[answer.end() :], i + 1
    else:
        return None
    text, i = _answer(raws, i, [("para", first)])
    return (_flat(question), text, i) if text and _flat(question) else None


def _answer(raws: list[_Raw], i: int, parts: list[tuple[str, str]]) -> tuple[str, int]:
    """The answer that runs from raws[i] (after `parts`) to the next heading, table or question.
    List items in it are joined with "; " so the answer still reads as a sentence."""
    while i < len(raws) and _is_prose(raws[i]) and not _QUESTION.match(raws[i].text):
        parts.append((raws[i].kind, raws[i].text))
        i += 1
    text = ""
    for n, (kind, part) in enumerate(parts):
        separator = "; " if kind == "item" and n and parts[n - 1][0] == "item" else " "
        text = f"{text}{separator}{_flat(part)}" if text else _flat(part)
    return text, i


def _is_prose(raw: _Raw) -> bool:
    return raw.kind in ("para", "code", "item")


def _row_text(header: tuple[str, ...], cells: tuple[str, ...]) -> str:
    """ "Saturday: Opens 9:00, Closes 13:00": the first cell, then "column value" for the other cells."""
    pairs = [f"{name} {value}".strip() for name, value in zip(header[1:], cells[1:], strict=True) if value]
    first = cells[0] if cells else ""
    return f"{first}: {', '.join(pairs)}" if first and pairs else first or ", ".join(pairs)


def _last_sentence(text: str) -> str:
    sentences = _SENTENCE_END.split(_flat(text))
    return sentences[-1] if sentences else ""


def _flat(text: str) -> str:
    """Whitespace, newlines included, collapsed to single spaces."""
    return " ".join(text.split())
