"""The time-aligned token/frame graph: word spans, edges, batching."""

import numpy as np
import pytest

from training.encoders.asr import Word
from training.models.batch import collate
from training.models.graph import batch_edges, time_aligned_edges, timed_word_spans, word_char_spans
from training.models.profile import synthetic_utterances

# "hello big world": [CLS] hel lo big world [SEP] <pad> <pad>
OFFSETS = np.array([(0, 0), (0, 3), (3, 5), (6, 9), (10, 15), (0, 0), (10, 15), (0, 0)], np.int32)
TOKEN_MASK = np.array([1, 1, 1, 1, 1, 1, 0, 0], bool)  # token 6 is padding *with* a real-looking span
# ten 0.2 s frames, centres 0.1, 0.3, ..., 1.9; the last one is padding
FRAME_TIMES = np.stack([np.arange(10) * 0.2, np.arange(10) * 0.2 + 0.2], 1).astype(np.float32)
FRAME_MASK = np.arange(10) < 9
WORDS = [(0, 5, 0.0, 0.55), (6, 9, 0.45, 0.8), (10, 15, 1.05, 1.45)]  # frame 2 (0.5 s) is in two words


def edge_set(edges: np.ndarray) -> set[tuple[int, int]]:
    assert edges.dtype == np.int64 and edges.ndim == 2 and edges.shape[0] == 2
    return set(map(tuple, edges.T.tolist()))


def test_hand_built_graph_centre_rule():
    edges = time_aligned_edges(OFFSETS, TOKEN_MASK, WORDS, FRAME_TIMES, FRAME_MASK)
    expected = {(1, j) for j in (0, 1, 2)} | {(2, j) for j in (0, 1, 2)} | {(3, 2), (3, 3)} | {(4, 5), (4, 6)}
    assert edge_set(edges) == expected
    assert edges.shape[1] == len(expected)  # no duplicates
    assert edges.T.tolist() == sorted(edges.T.tolist())  # sorted by token, then frame
    # frames 4 (0.9 s) and 8 (1.7 s) lie between/after words, frame 9 is padding: no edges
    assert not {4, 7, 8, 9} & set(edges[1].tolist())
    # special tokens (0, 0) and the padding token never get edges
    assert not {0, 5, 6, 7} & set(edges[0].tolist())


def test_overlap_rule_also_takes_partially_covered_frames():
    edges = time_aligned_edges(OFFSETS, TOKEN_MASK, WORDS, FRAME_TIMES, FRAME_MASK, rule="overlap")
    # "world" (1.05-1.45 s) overlaps frames 5 (1.0-1.2), 6 and 7 (1.4-1.6); "big" (0.5-0.8 s) frames 2, 3
    assert {j for i, j in edge_set(edges) if i == 4} == {5, 6, 7}
    assert {j for i, j in edge_set(edges) if i == 3} == {2, 3}
    with pytest.raises(ValueError):
        time_aligned_edges(OFFSETS, TOKEN_MASK, WORDS, FRAME_TIMES, FRAME_MASK, rule="nearest")


def test_token_spanning_two_words_joins_both_words_frames():
    offsets = OFFSETS.copy()
    offsets[3] = (6, 15)  # one token over "big world"
    edges = time_aligned_edges(offsets, TOKEN_MASK, WORDS, FRAME_TIMES, FRAME_MASK)
    assert {j for i, j in edge_set(edges) if i == 3} == {2, 3, 5, 6}


def test_padding_frames_never_get_edges_even_inside_a_word():
    mask = FRAME_MASK.copy()
    mask[5] = False
    edges = time_aligned_edges(OFFSETS, TOKEN_MASK, WORDS, FRAME_TIMES, mask)
    assert {j for _, j in edge_set(edges)} == {0, 1, 2, 3, 6}
    # padding frames carry (0, 0) times, whose centre lies inside a word starting at 0 s
    times = FRAME_TIMES.copy()
    times[9] = 0.0
    assert 9 not in edge_set(time_aligned_edges(OFFSETS, TOKEN_MASK, WORDS, times, FRAME_MASK))


@pytest.mark.parametrize(
    "words,token_mask,frame_mask",
    [
        ([], TOKEN_MASK, FRAME_MASK),  # no words
        (WORDS, TOKEN_MASK, np.zeros(10, bool)),  # no speech
        (WORDS, np.zeros(8, bool), FRAME_MASK),  # no text
        ([(0, 5, 5.0, 6.0)], TOKEN_MASK, FRAME_MASK),  # the word lies after the audio
        ([(20, 25, 0.0, 1.0)], TOKEN_MASK, FRAME_MASK),  # no token overlaps the word's characters
    ],
)
def test_empty_graphs(words, token_mask, frame_mask):
    edges = time_aligned_edges(OFFSETS, token_mask, words, FRAME_TIMES, frame_mask)
    assert edges.shape == (2, 0) and edges.dtype == np.int64


def test_whisper_style_words_are_located():
    assert word_char_spans("Hello, world.", [" Hello,", " world."]) == [(0, 6), (7, 13)]
    assert word_char_spans("hello WORLD", [" Hello", " world"]) == [(0, 5), (6, 11)]
    # punctuation Whisper added that the transcript lacks
    assert word_char_spans("Hello world", [" Hello,", " world!"]) == [(0, 5), (6, 11)]
    # repeated words advance left to right
    assert word_char_spans("no no no", [" no", " no", " no"]) == [(0, 2), (3, 5), (6, 8)]
    # a word that cannot be found gets None and does not move the search
    assert word_char_spans("good morning", [" good", " evening", " morning", ""]) == [(0, 4), None, (5, 12), None]


def test_korean_words_are_located():
    text = "안녕하세요. 반갑습니다!"
    spans = word_char_spans(text, [" 안녕하세요.", " 반갑습니다!"])
    assert spans == [(0, 6), (7, 13)]
    assert [text[a:b] for a, b in spans] == ["안녕하세요.", "반갑습니다!"]
    # case folding that changes the length (İ -> i̇) must not shift the indices
    assert word_char_spans("İstanbul çok güzel", [" çok", " güzel"]) == [(9, 12), (13, 18)]


def test_timed_word_spans_accept_asr_words_mappings_and_tuples():
    words = [
        Word(" Hello,", 0.0, 0.4, 0.9),
        {"text": " big", "start": 0.5, "end": 0.8},
        (" missing", 0.8, 0.9),
        (" world.", 1.0, 1.5),
    ]
    assert timed_word_spans("Hello, big world.", words) == [(0, 6, 0.0, 0.4), (7, 10, 0.5, 0.8), (11, 17, 1.0, 1.5)]


def test_batch_edges_apply_the_node_layout():
    a = np.array([[1, 2], [0, 3]])
    b = np.array([[0], [4]])
    out = batch_edges([a, np.zeros((2, 0), np.int64), b], num_tokens=5, num_frames=6)
    # utterance u owns nodes u*11 .. u*11+10; frame j is node u*11 + 5 + j
    assert out.tolist() == [[1, 2, 22], [5, 8, 22 + 5 + 4]]
    assert batch_edges([], 5, 6).shape == (2, 0)


def test_collate_builds_the_batched_graph():
    examples = synthetic_utterances(3, d_text=8, d_speech=6, max_tokens=16, max_frames=20, seed=1)
    examples[1].label = "fear"
    batch = collate(examples)
    assert batch.text.shape == (3, 16, 8) and batch.speech.shape == (3, 20, 6)
    assert batch.text_mask.dtype == batch.speech_mask.dtype == batch.text.new_zeros(1).bool().dtype
    assert batch.labels is not None and int(batch.labels[1]) == 4
    stride = 16 + 20
    owner, token = batch.edge_index[0] // stride, batch.edge_index[0] % stride
    frame = batch.edge_index[1] - owner * stride - 16
    assert (batch.edge_index[1] // stride == owner).all() and (token < 16).all() and (frame >= 0).all()
    assert batch.text_mask[owner, token].all() and batch.speech_mask[owner, frame].all()
    expected = [
        time_aligned_edges(
            e.token_offsets, e.text_mask, timed_word_spans(e.transcript, e.words), e.frame_times, e.speech_mask
        ).shape[1]
        for e in examples
    ]
    assert batch.edge_counts.tolist() == expected
    assert all(c > 0 for c in batch.edge_counts.tolist())
    examples[2].label = None
    assert collate(examples).labels is None
