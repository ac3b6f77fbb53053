"""Tiny RANDOM models with the bundle's file layouts, for unit tests (never for real use).

Each has the same format as its real counterpart (CTranslate2 Whisper with a Whisper-compatible
tokenizer, transformers ``WhisperEncoder`` derived from it exactly as the real one is, E5-style
and ELECTRA-style text encoders with fast tokenizers, a HuBERT-style speech encoder) but a few
thousand to a million random parameters, seeded so the tiny bundle is reproducible.  Their names
start with ``tiny-`` and their manifest records say ``random: true``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .build import BuildContext, BuildResult

if TYPE_CHECKING:  # pragma: no cover
    from tokenizers import Tokenizer

TINY_SEED = 1234

# Words for the tiny tokenizers: enough English and Korean to give word-like pieces.
_CORPUS = [
    "hello how can i help you today",
    "i am furious that you cancelled my order again",
    "please check my invoice and the refund",
    "the weather is sunny and mild this afternoon",
    "thank you for calling customer service",
    "the quick brown fox jumps over the lazy dog",
    "안녕하세요 무엇을 도와드릴까요",
    "주문을 또 취소하다니 정말 화가 나요",
    "오늘 날씨가 정말 좋네요",
    "환불은 언제 처리되나요",
    "0123456789 , . ? ! ' -",
]


def _whisper_tokenizer(n_languages: int) -> tuple[Tokenizer, list[str]]:
    """A byte-level tokenizer with Whisper's special-token ids (vocabulary of multilingual Whisper).

    Returns the ``tokenizers.Tokenizer`` and the token list up to ``<|notimestamps|>`` (50363).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers.models.whisper.tokenization_whisper import LANGUAGES  # Whisper's token order

    byte_chars = sorted(ByteLevel.alphabet(), key=ord)
    vocab = {c: i for i, c in enumerate(byte_chars)}
    for i in range(len(vocab), 50257):
        vocab[f"<|filler{i}|>"] = i
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = (
        ["<|endoftext|>", "<|startoftranscript|>"]
        + [f"<|{code}|>" for code in list(LANGUAGES)[:n_languages]]
        + ["<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"]
    )
    tok.add_special_tokens(specials)
    tokens = [t for t, _ in sorted(tok.get_vocab(with_added_tokens=True).items(), key=lambda kv: kv[1])]
    if len(tokens) != 50364 or tok.token_to_id("<|notimestamps|>") != 50363:
        raise RuntimeError("synthetic Whisper tokenizer does not have Whisper's special-token ids")
    return tok, tokens


def build_tiny_whisper(ctx: BuildContext) -> BuildResult:
    """A 1-layer, 16-d multilingual Whisper in CTranslate2 format (float16), faster-whisper loadable."""
    import torch
    from ctranslate2.converters.transformers import WhisperLoader
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    n_languages = 99
    tok, tokens = _whisper_tokenizer(n_languages)
    torch.manual_seed(TINY_SEED)
    config = WhisperConfig(
        vocab_size=51865,
        num_mel_bins=80,
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_source_positions=1500,
        max_target_positions=448,
        decoder_start_token_id=50258,
        bos_token_id=50257,
        eos_token_id=50257,
        pad_token_id=50257,
    )
    model = WhisperForConditionalGeneration(config).eval()
    spec = WhisperLoader().get_model_spec(model)
    spec.config.suppress_ids = [1, 2, 7, 8, 9, 10, 14, 25, 26, 27, 28, 29, 31, 58, 59, 60, 61, 62, 63, 90, 91, 92, 93]
    spec.config.suppress_ids_begin = [220, 50257]
    spec.config.lang_ids = list(range(50259, 50259 + n_languages))
    spec.config.alignment_heads = [[0, 0], [0, 1]]
    # Multilingual Whisper's CTranslate2 vocabulary has an empty token at 50256, which ctranslate2
    # relies on to recognise a multilingual model; timestamps <|0.00|>..<|30.00|> fill the rest.
    vocabulary = tokens[:50256] + [""] + tokens[50257:]
    spec.register_vocabulary(vocabulary + ["<|%.2f|>" % (i * 0.02) for i in range(51865 - len(tokens))])
    spec.validate()
    spec.optimize(quantization="float16")
    spec.save(str(ctx.out_dir))
    tok.save(str(ctx.out_dir / "tokenizer.json"))
    return BuildResult(sources=["random"], info={"d_model": 16, "seed": TINY_SEED})


def _train_tokenizer(kind: str) -> Tokenizer:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    if kind == "unigram":  # XLM-R / E5 style: SentencePiece unigram with metaspace
        tok = Tokenizer(models.Unigram())
        tok.normalizer = normalizers.NFKC()
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
        trainer = trainers.UnigramTrainer(vocab_size=300, special_tokens=specials, unk_token="<unk>")
        tok.train_from_iterator(_CORPUS, trainer)
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>",
            pair="<s> $A </s> </s> $B </s>",
            special_tokens=[("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))],
        )
    else:  # BERT / ELECTRA style: lower-cased WordPiece
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        tok.train_from_iterator(_CORPUS, trainers.WordPieceTrainer(vocab_size=300, special_tokens=specials))
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))],
        )
    return tok


def build_tiny_e5(ctx: BuildContext) -> BuildResult:
    """E5-style: BertModel (no pooler) + XLM-R-style unigram fast tokenizer, 32-d."""
    import torch
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    tok = _train_tokenizer("unigram")
    torch.manual_seed(TINY_SEED)
    config = BertConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=514,
        pad_token_id=tok.token_to_id("<pad>"),
        architectures=["BertModel"],
    )
    BertModel(config, add_pooling_layer=False).eval().save_pretrained(ctx.out_dir, safe_serialization=True)
    PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        model_max_length=512,
    ).save_pretrained(ctx.out_dir)
    return BuildResult(sources=["random"], info={"hidden": 32, "seed": TINY_SEED})


def build_tiny_electra(ctx: BuildContext) -> BuildResult:
    """KoELECTRA-style: ElectraModel + lower-cased WordPiece fast tokenizer, 32-d."""
    import torch
    from transformers import ElectraConfig, ElectraModel, PreTrainedTokenizerFast

    tok = _train_tokenizer("wordpiece")
    torch.manual_seed(TINY_SEED)
    config = ElectraConfig(
        vocab_size=tok.get_vocab_size(),
        embedding_size=32,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        architectures=["ElectraModel"],
    )
    ElectraModel(config).eval().save_pretrained(ctx.out_dir, safe_serialization=True)
    PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        mask_token="[MASK]",
        model_max_length=512,
    ).save_pretrained(ctx.out_dir)
    return BuildResult(sources=["random"], info={"hidden": 32, "seed": TINY_SEED})


def build_tiny_hubert(ctx: BuildContext) -> BuildResult:
    """HuBERT-style: HubertModel (HuBERT base's conv front-end: 50 frames/s) + feature extractor, 32-d."""
    import torch
    from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

    torch.manual_seed(TINY_SEED)
    config = HubertConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(32,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        architectures=["HubertModel"],
    )
    HubertModel(config).eval().save_pretrained(ctx.out_dir, safe_serialization=True)
    Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True, return_attention_mask=False
    ).save_pretrained(ctx.out_dir)
    return BuildResult(sources=["random"], info={"hidden": 32, "seed": TINY_SEED})
