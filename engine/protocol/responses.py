"""OpenAI Responses API (stateless) <-> canonical types: the request, the response object and its
event stream.

Stateless: every request carries the whole conversation in `input` (as Codex and the SDKs do
with `store: false`). `previous_response_id` and `store: true` ask for server-side state that this
listener does not keep, so they get a 400 that says so rather than an answer without the context.
"""

from __future__ import annotations

import json
import time
from typing import Any

from engine.protocol.common import bad, parse_model, parse_stream_flag, parse_tool
from engine.protocol.openai import error_body_openai
from engine.types import (
    Attachment,
    ChatRequest,
    ChatResult,
    Chunk,
    EngineError,
    Message,
    ToolCall,
    ToolSpec,
    Usage,
)

STATELESS = (
    "this listener is stateless: send the whole conversation in `input` with `store: false` "
    "(previous_response_id and stored responses are not kept)"
)
_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
# Input items a chat backend has no use for: the model's own bookkeeping (reasoning, compaction)
# and the records of hosted tools that only run at OpenAI.
_IGNORED_ITEMS = (
    "reasoning",
    "compaction",
    "compaction_summary",
    "web_search_call",
    "file_search_call",
    "image_generation_call",
    "code_interpreter_call",
    "mcp_list_tools",
    "tool_search_call",
    "tool_search_output",
)


# ---------------------------------------------------------------- Responses -> canonical


def _number(body: dict[str, Any], key: str, integer: bool = False) -> Any:
    value = body.get(key)
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (integer and isinstance(value, float) and not value.is_integer())
    ):
        raise bad(key, "must be an integer" if integer else "must be a number")
    return int(value) if integer else value  # JSON has one number type: 5.0 is the integer 5


def _parts(content: Any, where: str) -> tuple[str, tuple[Attachment, ...]]:
    """A message's content: a string, or a list of input_text / output_text / input_image parts."""
    if isinstance(content, str):
        return content, ()
    if not isinstance(content, list):
        raise bad(where, "must be a string or a list of content parts")
    texts: list[str] = []
    attachments: list[Attachment] = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise bad(f"{where}[{j}]", "must be an object with a type")
        kind = part["type"]
        if kind in ("input_text", "output_text", "text", "refusal"):
            text = part.get("refusal") if kind == "refusal" else part.get("text")
            if not isinstance(text, str):
                raise bad(f"{where}[{j}].text", "must be a string")
            texts.append(text)
        elif kind == "input_image":
            url = part.get("image_url")
            if not isinstance(url, str):
                raise bad(f"{where}[{j}].image_url", "must be a URL or a data: URL (file_id needs stored files)")
            attachments.append(_image(url))
        elif kind == "input_file":
            attachments.append(Attachment(kind="document", data=part.get("file_data"), url=part.get("file_url")))
        else:
            raise bad(f"{where}[{j}].type", f"unsupported content part {kind!r}")
    return "".join(texts), tuple(attachments)


def _image(url: str) -> Attachment:
    if url.startswith("data:") and ";base64," in url:
        media_type, data = url[5:].split(";base64,", 1)
        return Attachment(kind="image", media_type=media_type, data=data)
    return Attachment(kind="image", url=url)


def _output_text(output: Any, where: str) -> tuple[str, tuple[Attachment, ...]]:
    if output is None:
        return "", ()
    if isinstance(output, str):
        return output, ()
    return _parts(output, where)


def _input_messages(raw: Any) -> list[Message]:
    if isinstance(raw, str):
        return [Message(role="user", content=raw)]
    if not isinstance(raw, list) or not raw:
        raise bad("input", "is required: a string or a non-empty list of items")
    out: list[Message] = []
    for i, item in enumerate(raw):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise bad(where, "must be an object")
        kind = item.get("type", "message")
        if kind == "message":
            role = _ROLES.get(item["role"]) if isinstance(item.get("role"), str) else None
            if role is None:
                raise bad(f"{where}.role", f"must be user, assistant, system or developer (got {item.get('role')!r})")
            text, attachments = _parts(item.get("content"), f"{where}.content")
            out.append(Message(role=role, content=text, attachments=attachments))  # type: ignore[arg-type]
        elif kind in ("function_call", "custom_tool_call"):
            for key in ("call_id", "name"):
                if not isinstance(item.get(key), str):
                    raise bad(f"{where}.{key}", "is required")
            # A custom (free-form) tool's input travels as the single argument "input".
            args = item.get("arguments", "{}") if kind == "function_call" else {"input": item.get("input", "")}
            call = ToolCall(
                id=item["call_id"], name=item["name"], arguments=args if isinstance(args, str) else json.dumps(args)
            )
            prev = out[-1] if out else None
            # Parallel calls arrive as consecutive items: one assistant turn holds them all.
            if prev is not None and prev.role == "assistant":
                out[-1] = Message(role="assistant", content=prev.content, tool_calls=(*prev.tool_calls, call))
            else:
                out.append(Message(role="assistant", tool_calls=(call,)))
        elif kind in ("function_call_output", "custom_tool_call_output"):
            if not isinstance(item.get("call_id"), str):
                raise bad(f"{where}.call_id", "is required")
            text, attachments = _output_text(item.get("output"), f"{where}.output")
            out.append(Message(role="tool", content=text, tool_call_id=item["call_id"], attachments=attachments))
        elif kind in _IGNORED_ITEMS:
            continue
        elif kind == "item_reference":
            raise bad(f"{where}.type", "item_reference: " + STATELESS)
        else:
            raise bad(
                f"{where}.type",
                f"unsupported input item {kind!r} (messages, function_call and function_call_output are)",
            )
    if not out:
        raise bad("input", "has no message")
    return out


def _tools(raw: Any) -> tuple[list[ToolSpec], dict[str, str]]:
    """Function tools, those inside a `namespace` flattened; and each flattened name's namespace.

    Hosted tools (web_search, file_search, image_generation...) and custom grammar tools run only
    at OpenAI: a chat backend cannot offer them, so they are left out rather than refused (a 400
    would stop Codex, which always sends web_search).
    """
    if raw is None:
        return [], {}
    if not isinstance(raw, list):
        raise bad("tools", "must be a list")
    tools: list[ToolSpec] = []
    spaces: dict[str, str] = {}
    for j, t in enumerate(raw):
        if not isinstance(t, dict):
            raise bad(f"tools[{j}]", "must be an object")
        if t.get("type") == "function":
            tools.append(
                parse_tool(t.get("name"), t.get("description"), t.get("parameters"), f"tools[{j}]", "parameters")
            )
        elif t.get("type") == "namespace":
            inner = t.get("tools")
            if not isinstance(t.get("name"), str) or not isinstance(inner, list):
                raise bad(f"tools[{j}]", "a namespace needs a name and a list of tools")
            for k, f in enumerate(inner):
                if isinstance(f, dict) and f.get("type") == "function":
                    tools.append(
                        parse_tool(
                            f.get("name"),
                            f.get("description"),
                            f.get("parameters"),
                            f"tools[{j}].tools[{k}]",
                            "parameters",
                        )
                    )
                    spaces[f["name"]] = t["name"]
    return tools, spaces


def _tool_choice(choice: Any) -> Any:
    if choice is None or choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"name": choice["name"]}
    raise bad("tool_choice", "must be 'auto', 'none', 'required' or {type: function, name}")


def request_from_responses(body: Any) -> ChatRequest:
    """Parse and validate a Responses API request body (the listener's edge)."""
    model = parse_model(body)
    if body.get("previous_response_id") is not None:
        raise bad("previous_response_id", STATELESS)
    if body.get("store") is True:
        raise bad("store", STATELESS)
    if body.get("conversation") is not None:
        raise bad("conversation", STATELESS)
    messages: list[Message] = []
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise bad("instructions", "must be a string")
        if instructions:
            messages.append(Message(role="system", content=instructions))
    messages += _input_messages(body.get("input"))
    tools, spaces = _tools(body.get("tools"))
    req = ChatRequest(
        model=model,
        messages=messages,
        max_tokens=_number(body, "max_output_tokens", integer=True),
        temperature=_number(body, "temperature"),
        top_p=_number(body, "top_p"),
        stream=parse_stream_flag(body),
        tools=tools,
        tool_choice=_tool_choice(body.get("tool_choice")),
        # Calls to a namespaced tool name their namespace in the answer.
        metadata={"tool_namespaces": spaces} if spaces else {},
    )
    req.validate()
    return req


# ---------------------------------------------------------------- canonical -> Responses


def _usage(u: Usage) -> dict[str, Any]:
    return {
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": u.total_tokens,
    }


def _message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": [{"type": "output_text", "text": text, "annotations": []}] if status == "completed" else [],
    }


def _call_item(
    item_id: str, call_id: str, name: str, arguments: str, status: str = "completed", namespace: str | None = None
) -> dict[str, Any]:
    item = {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }
    if namespace:
        item["namespace"] = namespace
    return item


class ResponseShell:
    """The fields of a response object that do not depend on the answer: id, model, the request echo."""

    def __init__(self, req: ChatRequest, id: str, created: float | None = None) -> None:
        self.id, self.model = id, req.model
        self.created = int(created if created is not None else time.time())
        choice = req.tool_choice
        self.echo: dict[str, Any] = {
            "instructions": None,
            "max_output_tokens": req.max_tokens,
            "temperature": req.temperature,
            "top_p": req.top_p,
            "parallel_tool_calls": True,
            "previous_response_id": None,
            "store": False,
            "tool_choice": {"type": "function", "name": choice["name"]}
            if isinstance(choice, dict)
            else choice or "auto",
            "tools": [
                {
                    "type": "function",
                    "name": t.name,
                    "description": t.description,
                    "parameters": t.parameters,
                    "strict": False,
                }
                for t in req.tools
            ],
            "text": {"format": {"type": "text"}},
            "truncation": "disabled",
            "metadata": {},
        }

    def render(
        self,
        status: str,
        output: list[dict[str, Any]],
        usage: Usage | None = None,
        finish: str | None = None,
        error: EngineError | None = None,
    ) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created,
            "status": status,
            "model": self.model,
            "output": output,
            "usage": _usage(usage) if usage is not None else None,
            "error": {"code": "server_error", "message": str(error)} if error is not None else None,
            "incomplete_details": {"reason": "max_output_tokens"} if finish == "length" else None,
            **self.echo,
        }


def _namespaces(req: ChatRequest) -> dict[str, str]:
    return dict(req.metadata.get("tool_namespaces") or {})


def _final_status(finish: str | None) -> str:
    return "incomplete" if finish == "length" else "completed"


def response_to_responses(
    result: ChatResult, req: ChatRequest, *, id: str, created: float | None = None
) -> dict[str, Any]:
    """A whole answer as one response object."""
    output: list[dict[str, Any]] = []
    if result.text or not result.tool_calls:
        output.append(_message_item(f"msg_{id}", result.text))
    for k, c in enumerate(result.tool_calls):
        output.append(
            _call_item(
                f"fc_{id}_{k}", c.id or f"call_{id}_{k}", c.name, c.arguments, namespace=_namespaces(req).get(c.name)
            )
        )
    return ResponseShell(req, f"resp_{id}", created).render(
        _final_status(result.finish_reason), output, result.usage, result.finish_reason
    )


class _Item:
    def __init__(self, kind: str, item_id: str, output_index: int, call_id: str = "", name: str = "") -> None:
        self.kind, self.id, self.output_index = kind, item_id, output_index
        self.call_id, self.name = call_id, name
        self.text: list[str] = []

    def done(self, spaces: dict[str, str]) -> dict[str, Any]:
        if self.kind == "message":
            return _message_item(self.id, "".join(self.text))
        return _call_item(self.id, self.call_id, self.name, "".join(self.text), namespace=spaces.get(self.name))


class ResponsesStreamEncoder:
    """Canonical chunks -> the Responses event sequence.

    response.created, response.in_progress; per output item: response.output_item.added, then for a
    message response.content_part.added and response.output_text.delta..., for a function call
    response.function_call_arguments.delta...; at the end, per item in order, the .done events
    (response.output_text.done and response.content_part.done, or
    response.function_call_arguments.done) and response.output_item.done; finally
    response.completed (response.incomplete when the token limit cut the answer). A failure after
    the start ends the stream with response.failed. Items stay open until the end, so pieces of
    parallel tool calls that interleave still land in their own item.
    """

    def __init__(self, req: ChatRequest, id: str, created: float | None = None) -> None:
        self._shell = ResponseShell(req, f"resp_{id}", created)
        self._spaces = _namespaces(req)
        self._rid = id
        self._seq = 0
        self._started = False
        self._items: list[_Item] = []
        self._calls: dict[int, _Item] = {}  # canonical tool call index -> its item
        self._usage = Usage()
        self._finish: str | None = None
        self._ended = False

    def _event(self, kind: str, **fields: Any) -> tuple[str, dict[str, Any]]:
        event = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return kind, event

    def _start(self) -> list[tuple[str, dict[str, Any]]]:
        if self._started:
            return []
        self._started = True
        snapshot = self._shell.render("in_progress", [])
        return [
            self._event("response.created", response=snapshot),
            self._event("response.in_progress", response=snapshot),
        ]

    def _add(self, kind: str, call_id: str = "", name: str = "") -> tuple[_Item, list[tuple[str, dict[str, Any]]]]:
        n = len(self._items)
        item = _Item(kind, f"{'msg' if kind == 'message' else 'fc'}_{self._rid}_{n}", n, call_id, name)
        self._items.append(item)
        if kind == "message":
            return item, [
                self._event(
                    "response.output_item.added", output_index=n, item=_message_item(item.id, "", "in_progress")
                ),
                self._event(
                    "response.content_part.added",
                    item_id=item.id,
                    output_index=n,
                    content_index=0,
                    part={"type": "output_text", "text": "", "annotations": []},
                ),
            ]
        return item, [
            self._event(
                "response.output_item.added",
                output_index=n,
                item=_call_item(item.id, call_id, name, "", "in_progress", self._spaces.get(name)),
            )
        ]

    def _close(self, item: _Item) -> list[tuple[str, dict[str, Any]]]:
        at = {"item_id": item.id, "output_index": item.output_index}
        text = "".join(item.text)
        if item.kind == "message":
            part = {"type": "output_text", "text": text, "annotations": []}
            out = [
                self._event("response.output_text.done", **at, content_index=0, text=text, logprobs=[]),
                self._event("response.content_part.done", **at, content_index=0, part=part),
            ]
        else:
            out = [self._event("response.function_call_arguments.done", **at, name=item.name, arguments=text)]
        out.append(
            self._event("response.output_item.done", output_index=item.output_index, item=item.done(self._spaces))
        )
        return out

    def encode(self, chunk: Chunk) -> list[tuple[str, dict[str, Any]]]:
        out = self._start()
        if chunk.text:
            item = self._items[-1] if self._items and self._items[-1].kind == "message" else None
            if item is None:
                item, events = self._add("message")
                out += events
            item.text.append(chunk.text)
            out.append(
                self._event(
                    "response.output_text.delta",
                    item_id=item.id,
                    output_index=item.output_index,
                    content_index=0,
                    delta=chunk.text,
                    logprobs=[],
                )
            )
        for d in chunk.tool_calls:
            call = self._calls.get(d.index)
            if call is None:
                call, events = self._add("function_call", d.id or f"call_{self._rid}_{d.index}", d.name or "")
                self._calls[d.index] = call
                out += events
            elif d.name and not call.name:
                call.name = d.name
            if d.arguments:
                call.text.append(d.arguments)
                out.append(
                    self._event(
                        "response.function_call_arguments.delta",
                        item_id=call.id,
                        output_index=call.output_index,
                        delta=d.arguments,
                    )
                )
        if chunk.usage is not None:
            self._usage = chunk.usage
        if chunk.finish_reason and chunk.error is None:
            self._finish = chunk.finish_reason
        return out

    def finish(self) -> list[tuple[str, dict[str, Any]]]:
        if self._ended:
            return []
        self._ended = True
        out = self._start()
        if not self._items:
            out += self._add("message")[1]
        for item in self._items:
            out += self._close(item)
        status = _final_status(self._finish)
        output = [item.done(self._spaces) for item in self._items]
        final = self._shell.render(status, output, self._usage, self._finish)
        out.append(self._event(f"response.{status}", response=final))
        return out

    def error_events(self, err: EngineError) -> list[tuple[str, dict[str, Any]]]:
        """A failure after the stream began: response.failed with what was produced so far."""
        if self._ended:
            return []
        self._ended = True
        out = self._start()
        output = [{**item.done(self._spaces), "status": "incomplete"} for item in self._items]
        out.append(
            self._event("response.failed", response=self._shell.render("failed", output, self._usage, error=err))
        )
        return out


# ---------------------------------------------------------------- errors


def error_body_responses(err: EngineError) -> dict[str, Any]:
    """HTTP errors of the Responses API have the chat-completions shape."""
    return error_body_openai(err)
