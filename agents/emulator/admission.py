"""Pure admission of one validated request: its prompt length, output length, finish reason and text seed."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from blockctl.openai_api import BadRequest, ChatCompletionRequest, CompletionRequest
from blockctl_agents.emulator.lengths import natural_length, output_length


@dataclass(frozen=True, slots=True)
class Admission:
    prompt_tokens: int
    output_tokens: int  # what the engine runs the request to
    finish_reason: str  # "stop" (natural end) or "length" (max_tokens or model length reached)
    salt: int  # seeds the synthetic reply text: the same prompt gets the same words


def check_model(requested: str | None, served: Sequence[str]) -> None:
    """vLLM answers 404 for a model it does not serve; a missing ``model`` means the first served name."""
    if requested is not None and requested not in served:
        raise BadRequest(f"The model `{requested}` does not exist.", param="model", status=404,
                         code="model_not_found")


def check_vocabulary(token_ids: Sequence[int], vocab_size: int) -> None:
    """vLLM refuses a prompt of token ids its tokenizer does not have (a 400, as any bad request)."""
    top = max(token_ids, default=0)
    if top >= vocab_size:
        raise BadRequest(f"Token id {top} is out of vocabulary", param="prompt")


def admit(
    body: CompletionRequest | ChatCompletionRequest, token_ids: Sequence[int], text: str, max_model_len: int,
    *, reply_tokens: int | None = None,
) -> Admission:
    """Decide the request's lengths; BadRequest when prompt and limit do not fit ``max_model_len``.

    ``reply_tokens``: the workload's own reply length for this prompt (a reply-length table), which then
    replaces the emulator's natural length; ``max_tokens``, ``ignore_eos`` and the model length apply as ever.
    """
    n_prompt = len(token_ids)
    limit = body.output_limit()
    is_chat = isinstance(body, ChatCompletionRequest)
    if n_prompt >= max_model_len or (limit is not None and n_prompt + limit > max_model_len):
        wanted = n_prompt + (limit or 1)
        where = "messages" if is_chat else "prompt"
        raise BadRequest(
            f"This model's maximum context length is {max_model_len} tokens. However, you requested "
            f"{wanted} tokens ({n_prompt} in the {where}, {limit or 1} in the completion). Please reduce the "
            f"length of the {where} or completion.",
            param="max_tokens" if limit is not None and n_prompt < max_model_len else where,
        )
    cap = max_model_len - n_prompt if limit is None else limit
    natural = reply_tokens if reply_tokens is not None else natural_length(text, token_ids)
    out, reason = output_length(natural, cap, ignore_eos=body.ignore_eos, min_tokens=body.min_tokens)
    key = text.encode() if text else bytes(str(list(token_ids)), "ascii")
    return Admission(n_prompt, out, reason, zlib.crc32(key))
