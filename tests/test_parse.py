"""What the knowledge-file parsers hand to ingest: blocks in reading order, each with its kind, its
clean one-line text, the heading path above it and the line (PDF: page) it starts on."""

from __future__ import annotations

from pathlib import Path

import pytest
from pypdf import PdfWriter

from agents.rag.parse import Block, BlockKind, Document, parse_file


def parse(tmp_path: Path, name: str, content: str | bytes) -> Document:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    return parse_file(path, tmp_path)


def pdf_bytes(*pages: list[str]) -> bytes:
    """A minimal real PDF: one Helvetica line of text per entry, 24 points apart, on each page."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    kids = []
    for lines in pages:
        escaped = [line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") for line in lines]
        shows = "\n".join(f"({line}) Tj 0 -24 Td" for line in escaped)
        stream = f"BT /F1 12 Tf 72 720 Td\n{shows}\nET".encode("latin-1")
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
        content_id = len(objects)
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >>"
            b" /Contents %d 0 R >>" % content_id
        )
        kids.append(b"%d 0 R" % len(objects))
    objects[1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (b" ".join(kids), len(kids))
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref_at = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref_at)
    return bytes(out)


def summary(blocks: list[Block]) -> list[tuple[str, str, tuple[str, ...], int]]:
    return [(b.kind, b.text, b.headings, b.line) for b in blocks]


# --- Markdown ----------------------------------------------------------------------------------------


def test_markdown_blocks_carry_their_heading_path_and_start_line(tmp_path):
    doc = parse(
        tmp_path,
        "hours.md",
        "# Opening hours\n\nWe open daily.\n\n## Holidays\n\nClosed on New Year's Day.\n\n"
        "### Christmas\n\nWe close at 2 pm.\n\n## Weekdays\n\nNine to five.\n",
    )
    assert doc.title == "Opening hours"
    assert doc.source == "hours.md"
    assert summary(doc.blocks) == [
        ("paragraph", "We open daily.", ("Opening hours",), 3),
        ("paragraph", "Closed on New Year's Day.", ("Opening hours", "Holidays"), 7),
        ("paragraph", "We close at 2 pm.", ("Opening hours", "Holidays", "Christmas"), 11),
        ("paragraph", "Nine to five.", ("Opening hours", "Weekdays"), 15),
    ]


def test_markdown_code_fence_is_one_paragraph_and_its_hashes_are_not_headings(tmp_path):
    doc = parse(tmp_path, "a.md", "# Setup\n\n```\n# not a heading\nrun_it()\n```\n\nAfter.\n")
    assert summary(doc.blocks) == [
        ("paragraph", "# not a heading run_it()", ("Setup",), 3),
        ("paragraph", "After.", ("Setup",), 8),
    ]


def test_setext_headings_and_front_matter(tmp_path):
    doc = parse(tmp_path, "a.md", "---\ntitle: x\n---\nRentals\n=======\n\nPrices\n------\n\nBy the day.\n")
    assert doc.title == "Rentals"
    assert summary(doc.blocks) == [("paragraph", "By the day.", ("Rentals", "Prices"), 10)]


def test_markdown_marks_are_removed_and_hard_wrapped_lines_joined(tmp_path):
    doc = parse(
        tmp_path,
        "a.md",
        "## The *best* `bike_shop`\n\nWe fix **all** bikes, _fast_, see\n[our site](https://x.example) or\n"
        "<https://y.example>. Use `snake_case` &amp; 2 * 3.\n",
    )
    [block] = doc.blocks
    assert block.headings == ("The best bike_shop",)
    assert block.text == "We fix all bikes, fast, see our site or https://y.example. Use snake_case & 2 * 3."
    assert block.line == 3


def test_list_items_carry_the_sentence_that_introduced_the_list(tmp_path):
    doc = parse(
        tmp_path,
        "pay.md",
        "# Payment\n\nWe like easy payment. We accept:\n- cash\n- cards, wrapped\n  onto two lines\n"
        "  - debit cards\n* Apple Pay\n\n## Steps\n\n1. Book online\n2) Bring the bike\n",
    )
    items = [b for b in doc.blocks if b.kind == BlockKind.LIST_ITEM]
    assert [(b.text, b.lead, b.line) for b in items] == [
        ("cash", "We accept:", 4),
        ("cards, wrapped onto two lines", "We accept:", 5),
        ("debit cards", "cards, wrapped onto two lines", 7),  # a nested item is introduced by its parent
        ("Apple Pay", "We accept:", 8),
        ("Book online", "", 12),  # right after a heading: nothing introduced it
        ("Bring the bike", "", 13),
    ]
    assert doc.blocks[0] == Block(BlockKind.PARAGRAPH, "We like easy payment. We accept:", ("Payment",), 3)


def test_table_body_rows_become_readable_rows_with_header_and_cells(tmp_path):
    doc = parse(
        tmp_path,
        "t.md",
        "# Hours\n\n| Day | Opens | Closes |\n|-----|:-----:|---:|\n| **Saturday** | 9:00 | 13:00 |\n"
        "| Sunday | | |\n",
    )
    assert doc.blocks == [
        Block(
            BlockKind.TABLE_ROW,
            "Saturday: Opens 9:00, Closes 13:00",
            ("Hours",),
            5,
            header=("Day", "Opens", "Closes"),
            cells=("Saturday", "9:00", "13:00"),
        ),
        Block(
            BlockKind.TABLE_ROW,
            "Sunday",
            ("Hours",),
            6,
            header=("Day", "Opens", "Closes"),
            cells=("Sunday", "", ""),
        ),
    ]


def test_q_and_a_paragraphs_become_faq_blocks(tmp_path):
    doc = parse(
        tmp_path,
        "faq.md",
        "# FAQ\n\n**Q:** Do you rent bikes?\n**A:** Yes, by the day.\n\nWeekly too.\n\n"
        "Q: Is there a deposit?\n\nA: Yes, $200.\n\nQuestion: Parking? Answer: Behind the shop.\n",
    )
    assert [(b.kind, b.question, b.text, b.headings, b.line) for b in doc.blocks] == [
        ("faq", "Do you rent bikes?", "Yes, by the day. Weekly too.", ("FAQ",), 3),
        ("faq", "Is there a deposit?", "Yes, $200.", ("FAQ",), 8),
        ("faq", "Parking?", "Behind the shop.", ("FAQ",), 12),
    ]


def test_question_without_answer_stays_a_paragraph(tmp_path):
    doc = parse(tmp_path, "a.md", "Q: Anything else?\n\nCall us.\n")
    assert [b.kind for b in doc.blocks] == ["paragraph", "paragraph"]


def test_a_heading_that_asks_a_question_is_faq_under_the_enclosing_headings(tmp_path):
    doc = parse(
        tmp_path,
        "faq.md",
        "# Rentals\n\n## Do you rent e-bikes?\n\nYes, for $45 a day.\n\nBook ahead in summer.\n\n## Prices\n\nCheap.\n",
    )
    assert summary(doc.blocks) == [
        ("faq", "Yes, for $45 a day. Book ahead in summer.", ("Rentals",), 3),
        ("paragraph", "Cheap.", ("Rentals", "Prices"), 11),
    ]
    assert doc.blocks[0].question == "Do you rent e-bikes?"


def test_title_falls_back_to_the_file_name_and_source_is_relative_posix(tmp_path):
    doc = parse(tmp_path, "shop/opening-hours.md", "Just text.\n")
    assert (doc.title, doc.source) == ("Opening hours", "shop/opening-hours.md")


def test_bom_and_bad_bytes_are_tolerated_and_blocks_are_never_empty_or_multiline(tmp_path):
    doc = parse(tmp_path, "a.md", b"\xef\xbb\xbf# Hours\r\n\r\nOpen \xff daily\r\nfrom 9.\r\n\r\n\r\n-  \r\n")
    assert doc.title == "Hours"
    assert summary(doc.blocks) == [("paragraph", "Open \ufffd daily from 9.", ("Hours",), 3)]


# --- plain text --------------------------------------------------------------------------------------


def test_plain_text_title_like_lines_become_headings(tmp_path):
    doc = parse(
        tmp_path,
        "shop.txt",
        "BIKE SHOP\n\nOPENING HOURS\n\nMonday 9-5\n\nTuesday 9-5\n\nPayment\n\nWe accept:\n- cash\n• cards\n\n"
        "Q: Gift cards?\nA: Yes.\n",
    )
    assert doc.title == "BIKE SHOP"
    assert [(b.kind, b.text, b.headings, b.lead, b.question) for b in doc.blocks] == [
        # short lines in a row stay text: only the capitals line above them is a heading
        ("paragraph", "Monday 9-5", ("BIKE SHOP", "OPENING HOURS"), "", ""),
        ("paragraph", "Tuesday 9-5", ("BIKE SHOP", "OPENING HOURS"), "", ""),
        ("paragraph", "We accept:", ("BIKE SHOP", "Payment"), "", ""),
        ("list_item", "cash", ("BIKE SHOP", "Payment"), "We accept:", ""),
        ("list_item", "cards", ("BIKE SHOP", "Payment"), "We accept:", ""),
        ("faq", "Yes.", ("BIKE SHOP", "Payment"), "", "Gift cards?"),
    ]
    assert [b.line for b in doc.blocks] == [5, 7, 11, 12, 13, 15]


def test_plain_text_sentences_are_never_headings(tmp_path):
    doc = parse(tmp_path, "a.txt", "We are open daily.\n\nPhone: 555 0100\n\nCall us.\n")
    assert [(b.text, b.headings) for b in doc.blocks] == [
        ("We are open daily.", ()),
        ("Phone: 555 0100", ()),
        ("Call us.", ()),
    ]
    assert doc.title == "A"


# --- HTML --------------------------------------------------------------------------------------------

PAGE = """<!doctype html>
<html><head><title>Ignored</title><style>p { color: red }</style></head>
<body>
<nav><a href="/">Home</a></nav>
<h1>Contact &amp; hours</h1>
<p>We are   open
  <b>every</b> day.</p>
<h2>Payment</h2>
<p>We accept:</p>
<ul>
  <li>Cash</li>
  <li>Cards</li>
</ul>
<table>
  <tr><th>Day</th><th>Opens</th></tr>
  <tr><td>Saturday</td><td>9:00</td></tr>
</table>
<dl><dt>Parking?</dt><dd>Behind the shop.</dd></dl>
<script>document.write("<p>not content</p>")</script>
<footer>Copyright</footer>
</body></html>
"""


def test_html_page_gives_headings_paragraphs_items_rows_and_faq(tmp_path):
    doc = parse(tmp_path, "contact.html", PAGE)
    assert doc.title == "Contact & hours"
    top, pay = ("Contact & hours",), ("Contact & hours", "Payment")
    assert summary(doc.blocks) == [
        ("paragraph", "We are open every day.", top, 6),
        ("paragraph", "We accept:", pay, 9),
        ("list_item", "Cash", pay, 11),
        ("list_item", "Cards", pay, 12),
        ("table_row", "Saturday: Opens 9:00", pay, 16),
        ("faq", "Behind the shop.", pay, 18),
    ]
    assert doc.blocks[2].lead == "We accept:"
    assert (doc.blocks[4].header, doc.blocks[4].cells) == (("Day", "Opens"), ("Saturday", "9:00"))
    assert doc.blocks[5].question == "Parking?"


# --- PDF ---------------------------------------------------------------------------------------------


def test_pdf_text_comes_out_in_blocks_with_the_page_as_line(tmp_path):
    pdf = pdf_bytes(
        [
            "Opening hours",
            "",
            "We are open from 9 am to 5 pm.",
            "",
            "Q: Do you rent bikes?",
            "A: Yes, daily.",
        ],
        ["Holidays", "", "Closed on public holidays."],
    )
    doc = parse(tmp_path, "hours.pdf", pdf)
    assert doc.title == "Opening hours"
    assert [(b.kind, b.question, b.text, b.headings, b.line) for b in doc.blocks] == [
        ("paragraph", "", "We are open from 9 am to 5 pm.", ("Opening hours",), 1),
        ("faq", "Do you rent bikes?", "Yes, daily.", ("Opening hours",), 1),
        ("paragraph", "", "Closed on public holidays.", ("Opening hours", "Holidays"), 2),
    ]


def test_pdf_without_text_gives_no_blocks(tmp_path):
    doc = parse(tmp_path, "scan.pdf", pdf_bytes([]))
    assert doc.blocks == []
    assert doc.title == "Scan"


def test_encrypted_pdf_raises_value_error_that_says_what_to_do(tmp_path):
    writer = PdfWriter()
    writer.add_blank_page(612, 792)
    writer.encrypt("secret", algorithm="RC4-128")
    with open(tmp_path / "locked.pdf", "wb") as out:
        writer.write(out)
    with pytest.raises(ValueError, match=r"locked\.pdf.*encrypted.*export it again as a text PDF"):
        parse_file(tmp_path / "locked.pdf", tmp_path)


def test_broken_pdf_raises_value_error_that_says_what_to_do(tmp_path):
    with pytest.raises(ValueError, match=r"broken\.pdf.*export it again as a text PDF"):
        parse(tmp_path, "broken.pdf", b"%PDF-1.4\nthis is not really a PDF\n")


def test_unknown_suffix_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"notes\.docx"):
        parse(tmp_path, "notes.docx", b"PK")
