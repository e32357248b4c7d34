"""Running a policy on a task, scoring the run, and two scripted policies.

A policy is any callable ``messages -> reply``: ``messages`` is the conversation so far (OpenAI chat messages: the
system prompt, the task, then each assistant turn and its observation), ``reply`` the next assistant turn: in text
mode a string (or a message whose ``content`` is one), in tool mode a message with ``tool_calls`` (a dict, or the
OpenAI client's message object). An OpenAI client against ``icae serve`` is one, wrapped as::

    def policy(messages):
        r = client.chat.completions.create(model=NAME, messages=messages, tools=TOOLS, temperature=0)
        return r.choices[0].message

Text mode keeps the generated trajectories' conversation: observations are ``tool`` turns (no call id), as the
training text has them. Tool mode answers each tool call with a ``tool`` message carrying its id, and a reply with no
tool call with a ``user`` message.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from icae.agent.actions import TOOL_SYSTEM, Action, parse_command, tool_call
from icae.agent.environment import Environment
from icae.agent.tasks import Task
from icae.data import trajectory_tools as tt

Policy = Callable[[list[dict]], object]


class StopEpisode(Exception):
    """Raised by a policy that cannot take another step (a served model's context window is full): the episode ends
    there, is scored from its final state like one stopped at the step limit, and ``Episode.stopped`` says why."""


@dataclass(frozen=True)
class Episode:
    """One run, scored. ``reference_match``: the share of steps whose action equals the reference trajectory's
    action at that step (same canonical command), over ``max(steps, reference length)`` steps, so that stopping
    early or wandering both count against it; a format error matches nothing. ``leading_right``: how many of the
    first actions, in a row, are the reference's (how far the agent got before its first wrong step)."""

    task_id: str
    mode: str
    success: bool
    submitted: bool
    steps: int
    format_errors: int
    refusals: int
    reference_match: float
    actions: tuple[str | None, ...]  # each step's canonical command; None for a format error
    problems: tuple[str, ...]  # why it is not a success
    messages: list[dict] = field(repr=False, default_factory=list)
    stopped: str | None = None  # why the policy ended the episode early (StopEpisode), None otherwise
    leading_right: int = 0

    def summary(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "messages"} | {"actions": list(self.actions)}


def opening(task: Task, mode: str = "text") -> list[dict]:
    """The system prompt and the task statement."""
    return [{"role": "system", "content": tt.SYSTEM if mode == "text" else TOOL_SYSTEM},
            {"role": "user", "content": task.instruction}]


def reference_actions(task: Task) -> list[Action]:
    return [parse_command(command) for _, command in task.reference]


def leading_right(actions: list[Action | None], reference: list[Action]) -> int:
    """The number of first actions, in a row, equal to the reference's at the same step."""
    n, most = 0, min(len(actions), len(reference))
    while n < most and actions[n] is not None and actions[n].command == reference[n].command:
        n += 1
    return n


def reference_match(actions: list[Action | None], reference: list[Action]) -> float:
    hits = sum(a is not None and i < len(reference) and a.command == reference[i].command
               for i, a in enumerate(actions))
    return hits / max(len(actions), len(reference), 1)


def run_episode(policy: Policy, task: Task, max_steps: int = 20, mode: str = "text") -> Episode:
    """Run ``policy`` on ``task`` in a fresh copy of its tree until it submits, takes ``max_steps`` steps or raises
    :class:`StopEpisode`; success is read from the final state (submitting is not required: a run stopped at the
    limit is judged by its edits)."""
    messages, stopped = opening(task, mode), None
    with Environment(task, max_steps) as env:
        while not env.done:
            try:
                reply = policy([dict(m) for m in messages])
            except StopEpisode as e:
                stopped = str(e) or type(e).__name__
                break
            step = env.step(reply, mode)
            messages.append(step.message)
            if mode == "tools" and step.call_ids:
                messages += [{"role": "tool", "tool_call_id": i, "content": step.observation} for i in step.call_ids]
            else:
                messages.append({"role": "tool" if mode == "text" else "user", "content": step.observation})
        check, reference = env.check(), reference_actions(task)
        return Episode(task.id, mode, check.success, env.submitted, env.steps, env.format_errors, env.refusals,
                       reference_match(env.actions, reference),
                       tuple(None if a is None else a.command for a in env.actions), check.problems, messages, stopped,
                       leading_right(env.actions, reference))


def _assistant_turns(messages: list[dict]) -> int:
    return sum(m.get("role") == "assistant" for m in messages)


def scripted_policy(steps: list[tuple[str, str]], mode: str = "text") -> Policy:
    """A policy replaying ``(thought, command)`` steps in order (then ``submit``): in text mode as the generated
    trajectories write them, in tool mode as one tool call each."""
    def policy(messages: list[dict]):
        i = _assistant_turns(messages)
        thought, command = steps[i] if i < len(steps) else ("Submitting.", tt.SUBMIT)
        if mode == "text":
            return tt.assistant_text(thought, command)
        call = tool_call(parse_command(command))
        return {"role": "assistant", "content": f"DISCUSSION\n{thought}",
                "tool_calls": [{"id": f"call_{i}", "type": "function", "function": call}]}
    return policy


def oracle_policy(task: Task, mode: str = "text") -> Policy:
    """Replays the reference trajectory's actions: it must solve every task."""
    return scripted_policy(task.reference, mode)


def wrong_policy(task: Task, mode: str = "text") -> Policy:
    """The reference, except that the edit puts the comment above the ``def`` line instead of below it: the file
    still compiles, the run must still score as a failure."""
    steps = list(task.reference)
    steps[2] = (steps[2][0], tt.edit_command(task.line, task.line, [task.comment, task.def_line]))
    return scripted_policy(steps, mode)


def tool_trajectory(task: Task) -> list[dict]:
    """The reference trajectory as OpenAI tool calls (what the oracle's tool-mode run records): for writing
    training data in the form a served model emits ``tool_calls`` in."""
    return run_episode(oracle_policy(task, "tools"), task, max_steps=len(task.reference), mode="tools").messages

