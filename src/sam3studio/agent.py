"""``sam3studio.agent.run_agent``: the SAM 3 agent loop, kept in `sam3studio.llm.agent` (this name is short)."""

from sam3studio.llm.agent import AgentError, AgentResult, run_agent

__all__ = ["AgentError", "AgentResult", "run_agent"]
