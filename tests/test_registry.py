"""The registry's state machine on a temporary model repository (no Triton: a fake loader)."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import threading
from collections.abc import Callable, Collection
from pathlib import Path

import pytest

from slidr.features import FEATURE_HASH
from slidr.model_record import serving_version, write_serving_pointer
from slidr.registry import LOCK_FILE, Registry, RegistryError, State
from slidr.serving_figures import ServingFigures
from slidr.settings import RegistrySettings, Settings, TritonSettings
from tests.stack_fixtures import free_ports
from tests.worker_harness import SLIDR


class FakeTriton:
    def __init__(self) -> None:
        self.loads: list[set[int]] = []
        self.fail = False

    def load(self, versions: Collection[int]) -> None:
        if self.fail:
            raise RegistryError("Triton did not load")
        self.loads.append(set(versions))


def add_version(repo: Path, version: int, **metadata: object) -> Path:
    vdir = repo / "m" / str(version)
    vdir.mkdir(parents=True)
    meta = {"kind": "test", "feature_hash": FEATURE_HASH, **metadata}
    (vdir / "metadata.json").write_text(json.dumps(meta))
    return vdir


def settings(repo: Path, **registry: object) -> Settings:
    return Settings(
        triton=TritonSettings(model_repository=repo, model_name="m"),
        registry=RegistrySettings(**registry),
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    add_version(tmp_path, 1, kind="velocity_heuristic")
    return tmp_path


@pytest.fixture
def triton() -> FakeTriton:
    return FakeTriton()


@pytest.fixture
def registry(repo: Path, triton: FakeTriton) -> Registry:
    first_use = Registry(settings(repo), triton)
    first_use.entries()  # adopts version 1, as after `slidr stack up`
    return first_use


def states(registry: Registry) -> dict[int, State]:
    return {e.version: e.state for e in registry.entries()}


def test_first_use_registers_day_zero_as_serving_and_pins_the_pointer(
    registry: Registry, repo: Path
) -> None:
    assert states(registry) == {1: State.SERVING}
    assert registry.serving().kind == "velocity_heuristic"
    assert json.loads((repo / "m" / "serving.json").read_text()) == {"version": 1}
    # A new export does not start serving by being the newest directory.
    add_version(repo, 2)
    assert serving_version(repo, "m") == 1
    assert states(registry) == {1: State.SERVING}


def test_promotion_chain_keeps_one_stable_and_loads_before_switching(
    registry: Registry, repo: Path, triton: FakeTriton
) -> None:
    add_version(repo, 2)
    registry.register(2, {"data_window": ["2026-11-19", "2026-11-20"]})
    assert registry.entry(2).metadata["data_window"] == ["2026-11-19", "2026-11-20"]
    assert registry.entry(2).metadata["feature_hash"] == FEATURE_HASH  # from metadata.json
    registry.promote(2)
    assert states(registry) == {1: State.STABLE, 2: State.SERVING}
    assert serving_version(repo, "m") == 2
    add_version(repo, 3)
    registry.register(3)
    registry.promote(3)
    assert states(registry) == {1: State.RETIRED, 2: State.STABLE, 3: State.SERVING}
    assert triton.loads == [{1, 2}, {2, 3}]
    assert registry.kept() == {2, 3}
    assert [t.state for t in registry.entry(2).history] == [
        State.CANDIDATE,
        State.SERVING,
        State.STABLE,
    ]


def test_promoting_the_stable_version_swaps_the_two(registry: Registry, repo: Path) -> None:
    add_version(repo, 2)
    registry.register(2)
    registry.promote(2)
    registry.promote(1)
    assert states(registry) == {1: State.SERVING, 2: State.STABLE}
    assert State.RETIRED not in [t.state for t in registry.entry(1).history]


def test_rollback_refuses_the_bad_version_and_serves_the_stable_one(
    registry: Registry, repo: Path, triton: FakeTriton
) -> None:
    add_version(repo, 2)
    registry.register(2)
    registry.promote(2)
    bad, restored = registry.rollback(why="IVR 100%")
    assert (bad.version, restored.version) == (2, 1)
    assert states(registry) == {1: State.SERVING, 2: State.REFUSED}
    assert registry.entry(2).reason == "IVR 100%"
    assert serving_version(repo, "m") == 1
    # Loaded together until the workers followed; then only the kept set.
    assert triton.loads[-1] == {1, 2}
    assert registry.sync_triton() == {1}
    assert triton.loads[-1] == {1}
    with pytest.raises(RegistryError, match="no stable version to roll back to; pass --to"):
        registry.rollback()


def test_rollback_to_a_retired_version_but_never_to_a_candidate(
    registry: Registry, repo: Path
) -> None:
    for v in (2, 3, 4):
        add_version(repo, v)
        registry.register(v)
    registry.promote(2)
    registry.promote(3)
    with pytest.raises(RegistryError, match="slidr promote"):
        registry.rollback(to=4)
    registry.rollback(to=1)
    assert states(registry) == {
        1: State.SERVING,
        2: State.STABLE,
        3: State.REFUSED,
        4: State.CANDIDATE,
    }


def test_a_refused_candidate_is_served_only_when_forced(
    registry: Registry, repo: Path, tmp_path: Path
) -> None:
    add_version(repo, 2)
    registry.register(2)
    registry.refuse(2, "human density too low at 03:00 Sunday", tmp_path / "report.html")
    entry = registry.entry(2)
    assert entry.state is State.REFUSED and entry.report == str(tmp_path / "report.html")
    with pytest.raises(RegistryError, match="--force"):
        registry.promote(2)
    registry.promote(2, force=True)
    assert registry.serving().version == 2
    with pytest.raises(RegistryError, match="only a candidate can be refused"):
        registry.refuse(1, "too late")


def test_a_triton_failure_changes_nothing(
    registry: Registry, repo: Path, triton: FakeTriton
) -> None:
    add_version(repo, 2)
    registry.register(2)
    triton.fail = True
    with pytest.raises(RegistryError, match="did not load"):
        registry.promote(2)
    assert states(registry) == {1: State.SERVING, 2: State.CANDIDATE}
    assert serving_version(repo, "m") == 1


def test_rollback_does_not_undo_a_newer_promotion(registry: Registry, repo: Path) -> None:
    for v in (2, 3):
        add_version(repo, v)
        registry.register(v)
    registry.promote(2)
    registry.promote(3)  # promoted after a monitor judged version 2
    with pytest.raises(RegistryError, match="no longer serving"):
        registry.rollback(expect=2)
    assert registry.serving().version == 3


def test_retention_deletes_old_retired_and_refused_versions_only(
    repo: Path, triton: FakeTriton
) -> None:
    registry = Registry(settings(repo, keep_retired=1, pinned=(2,)), triton)
    registry.entries()
    for v in range(2, 7):
        add_version(repo, v)
        registry.register(v)
        registry.promote(v)
    registry.rollback()  # 6 refused, 5 serving
    assert states(registry)[4] is State.RETIRED
    assert registry.enforce_retention() == [1, 3, 4]  # 2 is pinned, 6 is the newest kept
    assert sorted(p.name for p in (repo / "m").iterdir() if p.name.isdigit()) == ["2", "5", "6"]
    assert not registry.entry(3).on_disk and registry.entry(6).on_disk
    assert registry.kept() == {2, 5}
    with pytest.raises(RegistryError, match="no longer on disk"):
        registry.rollback(to=3)


def test_a_pointer_moved_by_hand_is_adopted(registry: Registry, repo: Path) -> None:
    add_version(repo, 2)
    registry.register(2)
    write_serving_pointer(repo, "m", 2)
    assert states(registry) == {1: State.STABLE, 2: State.SERVING}
    assert "outside the registry" in registry.entry(2).history[-1].why


def test_expected_figures_prefer_calibration_over_training(registry: Registry, repo: Path) -> None:
    vdir = add_version(repo, 2, expected={"ivr": 0.2, "slices": {"desktop/in": 0.1}})
    registry.register(2)
    assert registry.expected(2) == ServingFigures(ivr=0.2, slices={"desktop/in": 0.1})
    assert registry.expected(1) is None
    (vdir / "calibration.json").write_text(json.dumps({"thresholds": {}, "expected": {"ivr": 0.3}}))
    assert registry.expected(2) == ServingFigures(ivr=0.3)
    (vdir / "calibration.json").write_text(json.dumps({"expected": {"ivr": 7}}))
    assert registry.expected(2) == ServingFigures(ivr=0.2, slices={"desktop/in": 0.1})


def test_concurrent_writers_lose_nothing(registry: Registry, repo: Path) -> None:
    versions = range(2, 14)
    for v in versions:
        add_version(repo, v)
    threads = [threading.Thread(target=registry.register, args=(v,)) for v in versions]
    threads += [
        threading.Thread(target=registry.record_observed, args=(1, ServingFigures(ivr=0.01 * i)))
        for i in range(5)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(states(registry)) == {1, *versions}
    assert registry.entry(1).observed is not None


def test_unreadable_registry_and_missing_model_say_what_to_do(
    registry: Registry, repo: Path, tmp_path: Path
) -> None:
    with pytest.raises(RegistryError, match=r"no version 9 \(registered: 1\)"):
        registry.promote(9)
    (repo / "m" / "registry.json").write_text('{"model": "m", "entries": {"1": {}}}')
    with pytest.raises(RegistryError, match=r"corrupt.*delete it to rebuild"):
        registry.entries()
    (repo / "m" / "registry.json").unlink()
    assert states(registry) == {1: State.SERVING}  # rebuilt from the directories
    with pytest.raises(RegistryError, match="slidr stack up"):
        Registry(settings(tmp_path / "elsewhere")).entries()


def test_reading_does_not_rewrite_the_file(registry: Registry, repo: Path) -> None:
    path = repo / "m" / "registry.json"
    before = path.stat()
    registry.entries()
    registry.expected(1)
    after = path.stat()  # a rewrite is a rename: a new inode
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_cli_lists_versions_and_refuses_bad_moves_in_one_line(repo: Path) -> None:
    add_version(repo, 2)
    env = {
        **os.environ,
        "SLIDR_TRITON__MODEL_REPOSITORY": str(repo),
        "SLIDR_TRITON__MODEL_NAME": "m",
        "SLIDR_TRITON__GRPC_PORT": str(free_ports(1)[0]),  # no Triton there
        "COLUMNS": "200",
    }

    def slidr(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([SLIDR, *args], env=env, capture_output=True, text=True, timeout=60)

    listed = slidr("models")
    assert listed.returncode == 0, listed.stderr
    cells = [
        [cell.strip() for cell in line.split("│")[1:3]]
        for line in listed.stdout.splitlines()
        if line.startswith("│ ")
    ]
    # No pointer before first use: the newest version served, as the worker does.
    assert cells == [["1", "retired"], ["2", "serving"]]
    assert "did not answer" in listed.stdout
    failed = slidr("rollback")
    assert failed.returncode == 2, failed.stderr
    assert failed.stderr.strip() == (
        "error: 'm' has no stable version to roll back to; pass --to VERSION"
    )


class SlowTriton(FakeTriton):
    """A Triton whose loads take until the test lets them finish."""

    def __init__(self) -> None:
        super().__init__()
        self.loading = threading.Event()
        self.finish = threading.Event()

    def load(self, versions: Collection[int]) -> None:
        self.loading.set()
        assert self.finish.wait(30), "the test never let the load finish"
        super().load(versions)


def in_thread(target: Callable[[], object]) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            target()
        except BaseException as exc:  # handed to the test
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, errors


def promoting_3(
    registry: Registry, triton: SlowTriton
) -> tuple[threading.Thread, list[BaseException]]:
    """``promote(3)`` in a thread, once it waits for Triton to load the versions."""
    promoting, errors = in_thread(lambda: registry.promote(3))
    assert triton.loading.wait(10)
    return promoting, errors


@pytest.fixture
def slow(repo: Path) -> tuple[Registry, SlowTriton]:
    triton = SlowTriton()
    triton.finish.set()
    registry = Registry(settings(repo), triton)
    registry.entries()  # adopts version 1, as after `slidr stack up`
    for v in (2, 3):
        add_version(repo, v)
        registry.register(v)
    registry.promote(2)  # 1 stable, 2 serving, 3 a candidate
    triton.loading.clear()
    triton.finish.clear()
    return registry, triton


def test_the_book_lock_is_free_while_triton_loads(
    slow: tuple[Registry, SlowTriton], repo: Path
) -> None:
    registry, triton = slow
    promoting, errors = promoting_3(registry, triton)
    # Another process could take the book lock at once, and the monitor's calls go through.
    with (repo / "m" / LOCK_FILE).open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError if it were held
        fcntl.flock(lock, fcntl.LOCK_UN)
    registry.record_observed(2, ServingFigures(ivr=0.05))
    assert registry.serving().version == 2  # nothing switched before Triton answered
    assert serving_version(repo, "m") == 2
    assert promoting.is_alive()
    triton.finish.set()
    promoting.join(10)
    assert not errors
    assert states(registry) == {1: State.RETIRED, 2: State.STABLE, 3: State.SERVING}
    assert registry.entry(2).observed == ServingFigures(ivr=0.05)
    assert triton.loads[-1] == {2, 3}


def test_a_rollback_waits_for_a_promotion_in_flight_and_does_not_undo_it(
    slow: tuple[Registry, SlowTriton],
) -> None:
    registry, triton = slow
    promoting, _ = promoting_3(registry, triton)
    # The monitor judged version 2 and rolls it back while 3 is being loaded.
    rolling, errors = in_thread(lambda: registry.rollback(why="IVR 100%", expect=2))
    rolling.join(0.5)
    assert rolling.is_alive()  # one move at a time
    triton.finish.set()
    promoting.join(10)
    rolling.join(10)
    assert len(errors) == 1 and "no longer serving" in str(errors[0])
    assert registry.serving().version == 3
    assert triton.loads == [{1, 2}, {2, 3}]


def test_a_move_overtaken_while_triton_loads_switches_nothing(
    slow: tuple[Registry, SlowTriton], repo: Path
) -> None:
    registry, triton = slow
    promoting, errors = promoting_3(registry, triton)
    write_serving_pointer(repo, "m", 1)  # by hand, while Triton loads 2 and 3
    triton.finish.set()
    promoting.join(10)
    assert len(errors) == 1 and "changed while Triton loaded" in str(errors[0])
    assert serving_version(repo, "m") == 1
    assert states(registry) == {1: State.SERVING, 2: State.STABLE, 3: State.CANDIDATE}
    assert triton.loads[-1] == {1, 2}  # back to what the book keeps
