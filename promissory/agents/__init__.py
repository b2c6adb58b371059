"""Agents: one durable loop reshaped by prompt, model, tools and stop condition.

An agent run is an actor; every model call and tool call is a durable step; sub-agents are
supervised children in their own crash domains. Tools are functions, other agents, or the
tools of MCP servers (``mcp_server``).
"""

from ..errors import OutputInvalidError
from ._agent import (
    Agent,
    AgentTool,
    ForkPoint,
    Prices,
    RunContext,
    RunHandle,
    RunResult,
    RunTask,
)
from ._anthropic import AnthropicModel
from ._chat import (
    Message,
    ModelRequest,
    ModelResponse,
    ModelSettings,
    TextPart,
    ToolCall,
    ToolResult,
    ToolSpec,
    Usage,
)
from ._loop import AgentRun
from ._mcp import MCPServer, MCPTool, mcp_server
from ._model import FunctionModel, Model, ScriptedModel, call, model_from, reply
from ._openai import OpenAIChatModel
from ._stop import (
    CostBudget,
    MaxTurns,
    NoToolCalls,
    Predicate,
    RunView,
    StopCondition,
    TokenBudget,
    ToolCalled,
)
from ._stream import (
    ModelAnswered,
    RunEnded,
    RunStarted,
    RunStream,
    StreamEvent,
    TextDelta,
    TextDiscarded,
    ToolFinished,
    ToolStarted,
)
from ._tools import Effect, Tool, tool

__all__ = [
    "Agent",
    "MCPServer",
    "MCPTool",
    "ModelAnswered",
    "RunEnded",
    "RunStarted",
    "RunStream",
    "StreamEvent",
    "TextDelta",
    "TextDiscarded",
    "ToolFinished",
    "ToolStarted",
    "AgentRun",
    "AgentTool",
    "AnthropicModel",
    "CostBudget",
    "Effect",
    "ForkPoint",
    "FunctionModel",
    "MaxTurns",
    "Message",
    "Model",
    "ModelRequest",
    "ModelResponse",
    "ModelSettings",
    "NoToolCalls",
    "OpenAIChatModel",
    "OutputInvalidError",
    "Predicate",
    "Prices",
    "RunContext",
    "RunHandle",
    "RunResult",
    "RunTask",
    "RunView",
    "ScriptedModel",
    "StopCondition",
    "TextPart",
    "TokenBudget",
    "Tool",
    "ToolCall",
    "ToolCalled",
    "ToolResult",
    "ToolSpec",
    "Usage",
    "call",
    "mcp_server",
    "model_from",
    "reply",
    "tool",
]


# -- for the layers above: not user API (no promise of stability), but the one door to this
# package's insides; tests/test_package.py refuses an import of a private module across layers.
from ._agent import defined_agents as defined_agents

__internal__ = ["defined_agents"]
"""Names the layers above import from here that are not in ``__all__``."""
