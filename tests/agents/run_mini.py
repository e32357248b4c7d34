"""One mini-swe-agent run against a live ``icae serve`` (run with the agent environment's Python; see agent_check.py).

    .agents/mini-swe-agent/bin/python tests/agents/run_mini.py --mode tools|text --url URL --model NAME --steps 10

The environment returns saved tool outputs in turn and executes nothing: a model's command never reaches a shell.
Prints one JSON line: the exit status, every step's parsed action, format errors, and the server's usage per step.
"""

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("MSWEA_SILENT_STARTUP", "1")

import yaml  # noqa: E402
from minisweagent.agents.default import DefaultAgent  # noqa: E402
from minisweagent.models import get_model  # noqa: E402

CONFIG = Path(__file__).resolve().parents[2] / "docs" / "agents" / "mini_swe_agent.yaml"


class SavedOutputs:
    """mini-swe-agent's environment interface; ``execute`` records the command and returns the next saved output."""

    def __init__(self, outputs: list[str]):
        self.outputs, self.commands = outputs, []

    def execute(self, action: dict, cwd: str = "", *, timeout=None) -> dict:
        self.commands.append(action.get("command"))
        output = self.outputs[(len(self.commands) - 1) % len(self.outputs)]
        return {"output": output, "returncode": 0, "exception_info": ""}

    def get_template_vars(self, **kwargs) -> dict:
        return dict(kwargs)

    def serialize(self) -> dict:
        return {"info": {"config": {"environment_type": "SavedOutputs (executes nothing)"}}}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--mode", choices=["tools", "text"], required=True)
    p.add_argument("--url", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--outputs", required=True, help="JSON list of saved tool outputs")
    p.add_argument("--steps", type=int, default=10)
    args = p.parse_args()
    config = yaml.safe_load(CONFIG.read_text())["model"]  # the documented config, pointed at this server
    config["model_name"] = f"openai/{args.model}"
    config["model_kwargs"]["api_base"] = args.url + "/v1"
    if args.mode == "text":
        config["model_class"] = "litellm_textbased"
    model = get_model(config=config)
    env = SavedOutputs(json.loads(Path(args.outputs).read_text()))
    agent = DefaultAgent(model, env, system_template="You are a coding agent.", instance_template="Task: {{task}}",
                         step_limit=args.steps, cost_limit=0, max_consecutive_format_errors=1)
    result = agent.run("list the sources.")
    steps = [m for m in agent.messages if m.get("role") == "assistant"]
    usage = [(m.get("extra", {}).get("response") or {}).get("usage") for m in steps]
    print(json.dumps({
        "exit_status": result.get("exit_status"),
        "steps": len(steps),
        "actions": [[a.get("command") for a in m.get("extra", {}).get("actions", [])] for m in steps],
        "format_errors": sum(m.get("extra", {}).get("interrupt_type") == "FormatError" for m in agent.messages),
        "executed": env.commands,
        "observation_roles": sorted({m["role"] for m in agent.messages[2:] if m.get("role") in ("user", "tool")}),
        "usage": usage,
        "format_error_replies": [(m.get("extra", {}).get("response") or {}).get("choices", [{}])[0].get("message")
                                 for m in agent.messages if m.get("extra", {}).get("interrupt_type") == "FormatError"],
    }))


if __name__ == "__main__":
    sys.exit(main())
