"""Document hooks of the ``hybridreduce_local`` lmms-eval task (loaded by lmms-eval from this folder)."""

import re

LETTERS = "ABCDEFGHIJ"


def doc_to_visual(doc):
    return [doc["video"]]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    kwargs = lmms_eval_specific_kwargs or {}
    options = "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(doc["options"]))
    return f"{kwargs.get('pre_prompt', '')}{doc['question']}\n{options}{kwargs.get('post_prompt', '')}"


def extract_letter(response: str, num_options: int) -> str:
    """The first standalone option letter of a response ("B", "B.", "(B) red", "Answer: B")."""
    m = re.search(rf"\b([{LETTERS[:num_options]}])\b", response.strip())
    return m.group(1) if m else ""


def process_results(doc, results):
    predicted = extract_letter(results[0], len(doc["options"]))
    return {"accuracy": float(predicted == doc["answer"])}
