"""The environment shows what the trajectory generator wrote: replaying a generated trajectory's actions gives its
conversation byte for byte (system prompt, task, every action and every observation), so the training text is the
text an agent reads here."""

import pytest

from icae.agent import TaskTree, oracle_policy, run_episode, tasks_from_tree
from icae.data.corpus import stdlib_dir
from icae.data.generate_trajectories import generate

from .conftest import make_package


def replay_all(root, num):
    trajectories = generate([root], num, seed=0)
    assert len(trajectories) >= min(num, 2)
    tasks = {t.function: t for t in tasks_from_tree(TaskTree.whole(root), plain_lines=False)}
    for trajectory in trajectories:
        name = trajectory["id"].rsplit("__", 2)[1]  # "<file stem>__<function>__<index>"; the stem may be __init__
        episode = run_episode(oracle_policy(tasks[name]), tasks[name])
        assert episode.success
        assert episode.messages == trajectory["messages"], trajectory["id"]


def test_replaying_generated_trajectories_on_a_small_tree(tmp_path):
    replay_all(make_package(tmp_path), 3)  # greet, shout, helper: every function there is


@pytest.mark.parametrize("package", ["json", "email", "logging"])
def test_replaying_the_training_trajectories_packages(package):
    """The packages the shipped trajectory recipes generate from (long files, several windows, many search hits)."""
    replay_all(stdlib_dir() / package, 4)


def test_the_task_list_is_the_generators_choice(tmp_path):
    root = make_package(tmp_path)
    chosen = {t["id"].rsplit("__", 2)[1] for t in generate([root], 10)}
    assert chosen == {t.function for t in tasks_from_tree(TaskTree.whole(root))} == {"greet", "shout", "helper"}
