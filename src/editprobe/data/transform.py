"""How an editor that changes no weights changes what the model is asked.

An in-context editor (IKE) edits by putting the new facts into the prompt. Every probe
asks its questions through the editor's :class:`PromptTransform`, so in-context and weight
editors are measured on the same queries: ``completion`` rewrites a plain-text query that
the model continues (PP/PN/NN/NP, efficacy, paraphrase, neighbourhood, portability,
fluency), ``chat`` rewrites the user message of a chat-template prompt (fact-checking).
Records and samples keep the original query; only the text scored changes. It lives in
``data`` because both editing (which makes transforms) and probes (which apply them) use it.
"""

from __future__ import annotations


class PromptTransform:
    """The identity: what weight editors (and the unedited model) use."""

    def completion(self, query: str) -> str:
        return query

    def chat(self, message: str) -> str:
        return message

    def completions(self, queries: list[str]) -> list[str]:
        return [self.completion(q) for q in queries]


IDENTITY = PromptTransform()
