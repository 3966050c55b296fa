from talesmith.runtime.engine.textstream import Emit, Rewind, Stopped, TextStream


def feed(stream, pieces):
    events = [stream.push(p) for p in pieces]
    return events


def test_multibyte_character_split_across_tokens_is_emitted_whole():
    data = "転生".encode()  # 6 bytes
    s = TextStream()
    events = feed(s, [data[:1], data[1:2], data[2:4], data[4:]])
    assert [e.text for e in events] == ["", "", "転", "生"]
    assert "\ufffd" not in s.text


def test_incomplete_character_at_the_end_is_dropped_not_replaced():
    s = TextStream()
    feed(s, [b"ok ", "生".encode()[:2]])
    final = s.finish()
    assert isinstance(final, Emit) and final.text == ""
    assert s.text == "ok "


def test_stop_string_across_tokens_is_held_back_and_cut():
    s = TextStream(stops=["\nYou:"])
    events = feed(s, [b"Hello", b" there.\n", b"You", b": next"])
    assert events[0] == Emit("Hello")
    assert events[1] == Emit(" there.")  # the newline could start the stop string
    assert events[2] == Emit("")
    assert events[3] == Stopped("")


def test_false_start_of_stop_string_is_released():
    s = TextStream(stops=["END"])
    assert feed(s, [b"The E", b"nd of it"]) == [Emit("The "), Emit("End of it")]


def test_banned_word_asks_to_rewind_to_the_token_it_began_in():
    s = TextStream(banned=["Damn"])
    events = feed(s, [b"Oh", b" Da", b"mn", b" it"])
    assert events[0] == Emit("Oh")
    assert events[1] == Emit("")  # " Da" could be the start of the banned word: held back whole
    assert events[2] == Emit("")  # "Damn" could still be "Damnation"
    assert events[3] == Rewind(1)
    s.rewind(1)
    assert s.text == "Oh"


def test_banned_word_is_case_insensitive_and_whole_words_only():
    s = TextStream(banned=["damn"])
    assert isinstance(s.push(b"DAMN!"), Rewind)
    s = TextStream(banned=["damn"])
    assert feed(s, [b"Damnation", b" here"]) == [Emit("Damnation"), Emit(" here")]
    s = TextStream(banned=["damn"])
    assert feed(s, [b"Dam", b"nation"]) == [Emit(""), Emit("Damnation")]


def test_banned_word_at_the_very_end_is_caught_by_finish():
    s = TextStream(banned=["Damn"])
    s.push(b"Oh ")
    s.push(b"Damn")
    assert s.finish() == Rewind(1)


def test_ban_before_a_stop_wins_and_stop_before_ban_ends():
    s = TextStream(stops=["."], banned=["Damn"])
    assert isinstance(s.push(b"Damn."), Rewind)
    s = TextStream(stops=["."], banned=["Damn"])
    assert s.push(b"Fine. Damn") == Stopped("Fine")


def test_confirmed_tokens_follow_emitted_text():
    s = TextStream(banned=["Damn"])
    feed(s, [b"Oh", b" Da"])
    assert s.confirmed_tokens() == 1
    s.push(b"rk")
    s.push(b" night")
    assert s.confirmed_tokens() == 4 and s.text == "Oh Dark night"


def test_invalid_bytes_are_replaced_but_do_not_stall():
    s = TextStream()
    assert s.push(b"\xff") == Emit("\ufffd")


def test_a_ban_right_after_invalid_bytes_rewinds_without_taking_back_their_replacement():
    s = TextStream(banned=["lira"])
    assert s.push(b"ab\xe2") == Emit("ab")  # a lead byte: undecided
    assert s.push(b"lira") == Emit("\ufffd")  # the next byte shows it invalid; "lira" may still be a word's start
    event = s.push(b" ")
    assert event == Rewind(1)
    s.rewind(event.token_index)
    assert s.text == "ab\ufffd"  # what was shown stays shown
    assert s.push(b"gold") == Emit("gold")
    assert s.finish() == Emit("")
    assert s.text == "ab\ufffdgold"
