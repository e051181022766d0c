"""Data: the embedded task, file formats, step segmentation, answer checking (perturbations: `rairl.data.perturb`)."""

from .formats import (
    load_candidate_pools,
    load_examples,
    load_gsm8k,
    load_localise_items,
    load_prompts,
    load_traces,
    parse_fields,
    save_candidate_pools,
    save_localise_items,
)
from .records import CandidatePool, DataError, Example, LocaliseItem, NoRecordsError, Prompt
from .steps import (
    answer_kind,
    answers_match,
    extract_answer,
    first_wrong_step,
    join_steps,
    split_steps,
)
from .task import Problem, TaskConfig, make_splits

__all__ = [
    "CandidatePool", "DataError", "Example", "LocaliseItem", "NoRecordsError", "Problem", "Prompt", "TaskConfig",
    "answer_kind", "answers_match", "extract_answer", "first_wrong_step", "join_steps",
    "load_candidate_pools", "load_examples", "load_gsm8k", "load_localise_items", "load_prompts", "load_traces", "parse_fields",
    "make_splits", "save_candidate_pools", "save_localise_items", "split_steps",
]
