"""Context extraction: LSP UTF-16 positions, windowing, single- vs multi-line mode."""

from hypothesis import given, strategies as st

from mercury_lsp.context import build_context, locate, utf16_len, utf16_to_index, window


def ctx_at(text, line, character, budget=6000, language="python"):
    return build_context(text, line, character, language, budget)


def test_ascii_position_splits_prefix_and_suffix():
    ctx = ctx_at("def f(x):\n    return x\n", 1, 11)
    assert ctx.prefix == "def f(x):\n    return "
    assert ctx.suffix == "x\n"
    assert ctx.line_prefix == "    return " and ctx.line_suffix == "x"
    assert ctx.language == "python"


def test_accented_characters_count_one_utf16_unit():
    text = "s = 'café'  # été\nx"
    ctx = ctx_at(text, 0, 9)  # after "café"
    assert ctx.line_prefix == "s = 'café"
    assert ctx.suffix.startswith("'  # été")


def test_cjk_characters_count_one_utf16_unit():
    ctx = ctx_at("名前 = '値'\n", 0, 2)
    assert ctx.line_prefix == "名前"
    assert ctx.line_suffix == " = '値'"


def test_emoji_counts_two_utf16_units():
    text = "s = '😀😀x'\n"
    ctx = ctx_at(text, 0, 5 + 2)  # after the first emoji
    assert ctx.line_prefix == "s = '😀"
    ctx = ctx_at(text, 0, 5 + 4)
    assert ctx.line_prefix == "s = '😀😀"
    assert ctx.character == 9


def test_column_inside_a_surrogate_pair_falls_back_to_the_character_start():
    assert utf16_to_index("a😀b", 2) == 1
    assert utf16_to_index("a😀b", 3) == 2


def test_column_past_end_of_line_clamps_to_the_line_end():
    ctx = ctx_at("abc\ndef\n", 0, 99)
    assert ctx.line_prefix == "abc" and ctx.line_suffix == ""
    assert ctx.character == 3


def test_line_past_the_end_gives_no_context():
    assert ctx_at("abc\n", 5, 0) is None
    assert ctx_at("abc", 1, 0) is None
    assert ctx_at("abc\n", 1, 0) is not None  # the empty last line exists
    assert ctx_at("abc", -1, 0) is None


def test_crlf_and_cr_line_breaks():
    ctx = ctx_at("a = 1\r\nb = 2\rc = 3\n", 2, 2)
    assert ctx.line_prefix == "c " and ctx.line_suffix == "= 3"
    ctx = ctx_at("a = 1\r\nb = 2\n", 0, 5)
    assert ctx.line_suffix == ""


def test_unicode_line_separators_are_not_lsp_line_breaks():
    # str.splitlines() would split at \u2028 and \x0c; LSP does not.
    ctx = ctx_at("a\u2028b = 1\nc", 1, 1)
    assert ctx.line_prefix == "c"


def test_mid_line_cursor_asks_for_a_single_line():
    assert ctx_at("x = foo(bar)\n", 0, 8).single_line is True
    assert ctx_at("x = foo(bar)\n", 0, 12).single_line is False  # end of line
    assert ctx_at("\n\n", 1, 0).single_line is False  # empty line
    assert ctx_at("print()\n", 0, 6).single_line is False  # only closing characters after the cursor
    assert ctx_at("    return x\n", 0, 0).single_line is False  # in the indentation: lines go above
    assert ctx_at("    return x\n", 0, 4).single_line is False


def test_window_keeps_the_nearest_text_and_whole_lines():
    lines = [f"line_{i} = {i}\n" for i in range(1000)]
    text = "".join(lines)
    cursor_line = 500
    ctx = ctx_at(text, cursor_line, 0, budget=400)
    assert len(ctx.prefix) + len(ctx.suffix) <= 400
    assert ctx.prefix.endswith(lines[cursor_line - 1])
    assert ctx.prefix.startswith("line_")  # cut at a line start
    assert ctx.suffix.startswith(lines[cursor_line])
    assert ctx.suffix.endswith("\n")
    assert len(ctx.prefix) > 2 * len(ctx.suffix)


def test_window_lends_unused_budget_to_the_other_side():
    prefix, suffix = window("p" * 50, "s\n" * 500, 400)
    assert prefix == "p" * 50 and len(suffix) > 300
    prefix, suffix = window("p\n" * 500, "s", 400)
    assert suffix == "s" and len(prefix) > 300


def test_enormous_single_line_is_windowed():
    text = "x" * 2_000_000 + "\n"
    ctx = ctx_at(text, 0, 1_000_000, budget=1000)
    assert len(ctx.prefix) + len(ctx.suffix) <= 1000
    assert ctx.single_line


def test_binary_content_gives_no_context():
    assert ctx_at("abc\x00\x01\x02def\n", 0, 3) is None


@given(st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=60), st.data())
def test_any_position_inside_the_text_round_trips(text, data):
    text = text.replace("\r", "")
    lines = text.split("\n")
    line = data.draw(st.integers(0, len(lines) - 1))
    chars = data.draw(st.integers(0, len(lines[line])))
    column = utf16_len(lines[line][:chars])
    where = locate(text, line, column)
    assert where is not None
    offset = where[2]
    assert offset == sum(len(l) + 1 for l in lines[:line]) + chars


def test_utf8_and_utf32_position_encodings():
    text = "s = 'é😀' + x\n"
    # after the emoji: é is 2 bytes, 😀 is 4 bytes in UTF-8; both are one UTF-32 unit
    ctx8 = build_context(text, 0, 5 + 2 + 4, "python", 6000, "utf-8")
    ctx32 = build_context(text, 0, 5 + 1 + 1, "python", 6000, "utf-32")
    for ctx in (ctx8, ctx32):
        assert ctx.line_prefix == "s = 'é😀"
    assert ctx8.character == 11 and ctx32.character == 7
    # inside a multi-byte character: back to its start
    assert build_context(text, 0, 6, "python", 6000, "utf-8").line_prefix == "s = '"
