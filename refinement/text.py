"""Free-text identifier scrubber for driver and operator notes, before they reach silver.

A device record may carry a note in Japanese or English ("called 田中さん on 090-…").
:class:`NoteScrubber` replaces every identifier it finds with a typed placeholder
(``[PHONE]``, ``[PERSON]``, …) and counts them per type for the privacy report.

Workflow for one batch of notes:

1. each note is *folded* (full-width digits/letters to ASCII, dashes unified, same offsets);
2. fixed-format identifiers are found by pattern (phones, VINs, 車台番号, 12-digit licence
   and My Number, plates, e-mail) and, whatever their shape, after a cue that names them
   ("VIN", "車台番号", "電話", "ナンバー"…); then addresses and names by rule and gazetteer;
3. notes with Japanese script also go through an entity recognizer for person and place
   names. By default that is Sudachi (``SudachiPy`` with ``SudachiDict-core``, on PyPI):
   its morphological analysis tags each word, in context, with its dictionary's proper-noun
   classes (人名 person, 地名 place). GiNZA (``ja_ginza``, a spaCy NER model) can be chosen
   instead; on the labelled set it catches the same names and places, at 1/45 of the speed.
   English names and places rely on rules and gazetteers, as no official English NER
   model is distributed on PyPI;
4. overlapping finds are resolved by rank (patterns beat rules beat the recognizer) and
   the survivors replaced right to left.

On Spark, :func:`scrub_column` runs the same scrubber over Arrow batches (``mapInArrow``):
each Python worker loads the model once (:func:`shared_scrubber`) and keeps it for
later tasks. It adds a struct column of per-type counts; :func:`redaction_totals` sums it
into the ``{type: count}`` dict a privacy report needs.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from refinement._internal import cues
from refinement._internal import patterns as pt
from refinement._internal.patterns import ADDRESS, PERSON, TYPES, Span
from refinement.errors import RefinementError

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa
    from pyspark.sql import Column, DataFrame

logger = logging.getLogger(__name__)

PLACEHOLDER_TYPES: tuple[str, ...] = TYPES
"""Every placeholder type, in report order; ``[TYPE]`` is what replaces a find."""

SUDACHI = "sudachi"
"""The ``model`` that means Sudachi's dictionary rather than a spaCy package."""
DEFAULT_MODEL = SUDACHI

# Sudachi's proper-noun classes (part of speech ``名詞, 固有名詞, <class>``) that we redact as such.
_SUDACHI_KINDS = {"人名": PERSON, "地名": ADDRESS}
# A katakana full name is written with a middle dot between its words (ジョン・スミス).
_NAME_JOINERS = frozenset("・･")

# GiNZA's labels (Sekine's extended named entity hierarchy) that we redact as such.
_NER_PERSON = frozenset({"Person"})
_NER_PLACE = frozenset(
    {"City", "Province", "County", "GPE_Other", "Address_Other", "Postal_Address", "Station", "Domestic_Region"}
)
_NER_RANK = 7  # below patterns (0-2), rules (3-5) and gazetteer places (6)
_JAPANESE = re.compile(r"[ぁ-ゖァ-ヺ一-龥々]")
_KANJI = re.compile(r"[一-龥々]")
_LATIN = re.compile(r"[A-Za-z]")
_EDGE_PUNCT = frozenset(" \t\r\n,、。:：;；・")  # trimmed off a span's ends; "+", "(", "〒" belong to it
_NER_MAX_CHARS = 4000  # Sudachi refuses inputs over ~49 KB; notes are short, long ones are cut in windows


@dataclass(frozen=True)
class ScrubResult:
    """A scrubbed note.

    Attributes:
        text: the note with each identifier replaced by ``[TYPE]``; ``None`` for a missing note.
        counts: number of placeholders per type, only the types found.
        spans: where each identifier was in the *original* note (offsets only, never the text).
    """

    text: str | None
    counts: Mapping[str, int] = field(default_factory=dict)
    spans: tuple[Span, ...] = ()


@dataclass(frozen=True)
class ScrubberConfig:
    """How the scrubber finds names and places.

    Attributes:
        model: the recognizer for Japanese names and places: :data:`SUDACHI` (default) or a
            spaCy package such as ``"ja_ginza"``.
        use_model: ``False`` skips the recognizer (rules and gazetteers only; lower recall).
        batch_size: notes per ``nlp.pipe`` batch (spaCy only).
    """

    model: str = DEFAULT_MODEL
    use_model: bool = True
    batch_size: int = 64


class NoteScrubber:
    """Replaces identifiers in free-text notes with typed placeholders.

    The entity recognizer is loaded on first use and kept for the life of the object; use
    :func:`shared_scrubber` to share one per process.

    Args:
        config: which recognizer to use and how to batch; defaults to Sudachi.
    """

    def __init__(self, config: ScrubberConfig | None = None) -> None:
        self.config = config or ScrubberConfig()
        self._nlp: Any = None
        self.load_seconds: float | None = None

    # Model --------------------------------------------------------------------------
    def _model(self) -> Any:
        """The recognizer: a Sudachi tokenizer or a spaCy pipeline, loaded on first use."""
        if self._nlp is None:
            t0 = time.perf_counter()
            self._nlp = _load_sudachi() if self.config.model == SUDACHI else _load_spacy(self.config.model)
            self.load_seconds = time.perf_counter() - t0
            logger.info("loaded entity recognizer %s in %.2f s", self.config.model, self.load_seconds)
        return self._nlp

    def _model_spans(self, views: Sequence[str]) -> list[list[Span]]:
        """Person and place names in the notes that have Japanese script."""
        out: list[list[Span]] = [[] for _ in views]
        if not self.config.use_model:
            return out
        jobs = [
            (i, off, v[off : off + _NER_MAX_CHARS])
            for i, v in enumerate(views)
            if _JAPANESE.search(v)
            for off in range(0, len(v), _NER_MAX_CHARS)
        ]
        if not jobs:
            return out
        chunks = [c for _, _, c in jobs]
        found = (
            _sudachi_entities(self._model(), chunks)
            if self.config.model == SUDACHI
            else _spacy_entities(self._model(), chunks, self.config.batch_size)
        )
        for (i, off, chunk), entities in zip(jobs, found, strict=True):
            for start, end, kind in entities:
                text = chunk[start:end]
                # Trained and written for Japanese: its finds on Latin-script words are noise.
                if not _JAPANESE.search(text):
                    continue
                # Japanese places are written in kanji; an all-katakana "place" is a machine part
                # or a foreign name mistaken for one ("コンベア" as a prefecture).
                if kind == ADDRESS and not _KANJI.search(text):
                    continue
                start, end = off + start, off + end
                if kind == ADDRESS:
                    end = pt.extend_ja_address(views[i], end)
                out[i].append(Span(start, end, kind, _NER_RANK))
        return out

    # Finding ------------------------------------------------------------------------
    @staticmethod
    def _rule_spans(view: str) -> list[Span]:
        spans = list(pt.find_fixed(view))
        spans += cues.find_cued(view)
        spans += pt.find_addresses(view)
        if _LATIN.search(view) or _JAPANESE.search(view):
            spans += pt.find_names(view)
        return spans

    @staticmethod
    def _resolve(view: str, candidates: Iterable[Span]) -> tuple[Span, ...]:
        """Non-overlapping spans: best rank first, then longest; model finds may be trimmed."""
        taken = [False] * len(view)
        kept: list[Span] = []
        for s in sorted(candidates, key=lambda s: (s.rank, s.start - s.end, s.start)):
            free = [i for i in range(s.start, s.end) if not taken[i]]
            if len(free) == s.end - s.start:
                pieces = [(s.start, s.end)]
            elif s.rank >= _NER_RANK and s.type == ADDRESS and free:
                # A model span cut by a better find keeps its uncovered runs ("大阪市…" beside a phone).
                pieces, run = [], [free[0], free[0] + 1]
                for i in free[1:]:
                    if i == run[1]:
                        run[1] += 1
                    else:
                        pieces.append(tuple(run))
                        run = [i, i + 1]
                pieces.append(tuple(run))
                pieces = [p for p in pieces if p[1] - p[0] >= 2]
            else:
                continue
            for a, b in pieces:
                # Never leave a placeholder holding only spaces or punctuation. Rank-0 finds
                # (e-mails, cued identifiers) are exact: a plate's serial may begin with dots (・・12).
                while s.rank > 0 and a < b and view[a] in _EDGE_PUNCT:
                    a += 1
                while s.rank > 0 and b > a and view[b - 1] in _EDGE_PUNCT:
                    b -= 1
                if a < b:
                    kept.append(Span(a, b, s.type, s.rank))
                    for i in range(a, b):
                        taken[i] = True
        kept.sort()
        merged: list[Span] = []
        for s in kept:  # "[ADDRESS] [ADDRESS]" for one address split by a space reads as one
            if merged and merged[-1].type == s.type == ADDRESS and not view[merged[-1].end : s.start].strip(" ,"):
                merged[-1] = merged[-1]._replace(end=s.end)
            else:
                merged.append(s)
        return tuple(merged)

    # Scrubbing ----------------------------------------------------------------------
    def scrub(self, text: str | None) -> ScrubResult:
        """Scrubs one note.

        Args:
            text: the note; ``None`` and ``""`` come back unchanged.

        Returns:
            The scrubbed note, its per-type counts and the original spans.
        """
        return self.scrub_many([text])[0]

    def scrub_many(self, texts: Iterable[str | None]) -> list[ScrubResult]:
        """Scrubs a batch of notes, running the model over them in batches.

        Args:
            texts: the notes, ``None`` allowed.

        Returns:
            One :class:`ScrubResult` per note, in order.
        """
        texts = list(texts)
        # Notes repeat ("resumed after break"): each distinct text goes through the model once.
        distinct = list(dict.fromkeys(t for t in texts if t))
        views = [pt.fold(t) for t in distinct]
        done: dict[str, ScrubResult] = {}
        for text, view, extra in zip(distinct, views, self._model_spans(views), strict=True):
            spans = self._resolve(view, self._rule_spans(view) + extra)
            out = text
            for s in reversed(spans):
                out = f"{out[: s.start]}[{s.type}]{out[s.end :]}"
            done[text] = ScrubResult(out, dict(Counter(s.type for s in spans)), spans)
        return [done[t] if t else ScrubResult(t) for t in texts]


def _load_sudachi() -> Any:
    try:
        from sudachipy import Dictionary, SplitMode
    except ImportError as e:
        raise RefinementError(
            "Sudachi could not be loaded; install it with "
            "'pip install SudachiPy==0.6.11 SudachiDict-core' or set use_model=False"
        ) from e
    # Mode C keeps a name whole as the dictionary lists it: 東京都港区 is one place, where
    # mode A cuts it into 東京 + 都 + 港 + 区 and leaves 都 and 区 outside the find.
    return Dictionary(dict="core").create(SplitMode.C)


def _load_spacy(model: str) -> Any:
    try:
        import spacy
        from thinc.api import use_ops

        # Only the entity recogniser and the tok2vec it listens to: the parser, tagger and
        # GiNZA's bunsetu components add nothing to the entities, only time. Matrix
        # products through numpy's BLAS, not thinc's bundled blis: the tok2vec is nearly
        # all gemm, which OpenBLAS runs faster than blis on these CPUs (bench/README.md).
        with use_ops("numpy", use_blis=False):
            return spacy.load(model, exclude=["parser", "morphologizer", "compound_splitter", "bunsetu_recognizer"])
    except (ImportError, OSError) as e:
        raise RefinementError(
            f"NER model {model!r} could not be loaded; install it with "
            "'pip install ja-ginza==5.3.0', use the default recognizer "
            f"({SUDACHI!r}) or set use_model=False"
        ) from e


def _sudachi_entities(tokenizer: Any, chunks: Sequence[str]) -> Iterator[list[tuple[int, int, str]]]:
    """Per chunk, ``(start, end, PERSON|ADDRESS)`` for each run of proper-noun words of one class.

    Adjacent words of a class make one find: a family and a given name (高橋 + 健一), or
    the words of a katakana name with a middle dot between them (ジョン・スミス).
    """
    for chunk in chunks:
        found: list[tuple[int, int, str]] = []
        for m in tokenizer.tokenize(chunk):
            pos = m.part_of_speech()
            kind = _SUDACHI_KINDS.get(pos[2]) if pos[1] == "固有名詞" else None
            if kind is None:
                continue
            start, end = m.begin(), m.end()
            if (
                found
                and found[-1][2] == kind
                and (
                    found[-1][1] == start
                    or (kind == PERSON and start - found[-1][1] == 1 and chunk[start - 1] in _NAME_JOINERS)
                )
            ):
                found[-1] = (found[-1][0], end, kind)
            else:
                found.append((start, end, kind))
        yield found


def _spacy_entities(nlp: Any, chunks: Sequence[str], batch_size: int) -> Iterator[list[tuple[int, int, str]]]:
    """Per chunk, ``(start, end, PERSON|ADDRESS)`` for each entity of a label we redact."""
    for doc in nlp.pipe(chunks, batch_size=batch_size):
        kinds = (
            (e, PERSON if e.label_ in _NER_PERSON else ADDRESS if e.label_ in _NER_PLACE else None) for e in doc.ents
        )
        yield [(e.start_char, e.end_char, kind) for e, kind in kinds if kind is not None]


@lru_cache(maxsize=4)
def shared_scrubber(config: ScrubberConfig | None = None) -> NoteScrubber:
    """The process-wide scrubber for ``config``, so a Spark worker loads the model once."""
    return NoteScrubber(config)


# Spark ------------------------------------------------------------------------------
def _counts_struct() -> Any:
    from pyspark.sql.types import IntegerType, StructField, StructType

    return StructType([StructField(t, IntegerType(), nullable=False) for t in PLACEHOLDER_TYPES])


def scrub_column(
    df: DataFrame,
    column: str,
    out_column: str | None = None,
    *,
    counts_column: str | None = None,
    config: ScrubberConfig | None = None,
) -> DataFrame:
    """Scrubs a string column of a Spark DataFrame, batch by batch in Arrow.

    Runs :class:`NoteScrubber` inside ``mapInArrow``: no per-row Python UDF, one model
    per Python worker (:func:`shared_scrubber`). Every other column passes through.

    Args:
        df: the input.
        column: the string column holding the notes.
        out_column: where the scrubbed note goes; ``None`` overwrites ``column`` so the raw
            note cannot survive by accident.
        counts_column: where the per-type counts go, a struct with one non-null int field per
            :data:`PLACEHOLDER_TYPES`; defaults to ``<out_column>_redactions``.
        config: the scrubber's config; defaults to Sudachi.

    Returns:
        ``df`` with the scrubbed column and the counts struct.
    """
    from pyspark.sql.types import StringType, StructField, StructType

    out_column = out_column or column
    counts_column = counts_column or f"{out_column}_redactions"
    fields = [f for f in df.schema.fields if f.name not in (out_column, counts_column)]
    schema = StructType(
        [*fields, StructField(out_column, StringType(), True), StructField(counts_column, _counts_struct(), True)]
    )
    names = [f.name for f in fields]

    def scrub_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import pyarrow as pa

        scrubber = shared_scrubber(config)
        for batch in batches:
            results = scrubber.scrub_many(batch.column(column).to_pylist())
            counts = pa.StructArray.from_arrays(
                [pa.array([r.counts.get(t, 0) for r in results], pa.int32()) for t in PLACEHOLDER_TYPES],
                names=list(PLACEHOLDER_TYPES),
            )
            yield pa.RecordBatch.from_arrays(
                [batch.column(n) for n in names] + [pa.array([r.text for r in results], pa.string()), counts],
                names=[*names, out_column, counts_column],
            )

    return df.mapInArrow(scrub_batches, schema)


def redaction_sums(counts_column: str, where: Column | None = None, prefix: str = "") -> list[Column]:
    """Aggregates summing a counts struct made by :func:`scrub_column`, one per placeholder type.

    Each is named ``prefix + type`` and counts zero when no row counts. ``where`` limits the
    sums to the rows it holds for. For :meth:`DataFrame.agg` or :meth:`DataFrame.observe`.
    """
    from pyspark.sql import functions as F

    def value(t: str) -> Column:
        return F.col(counts_column)[t] if where is None else F.when(where, F.col(counts_column)[t])

    return [F.coalesce(F.sum(value(t)), F.lit(0)).alias(prefix + t) for t in PLACEHOLDER_TYPES]


def redaction_totals(df: DataFrame, counts_column: str) -> dict[str, int]:
    """Sums a counts struct made by :func:`scrub_column` into ``{type: count}`` (one Spark job).

    Args:
        df: the output of :func:`scrub_column`.
        counts_column: its counts struct column.

    Returns:
        Every placeholder type with its total, zeros included.
    """
    row = df.agg(*redaction_sums(counts_column)).first()
    return {t: int(row[t]) for t in PLACEHOLDER_TYPES}
