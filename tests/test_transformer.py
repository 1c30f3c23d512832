"""Transformer source and corpus: a tiny randomly initialized BERT built here (no download),
and one run of the bundled MiniLM offline."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
from transformers import BertConfig, BertModel, BertTokenizerFast  # noqa: E402

from saelab.config import RunConfig  # noqa: E402
from saelab.data import transformer  # noqa: E402
from saelab.data.corpus import load_corpus, paragraphs, stdlib_corpus  # noqa: E402
from saelab.data.transformer import make_transformer_source, read_manifest  # noqa: E402

# the test text is shorter than max_tokens on purpose (every token used); one test checks the warning
pytestmark = pytest.mark.filterwarnings("ignore:data.text=.*has only:UserWarning")

WORDS = "the cat sat on a mat and dog ran to big red house in it was very quick brown fox over lazy".split()
WIDTH, LAYERS, CONTEXT = 16, 3, 16


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A 3-layer BERT of width 16 and its WordPiece tokenizer, saved like a hub checkpoint."""
    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, "."]) + "\n")
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(WORDS) + 6, hidden_size=WIDTH, num_hidden_layers=LAYERS, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    BertModel(config).save_pretrained(folder)
    return folder


@pytest.fixture()
def text_file(tmp_path) -> Path:
    """40 paragraphs of 3-12 vocabulary words (and one unknown word)."""
    g = torch.Generator().manual_seed(1)
    paras = []
    for i in range(40):
        n = int(torch.randint(3, 13, (1,), generator=g))
        paras.append(" ".join(WORDS[int(j)] for j in torch.randint(0, len(WORDS), (n,), generator=g)))
    paras[5] += " zebra"
    path = tmp_path / "text.txt"
    path.write_text("\n\n".join(paras) + "\n")
    return path


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("SAELAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _cfg(model: Path, text: Path, **data) -> RunConfig:
    settings = {"source": f"hf:{model}", "text": str(text), "layer": 2, "context_length": CONTEXT, "max_tokens": 10_000,
                "shuffle_buffer": 64, "batch_size": 16, **data}
    return RunConfig().replace(data=settings, eval_rows=10)


def _token_stream(model: Path, text: Path) -> tuple[list[list[int]], int]:
    """Each paragraph's token ids (no special tokens) and the [SEP] id, computed independently."""
    tok = BertTokenizerFast.from_pretrained(model)
    docs = [tok(p, add_special_tokens=False)["input_ids"] for p in paragraphs(text)]
    return docs, tok.sep_token_id


def test_rows_count_text_tokens_and_special_dropping(tiny_model, text_file):
    docs, _ = _token_stream(tiny_model, text_file)
    n_text, n_docs = sum(map(len, docs)), len(docs)
    with pytest.warns(UserWarning, match=f"has only {n_text} tokens"):
        kept = make_transformer_source(_cfg(tiny_model, text_file))
    assert kept.d_in == WIDTH and kept.ground_truth is None
    assert kept.rows == n_text and kept.describe()["text_tokens"] == n_text  # [CLS]/[SEP] dropped, [UNK] kept
    all_pos = make_transformer_source(_cfg(tiny_model, text_file, drop_special_tokens=False))
    sequences = math.ceil((n_text + n_docs) / (CONTEXT - 2))  # a [SEP] after each paragraph, 14 tokens a body
    assert all_pos.describe()["sequences"] == sequences
    assert all_pos.rows == n_text + n_docs + 2 * sequences  # + [CLS] and [SEP] around every sequence
    assert all_pos.describe()["cache"] != kept.describe()["cache"]
    b = kept.batch(3, 8)
    assert b.shape == (8, WIDTH) and b.dtype == torch.float32
    assert kept.eval_set(10).shape == (10, WIDTH)


def test_max_tokens_caps_the_text(tiny_model, text_file):
    src = make_transformer_source(_cfg(tiny_model, text_file, max_tokens=50))
    assert src.rows == 50 and src.describe()["text_tokens"] == 50


def test_cached_rows_equal_the_models_hidden_states(tiny_model, text_file):
    """The first cached rows are hidden_states[2] of the full (untruncated) model on the first
    packed sequence, without its [CLS], [SEP] and paragraph separators, in text order."""
    src = make_transformer_source(_cfg(tiny_model, text_file))
    docs, sep = _token_stream(tiny_model, text_file)
    stream = [t for d in docs for t in (*d, sep)]
    ids = torch.tensor([[2, *stream[: CONTEXT - 2], 3]])  # [CLS]=2, [SEP]=3 in the vocab above
    model = BertModel.from_pretrained(tiny_model).eval()
    with torch.no_grad():
        hidden = model(input_ids=ids, output_hidden_states=True).hidden_states[2][0]
    text = hidden[(ids[0] != 2) & (ids[0] != 3)]
    cached = torch.from_numpy(src.segments[0].read(0, len(text)))
    torch.testing.assert_close(cached, text, rtol=2e-3, atol=2e-3)  # float16 storage
    assert src.describe()["layer"] == 2


def test_second_source_reads_the_cache_without_the_model(tiny_model, text_file, monkeypatch):
    first = make_transformer_source(_cfg(tiny_model, text_file))
    assert first.describe()["cache_hit"] is False

    def no_model(*args, **kwargs):
        raise AssertionError("the model must not be loaded when the cache is complete")

    monkeypatch.setattr(transformer, "load_model", no_model)
    second = make_transformer_source(_cfg(tiny_model, text_file))
    assert second.describe()["cache_hit"] is True and second.describe()["cache"] == first.describe()["cache"]
    for step in (0, 7, 123):
        torch.testing.assert_close(second.batch(step, 16), first.batch(step, 16), rtol=0, atol=0)
    torch.testing.assert_close(second.eval_set(10), first.eval_set(10), rtol=0, atol=0)
    assert not torch.equal(first.batch(0, 16), first.batch(1, 16))
    other_seed = make_transformer_source(_cfg(tiny_model, text_file).replace(seed=1))
    assert not torch.equal(other_seed.batch(0, 16), first.batch(0, 16))


def test_an_interrupted_build_leaves_nothing_that_looks_complete(tiny_model, text_file, cache, monkeypatch):
    calls = []

    def fail_on_second(self, rows):
        calls.append(len(rows))
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_add(self, rows)

    real_add = transformer._ShardWriter.add
    monkeypatch.setattr(transformer, "TOKENS_PER_FORWARD", 4 * CONTEXT)  # several forwards
    monkeypatch.setattr(transformer._ShardWriter, "add", fail_on_second)
    with pytest.raises(KeyboardInterrupt):
        make_transformer_source(_cfg(tiny_model, text_file))
    assert not [p for p in cache.iterdir() if p.suffix != ".lock"]  # neither a cache folder nor a .partial one (its build lock stays)
    monkeypatch.setattr(transformer._ShardWriter, "add", real_add)
    src = make_transformer_source(_cfg(tiny_model, text_file))
    assert src.describe()["cache_hit"] is False
    folder = Path(src.describe()["cache"])
    (folder / src.segments[0].path.name).unlink()  # a shard lost later: the cache counts as missing
    assert read_manifest(folder) is None
    rebuilt = make_transformer_source(_cfg(tiny_model, text_file))  # and is rebuilt in place
    assert rebuilt.describe()["cache_hit"] is False and read_manifest(folder) is not None
    torch.testing.assert_close(rebuilt.batch(2, 8), src.batch(2, 8), rtol=0, atol=0)


def test_width_and_layer_are_checked(tiny_model, text_file):
    with pytest.raises(ValueError, match=r"sae.d_in=32 .* d_in=16"):
        make_transformer_source(_cfg(tiny_model, text_file).replace(sae={"d_in": 32}))
    make_transformer_source(_cfg(tiny_model, text_file))
    with pytest.raises(ValueError, match=r"sae.d_in=32 .*cache.* d_in=16"):  # the cache-hit path checks too
        make_transformer_source(_cfg(tiny_model, text_file).replace(sae={"d_in": 32}))
    with pytest.raises(ValueError, match="data.layer=4 .* 3 layers"):
        make_transformer_source(_cfg(tiny_model, text_file, layer=4))
    with pytest.raises(ValueError, match="max_position_embeddings=64"):
        make_transformer_source(_cfg(tiny_model, text_file, context_length=65))


def test_bundled_minilm_offline(text_file, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = RunConfig().replace(data={"source": "minilm", "text": str(text_file), "max_tokens": 64, "batch_size": 16}, eval_rows=8)
    src = make_transformer_source(cfg)
    assert src.d_in == 384 and src.rows == 64
    assert src.batch(0, 4).shape == (4, 384)
    assert torch.isfinite(src.eval_set(8)).all()


def test_stdlib_corpus_rules(tmp_path):
    root = tmp_path / "lib"
    (root / "pkg").mkdir(parents=True)
    (root / "test").mkdir()
    (root / "pydoc_data").mkdir()
    (root / "a.py").write_text('"""Module a."""\ndef f():\n    """Function f.\n\n    More."""\nclass C:\n    """Class C."""\n')
    (root / "pkg" / "b.py").write_text('def g():\n    """Function g."""\n')
    (root / "test" / "test_x.py").write_text('"""A test docstring."""\n')
    (root / "broken.py").write_text('def (:\n    """never parsed"""\n')
    (root / "pydoc_data" / "topics.py").write_text("topics = {'b': 'Page B.', 'a': 'Page A.'}\n")
    corpus = stdlib_corpus(root)
    docs = list(corpus.documents())
    assert sorted(docs) == sorted(["Module a.", "Function f.\n\nMore.", "Class C.", "Function g.", "Page A.", "Page B."])
    assert docs == list(stdlib_corpus(root).documents())  # a fixed order
    digest = corpus.digest
    (root / "pkg" / "b.py").write_text('def g():\n    """Function g, edited."""\n')
    edited = stdlib_corpus(root).digest
    assert edited != digest
    (root / "test" / "test_x.py").write_text('"""Edited test docstring."""\n')  # skipped folder: no effect
    assert stdlib_corpus(root).digest == edited


def test_text_corpus_and_real_stdlib(tmp_path):
    (tmp_path / "docs" / "sub").mkdir(parents=True)
    (tmp_path / "docs" / "b.md").write_text("Second file.\n")
    (tmp_path / "docs" / "sub" / "a.txt").write_text("One\nparagraph.\n\n\nTwo.\n")
    (tmp_path / "docs" / "skip.py").write_text("not text\n")
    corpus = load_corpus(str(tmp_path / "docs"))
    assert list(corpus.documents()) == ["Second file.", "One\nparagraph.", "Two."]
    with pytest.raises(ValueError, match="no such file or folder"):
        load_corpus(str(tmp_path / "missing"))
    real = load_corpus("stdlib")
    assert len(real.files) > 300 and real.digest == load_corpus("stdlib").digest
    assert not any("idlelib" in p.parts or "test" in p.relative_to(real.root).parts for p in real.files)


def test_unknown_model_folder_and_missing_text(tmp_path, text_file):
    with pytest.raises(ValueError, match="is not a model folder"):
        make_transformer_source(RunConfig().replace(data={"source": f"hf:{tmp_path / 'nope'}", "text": str(text_file)}))
    with pytest.raises(ValueError, match="data.text=.*no such file or folder"):
        make_transformer_source(RunConfig().replace(data={"source": "minilm", "text": str(tmp_path / "missing.txt")}))
