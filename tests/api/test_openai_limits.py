"""The OpenAI routes' bounds come from settings (env included) and may only be lowered below the schema's."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from ragsvc.api.openai_limits import OpenAILimits
from ragsvc.api.routes.openai_compat import get_openai_limits
from ragsvc.config import ModelApiSettings, Settings


def test_limits_are_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("RAGSVC_MODEL_API__MAX_TOKENS", "512")
    monkeypatch.setenv("RAGSVC_MODEL_API__MAX_N", "4")
    limits = OpenAILimits.from_settings(Settings().model_api)
    assert (limits.max_tokens, limits.max_n) == (512, 4)
    assert OpenAILimits.from_settings(ModelApiSettings()) == OpenAILimits()  # the same defaults in both places


@pytest.mark.parametrize("field", ["max_n", "max_text_chars", "max_logprobs"])
def test_a_bound_above_the_schemas_ceiling_is_refused_at_start(field):
    ceiling = getattr(OpenAILimits(), field)
    with pytest.raises(ValidationError, match=field):
        ModelApiSettings(**{field: ceiling + 1})


def test_an_app_hosting_the_routes_takes_its_settings_bounds_once():
    state = SimpleNamespace(settings=Settings(model_api=ModelApiSettings(max_tokens=7)))
    request = SimpleNamespace(app=SimpleNamespace(state=state))
    assert get_openai_limits(request).max_tokens == 7  # type: ignore[arg-type]
    assert state.openai_limits.max_tokens == 7
