"""An agent environment with nothing live in it: the generated trajectories' tasks (document a function: search, open,
edit, compile, submit), run for real on a temporary copy of a code tree, with Python tools, no shell, a step limit,
and success read from the final state. See docs/agent_env.md. Imports no torch.
"""

from icae.agent.actions import TOOL_SYSTEM, TOOLS, Action, FormatError, parse_command, parse_text, parse_tool_call, tool_call
from icae.agent.environment import Check, Environment, Step
from icae.agent.episode import (Episode, StopEpisode, oracle_policy, run_episode, scripted_policy, tool_trajectory,
                                wrong_policy)
from icae.agent.tasks import HELDOUT_SOURCES, Task, TaskTree, heldout_tasks, heldout_trees, tasks_from_tree
from icae.agent.workspace import Refused, Workspace

__all__ = ["Action", "Check", "Environment", "Episode", "FormatError", "HELDOUT_SOURCES", "Refused", "Step",
           "StopEpisode", "TOOLS", "TOOL_SYSTEM", "Task", "TaskTree", "Workspace", "heldout_tasks", "heldout_trees",
           "oracle_policy", "parse_command", "parse_text", "parse_tool_call", "run_episode", "scripted_policy",
           "tasks_from_tree", "tool_call", "tool_trajectory", "wrong_policy"]
