"""The probe parser against real outputs (captured from guests) and against every way output goes bad."""

import json
from pathlib import Path

import pytest

from lab.payloads.probe import ProbeOutputError, parse

GOLDEN = Path(__file__).with_name("golden")
ARM = (GOLDEN / "probe-arm64-glibc-dynamic.json").read_text()
X86 = (GOLDEN / "probe-x86_64-musl-static.json").read_text()


def test_golden_arm64_glibc_dynamic_with_file_stages() -> None:
    r = parse(ARM)
    assert r.reexec is True and r.file_order == "random"
    f = r.facts
    assert (f.arch, f.page_size, f.libc, f.linkage, f.pie) == ("aarch64", 4096, "glibc", "dynamic", False)
    assert (f.libc_version_build, f.libc_version_run) == ("2.36", "2.41")
    assert f.interpreter == "/lib/ld-linux-aarch64.so.1" and f.toolchain.startswith("gcc ")
    assert [s.name for s in r.stages] == ["entry", "overhead", "malloc", "touch1", "touch2", "file_map", "file_read"]
    assert r.stage("touch1").delta_minflt == 256 and r.stage("touch2").delta_minflt == 0
    assert r.file is not None and r.file.pages == 4096 and r.file.resident_before == 0
    assert r.stage("file_read").delta_majflt == 4096
    assert r.stage("entry").minflt == r.stage("entry").delta_minflt > 0


def test_golden_x86_64_musl_static_without_file() -> None:
    r = parse(X86)
    assert r.file is None and r.file_order is None
    assert r.facts.libc_version_run is None and r.facts.libc_version_build == "1.2.5"
    assert r.facts.interpreter is None and r.facts.linkage == "static"
    assert [s.name for s in r.stages] == ["entry", "overhead", "malloc", "touch1", "touch2"]


@pytest.mark.parametrize("cut", [1, 10, 100, 500, 1000, -30, -2])
def test_truncated_output_is_rejected(cut: int) -> None:
    with pytest.raises(ProbeOutputError, match="probe output rejected"):
        parse(ARM.strip()[:cut])


def mutate(text: str, path: list[str | int], value: object) -> str:
    data = json.loads(text)
    node = data
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return json.dumps(data)


@pytest.mark.parametrize(
    ("path", "value", "match"),
    [
        (["schema"], "other.probe", "schema 'other.probe' v2"),
        (["schema_version"], 1, "v1, expected"),
        (["complete"], KeyError, "'complete' marker is missing"),
        (["facts", "page_size"], 4095, "not a power of two"),
        (["facts", "page_size"], True, "facts.page_size is True"),
        (["facts", "libc"], KeyError, "facts.libc is missing"),
        (["stages", 3, "delta_minflt"], 255, r"stages\[3\] \(touch1\) deltas do not match"),
        (["stages", 4, "minflt"], -1, "negative"),
        (["stages", 2, "name"], "touch1", "stages \\['entry', 'overhead', 'touch1'"),
        (["file"], None, "expected \\['entry', 'overhead', 'malloc', 'touch1', 'touch2'\\]"),
        (["stages", 0, "ns"], "0", "stages\\[0\\].ns is '0'"),
    ],
)
def test_inconsistent_or_wrong_schema_output_is_rejected(path: list[str | int], value: object, match: str) -> None:
    with pytest.raises(ProbeOutputError, match=match):
        parse(mutate(ARM, path, value))


@pytest.mark.parametrize(
    ("text", "match"),
    [("", "empty output"), (ARM + ARM, "2 lines"), ("[1, 2]", "not an object"), ("Segmentation fault", "not JSON")],
)
def test_garbage_is_rejected(text: str, match: str) -> None:
    with pytest.raises(ProbeOutputError, match=match):
        parse(text)


def test_a_changed_cumulative_count_is_caught_by_the_delta_check() -> None:
    data = json.loads(ARM)
    data["stages"][3]["minflt"] += 100  # as a flipped digit would
    with pytest.raises(ProbeOutputError, match="deltas do not match"):
        parse(json.dumps(data))
