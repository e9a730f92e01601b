"""SAM 3 for language models: the MCP server (`mcp_server`), the agent loop (`agent`), and their tool contract.

``from sam3studio.llm.agent import run_agent`` and ``from sam3studio.llm.mcp_server import build_server``;
the contract is written down in docs/llm.md.
"""
