"""The pure parts of containment: where cgroups are, which recorded paths may be killed, the
rules that leave the home out of a Landlock sandbox, and ``[exec]`` of ``interlock.toml``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from interlock.containment import MODES, cgroup_name
from interlock.containment.cgroup import (
    NAME_RE,
    _cgroup2_mounts,
    execution_cgroup,
    find_root,
    mount_options,
)
from interlock.containment.landlock import READ, WRITE, LandlockError, plan_rules
from interlock.errors import ConfigError
from interlock.home import Config

MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
50 22 0:40 / /mnt/with\\040space rw shared:9 - cgroup2 none rw
"""


def test_cgroup2_mounts_are_read_from_mountinfo_with_escapes() -> None:
    assert _cgroup2_mounts(MOUNTINFO) == [
        Path("/sys/fs/cgroup/unified"),
        Path("/mnt/with space"),
    ]
    assert _cgroup2_mounts("garbage\n\n1 2 3\n") == []


def test_an_execution_cgroup_name_round_trips_and_only_such_paths_are_killed() -> None:
    name = cgroup_name(1234, 99887766)
    assert NAME_RE.match(name) is not None
    mounts = _cgroup2_mounts(Path("/proc/self/mountinfo").read_text())
    if not mounts:
        pytest.skip("this machine mounts no cgroup2 filesystem")
    root = mounts[0]
    good = root / "interlock" / name
    assert execution_cgroup(str(good)) == good
    for bad in (
        str(root),  # the whole hierarchy
        str(root / "system.slice"),
        str(root / "interlock"),  # the container itself
        str(root / "elsewhere" / name),  # not in an interlock container
        str(root / "interlock" / name / ".." / name),
        f"interlock/{name}",  # relative
        f"/tmp/interlock/{name}",  # not a cgroup2 mount
        str(root / "interlock" / "s1-2-zz"),
    ):
        assert execution_cgroup(bad) is None, bad


def _tree(tmp_path: Path) -> tuple[Path, Path]:
    """tmp/{a/{home/keys/k, b/f}, c/d, link->a/home, top.txt}; returns (root, home)."""
    home = tmp_path / "a" / "home"
    (home / "keys").mkdir(parents=True)
    (home / "keys" / "k").write_text("secret")
    (tmp_path / "a" / "b").mkdir()
    (tmp_path / "a" / "b" / "f").write_text("x")
    (tmp_path / "c" / "d").mkdir(parents=True)
    (tmp_path / "top.txt").write_text("t")
    (tmp_path / "link").symlink_to(home)
    return tmp_path, home


def test_rules_go_to_the_siblings_of_each_directory_on_the_way_to_the_home(
    tmp_path: Path,
) -> None:
    root, home = _tree(tmp_path)
    rules = plan_rules(excluded=[home], readable=[root], writable=[root / "c"])
    got = {(r.path, r.rights) for r in rules}
    real = Path(os.path.realpath(root))
    assert got == {
        (real / "a" / "b", READ),
        (real / "c", READ),
        (real / "top.txt", READ),
        (real / "c", READ | WRITE | (1 << 15)),
    }
    # nothing at or above the home: no rule on the root, on a/, on home/, nor the link to it
    for r in rules:
        assert not (r.path == home or home in r.path.parents or r.path in home.parents)


def test_a_tree_too_wide_to_expand_is_refused(tmp_path: Path) -> None:
    import interlock.containment.landlock as ll

    root, home = _tree(tmp_path)
    old = ll.MAX_EXPANDED
    ll.MAX_EXPANDED = 3
    try:
        with pytest.raises(LandlockError, match="move the home"):
            plan_rules(excluded=[home], readable=[root])
    finally:
        ll.MAX_EXPANDED = old


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    shape=st.lists(
        st.lists(st.sampled_from("abcd"), min_size=1, max_size=4), min_size=1, max_size=12
    ),
    pick=st.integers(min_value=0),
)
def test_rules_cover_everything_but_the_excluded_path(
    tmp_path_factory: pytest.TempPathFactory, shape: list[list[str]], pick: int
) -> None:
    root = tmp_path_factory.mktemp("tree")
    dirs = sorted({root.joinpath(*p) for p in shape})
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
        (d / "f").write_text("x")
    excluded = dirs[pick % len(dirs)]
    rules = plan_rules(excluded=[excluded], readable=[root])
    covered = [r.path for r in rules]
    for dirpath, _dirs, files in os.walk(root):
        for name in [*_dirs, *files]:
            p = Path(dirpath) / name
            inside = p == excluded or excluded in p.parents
            granted = any(p == c or c in p.parents for c in covered)
            if p in excluded.parents:  # an ancestor: no rule (it would cover the home)
                assert not granted, (p, excluded)
            else:  # everything else: granted exactly when it is not the home or inside it
                assert granted != inside, (p, excluded)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('containment = "none"', "containment must be one of"),
        ('cgroup_root = "relative/dir"', "cgroup_root must be an absolute path"),
        ('writable = ["tmp"]', "writable must be a list of absolute paths"),
        ('run_as = ""', "run_as must be a user name"),
        ("pids_max = 0", "pids_max must be an integer >= 1"),
        ("memory_max = 1024", "memory_max must be an integer >= 1048576"),
        ('cpu_max = "half"', "cpu_max must be"),
        ("surprise = 1", "unknown key"),
    ],
)
def test_exec_settings_are_validated(body: str, message: str) -> None:
    base = (
        Config(origin="interlock.test/x")
        .to_toml()
        .replace('containment = "full"\n', "")
        .replace("writable = []\n", "")
    )
    with pytest.raises(ConfigError, match=message):
        Config.from_toml(base.replace("[exec]\n", f"[exec]\n{body}\n"))


def test_exec_settings_round_trip_through_the_file() -> None:
    text = Config(origin="interlock.test/x").to_toml()
    text = text.replace(
        'containment = "full"',
        'containment = "unsafe-no-key-isolation"\nrun_as = "nobody"\npids_max = 64\n'
        'cpu_max = "50000 100000"\nwritable = ["/srv/x"]',
    ).replace("writable = []\n", "")
    cfg = Config.from_toml(text)
    assert cfg.exec.mode == "unsafe-no-key-isolation" and cfg.exec.mode in MODES
    assert cfg.exec.run_as == "nobody" and cfg.exec.writable == (Path("/srv/x"),)
    assert cfg.exec.limits.pids_max == 64 and cfg.exec.limits.cpu_max == "50000 100000"
    assert Config.from_toml(cfg.to_toml()).exec == cfg.exec


def test_mount_options_of_the_cgroup2_mount_are_read_from_mountinfo() -> None:
    root = find_root()
    expected = {
        line.split(" - ")[1].split()[2]
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if line.split()[4] == str(root.mount) and " - cgroup2 " in line
    }
    assert len(expected) == 1
    assert mount_options(root.mount) == frozenset(expected.pop().split(","))
    assert mount_options(Path("/nonexistent-mount")) == frozenset()
