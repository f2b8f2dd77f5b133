"""Document sync: incremental edits land where LSP positions say, whatever the text holds."""

from hypothesis import given, settings, strategies as st

from mercury_lsp.context import units_len
from mercury_lsp.documents import Documents, apply_change

TEXT = st.text(alphabet=st.sampled_from(list("ab \t\n\r\x0c\x1c\x85\u2028éß中😀")), max_size=40)


def lsp_position(text: str, offset: int, encoding: str) -> tuple[int, int]:
    """Position of a string offset, counting only LSP line breaks (\\n, \\r\\n, \\r)."""
    before = text[:offset]
    line, start = 0, 0
    i = 0
    while i < len(before):
        if before[i] == "\r" and text[i + 1 : i + 2] == "\n":
            if i + 1 < len(before):
                line, start = line + 1, i + 2
            i += 2
            continue
        if before[i] in "\r\n":
            line, start = line + 1, i + 1
        i += 1
    return line, units_len(text[start:offset], encoding)


def splits_crlf(text: str, offset: int) -> bool:
    return 0 < offset < len(text) and text[offset - 1] == "\r" and text[offset] == "\n"


@settings(max_examples=300)
@given(TEXT, st.data(), TEXT, st.sampled_from(["utf-16", "utf-8", "utf-32"]))
def test_incremental_edit_matches_a_splice(text, data, insert, encoding):
    a = data.draw(st.integers(0, len(text)))
    b = data.draw(st.integers(a, len(text)))
    if splits_crlf(text, a) or splits_crlf(text, b):
        return  # no LSP position lies between \r and \n
    got = apply_change(text, lsp_position(text, a, encoding), lsp_position(text, b, encoding), insert, encoding)
    assert got == text[:a] + insert + text[b:]


def test_form_feed_and_line_separator_do_not_shift_edits():
    text = "a = 1\x0c\nb = 2\u2028c\nd = 4\n"
    # LSP line 2 is "d = 4" (\x0c and \u2028 are not line breaks).
    assert apply_change(text, (2, 0), (2, 1), "D") == "a = 1\x0c\nb = 2\u2028c\nD = 4\n"


def test_positions_past_the_end_clamp():
    assert apply_change("abc\n", (0, 99), (0, 99), "!") == "abc!\n"
    assert apply_change("abc\n", (9, 0), (9, 0), "!") == "abc\n!"
    assert apply_change("abc", None, None, "whole") == "whole"


def test_documents_open_change_close():
    docs = Documents()

    class Change:
        def __init__(self, text, rng=None):
            self.text, self.range = text, rng

    class Pos:
        def __init__(self, line, character):
            self.line, self.character = line, character

    class Range:
        def __init__(self, start, end):
            self.start, self.end = start, end

    docs.did_open("u", "x = 1\n", "python", 1)
    assert docs.did_change("u", [Change("2", Range(Pos(0, 4), Pos(0, 5))), Change("y", Range(Pos(0, 0), Pos(0, 1)))], 2, "utf-16")
    assert docs.get("u").text == "y = 2\n" and docs.get("u").version == 2
    assert docs.did_change("u", [Change("new\n")], 3, "utf-16") and docs.get("u").text == "new\n"
    assert not docs.did_change("other", [Change("z")], 1, "utf-16")
    docs.did_close("u")
    assert docs.get("u") is None


@settings(max_examples=300)
@given(TEXT, st.data(), st.integers(8, 64), st.sampled_from(["utf-16", "utf-8"]))
def test_a_window_of_lines_gives_the_context_of_the_whole_document(text, data, budget, encoding):
    from dataclasses import replace

    from mercury_lsp.context import build_context, reach
    from mercury_lsp.documents import new_document

    doc = new_document("u", text)
    assert doc.text == text and doc.size == len(text)
    line = data.draw(st.integers(0, len(doc.lines)))
    character = data.draw(st.integers(0, 12))
    whole = build_context(text, line, character, "python", budget, encoding)
    where = doc.window(line, *reach(budget))
    part = where and build_context(where[0], line, character, "python", budget, encoding, first_line=where[1])
    assert (whole is None) == (part is None)
    if whole is not None:
        assert replace(part, offset=0) == replace(whole, offset=0)


def test_document_size_follows_its_edits():
    from mercury_lsp.documents import new_document

    doc = new_document("u", "a\r\nbb\rc\n")
    doc.replace((1, 1), (2, 1), "XY\nZ")
    doc.replace((0, 1), (0, 1), "\r")
    assert doc.text == "a\r\r\nbXY\nZ\n" and doc.size == len(doc.text)
    assert doc.lines == ["a\r", "\r\n", "bXY\n", "Z\n", ""]
