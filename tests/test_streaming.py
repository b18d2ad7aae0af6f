from refusal_edge.streaming import TextAssembler


def test_multibyte_characters_split_across_tokens_come_out_whole():
    text = TextAssembler()
    data = "héllo 🙂".encode()
    out = [text.push(data[i:i + 1]) for i in range(len(data))]
    assert "".join(out) + text.finish() == "héllo 🙂"
    assert all("\ufffd" not in piece for piece in out)


def test_stop_string_split_over_pieces_is_never_emitted():
    text = TextAssembler(["STOP"])
    emitted = [text.push(p) for p in (b"abc S", b"TO", b"P tail")]
    assert "".join(emitted) == "abc " and text.stopped
    assert text.finish() == ""


def test_false_alarm_prefix_is_released():
    text = TextAssembler(["STOP"])
    assert text.push(b"ST") == ""
    assert text.push(b"ill") == "STill"
    assert text.finish() == "" and not text.stopped
