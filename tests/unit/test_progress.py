"""Progress from recorded ComfyUI runs: monotonic, real steps, 1.0 only on success."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sakuga.comfy.progress import (
    DEFAULT_SAMPLER_STEPS,
    RUNNING_CAP,
    Progress,
    ProgressModel,
    plan_from_prompt,
    planned_nodes,
    sampler_steps,
)
from sakuga.comfy.protocol import (
    Event,
    Executing,
    ExecutionCached,
    ExecutionInterrupted,
    ExecutionStart,
    ExecutionSuccess,
    ProgressStep,
    parse_message,
)
from sakuga.domain.graph import nodes_to_execute

pytestmark = pytest.mark.timeout(10)


@dataclass
class Run:
    prompt_id: str
    prompt: dict[str, Any]
    events: list[Event] = field(default_factory=list)


def recorded_runs(shared: Path, scenario: str) -> list[Run]:
    """Each accepted POST /prompt of a transcript, with every event its socket received."""
    path = next((shared / "comfyui" / "transcripts").glob(f"{scenario}_*.jsonl"))
    runs: list[Run] = []
    events: list[Event] = []
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if record["src"] == "http" and record["path"] == "/prompt" and record["status"] == 200:
            runs.append(Run(record["body"]["prompt_id"], record["request"]["prompt"], events))
        elif record["src"] == "ws_recv" and record["kind"] == "text":
            events.append(parse_message(json.dumps(record["msg"])))
    return runs


@pytest.fixture(scope="module")
def object_info(shared_dir: Path) -> dict[str, Any]:
    info = json.loads((shared_dir / "comfyui" / "object_info.json").read_text())
    assert isinstance(info, dict)
    return info


def feed(run: Run, object_info: dict[str, Any], floor: float = 0.0) -> list[Progress]:
    execute = nodes_to_execute(run.prompt, object_info)
    model = ProgressModel.from_prompt(
        run.prompt, execute=execute, prompt_id=run.prompt_id, floor=floor
    )
    snapshots = [model.snapshot]
    for event in run.events:
        snapshot = model.apply(event)
        if snapshot is not None:
            snapshots.append(snapshot)
    return snapshots


def assert_monotonic(snapshots: list[Progress]) -> None:
    values = [s.value for s in snapshots]
    assert values == sorted(values), values
    assert all(0.0 <= v <= 1.0 for v in values)


@pytest.mark.parametrize("scenario", ["s01", "s02a", "s02c", "s07"])
def test_successful_runs_rise_monotonically_to_one(
    shared_dir: Path, object_info: dict[str, Any], scenario: str
) -> None:
    for run in recorded_runs(shared_dir, scenario):
        snapshots = feed(run, object_info)
        assert_monotonic(snapshots)
        assert snapshots[-1].value == 1.0
        assert snapshots[-1].nodes_done == snapshots[-1].nodes_total
        assert all(s.value <= RUNNING_CAP for s in snapshots[:-1])
        assert snapshots[-1].message == "done"


@pytest.mark.parametrize("scenario", ["s02a", "s02c"])
def test_sampling_shows_each_step(
    shared_dir: Path, object_info: dict[str, Any], scenario: str
) -> None:
    (run,) = recorded_runs(shared_dir, scenario)
    snapshots = feed(run, object_info)
    sampling = [s for s in snapshots if s.current_node_class == "KSampler" and s.step]
    shown = [s.step for i, s in enumerate(sampling) if i == 0 or sampling[i - 1].step != s.step]
    assert shown == [1, 2, 3, 4]
    assert {s.steps for s in sampling} == {4}
    assert sampling[0].message == "KSampler (node 3) step 1/4"
    values = sorted({s.value for s in sampling})
    assert len(values) == 4 and 0.0 < values[0] < values[-1] < 1.0


def test_sampler_weighs_its_steps(shared_dir: Path, object_info: dict[str, Any]) -> None:
    (run,) = recorded_runs(shared_dir, "s02a")
    plan = plan_from_prompt(run.prompt, nodes_to_execute(run.prompt, object_info))
    assert plan.weights["3"] == 4 and plan.total == 4 + 6
    assert plan.classes["3"] == "KSampler"


def test_interrupted_run_never_reaches_one(shared_dir: Path, object_info: dict[str, Any]) -> None:
    (run,) = recorded_runs(shared_dir, "s05a")
    snapshots = feed(run, object_info)
    assert_monotonic(snapshots)
    assert 0.0 < snapshots[-1].value < 1.0
    assert snapshots[-1].message == "interrupted in KSampler (node 3)"


def test_cached_nodes_count_as_done(shared_dir: Path, object_info: dict[str, Any]) -> None:
    runs = recorded_runs(shared_dir, "s07")
    fully_cached = runs[3]  # the identical sampling prompt, submitted a second time
    model = ProgressModel.from_prompt(
        fully_cached.prompt,
        execute=nodes_to_execute(fully_cached.prompt, object_info),
        prompt_id=fully_cached.prompt_id,
    )
    cached = next(
        e
        for e in fully_cached.events
        if isinstance(e, ExecutionCached) and e.prompt_id == fully_cached.prompt_id
    )
    after = model.apply(cached)
    assert after is not None
    assert after.nodes_done == after.nodes_total == 7
    assert after.value == RUNNING_CAP
    renamed = runs[4]  # only SaveImage's prefix changed: six of seven nodes are cached
    snapshots = feed(renamed, object_info)
    first_cached = next(s for s in snapshots if s.nodes_done)
    assert first_cached.nodes_done == 6
    assert first_cached.value == pytest.approx(9 / 10)


def test_events_of_other_prompts_are_ignored(shared_dir: Path, object_info: dict[str, Any]) -> None:
    first, second = recorded_runs(shared_dir, "s07")[:2]
    model = ProgressModel.from_prompt(first.prompt, prompt_id=first.prompt_id)
    assert model.apply(ExecutionStart(second.prompt_id)) is None
    assert model.apply(ExecutionSuccess(second.prompt_id)) is None
    assert model.snapshot.value == 0.0


def test_reattach_infers_finished_ancestors_from_the_running_node(shared_dir: Path) -> None:
    (run,) = recorded_runs(shared_dir, "s02c")
    model = ProgressModel.from_prompt(run.prompt, prompt_id=run.prompt_id)
    # A reconnect sends {"node": "3"} without prompt_id; everything upstream of 3 has run.
    snapshot = model.apply(Executing("3"))
    assert snapshot is not None
    assert snapshot.nodes_done == 4 and snapshot.current_node_class == "KSampler"
    step = model.apply(ProgressStep(2, 4, "3", run.prompt_id))
    assert step is not None and step.value > snapshot.value


@pytest.mark.parametrize(
    ("floor", "events", "expected"),
    [
        (0.0, [], 0.0),
        (0.5, [], 0.5),
        (0.5, [ExecutionCached("p", ("1",))], 0.5),  # 1/3 done stays under the floor
        (0.5, [ExecutionCached("p", ("1", "2"))], 0.6667),
        (0.95, [Executing("3", "p")], 0.95),
        (2.0, [], RUNNING_CAP),  # a floor never claims success
        (-1.0, [], 0.0),
        (0.7, [ExecutionSuccess("p")], 1.0),
        (0.7, [ExecutionInterrupted("p", "2", "ImageInvert")], 0.7),
    ],
)
def test_floor_from_an_earlier_attempt(floor: float, events: list[Event], expected: float) -> None:
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0]}},
    }
    model = ProgressModel.from_prompt(prompt, prompt_id="p", floor=floor)
    for event in events:
        model.apply(event)
    assert model.snapshot.value == pytest.approx(expected, abs=1e-4)


def test_value_never_decreases_on_a_restarted_node() -> None:
    prompt = {"3": {"class_type": "KSampler", "inputs": {"steps": 10}}}
    model = ProgressModel.from_prompt(prompt, prompt_id="p")
    model.apply(ProgressStep(6, 10, "3", "p"))
    high = model.snapshot.value
    after = model.apply(ProgressStep(1, 10, "3", "p"))  # a second sampling pass restarts at 1
    assert after is not None and after.value == high and after.step == 1


def test_succeed_reaches_one() -> None:
    model = ProgressModel.from_prompt(
        {"1": {"class_type": "SaveImage", "inputs": {}}}, prompt_id="p"
    )
    assert model.succeed().value == 1.0


@pytest.mark.parametrize(
    ("prompt", "node", "steps"),
    [
        ({"3": {"class_type": "KSampler", "inputs": {"steps": 25}}}, "3", 25),
        (
            {"3": {"class_type": "KSampler", "inputs": {"steps": ["9", 0]}}},
            "3",
            DEFAULT_SAMPLER_STEPS,
        ),
        (
            {
                "3": {
                    "class_type": "KSamplerAdvanced",
                    "inputs": {"steps": 30, "start_at_step": 10, "end_at_step": 10000},
                }
            },
            "3",
            20,
        ),
        (
            {
                "1": {"class_type": "BasicScheduler", "inputs": {"steps": 12}},
                "2": {"class_type": "SplitSigmas", "inputs": {"sigmas": ["1", 0], "step": 3}},
                "3": {"class_type": "SamplerCustom", "inputs": {"sigmas": ["2", 1]}},
            },
            "3",
            12,
        ),
        ({"1": {"class_type": "BasicScheduler", "inputs": {"steps": 12}}}, "1", None),
        ({"1": {"class_type": "VAEDecode", "inputs": {}}}, "1", None),
        (
            {"3": {"class_type": "SamplerCustomAdvanced", "inputs": {"sigmas": ["8", 0]}}},
            "3",
            DEFAULT_SAMPLER_STEPS,
        ),
    ],
)
def test_sampler_steps_table(prompt: dict[str, Any], node: str, steps: int | None) -> None:
    assert sampler_steps(prompt, node) == steps


BRANCHES = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 8}},
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0]}},
    "4": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    "5": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},  # dangling: never runs
}


@pytest.mark.parametrize(
    ("with_info", "targets", "expected"),
    [
        (True, None, ["1", "2", "3", "4"]),
        (True, ["4"], ["1", "4"]),
        (False, ["3"], ["1", "2", "3"]),
        (False, None, None),  # output nodes unknown: every node is weighed
    ],
)
def test_planned_nodes_honour_partial_targets(
    object_info: dict[str, Any],
    with_info: bool,
    targets: list[str] | None,
    expected: list[str] | None,
) -> None:
    planned = planned_nodes(BRANCHES, object_info if with_info else None, targets)
    assert (sorted(planned) if planned is not None else None) == expected
