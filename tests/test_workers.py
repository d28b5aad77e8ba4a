"""Planning the workers: one device each, never shared."""

from __future__ import annotations

import pytest

from cockpit.engine.workers import Worker, WorkerError, plan_workers, visible_gpus


def test_a_cpu_box_gets_one_worker_with_the_whole_machine_by_default() -> None:
    assert plan_workers("auto", "auto", [], [0, 1, 2, 3]) == [Worker(0, "auto")]
    assert plan_workers("auto", "cpu", [], [0, 1]) == [Worker(0, "cpu")]


def test_cpu_workers_split_the_cores_between_them() -> None:
    workers = plan_workers(2, "cpu", [], [0, 1, 2, 3, 4])
    # Equal shares, or the one with more cores would train further in the same time.
    assert workers == [Worker(0, "cpu", (0, 1)), Worker(1, "cpu", (2, 3))]
    assert [w.label for w in workers] == ["cpu 0-1", "cpu 2-3"]
    assert plan_workers(2, "auto", [], [4, 7])[1].label == "cpu 7"


def test_more_cpu_workers_than_cores_is_refused_with_what_fits() -> None:
    with pytest.raises(WorkerError, match=r"3 workers need 3 cores.*gives 2.*--workers 2"):
        plan_workers(3, "cpu", [], [0, 1])


def test_a_gpu_box_gets_a_worker_per_gpu() -> None:
    workers = plan_workers("auto", "auto", ["0", "1", "2"], [0, 1])
    assert [w.device for w in workers] == ["cuda:0", "cuda:1", "cuda:2"]
    assert plan_workers(2, "cuda", ["0", "1", "2"], [0])[1].device == "cuda:1"
    # One GPU, one worker: the device stays as configured, as a single training has it.
    assert plan_workers("auto", "cuda", ["0"], [0]) == [Worker(0, "cuda")]


def test_workers_name_their_gpu_as_the_engine_sees_it() -> None:
    gpus = visible_gpus(4, {"CUDA_VISIBLE_DEVICES": "2,3"})
    assert gpus == ["2", "3"]
    assert [w.device for w in plan_workers("auto", "cuda", gpus, [0])] == ["cuda:2", "cuda:3"]
    assert visible_gpus(2, {}) == ["0", "1"]
    assert visible_gpus(0, {"CUDA_VISIBLE_DEVICES": "0"}) == []


@pytest.mark.parametrize(
    ("requested", "device", "gpus", "message"),
    [
        (3, "cuda", ["0", "1"], r"3 workers need 3 GPUs, and 2 are visible.*--workers 2"),
        (2, "cuda:1", ["0", "1"], "device cuda:1 is one GPU, so one worker"),
        (1, "cuda", [], 'device "cuda" but no GPU is visible'),
        (0, "cpu", [], 'workers must be "auto" or a number'),
    ],
)
def test_workers_that_would_share_a_device_are_refused(
    requested: int, device: str, gpus: list[str], message: str
) -> None:
    with pytest.raises(WorkerError, match=message):
        plan_workers(requested, device, gpus, [0, 1])


def test_gpus_reserved_for_the_model_train_nothing() -> None:
    workers = plan_workers("auto", "auto", ["0", "1", "2"], [0], reserved=["2"])
    assert [w.device for w in workers] == ["cuda:0", "cuda:1"]
    with pytest.raises(WorkerError, match=r"every GPU .* is reserved for the model"):
        plan_workers("auto", "cuda", ["0"], [0], reserved=["0"])


def test_gpus_of_several_models_give_workers_of_several_kinds() -> None:
    names = {"0": "NVIDIA H100 80GB HBM3", "1": "NVIDIA H200"}
    mixed = plan_workers("auto", "auto", ["0", "1"], [0], names=names)
    assert [w.kind for w in mixed] == ["NVIDIA H100 80GB HBM3", "NVIDIA H200"]
    alike = plan_workers("auto", "auto", ["0", "1"], [0], names={"0": "H100", "1": "H100"})
    assert [w.kind for w in alike] == ["", ""]  # one kind: nothing to tell apart
