"""The README documents every setting a user can change."""

from __future__ import annotations

import re
from pathlib import Path

from voice.config import Settings

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_every_setting_is_in_the_readme_and_every_documented_one_exists():
    settings = {f"PARLEY_{name.upper()}" for name in Settings.model_fields}
    missing = sorted(s for s in settings if f"`{s}`" not in README)
    assert not missing, f"README lacks {missing}"
    documented = set(re.findall(r"`(PARLEY_[A-Z_]+)`", README))
    unknown = sorted(d for d in documented if d not in settings)
    assert not unknown, f"README documents settings that don't exist: {unknown}"


def test_the_readme_states_each_default_the_code_has():
    defaults = Settings()
    rows = re.findall(r"^\| `(PARLEY_[A-Z_]+)` \| `([^`]*)` \|", README, re.M)
    assert len(rows) >= 20, "the settings table lost its defaults"
    for variable, documented in rows:
        actual = getattr(defaults, variable.removeprefix("PARLEY_").lower())
        if isinstance(actual, str | int | float) and not isinstance(actual, bool):
            assert str(actual) == documented, f"{variable}: README says {documented}, the code has {actual}"
