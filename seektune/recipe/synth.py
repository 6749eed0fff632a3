"""The ``synth:`` section of a recipe: documents -> teacher-written question/answer pairs for review.

    seektune synth examples/customer-service/synth.yaml synth.teacher=http://127.0.0.1:8000/v1
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from seektune.recipe.base import _Section

REFUSAL_EN = ("I'm sorry, but I can't find that in our store's policies, so I can't answer it reliably. "
              "Please contact our support team and they will help you.")
REFUSAL_ZH = "抱歉，我们的政策文档中没有这方面的信息，我无法可靠地回答。请联系我们的客服团队，他们会为您提供帮助。"


class SynthSpec(_Section):
    """What `seektune synth` reads, who writes the questions, and which rows it keeps."""

    documents: list[str] = Field(..., description="Files or directories of documents (.md .txt .pdf .docx .html), "
                                 "relative to the recipe file.")
    teacher: str = Field("smollm2-135m-instruct", description="Who writes the questions (and, in generate mode, the "
                         "answers): a model (alias, directory, Hub id), a run directory, or the base URL of an "
                         "OpenAI-compatible API (e.g. a larger DeepSeek model behind `seektune serve`).")
    teacher_model: str = Field("default", description="Endpoint teacher: the model name sent.")
    api_key_env: str | None = Field("OPENAI_API_KEY", description="Endpoint teacher: variable holding the API key.")
    answer_mode: Literal["extractive", "generate"] = Field(
        "extractive", description="extractive: the answer is the chunk's own supporting sentences and the teacher "
        "writes only the question (grounded even with a weak local teacher); generate: the teacher writes both.")
    chunk_tokens: int = Field(300, gt=16, description="Chunk size in the student's tokens (headings start chunks).")
    overlap: int = Field(32, ge=0, description="Tokens of context shared by consecutive chunks of a section.")
    questions_per_chunk: int = Field(4, gt=0, description="Factual questions per chunk (extractive: one per "
                                     "supporting sentence, the sentences with facts first).")
    variants: int = Field(3, gt=0, description="Questions asked per answer, phrased differently: the first three "
                          "by three prompt styles (greedy), any more sampled; near-duplicates are dropped.")
    templates: bool = Field(True, description="extractive: also write questions by rule - for English, the "
                            "answer's sentence turned around by its parse (\"How much does express shipping cost?\", "
                            "\"express shipping cost?\"; needs the [synth] extra), a terse one from the "
                            "answer's subject and its first fact's kind (\"How long is LarkCare?\"), and a plain "
                            "one about the subject when none of the teacher's questions passed the gates (warning "
                            "template_question).")
    organisation: str | None = Field(None, description="With templates: the business the documents speak for; a "
                                     "sentence about it is also asked as \"you\" (\"Do you accept returns ...?\"). "
                                     "None: the capitalised name the documents use most, when one clearly leads.")
    cloze: bool = Field(False, description="With templates: also one question per fact, the fact replaced by a "
                        "question word (\"Returns are accepted within how many days of delivery?\"). Off by default: "
                        "such a question holds most of its answer, so it teaches recall little (README: fact "
                        "accuracy 0.094 with them, 0.075 without, within noise).")
    procedure: bool = Field(True, description="A how-to question for each chunk holding a list of steps.")
    multi_per_document: int = Field(2, ge=0, description="Questions combining two chunks of the same document.")
    out_of_scope: int = Field(8, ge=0, description="Questions the documents do not answer, answered with the "
                              "refusal text (teaches the model to say it does not know).")
    refusal: str | None = Field(None, description="The out-of-scope answer; None: a default in the documents' "
                                "language.")
    reasoning: bool = Field(False, description="Add a short <think> reasoning (which passage answers, and why) to "
                            "each answer, for R1-style students.")
    min_question_chars: int = Field(8, gt=0)
    max_question_chars: int = Field(300, gt=0)
    min_answer_chars: int = Field(8, gt=0)
    max_answer_chars: int = Field(1500, gt=0)
    support: float = Field(0.7, ge=0, le=1, description="Share of the answer's content words that must occur in "
                           "its source chunk(s); every number of the answer must occur there too.")
    judge: bool = Field(False, description="Also ask the teacher whether the chunk supports each answer (an LLM "
                        "check on top of the lexical one; costs one more call per row).")
    dedup_threshold: float = Field(0.8, gt=0, le=1, description="Character 5-gram Jaccard at which two questions "
                                   "are near-duplicates (of each other, or of a dedup_against row).")
    dedup_against: list[str] = Field(default_factory=list, description="Data files (any format prepare reads) "
                                     "whose questions synthetic rows must not repeat: existing training data.")
    glossary: list[str] | str | None = Field(None, description="Domain terms that must be written exactly as in "
                                             "the list (a list, or a text file with one term per line, relative "
                                             "to the recipe); questions get the list's spelling.")
    temperature: float = Field(0.8, ge=0, description="Sampling temperature of the variant questions.")
    max_new_tokens: int = Field(48, gt=0, description="Longest teacher reply: a question needs few tokens (generate "
                                "mode: raise it to fit the answers).")
    batch_size: int = Field(16, gt=0, description="Local teacher: prompts per generation batch.")
    workers: int = Field(4, gt=0, description="Endpoint teacher: requests in flight at once.")
    retries: int = Field(3, ge=0, description="Endpoint teacher: retries of a failed request, with backoff.")
    timeout_s: float = Field(120, gt=0, description="Endpoint teacher: seconds per request.")
    max_chunks: int | None = Field(None, gt=0, description="Use only the first N chunks (a quick try).")
    seed: int = 42

    @field_validator("documents", "dedup_against", mode="before")
    @classmethod
    def _one_path(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _room_for_answers(self) -> "SynthSpec":
        if self.answer_mode == "generate" and "max_new_tokens" not in self.model_fields_set:
            self.max_new_tokens = 256  # the teacher writes the answer too
        return self

    def refusal_for(self, language: str) -> str:
        if self.refusal:
            return self.refusal
        return REFUSAL_ZH if language == "zh" else REFUSAL_EN
