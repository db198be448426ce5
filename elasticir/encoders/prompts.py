"""Which of a model's prompts a dataset's texts get, by MTEB's rules, and the user's overrides.

MTEB picks a prompt name per task and side from the model's `prompts` (config_sentence_transformers.json), in
this order: "<task name>-<prompt type>", "<task name>", "<task type>-<prompt type>", "<task type>", "<prompt
type>" (`mteb.models.abs_encoder.get_prompt_name`). When none matches, sentence-transformers' `encode` (symmetric
tasks: no prompt type) falls back to the model's `default_prompt_name`; `encode_query` / `encode_document`, which
MTEB calls for the two sides, never do (their "query" / "document" prompt, "" unless the model sets one, comes
first). Written here rather than imported because mteb is an optional, slow
import and its function needs a TaskMetadata; a test checks that both agree on every rule.

A chosen prompt is a (name, text) pair: the name is what a leaderboard records, the text is what is prepended to
every text of that side and what every cache key holds.
"""

from __future__ import annotations

from dataclasses import dataclass

from elasticir.errors import ElasticIRError

NO_PROMPT = "none"  # --prompt-name none: no prompt at all, whatever the model declares


@dataclass(frozen=True)
class Prompt:
    name: str | None  # the model's prompt name, None for a literal or no prompt
    text: str

    def as_dict(self) -> dict:
        return {"name": self.name, "text": self.text}


EMPTY = Prompt(None, "")


def mteb_prompt_name(prompts: dict[str, str], task_name: str | None, task_type: str,
                     prompt_type: str | None) -> str | None:
    """The prompt name MTEB selects for a task (name and type, e.g. "STSBenchmark", "STS") and a side
    ("query", "document", or None for symmetric tasks such as STS)."""
    candidates = [
        f"{task_name}-{prompt_type}" if task_name and prompt_type else None,
        task_name,
        f"{task_type}-{prompt_type}" if prompt_type else None,
        task_type,
        prompt_type,
    ]
    return next((name for name in candidates if name and name in prompts), None)


def choose(prompts: dict[str, str], default_name: str | None, *, task_name: str | None, task_type: str,
           prompt_type: str | None, prompt_name: str | None = None, literal: str | None = None) -> Prompt:
    """The prompt one side of a dataset gets: a literal text (`--query-prompt`, `--doc-prompt`) first, then a
    named prompt (`--prompt-name`, or "none"), then MTEB's selection, then, for a symmetric task only (no
    `prompt_type`), the model's default prompt, as MTEB running the sentence-transformers model applies them."""
    if literal is not None:
        return Prompt(None, literal)
    if prompt_name == NO_PROMPT:
        return EMPTY
    if prompt_name is not None:
        if prompt_name not in prompts:
            names = ", ".join(sorted(prompts)) or "none"
            raise ElasticIRError(f"--prompt-name {prompt_name!r}: the model has no such prompt (its prompts: {names}; "
                                 f"'{NO_PROMPT}' for no prompt)")
        return Prompt(prompt_name, prompts[prompt_name])
    name = mteb_prompt_name(prompts, task_name, task_type, prompt_type)
    if name is None and prompt_type is None:
        name = default_name
    return Prompt(name, prompts[name]) if name and name in prompts else EMPTY


SIDES = {"sts": (None,), "retrieval": ("query", "document")}  # the prompt types of a task's texts


def dataset_prompts(prompts: dict[str, str], default_name: str | None, *, task: str, task_name: str | None,
                    task_type: str, prompt_name: str | None = None, query_prompt: str | None = None,
                    doc_prompt: str | None = None) -> dict[str, Prompt]:
    """The prompt of each side of one dataset: {"text": ...} for a symmetric task (STS: both sentences get the
    same prompt, MTEB's prompt type None), {"query": ..., "document": ...} for retrieval. `prompt_name` (or
    "none") replaces MTEB's selection on every side; `query_prompt` / `doc_prompt` are literal texts that
    replace the prompt of their side."""
    literals = {"query": query_prompt, "document": doc_prompt}
    return {side or "text": choose(prompts, default_name, task_name=task_name, task_type=task_type, prompt_type=side,
                                   prompt_name=prompt_name, literal=literals.get(side or ""))
            for side in SIDES[task]}
