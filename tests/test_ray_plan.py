"""How a Ray run shares the cluster out (retrieval.ray_embed.plan_actors, task_size): pure, no Ray needed."""
from __future__ import annotations

from retrieval.ray_embed import MAX_FILES_PER_TASK, ActorPlan, RayOptions, plan_actors, task_size


def _node(cpus: float, gpus: float = 0, alive: bool = True) -> dict:
    return {"Alive": alive, "Resources": {"CPU": cpus, **({"GPU": gpus} if gpus else {})}}


def test_one_actor_takes_a_whole_node_by_default():
    assert plan_actors([_node(2)], RayOptions("local"), use_gpus=True) == ActorPlan(1, 2.0, 0.0)
    assert plan_actors([_node(8), _node(8), _node(8, alive=False)], RayOptions("auto"), use_gpus=False) \
        == ActorPlan(2, 8.0, 0.0)
    # nodes of different sizes: the smallest node's CPUs per actor, as many as fit on each
    assert plan_actors([_node(4), _node(16)], RayOptions("auto"), use_gpus=False) == ActorPlan(5, 4.0, 0.0)


def test_gpu_nodes_get_one_actor_per_gpu_with_the_nodes_cpus_shared():
    plan = plan_actors([_node(16, gpus=4), _node(32)], RayOptions("auto"), use_gpus=True)
    assert plan == ActorPlan(4, 4.0, 1.0)
    assert plan_actors([_node(16, gpus=4)], RayOptions("auto"), use_gpus=False) == ActorPlan(1, 16.0, 0.0)


def test_asked_for_actors_and_cpus_win():
    assert plan_actors([_node(2)], RayOptions("local", actors=2, cpus_per_actor=1), use_gpus=False) \
        == ActorPlan(2, 1.0, 0.0)
    assert plan_actors([_node(8)], RayOptions("local", cpus_per_actor=2), use_gpus=False) == ActorPlan(4, 2.0, 0.0)


def test_tasks_are_a_few_per_actor_between_one_batch_and_the_cap():
    options = RayOptions("local")
    assert task_size(600, 1, 32, options) == 300
    assert task_size(10, 4, 32, options) == 32
    assert task_size(10_000_000, 8, 32, options) == MAX_FILES_PER_TASK
    assert task_size(600, 1, 32, RayOptions("local", files_per_task=64)) == 64
