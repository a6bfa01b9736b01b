"""The request -> JSON command workload: deterministic, answers in the declared format."""

from __future__ import annotations

import json

from workloads import commands, intents


def test_the_same_seed_gives_the_same_requests_and_another_seed_others() -> None:
    assert commands.generate(50, seed=1) == commands.generate(50, seed=1)
    assert commands.generate(50, seed=1) != commands.generate(50, seed=2)


def test_every_answer_is_a_valid_command_naming_only_its_intents_slots() -> None:
    for case in commands.generate(300, seed=0) + commands.generate(300, seed=0, shift=True):
        assert commands.check(case.answer) is None, case
        value = json.loads(case.answer)
        assert value["intent"] == case.intent
        assert set(value) - {"intent"} <= set(commands.FIELDS[case.intent])
        assert case.answer == commands.render(
            case.intent, {k: v for k, v in value.items() if k != "intent"}
        )


def test_slot_values_in_the_answer_come_from_the_request_unless_a_typo_moved_them() -> None:
    clean = commands.generate(200, seed=5)
    for case in clean:
        for key, value in json.loads(case.answer).items():
            if key != "intent":
                assert value in case.text, case


def test_shifted_requests_use_phrasings_and_values_the_clean_set_never_has() -> None:
    clean = {c.text for c in commands.generate(500, seed=0)}
    shifted = commands.generate(500, seed=0, shift=True)
    unseen = [c for c in shifted if c.text not in clean]
    assert len(unseen) > 0.5 * len(shifted)
    new_rooms = set(intents.SHIFTED_SLOTS["room"]) - set(intents.SLOTS["room"])
    assert any(json.loads(c.answer).get("room") in new_rooms for c in shifted)


def test_check_names_what_is_wrong_with_an_answer() -> None:
    assert commands.check("") == "empty answer"
    assert commands.check("lights on") == "not JSON"
    assert commands.check("[1]") == "not a JSON object"
    assert commands.check('{"intent": "dance"}') == "no known intent"
    assert commands.check('{"intent": "call", "room": "x"}') == "unknown slot 'room' for call"
    assert commands.check('{"intent": "alarm", "time": 6}') == "a slot value is not a string"
    assert commands.check(' {"intent": "alarm", "time": "6 am"} ') is None


def test_exact_match_ignores_formatting_and_key_order_only() -> None:
    answer = '{"intent": "alarm", "time": "6 am"}'
    assert commands.exact('{"time":"6 am","intent":"alarm"}', answer)
    assert not commands.exact('{"intent": "alarm", "time": "7 am"}', answer)
    assert not commands.exact("not json", answer)
    assert commands.score(['{"time":"6 am","intent":"alarm"}', "x"], [answer, answer]) == {
        "format_valid": 0.5,
        "exact_match": 0.5,
    }
