import re
from pathlib import Path

import pytest

from lab import config, resources
from lab.errors import UserError

REPO = Path(__file__).resolve().parents[2]


def test_checked_in_config_loads_with_documented_defaults() -> None:
    cfg = config.load(REPO / "lab.yaml")
    assert cfg.arches == "all"
    assert cfg.accel == "auto"
    assert cfg.recipe == REPO / "images" / "tiny.yaml"
    assert cfg.guest.transparent_hugepage == "never"
    assert "norandmaps" in cfg.guest.kernel_args
    assert cfg.results_dir == REPO / "results"
    assert cfg.timeouts.scaled("boot") == cfg.timeouts.boot * cfg.timeouts.multiplier


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    f = tmp_path / "lab.yaml"
    f.write_text("")
    cfg = config.load(f)
    assert cfg.guest.memory_mib == 256
    assert cfg.recipe == resources.images_dir() / "tiny.yaml"  # the recipe lab ships (a wheel has it too)


def test_multiplier_scales_every_timeout(tmp_path: Path) -> None:
    cfg = config.parse({"timeouts": {"multiplier": 3, "boot": 10}}, tmp_path / "x.yaml")
    assert cfg.timeouts.scaled("boot") == 30


@pytest.mark.parametrize(
    ("raw", "key", "hint"),
    [
        ({"accel": "hvf"}, "accel", "auto, kvm, tcg"),
        ({"guest": {"memory_mib": "lots"}}, "guest.memory_mib", "integer from 128"),
        ({"guest": {"memory_mib": 64}}, "guest.memory_mib", "integer from 128"),
        ({"guest": {"cpus": True}}, "guest.cpus", "integer"),
        ({"guest": {"transparent_hugepage": "sometimes"}}, "guest.transparent_hugepage", "never, madvise, always"),
        ({"guest": {"kernel_args": "quiet"}}, "guest.kernel_args", "list of non-empty strings"),
        ({"guest": {"colour": "red"}}, "guest.colour", "allowed here: cpus, kernel_args"),
        ({"timeouts": {"boot": -1}}, "timeouts.boot", "number from 1"),
        ({"timeouts": []}, "timeouts", "mapping"),
        ({"apt": {"mirror": "ftp://x"}}, "apt.mirror", "http(s)://"),
        ({"bogus": 1}, "bogus", "allowed here:"),
        ([1, 2], "(top level)", "mapping"),
    ],
)
def test_errors_name_file_key_value_and_allowed(tmp_path: Path, raw: object, key: str, hint: str) -> None:
    f = tmp_path / "lab.yaml"
    with pytest.raises(UserError) as err:
        config.parse(raw, f)
    text = str(err.value)
    assert str(f) in text and key in text and hint in text
    assert "\n" not in text


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        config.load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("guest: [unclosed\n")
    with pytest.raises(UserError, match=r"bad.yaml: line \d+: not valid YAML"):
        config.load(bad)


def test_lab_cache_env_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAB_CACHE", str(tmp_path / "c"))
    assert config.parse({}, tmp_path / "lab.yaml").cache_dir == tmp_path / "c"
    assert config.parse({"paths": {"cache": "/elsewhere"}}, tmp_path / "lab.yaml").cache_dir == tmp_path / "c"
    assert config.load(REPO / "lab.yaml").cache_dir == tmp_path / "c"


def test_timeout_multiplier_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAB_TIMEOUT_MULTIPLIER", "4")
    cfg = config.parse({"timeouts": {"multiplier": 2, "ssh": 10}}, tmp_path / "lab.yaml")
    assert cfg.timeouts.scaled("ssh") == 40  # the environment wins over the file
    monkeypatch.setenv("LAB_TIMEOUT_MULTIPLIER", "fast")
    with pytest.raises(UserError, match="LAB_TIMEOUT_MULTIPLIER='fast' is not valid"):
        config.parse({}, tmp_path / "lab.yaml")


def test_yaml_tags_that_construct_objects_are_refused(tmp_path: Path) -> None:
    f = tmp_path / "lab.yaml"
    f.write_text("accel: !!python/object/apply:os.system ['touch /tmp/lab-pwned']\n")
    with pytest.raises(UserError, match=r"lab.yaml: line 1: not valid YAML"):
        config.load(f)
    assert not Path("/tmp/lab-pwned").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--arch", ""], "empty arch list"),
        (["run", "--variant", ""], "empty variant list ''"),
        (["run", "--variant", ","], "empty variant list ','"),
        (["run", "--libc", ""], "--libc '' is not valid"),
        (["run", "--size", ""], "--size '' is not valid"),
        (["run", "--size", ","], "--size ',' is not valid"),
    ],
)
def test_empty_selections_are_usage_errors(argv: list[str], message: str) -> None:
    """Regression (issue 10.10): empty selections ran the defaults, or booted a guest and measured nothing."""
    from lab.cli import build_parser
    from lab.cli.common import run_request
    from lab.measure.plan import make_plan

    parser, _ = build_parser()
    with pytest.raises(UserError, match=re.escape(message)):
        make_plan(config.load(REPO / "lab.yaml"), run_request(parser.parse_args(argv)))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("run:\n  sizes: []\n", "run.sizes: [] is not valid"),
        ("arches: x86_64,mips\n", "arches: unknown arch 'mips'"),
        ("arches: ','\n", "arches: empty arch list"),
        ("accel: [unclosed\n", "line 2: not valid YAML: expected ',' or ']'"),
    ],
)
def test_config_values_are_checked_at_load(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "lab.yaml"
    f.write_text(text)
    with pytest.raises(UserError, match=re.escape(message)):
        config.load(f)


def test_a_config_that_is_a_directory_or_binary_is_a_usage_error(tmp_path: Path) -> None:
    """Regression (issue 10.8): both were tracebacks with exit 1."""
    with pytest.raises(UserError, match="is a directory, not a config file"):
        config.load(tmp_path)
    junk = tmp_path / "junk.yaml"
    junk.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(UserError, match="not a text file"):
        config.load(junk)


def test_config_is_found_in_xdg_config_home_from_any_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression (issue 10.22): lab runs list from another directory failed with 'config file not found'."""
    xdg = tmp_path / "xdg"
    (xdg / "lab").mkdir(parents=True)
    (xdg / "lab" / "lab.yaml").write_text(f"recipe: {REPO / 'images' / 'tiny.yaml'}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("LAB_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("LAB_CACHE", raising=False)
    cfg = config.load()
    assert cfg.path == xdg / "lab" / "lab.yaml" and cfg.cache_dir == tmp_path / "cache" / "lab"
    (xdg / "lab" / "lab.yaml").unlink()
    with pytest.raises(UserError, match=re.escape(f"no config file: looked at lab.yaml, {xdg / 'lab' / 'lab.yaml'}")):
        config.load()


def test_shell_completion_scripts_come_from_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    from lab import cli

    assert cli.main(["completion", "bash"]) == 0
    script = capsys.readouterr().out
    assert "complete" in script and "baseline" in script and "nightly" in script and "--variant" in script
    assert cli.main(["completion", "zsh"]) == 0 and "#compdef lab" in capsys.readouterr().out
