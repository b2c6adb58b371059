"""Agents: one durable loop reshaped by prompt, model, tools and stop condition.

An agent run is an actor; every model call and tool call is a durable step; sub-agents are
supervised children in their own crash domains.
"""

from ._agent import Agent, AgentTool, Prices, RunContext, RunHandle, RunResult, RunTask
from ._anthropic import AnthropicModel
from ._loop import AgentRun, OutputInvalidError
from ._messages import (
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
from ._tools import Effect, Tool, tool

__all__ = [
    "Agent",
    "AgentRun",
    "AgentTool",
    "AnthropicModel",
    "CostBudget",
    "Effect",
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
    "model_from",
    "reply",
    "tool",
]
