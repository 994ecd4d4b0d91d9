import json

import pytest

from mam2_server.prompts import Point, Prompt, PromptError, load_prompts, save_prompts


def test_json_round_trip(tmp_path):
    prompts = [Prompt(frame=1001, box=(1, 2, 30, 40), points=(Point(5, 6, 1), Point(7, 8, 0))),
               Prompt(frame=1010, points=((3, 4, 1),))]
    path = tmp_path / "p.json"
    save_prompts(prompts, path)
    loaded = load_prompts(path)
    assert all(a.same_as(b) for a, b in zip(prompts, loaded))
    assert json.loads(path.read_text())[0]["points"] == [[5.0, 6.0, 1], [7.0, 8.0, 0]]


@pytest.mark.parametrize("prompt, message", [
    (Prompt(frame=1, box=(10, 10, 10, 20)), "empty box"),
    (Prompt(frame=1, box=(200, 10, 300, 20)), "outside"),
    (Prompt(frame=1, points=((64, 10, 1),)), "outside"),
    (Prompt(frame=1, points=((-1, 10, 1),)), "outside"),
    (Prompt(frame=1, points=((5, 10, 0), (6, 12, 0))), "only background points"),  # nothing says where it is
])
def test_validate_rejects_prompts_that_do_not_fit(prompt, message):
    with pytest.raises(PromptError, match=message):
        prompt.validate(64, 48)


def test_box_partly_off_frame_is_clipped():
    prompt = Prompt(frame=1, box=(-10, -5, 30.5, 100))
    prompt.validate(64, 48)
    assert prompt.clipped_box(64, 48) == (0, 0, 31, 48)


@pytest.mark.parametrize("obj, message", [
    ({"box": [1, 2, 3, 4]}, "'frame'"),
    ({"frame": 1}, "needs a box"),
    ({"frame": 1, "box": [1, 2, 3]}, "four finite"),
    ({"frame": 1, "box": [1, 2, 3, float("nan")]}, "four finite"),
    ({"frame": 1, "points": [[1, 2, 7]]}, "label"),
    ({"frame": 1, "points": [["a", 2]]}, "bad prompt"),
    ({"frame": 1, "box": [0, 0, 5, 5], "colour": 3}, "unknown prompt keys"),
])
def test_bad_json_prompts(obj, message):
    with pytest.raises(PromptError, match=message):
        Prompt.from_json(obj)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(PromptError, match="not found"):
        load_prompts(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(PromptError, match="not valid JSON"):
        load_prompts(tmp_path / "bad.json")
