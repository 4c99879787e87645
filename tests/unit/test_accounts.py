"""Several accounts from LIMECHAT_ACCOUNTS_FILE: read, checked, errors naming the file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from producer.errors import ConfigError
from worker.settings import OperatorSettings, Settings

SECRET = "tok-NEVER-SHOW-9f3a"

TWO = f"""\
default_account = "brand-a"

[[accounts]]
id = "brand-a"
token = "{SECRET}"

[[accounts]]
id = "brand-b"
token_env = "BRAND_B_TOKEN"
rate_limit = "100/s"
burst = 20
"""


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "accounts.toml"
    path.write_text(text)
    return str(path)


def settings_for(path: str, **env: str) -> Settings:
    return Settings.from_env({"LIMECHAT_ACCOUNTS_FILE": path, **env})


def test_two_accounts_with_inline_and_env_tokens_and_their_own_rates(tmp_path: Path) -> None:
    path = write(tmp_path, TWO)
    found = settings_for(path, BRAND_B_TOKEN="tok-b", LIMECHAT_RATE_LIMIT="5/s").account_set()
    assert found.ids == ["brand-a", "brand-b"]
    a, b = found.by_id["brand-a"], found.by_id["brand-b"]
    assert (a.token, b.token) == (SECRET, "tok-b")
    assert (a.rate_limit, a.burst) == ("5/s", 5)  # the variables' values are the defaults
    assert (b.rate_limit, b.burst) == ("100/s", 20)
    assert found.resolve(None) is a and found.resolve("brand-b") is b
    assert found.resolve("brand-c") is None
    assert "brand-c" in found.unknown("brand-c") and path in found.unknown("brand-c")


def test_ten_accounts(tmp_path: Path) -> None:
    text = "".join(f'[[accounts]]\nid = "acct-{n}"\ntoken = "tok-{n}"\n\n' for n in range(10))
    found = settings_for(write(tmp_path, text)).account_set()
    assert len(found.ids) == 10
    assert found.resolve("acct-7") is not None and found.resolve("acct-7").token == "tok-7"
    assert found.resolve(None) is None  # several accounts and no default_account
    assert "default_account" in found.unknown(None)


def test_one_account_in_a_file_is_the_default(tmp_path: Path) -> None:
    found = settings_for(write(tmp_path, '[[accounts]]\nid = "x"\ntoken = "t"\n')).account_set()
    assert found.resolve(None) is found.by_id["x"]


def test_the_single_account_variables_mean_what_they_did() -> None:
    env = {"LIMECHAT_ACCESS_TOKEN": "t", "LIMECHAT_ACCOUNT_ID": "acct"}
    env["LIMECHAT_RATE_LIMIT"] = "3/s"
    found = Settings.from_env(env).account_set()
    assert found.ids == ["acct"] and found.resolve(None) is found.resolve("acct")
    assert (found.by_id["acct"].token, found.by_id["acct"].rate_limit) == ("t", "3/s")


def test_the_file_and_the_single_account_variables_together_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, TWO)
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"LIMECHAT_ACCOUNTS_FILE": path, "LIMECHAT_ACCOUNT_ID": "a"})
    assert "LIMECHAT_ACCOUNTS_FILE" in str(err.value) and "LIMECHAT_ACCOUNT_ID" in str(err.value)
    with pytest.raises(ConfigError, match="LIMECHAT_ACCOUNTS_FILE and LIMECHAT_ACCESS_TOKEN"):
        OperatorSettings.from_env({"LIMECHAT_ACCOUNTS_FILE": path, "LIMECHAT_ACCESS_TOKEN": "t"})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # a syntax error: tomllib's line and column
        ('[[accounts]]\nid = "a"\ntoken = "t\n', "not valid TOML: .*line 3"),
        # a duplicate id: the line of its second table, and of the first
        (
            '[[accounts]]\nid = "a"\ntoken = "t"\n\n[[accounts]]\nid = "a"\ntoken = "u"\n',
            r"line 5: duplicate account id 'a' \(first at line 1\)",
        ),
        # a missing token
        ('[[accounts]]\nid = "a"\n\n[[accounts]]\nid = "b"\n', "line 1: account 'a' has no token"),
        # a token_env naming a variable that is not set
        (
            '[[accounts]]\nid = "a"\ntoken_env = "UNSET_TOKEN_VAR"\n',
            "line 1: account 'a': token_env names UNSET_TOKEN_VAR, which is not set",
        ),
        ('[[accounts]]\ntoken = "t"\n', "line 1: missing id"),
        ('[[accounts]]\nid = "a"\ntoken = "t"\nrate_limit = "fast"\n', "line 1: rate_limit"),
        ('[[accounts]]\nid = "a"\ntoken = "t"\nburst = 0\n', "line 1: burst=0"),
        ('[[accounts]]\nid = "a"\ntoken = "t"\ncolour = "red"\n', "unknown key.*colour"),
        ('default_account = "z"\n[[accounts]]\nid = "a"\ntoken = "t"\n', "default_account 'z'"),
        ("", "no accounts"),
    ],
)
def test_a_bad_file_is_refused_naming_the_file_the_line_and_what(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=expected) as err:
        settings_for(path)
    assert str(err.value).startswith(path)


def test_a_file_that_cannot_be_read_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"LIMECHAT_ACCOUNTS_FILE=.*cannot be read"):
        settings_for(str(tmp_path / "absent.toml"))


def test_tokens_never_show_in_reprs_or_errors(tmp_path: Path) -> None:
    settings = settings_for(write(tmp_path, TWO), BRAND_B_TOKEN=SECRET)
    assert SECRET not in repr(settings) and SECRET not in repr(settings.account_set())
    assert SECRET not in repr(settings.account_set().by_id["brand-a"])
    # an error about an account that has a token does not quote it
    bad = TWO + f'\n[[accounts]]\nid = "brand-a"\ntoken = "{SECRET}"\n'
    with pytest.raises(ConfigError) as err:
        settings_for(write(tmp_path, bad), BRAND_B_TOKEN="x")
    assert SECRET not in str(err.value)
    broken = f'[[accounts]]\nid = "a"\ntoken = "{SECRET}\n'  # (an unterminated token)
    with pytest.raises(ConfigError) as err:
        settings_for(write(tmp_path, broken))
    assert SECRET not in str(err.value)


def test_operators_read_the_ids_and_rates_without_the_tokens(tmp_path: Path) -> None:
    found = OperatorSettings.from_env({"LIMECHAT_ACCOUNTS_FILE": write(tmp_path, TWO)})
    assert found.account_ids == ["brand-a", "brand-b"]
    rate = found.rate_of("brand-b")
    assert rate is not None and rate.per_second == 100
    # ping checks every account's configuration, tokens included
    with pytest.raises(ConfigError, match="BRAND_B_TOKEN"):
        Settings.from_env({"LIMECHAT_ACCOUNTS_FILE": write(tmp_path, TWO)})


@pytest.mark.parametrize(
    ("line", "named"),
    [
        (f'token = "{SECRET}\\r\\nX-Evil: 1"', "token must be visible ASCII"),
        (f'token = "{SECRET} x"', "token must be visible ASCII"),
        (f'token = "{SECRET}\\u00e9"', "token must be visible ASCII"),
    ],
)
def test_a_token_that_cannot_be_a_header_is_refused_without_showing_it(
    tmp_path: Path, line: str, named: str
) -> None:
    # (http.client would refuse it at every request, quoting it into the DLQ and the logs)
    path = write(tmp_path, f'[[accounts]]\nid = "brand-a"\n{line}\n')
    with pytest.raises(ConfigError) as refused:
        settings_for(path)
    assert named in str(refused.value) and "line" in str(refused.value)
    assert SECRET not in str(refused.value)


def test_an_id_or_a_single_account_variable_that_cannot_be_a_header_is_refused(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, f'[[accounts]]\nid = "brand\\na"\ntoken = "{SECRET}"\n')
    with pytest.raises(ConfigError, match="id must be visible ASCII"):
        settings_for(path)
    env = {"LIMECHAT_ACCESS_TOKEN": f"{SECRET}\r\n", "LIMECHAT_ACCOUNT_ID": "acct"}
    env["LIMECHAT_ACCESS_TOKEN"] = f"{SECRET}\rX: y"
    with pytest.raises(ConfigError, match="LIMECHAT_ACCESS_TOKEN must be visible ASCII") as bad:
        Settings.from_env(env)
    assert SECRET not in str(bad.value)
    with pytest.raises(ConfigError, match="LIMECHAT_ACCOUNT_ID must be visible ASCII"):
        Settings.from_env({"LIMECHAT_ACCESS_TOKEN": "t", "LIMECHAT_ACCOUNT_ID": "a\x00b"})


def test_a_file_nested_too_deeply_is_refused_not_raised(tmp_path: Path) -> None:
    # (tomllib recurses: a RecursionError's traceback would carry the file's text, tokens too)
    text = f'[[accounts]]\nid = "a"\ntoken = "{SECRET}"\nx = ' + "[" * 100_000 + "\n"
    with pytest.raises(ConfigError, match="nested too deeply") as refused:
        settings_for(write(tmp_path, text))
    assert SECRET not in str(refused.value) and refused.value.__suppress_context__


def test_a_token_file_is_read_and_its_problems_are_named_without_the_token(
    tmp_path: Path,
) -> None:
    secret_file = tmp_path / "brand-a.token"
    secret_file.write_text(f"{SECRET}\n")  # (as mounted secrets are: a trailing newline)
    text = f'[[accounts]]\nid = "a"\ntoken_file = "{secret_file}"\n'
    assert settings_for(write(tmp_path, text)).account_set().by_id["a"].token == SECRET
    # Operator tools (no tokens needed) do not read it: they may not be allowed to
    environ = {"LIMECHAT_ACCOUNTS_FILE": write(tmp_path, text)}
    ops = Settings.from_env(environ, need_credentials=False)
    assert ops.account_set().ids == ["a"]

    cases = {
        f'token_file = "{tmp_path / "absent"}"': r"line 1: account 'a': token_file .*absent.* "
        "cannot be read: No such file",
        f'token_file = "{tmp_path / "empty"}"': "token_file .* holds no token",
        'token_file = ""': "token_file must be a file's path",
        f'token = "{SECRET}"\ntoken_file = "{secret_file}"': "sets token and token_file: set one",
    }
    (tmp_path / "empty").write_text("\n")
    for keys, expected in cases.items():
        with pytest.raises(ConfigError, match=expected) as err:
            settings_for(write(tmp_path, f'[[accounts]]\nid = "a"\n{keys}\n'))
        assert SECRET not in str(err.value)
