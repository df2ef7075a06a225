"""Union fields' errors name what the caller meant to send (`validation_errors.relevant`), on the real request
schemas: the form the input came closest to, not pydantic's first form."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from ragsvc.api.openai_schemas import ChatCompletionRequest, CompletionRequest
from ragsvc.api.validation_errors import is_form, relevant


def _errors(model: type[BaseModel], body: dict[str, Any]) -> list[tuple[tuple[object, ...], str]]:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(body)
    return [(e["loc"], e["msg"]) for e in relevant(caught.value.errors())]


def _chat(**extra: object) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], **extra}


def test_a_list_too_long_is_reported_as_such_not_as_a_wrong_string():
    assert _errors(ChatCompletionRequest, _chat(stop=["x"] * 17)) == [
        (("stop",), "List should have at most 16 items after validation, not 17")]


@pytest.mark.parametrize(("prompt", "where", "says"), [
    ([-5], ("prompt", 0), "greater than or equal to 0"),  # token ids: the int form got furthest
    ([[1], [2, -3]], ("prompt", 1, 1), "greater than or equal to 0"),  # lists of token ids
    (["x"] * 17, ("prompt",), "at most 16 items"),
])
def test_the_form_that_got_past_its_type_checks_is_the_one_reported(prompt, where, says):
    [(loc, message)] = _errors(CompletionRequest, {"model": "m", "prompt": prompt})
    assert loc == where and says in message


def test_a_value_no_form_takes_lists_what_each_would_have_taken():
    assert _errors(CompletionRequest, {"model": "m", "prompt": 5}) == [
        (("prompt",), "Input should be a valid string or a valid list")]
    [(loc, message)] = _errors(ChatCompletionRequest, {"model": "m", "messages": [{"role": "user", "content": 5}]})
    assert loc == ("messages", 0, "content") and message == "Input should be a valid string or a valid list"
    [(loc, message)] = _errors(CompletionRequest, {"model": "m", "prompt": [None]})
    assert loc == ("prompt", 0) and "a valid string" in message and "a valid integer" in message


def test_errors_outside_unions_are_all_kept_in_order():
    errors = _errors(ChatCompletionRequest, _chat(n=99, max_tokens=0))
    assert [loc for loc, _ in errors] == [("n",), ("max_tokens",)]


def test_keys_and_fields_are_not_taken_for_forms():
    assert is_form("constrained-str") and is_form("list[constrained-int]") and is_form("ChatMessage")
    assert not any(is_form(s) for s in ("prompt", "my-key", "Author", 0, "x[0"))


def test_two_bad_keys_of_one_mapping_are_both_reported():
    class Filters(BaseModel):
        by_field: dict[str, int]

    errors = _errors(Filters, {"by_field": {"Author": "a", "my-key": "b"}})
    assert [loc for loc, _ in errors] == [("by_field", "Author"), ("by_field", "my-key")]


def test_a_model_form_is_known_when_another_librarys_model_shares_its_bases_name():
    """FastAPI's OpenAPI models include a `RequestBody`, as ragsvc's base of request bodies is named: the walk
    over model classes once skipped every class under whichever of the two it met second, so a union with
    HydeBody as a form was reported as `hyde.HydeBody.n` in some test orders."""
    from ragsvc.api.answer_schemas import HydeBody
    from ragsvc.api.request_body import RequestBody

    namesake = type("RequestBody", (BaseModel,), {})  # defined last, so the walk meets it first
    assert namesake.__name__ == RequestBody.__name__ and issubclass(HydeBody, RequestBody)
    assert is_form("HydeBody")
