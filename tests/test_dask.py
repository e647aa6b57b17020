"""DaskExecutor: on a local cluster it starts itself, and on a real scheduler and worker."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, wait
from pathlib import Path
from subprocess import Popen
from typing import IO, Any

import pytest

pytest.importorskip("distributed")

import dask_events
from event_pipeline import Runner, StopProcessingError
from event_pipeline.executors.dask import ADDRESS_ENV_VAR, DaskExecutor

TESTS = Path(__file__).resolve().parent
SRC = Path(dask_events.__file__).resolve().parent.parent / "src"
TIMEOUT = 60


def _children() -> dict[int, str]:
    """This process's live child processes (pid -> name), from multiprocessing's view."""
    return {p.pid: p.name for p in multiprocessing.active_children() if p.pid is not None}


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a running (not zombie) process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _in_session(session: int) -> list[int]:
    """Pids of live processes whose session id is ``session``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[3]) == session:
            found.append(int(entry.name))
    return found


def _wait_gone(pids: list[int], timeout: float = 15.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = [pid for pid in pids if _alive(pid)]
        if not pids:
            break
        time.sleep(0.05)
    return pids


# -- a local cluster started by the executor ------------------------------------------------


@pytest.fixture(scope="module")
def local() -> Iterator[DaskExecutor]:
    before = set(_children())
    executor = DaskExecutor(max_workers=2)
    yield executor
    started = [pid for pid in _children() if pid not in before]  # restarted workers too
    executor.shutdown()
    assert _wait_gone(started) == []


def test_submit_runs_on_a_local_cluster_of_max_workers(local: DaskExecutor) -> None:
    """A submission returns a concurrent future with the result; the cluster has max_workers."""
    future = local.submit(pow, 2, 10)
    assert isinstance(future, Future)
    assert future.result(timeout=TIMEOUT) == 1024
    assert local._max_workers == 2
    assert list(local._client.nthreads().values()) == [1, 1]


def test_keyword_arguments_reach_the_function(local: DaskExecutor) -> None:
    """Keywords that Dask's own submit would take for itself reach the function untouched."""
    kwargs = {
        "key": 1,
        "priority": 2,
        "retries": 3,
        "workers": ["nowhere"],
        "pure": True,
        "resources": {"GPU": 9},
        "allow_other_workers": False,
        "fifo_timeout": "0s",
        "actor": True,
        "actors": True,
    }
    future = local.submit(dask_events.echo, "a", **kwargs)
    assert future.result(timeout=TIMEOUT) == (("a",), kwargs)


def test_identical_submissions_all_run(local: DaskExecutor, tmp_path: Path) -> None:
    """Three identical submissions are three tasks, never one deduplicated result."""
    path = str(tmp_path / "marks")
    futures = [local.submit(dask_events.mark, path) for _ in range(3)]
    results = [f.result(timeout=TIMEOUT) for f in futures]
    assert len(set(results)) == 3
    assert sorted(Path(path).read_text().splitlines()) == sorted(results)


def test_an_exception_fails_the_future(local: DaskExecutor) -> None:
    """The function's exception is set on the future, with the worker's traceback as cause."""
    exc = local.submit(dask_events.fail, "planned").exception(timeout=TIMEOUT)
    assert isinstance(exc, ValueError)
    assert str(exc) == "planned"
    assert "in fail" in str(exc.__cause__)


class _RefusesPickling:
    def __reduce__(self) -> Any:
        raise RuntimeError("refuses to be pickled")


def test_arguments_that_cannot_be_pickled_fail_the_future(local: DaskExecutor) -> None:
    """Serialization errors become failed futures at once; submit itself does not raise."""
    future = local.submit(dask_events.echo, _RefusesPickling())
    assert isinstance(future.exception(timeout=0), RuntimeError)
    future = local.submit(dask_events.echo, {"lock": threading.Lock()})
    assert isinstance(future.exception(timeout=0), TypeError)


def test_results_that_cannot_be_pickled_fail_the_future(local: DaskExecutor) -> None:
    """A result that cannot travel back fails the future instead of losing it."""
    future = local.submit(threading.Lock)
    assert isinstance(future.exception(timeout=TIMEOUT), TypeError)


def test_a_dead_worker_fails_the_future_and_the_cluster_recovers(local: DaskExecutor) -> None:
    """A task that kills its worker ends failed (KilledWorker), at once; later work runs."""
    exc = local.submit(dask_events.exit_worker).exception(timeout=TIMEOUT)
    assert type(exc).__name__ == "KilledWorker"
    assert local.submit(pow, 3, 2).result(timeout=TIMEOUT) == 9


def test_cancel_a_pending_future(local: DaskExecutor) -> None:
    """A future cancelled before its result came is seen as done by wait()."""
    future = local.submit(time.sleep, 30)
    assert future.cancel()
    done, _ = wait([future], timeout=TIMEOUT)
    assert future in done and future.cancelled()


def test_shutdown_stops_the_cluster_and_is_final() -> None:
    """shutdown() stops every process it started, is idempotent, and refuses new work."""
    before = set(_children())
    executor = DaskExecutor(max_workers=1)
    assert executor.submit(pow, 2, 3).result(timeout=TIMEOUT) == 8
    started = [pid for pid in _children() if pid not in before]
    assert started
    executor.shutdown()
    executor.shutdown()
    assert _wait_gone(started) == []
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        executor.submit(pow, 2, 3)


def test_shutdown_cancel_futures_does_not_wait_for_running_tasks() -> None:
    """cancel_futures cancels what has no result yet, even a task running on a worker."""
    before = set(_children())
    executor = DaskExecutor(max_workers=1)
    futures = [executor.submit(time.sleep, 60) for _ in range(2)]
    started = [pid for pid in _children() if pid not in before]
    began = time.monotonic()
    executor.shutdown(cancel_futures=True)
    assert time.monotonic() - began < 30
    assert all(future.cancelled() for future in futures)
    assert _wait_gone(started) == []


def test_shutdown_without_wait_returns_at_once() -> None:
    """shutdown(wait=False) returns at once; pending work still completes, then all stops."""
    before = set(_children())
    executor = DaskExecutor(max_workers=1)
    future = executor.submit(dask_events.echo, 1)
    started = [pid for pid in _children() if pid not in before]
    began = time.monotonic()
    executor.shutdown(wait=False)
    assert time.monotonic() - began < 1
    assert future.result(timeout=TIMEOUT) == ((1,), {})
    assert _wait_gone(started, timeout=30) == []


def test_construction_does_not_connect() -> None:
    """Creating an executor connects nowhere: the scheduler may not even exist yet."""
    executor = DaskExecutor(address="tcp://127.0.0.1:9")
    assert executor._max_workers >= 1
    executor.shutdown()
    assert executor._event_pipeline_pickles is True


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"max_workers": 0}, ValueError, "max_workers must be greater than 0"),
        ({"max_workers": "2"}, TypeError, "max_workers must be an integer"),
        ({"max_workers": True}, TypeError, "max_workers must be an integer"),
        ({"address": 8786}, TypeError, "address must be a string"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
    """Bad arguments fail at construction with a message naming the argument."""
    with pytest.raises(error, match=message):
        DaskExecutor(**kwargs)


def _run_python(code: str) -> subprocess.CompletedProcess[str]:
    pythonpath = os.pathsep.join(p for p in [str(SRC), os.environ.get("PYTHONPATH", "")] if p)
    env = {**os.environ, "PYTHONPATH": pythonpath}
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=TIMEOUT
    )


def test_missing_extra_names_the_install_command() -> None:
    """Without distributed, creating a DaskExecutor raises ImportError naming the pip command."""
    done = _run_python(
        "import sys; sys.modules['distributed'] = None\n"
        "from event_pipeline.executors.dask import DaskExecutor\n"
        "try:\n"
        "    DaskExecutor()\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    assert done.returncode == 0, done.stderr
    assert 'pip install "event-pipeline-futures[dask]"' in done.stdout


def test_unreachable_scheduler_raises_from_submit() -> None:
    """A scheduler that does not answer is an error of the executor: submit raises OSError."""
    done = _run_python(
        "import dask\n"
        "dask.config.set({'distributed.comm.timeouts.connect': '1s'})\n"
        "from event_pipeline.executors.dask import DaskExecutor\n"
        "executor = DaskExecutor(address='tcp://127.0.0.1:9')\n"
        "try:\n"
        "    executor.submit(pow, 2, 3)\n"
        "except OSError as exc:\n"
        "    print(exc)\n"
        "executor.shutdown()\n"
    )
    assert done.returncode == 0, done.stderr
    assert "tcp://127.0.0.1:9" in done.stdout


def test_importing_event_pipeline_does_not_import_dask() -> None:
    """The core, and the executors package, never import dask."""
    done = _run_python(
        "import sys, event_pipeline, event_pipeline.executors, event_pipeline.executors.dask\n"
        "print([m for m in ('dask', 'distributed') if m in sys.modules])\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# -- the runner on a local cluster ----------------------------------------------------------


@pytest.fixture(scope="module")
def local_runner(monkeypatch_module: pytest.MonkeyPatch) -> Iterator[Runner]:
    monkeypatch_module.delenv(ADDRESS_ENV_VAR, raising=False)
    before = set(_children())
    runner = Runner()
    yield runner
    started = [pid for pid in _children() if pid not in before]
    runner.shutdown()
    assert _wait_gone(started) == []


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_runner_retries_and_failures_on_a_local_cluster(
    local_runner: Runner, tmp_path: Path
) -> None:
    """Through the runner: a flaky task succeeds on its retry, a hopeless one fails."""
    paths = [str(tmp_path / name) for name in ("steady", "flaky", "hopeless")]
    outcome = local_runner.map(dask_events.Flaky, paths, [0, 1, 5])
    assert [r.success for r in outcome.results] == [True, True, False]
    assert [r.attempts for r in outcome.results] == [1, 2, 3]
    assert [r.content for r in outcome.results[:2]] == [1, 2]
    assert isinstance(outcome.results[2].exception, ConnectionError)
    assert not outcome.success


def test_runner_keywords_key_and_priority(local_runner: Runner) -> None:
    """Runner().run(Event, key=1, priority=2) hands both keywords to process."""
    outcome = local_runner.run(dask_events.Echo, key=1, priority=2)
    assert outcome.success
    assert outcome.results[0].content == ((), {"key": 1, "priority": 2})


def test_runner_runs_identical_tasks_each(local_runner: Runner, tmp_path: Path) -> None:
    """Three identical tasks of a map run three times."""
    path = str(tmp_path / "marks")
    outcome = local_runner.map(dask_events.Mark, [path] * 3)
    assert outcome.success
    assert len(Path(path).read_text().splitlines()) == 3
    assert len({r.content for r in outcome.results}) == 3


def test_runner_task_that_kills_its_worker(local_runner: Runner) -> None:
    """A task that kills its worker is a failed result, and nothing hangs."""
    outcome = local_runner.run(dask_events.ExitWorker)
    assert not outcome.success
    assert type(outcome.results[0].exception).__name__ == "KilledWorker"


def test_runner_spares_a_task_whose_worker_died_once(local_runner: Runner, tmp_path: Path) -> None:
    """A task that finishes when re-run alone after its worker died is innocent: not charged."""
    outcome = local_runner.run(dask_events.ExitWorkerOnce, str(tmp_path / "attempts"))
    assert outcome.success
    assert outcome.results[0].content == 2
    assert outcome.results[0].attempts == 1


def test_runner_charges_only_the_task_that_kills_its_worker(
    local_runner: Runner, tmp_path: Path
) -> None:
    """Tasks that shared the dead worker are re-run alone; only the culprit is charged."""
    outcome = local_runner.map(dask_events.ExitWorkerIf, [False] * 5 + [True] + [False] * 5)
    assert [r.error for r in outcome.results] == [False] * 5 + [True] + [False] * 5
    assert [r.attempts for r in outcome.results] == [1] * 11
    assert type(outcome.results[5].exception).__name__ == "KilledWorker"


def test_runner_stop_on_exception_does_not_wait(local_runner: Runner) -> None:
    """stop_on_exception raises at the first failure, without waiting for running tasks."""
    began = time.monotonic()
    with pytest.raises(StopProcessingError) as info:
        local_runner.map(dask_events.StopOnFailure, [-1, 3, 3, 3])
    assert time.monotonic() - began < 3
    assert isinstance(info.value.__cause__, ValueError)
    assert not info.value.run.success


# -- a real scheduler and worker ------------------------------------------------------------


def _dask_command(*args: str) -> list[str]:
    script = Path(sys.executable).with_name("dask")
    if script.exists():
        return [str(script), *args]
    module = {"scheduler": "dask_scheduler", "worker": "dask_worker"}[args[0]]
    return [sys.executable, "-m", f"distributed.cli.{module}", *args[1:]]


def _shut_down_cluster(address: str) -> None:
    """Ask the scheduler to stop itself and its workers."""
    import distributed

    try:
        with distributed.Client(address, set_as_default=False, timeout=10) as client:  # type: ignore[no-untyped-call]
            client.shutdown()
    except Exception as exc:  # the processes are stopped by signals then
        print(f"could not shut the cluster down: {exc!r}")


def _stop(process: Popen[bytes]) -> list[int]:
    """Wait for ``process`` to end (else terminate, kill it); return what is left of its session."""
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)
    left = _wait_gone(_in_session(process.pid), timeout=10)
    if left:
        os.killpg(process.pid, signal.SIGKILL)
    return left


def _spawn(args: list[str], env: dict[str, str], cwd: Path, log: IO[bytes]) -> Popen[bytes]:
    # A session of its own, so that whatever it leaves behind can be found and killed.
    return Popen(args, env=env, cwd=cwd, stdout=log, stderr=log, start_new_session=True)


@pytest.fixture(scope="module")
def scheduler_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A ``dask scheduler`` and one ``dask worker`` (with its nanny) on 127.0.0.1."""
    import distributed

    tmp = tmp_path_factory.mktemp("dask")
    scheduler_file = tmp / "scheduler.json"
    pythonpath = [str(SRC), str(TESTS), os.environ.get("PYTHONPATH", "")]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in pythonpath if p),
        # As docs/cluster.rst recommends: a task whose worker dies fails at once.
        "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0",
    }
    processes: list[Popen[bytes]] = []
    with open(tmp / "log.txt", "wb") as log:
        try:
            scheduler = _spawn(
                _dask_command(
                    "scheduler",
                    "--host=127.0.0.1",
                    "--port=0",
                    "--dashboard-address=127.0.0.1:0",
                    f"--scheduler-file={scheduler_file}",
                ),
                env,
                tmp,
                log,
            )
            processes.append(scheduler)
            deadline = time.monotonic() + TIMEOUT
            while not scheduler_file.exists() or not scheduler_file.read_text().strip():
                assert scheduler.poll() is None, (tmp / "log.txt").read_text()
                assert time.monotonic() < deadline, "the scheduler did not start"
                time.sleep(0.1)
            address = json.loads(scheduler_file.read_text())["address"]
            assert address.startswith("tcp://127.0.0.1:")
            worker = _spawn(
                _dask_command(
                    "worker",
                    address,
                    "--host=127.0.0.1",
                    "--dashboard-address=127.0.0.1:0",
                    "--nthreads=1",
                    "--nworkers=1",
                    f"--local-directory={tmp}",
                ),
                env,
                tmp,
                log,
            )
            processes.append(worker)
            with distributed.Client(address, set_as_default=False) as client:  # type: ignore[no-untyped-call]
                client.wait_for_workers(1, timeout=TIMEOUT)
            yield address
        finally:
            dask_events.FROM_ENVIRONMENT.shutdown()
            if len(processes) == 2:
                # Much faster than signals, which leave the worker retrying its scheduler.
                _shut_down_cluster(address)
            left = [pid for process in reversed(processes) for pid in _stop(process)]
    assert left == [], f"processes left behind: {left}"


@pytest.fixture
def address_in_env(scheduler_address: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(ADDRESS_ENV_VAR, scheduler_address)
    return scheduler_address


def test_executor_by_address(scheduler_address: str, tmp_path: Path) -> None:
    """An executor given the address runs there: three identical submissions run thrice."""
    with DaskExecutor(address=scheduler_address) as executor:
        assert executor.submit(dask_events.echo, key=1, priority=2).result(timeout=TIMEOUT) == (
            (),
            {"key": 1, "priority": 2},
        )
        assert executor._max_workers == 1  # the cluster's one worker thread
        path = str(tmp_path / "marks")
        futures = [executor.submit(dask_events.mark, path) for _ in range(3)]
        assert len({f.result(timeout=TIMEOUT) for f in futures}) == 3
    assert len(Path(path).read_text().splitlines()) == 3


def test_executor_from_the_environment(address_in_env: str) -> None:
    """Without an address, the executor connects to EVENT_PIPELINE_DASK_ADDRESS."""
    with DaskExecutor() as executor:
        assert executor.submit(pow, 2, 5).result(timeout=TIMEOUT) == 32
        assert executor._client.scheduler.address == address_in_env


def test_runner_on_the_cluster_by_address(
    scheduler_address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An event whose executor is an instance with the address; keys named key and priority."""
    executor = DaskExecutor(address=scheduler_address)
    monkeypatch.setattr(dask_events.EchoByAddress, "executor", executor)
    try:
        with Runner() as runner:
            outcome = runner.run(dask_events.EchoByAddress, 1, key=2, priority=3)
        assert outcome.results[0].content == ((1,), {"key": 2, "priority": 3})
    finally:
        executor.shutdown()


def test_runner_on_the_cluster_from_the_environment(address_in_env: str, tmp_path: Path) -> None:
    """Events pointed at the cluster by the env var: retries, failures, identical tasks."""
    with Runner() as runner:
        paths = [str(tmp_path / name) for name in ("steady", "flaky", "hopeless")]
        outcome = runner.map(dask_events.FlakyFromEnvironment, paths, [0, 1, 5])
        assert [r.success for r in outcome.results] == [True, True, False]
        assert [r.attempts for r in outcome.results] == [1, 2, 3]
        assert isinstance(outcome.results[2].exception, ConnectionError)

        # The executor class, created by the runner, finds the cluster the same way.
        outcome = runner.run(dask_events.Echo, key=1, priority=2)
        assert outcome.results[0].content == ((), {"key": 1, "priority": 2})
        path = str(tmp_path / "marks")
        outcome = runner.map(dask_events.Mark, [path] * 3)
        assert outcome.success
    assert len(Path(path).read_text().splitlines()) == 3
    assert dask_events.FROM_ENVIRONMENT._client.scheduler.address == address_in_env


def test_runner_task_that_kills_its_worker_on_the_cluster(address_in_env: str) -> None:
    """On the real cluster too, a task that kills its worker is a failed result, no hang."""
    with Runner() as runner:
        outcome = runner.run(dask_events.ExitWorkerFromEnvironment)
        assert type(outcome.results[0].exception).__name__ == "KilledWorker"
        # The nanny restarted the worker: the cluster still works.
        assert runner.run(dask_events.EchoFromEnvironment, 1).success
