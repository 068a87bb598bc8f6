"""Device profiles: built-in data, the Exynos/Snapdragon split, user YAML files, delegate checks."""

from __future__ import annotations

import pytest

from android_bench.errors import BenchUserError
from android_bench.profiles import host_profile, load_profiles, profile_for_model, profiles_named


def test_builtin_profiles_cover_the_papers_phones_pixels_and_host():
    profiles = load_profiles(env={})
    names = {p.name for p in profiles}
    assert {"galaxy-s10plus-exynos", "galaxy-s10plus-snapdragon", "galaxy-s21-exynos", "galaxy-s21-snapdragon",
            "pixel-4", "pixel-6", "host"} <= names
    assert host_profile(profiles).delegates == ("cpu",)


@pytest.mark.parametrize(
    "code, profile, soc",
    [("SM-G991B", "galaxy-s21-exynos", "Exynos 2100"), ("SM-G991U", "galaxy-s21-snapdragon", "Snapdragon 888"),
     ("SM-G975F", "galaxy-s10plus-exynos", "Exynos 9820"), ("SM-G975U", "galaxy-s10plus-snapdragon", "Snapdragon 855"),
     ("Pixel 6 Pro", "pixel-6", "Google Tensor")],
)
def test_model_code_identifies_the_soc(code, profile, soc):
    found = profile_for_model(load_profiles(env={}), code)
    assert found.name == profile and found.soc == soc and found.big_core_mask == "f0"


def test_family_name_covers_both_socs():
    names = {p.name for p in profiles_named(load_profiles(env={}), "s21")}
    assert names == {"galaxy-s21-exynos", "galaxy-s21-snapdragon"}


def test_unknown_device_suggests_closest():
    with pytest.raises(BenchUserError, match="did you mean 'S21'"):
        profiles_named(load_profiles(env={}), "S2l1")


def test_user_yaml_adds_a_phone(tmp_path, monkeypatch):
    extra = tmp_path / "lab.yaml"
    extra.write_text(
        "profiles:\n  - name: mi-11\n    aliases: [Mi11]\n    model_codes: [M2011K2G]\n    soc: Snapdragon 888\n"
        "    big_core_mask: '0xF0'\n    delegates: [cpu, gpu]\n"
    )
    profiles = load_profiles(extra)
    mi11 = profile_for_model(profiles, "M2011K2G")
    assert mi11.name == "mi-11" and mi11.big_core_mask == "f0" and mi11.delegates == ("cpu", "gpu")
    monkeypatch.setenv("ANDROID_BENCH_PROFILES", str(extra))
    assert profiles_named(load_profiles(), "mi11")[0].name == "mi-11"
    with pytest.raises(BenchUserError, match="does not support delegate 'nnapi'; it supports: cpu, gpu"):
        mi11.check_delegate("nnapi")


@pytest.mark.parametrize(
    "body, message",
    [
        ("profiles:\n  - name: x\n    delegates: [tpu]\n", "unknown delegate"),
        ("profiles:\n  - name: x\n    big_core_mask: zz\n", "big_core_mask"),
        ("phones: []\n", "top-level 'profiles:' list"),
        ("profiles: [\n", "not valid YAML"),
        ("profiles:\n  - aliases: [a]\n", "needs a 'name'"),
    ],
)
def test_bad_user_yaml_is_one_clear_error(tmp_path, body, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text(body)
    with pytest.raises(BenchUserError, match=message):
        load_profiles(bad)


def test_missing_profiles_file(tmp_path):
    with pytest.raises(BenchUserError, match="does not exist"):
        load_profiles(tmp_path / "none.yaml")
