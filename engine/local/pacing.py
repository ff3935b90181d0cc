"""How many prompt tokens each step reads: chunks sized so that a step takes about `step_s`.

A step of the MLX thread reads one chunk of every prompt being read, after one decode step for the
running answers. Its length bounds how long those answers wait for their next token and how long a
cancelled request keeps the thread. The right chunk differs by two orders of magnitude between a
CPU and Metal, and grows costlier per token as the context grows, so it follows the measured
seconds per prompt token of each model (the decode part of a step, measured on steps without a
prompt, is taken out).
"""

from __future__ import annotations

FIRST_CHUNK = 32  # before anything is measured
# Below this the CPU matmuls lose their efficiency (more seconds per token, so smaller chunks still:
# a spiral measured here at 8 tokens a chunk); on Metal any chunk this small is quick anyway.
MIN_CHUNK = 32
MAX_CHUNK = 2048
# A prompt whose rest fits in this many chunks is read in one step rather than split (so a short
# prompt costs one step, not two or three with a decode step each; a step stays under 1.5 x step_s,
# which bounds how long a cancelled prompt keeps the thread).
TAIL_FACTOR = 1.5


class PrefillPacer:
    def __init__(self, step_s: float = 0.2, fixed_chunk: int = 0) -> None:
        self.step_s = step_s
        self.fixed_chunk = max(0, fixed_chunk)
        self.s_per_token: dict[str, float] = {}
        self.decode_s: dict[str, float] = {}

    def chunk(self, model_id: str, remaining: list[int]) -> int:
        """Tokens to read of each of the prompts being read (`remaining`: their tokens still to read)."""
        if self.fixed_chunk:
            return self.fixed_chunk
        per_token = self.s_per_token.get(model_id)
        if per_token is None:
            chunk = FIRST_CHUNK
        else:
            want = self.step_s / per_token / max(1, len(remaining))
            # Multiples of 16 keep the shapes (and Metal's kernel variants) few.
            chunk = max(MIN_CHUNK, min(MAX_CHUNK, int(want) // 16 * 16))
        if len(remaining) == 1 and 0 < remaining[0] <= chunk * TAIL_FACTOR:
            return remaining[0]
        return chunk

    def record(self, model_id: str, elapsed: float, read: int, decoded: bool) -> None:
        """One step's time, the prompt tokens it read and whether it also decoded."""
        if read <= 0:
            if decoded:
                self.decode_s[model_id] = _mean(self.decode_s.get(model_id), elapsed)
            return
        reading = elapsed - (self.decode_s.get(model_id, 0.0) if decoded else 0.0)
        # Never trust the subtraction below a quarter of the step: noise must not inflate chunks.
        per_token = max(reading, elapsed / 4) / read
        self.s_per_token[model_id] = _mean(self.s_per_token.get(model_id), per_token)


def _mean(old: float | None, new: float) -> float:
    return new if old is None else (old + new) / 2
