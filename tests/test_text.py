"""Text data and the text families (a sentence VAE and its language-model baseline): errors on
bad files, the tokenizer as data, training and resuming, encode/decode, and the model contract's
text branch. Tiny generated corpora only."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import pytest
import safetensors.torch
import torch

import latentspace as ls
from conftest import InterruptAfter
from latentspace.config import Config
from latentspace.data import prepare_data
from latentspace.data.text import MAX_TOKENS, PAD_ID, TextTokenizer, load_text, read_lines
from latentspace.data.text_corpus import _split_of, cut_sentences
from latentspace.errors import ConfigError, DataError
from latentspace.models import MODELS, build_model
from latentspace.settings import TrainConfig

TEXT_FAMILIES = [name for name, cls in MODELS.items() if cls.inputs == "text"]
WORDS = "the a cat dog sat ran on under big small red blue mat log house tree".split()


def sentences(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8))) + "." for _ in range(n)]


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(sentences(120)) + "\n", encoding="utf-8")
    return path


def text_config(corpus: Path, family: str, *extra: str) -> Config:
    settings = [
        f"model.name={family}",
        f"data.dataset={corpus}",
        "train.epochs=2",
        "train.batch_size=16",
        "train.device=cpu",
        "model.embedding_dim=8",
        "model.hidden_size=16",
    ]
    if MODELS[family].config_class().__dict__.get("latent_dim"):
        settings.append("model.latent_dim=3")
    return ls.apply_overrides(ls.default_config(), [*settings, *extra])


def one_line(error: BaseException, *parts: str) -> None:
    message = str(error)
    assert "\n" not in message, message
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"


# ---- data ----------------------------------------------------------------------------------
def test_bad_files_are_one_line_errors_naming_the_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(DataError) as error:
        read_lines(empty)
    one_line(error.value, str(empty), "empty")
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"one line\ntwo\x00three\n")
    with pytest.raises(DataError) as error:
        read_lines(binary)
    one_line(error.value, str(binary), "binary", "line 2")
    latin = tmp_path / "latin.txt"
    latin.write_bytes("fine\nstill fine\ncaf\u00e9 au lait\n".encode("latin-1"))
    with pytest.raises(DataError) as error:
        read_lines(latin)
    one_line(error.value, str(latin), "line 3", "UTF-8", "0xe9")


def test_long_lines_are_cut_with_one_warning_that_counts_them(tmp_path: Path) -> None:
    path = tmp_path / "long.txt"
    long = " ".join(["word"] * (MAX_TOKENS * 2))
    path.write_text("\n".join([*sentences(30), long, long, long]) + "\n")
    config = ls.apply_overrides(
        ls.default_config(), [f"data.dataset={path}", "data.val_fraction=0"]
    )
    with pytest.warns(UserWarning, match=r"3 of 33 sentences .* longer than") as caught:
        train, _ = prepare_data(config)
    assert len(caught) == 1
    assert train.images.shape[1] == MAX_TOKENS


def test_a_folder_of_txt_files_and_a_seeded_split(tmp_path: Path) -> None:
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "a.txt").write_text("\n".join(sentences(20, 1)))
    (folder / "b.txt").write_text("\n".join(sentences(20, 2)))
    assert load_text(str(folder)) == sentences(20, 1) + sentences(20, 2)
    config = ls.apply_overrides(ls.default_config(), [f"data.dataset={folder}"])
    train, val = prepare_data(config)
    again, val_again = prepare_data(config)
    assert val is not None and val_again is not None
    assert len(train) + len(val) == 40 and train.sentences == again.sentences
    assert val.sentences == val_again.sentences


def test_named_corpus_cutting_and_its_stable_split() -> None:
    text = "Hello there, friend. How are you today?\n\t-- Someone\n%\nx\n%\nOne two three four!\n"
    assert cut_sentences(text) == [
        "Hello there, friend.",
        "How are you today?",
        "One two three four!",
    ]
    # the split is a function of the sentence alone: the same wherever it appears
    assert {_split_of("One two three four!") for _ in range(3)} == {
        _split_of("One two three four!")
    }
    assert {_split_of(s) for s in sentences(200)} == {"train", "valid", "test"}


def test_the_tokenizer_is_json_and_reloads_to_the_same_ids() -> None:
    train = sentences(100)
    tokenizer = TextTokenizer.train(train)
    document = json.loads(tokenizer.json)  # plain data
    assert document["model"]["type"] == "BPE"
    again = TextTokenizer(tokenizer.json)
    ids, cut = tokenizer.encode(train[:5])
    assert cut == 0 and torch.equal(ids, again.encode(train[:5])[0])
    assert again.decode(ids) == [s.lower() for s in train[:5]]
    with pytest.raises(DataError) as error:
        TextTokenizer('{"not": "a tokenizer"}')
    one_line(error.value, "tokenizer")


# ---- the families --------------------------------------------------------------------------
@pytest.mark.parametrize("family", TEXT_FAMILIES)
def test_train_and_resume_equals_uninterrupted(tmp_path: Path, corpus: Path, family: str) -> None:
    config = text_config(corpus, family, "train.epochs=3", "model.dropout=0.1")
    straight = ls.train(config, tmp_path / "straight", quiet=True, report=False)
    with pytest.raises(KeyboardInterrupt):
        ls.train(
            config, tmp_path / "resumed", quiet=True, callbacks=[InterruptAfter(1)], report=False
        )
    ls.train(config, tmp_path / "resumed", resume=True, quiet=True, report=False)
    a = safetensors.torch.load_file(str(tmp_path / "straight" / "model.safetensors"))
    b = safetensors.torch.load_file(str(tmp_path / "resumed" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the tokenizer travels in config.json as data, and the run reloads with it
    saved = json.loads((tmp_path / "straight" / "config.json").read_text())
    assert json.loads(saved["config"]["model"]["tokenizer"])["model"]["type"] == "BPE"
    epochs = [r for r in straight.metrics if r.get("kind") == "epoch"]
    assert epochs[-1]["val"]["total"] < epochs[0]["val"]["total"] + 5


@pytest.mark.parametrize("family", TEXT_FAMILIES)
def test_encode_decode_generate_give_codes_and_sentences(
    tmp_path: Path, corpus: Path, family: str
) -> None:
    model = ls.train(text_config(corpus, family), tmp_path / "run", quiet=True, report=False).model
    d = model.latent_dim
    z = model.encode(["the cat sat on the mat.", "a dog ran."])
    assert tuple(z.shape) == (2, d) and not z.requires_grad
    for strategy in ("greedy", "beam", "sample"):
        decoded = model.decode(z, strategy=strategy, generator=torch.Generator().manual_seed(0))
        assert len(decoded) == 2 and all(isinstance(s, str) for s in decoded)
    seeded = [model.generate(3, generator=torch.Generator().manual_seed(1)) for _ in range(2)]
    assert seeded[0] == seeded[1] and len(seeded[0]) == 3
    assert len(model.reconstruct(["the cat sat."])) == 1
    ids = model.token_ids(["the cat sat.", "a big red dog ran under the tree."])
    bound = model.likelihood_bound(ids, 4, generator=torch.Generator().manual_seed(0))
    assert tuple(bound.nll.shape) == (2,) and bool(torch.isfinite(bound.nll).all())
    assert bool(torch.isfinite(bound.negative_elbo).all())
    assert tuple(bound.code.shape) == (2, d)
    for bad in (torch.rand(2, 5), "one string", []):
        with pytest.raises(DataError) as error:
            model.encode(bad)  # type: ignore[arg-type]
        one_line(error.value, model.name)
    with pytest.raises(DataError) as error:
        model.decode(torch.zeros(2, d + 1))
    one_line(error.value, f"(B, {d})")


@pytest.mark.parametrize("family", TEXT_FAMILIES)
def test_text_step_bf16_and_kl_schedules(family: str) -> None:
    """The text branch of the conformance suite: a step changes every parameter that takes
    part, terms are detached float32 scalars, bf16 keeps float32 weights."""
    config = MODELS[family].config_class(embedding_dim=8, hidden_size=16)
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = build_model(config, (1, 20, 30), TrainConfig(lr=1e-2, precision=precision))
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        ids = torch.randint(4, 30, (6, 9))
        ids[:, 0], ids[:, -1], ids[3:, -3:] = 2, 3, PAD_ID
        ids[3:, -4] = 3
        terms = model.training_step(ids, model.configure_optimizers())
        assert all(v.dim() == 0 and not v.requires_grad for v in terms.values())
        assert all(p.dtype == torch.float32 for p in model.parameters())
        changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
        assert changed, precision
        assert set(model.validation_step(ids)) >= {"total", "reconstruction", "kl"}


VARIANTS = [(family, {}) for family in TEXT_FAMILIES] + [("sentence_vae", {"skip_code": True})]


@pytest.mark.parametrize(("family", "settings"), VARIANTS)
def test_packed_sentence_nll_equals_the_padded_one_token_by_token(
    family: str, settings: dict[str, bool]
) -> None:
    """The decoder runs packed and scores only real positions (for speed): per sentence it
    must give what the decoder run over the padded batch, token by token, gives; with
    model.skip_code both paths add the code's own vocabulary logits."""
    torch.manual_seed(0)
    config = MODELS[family].config_class(embedding_dim=8, hidden_size=16, **settings)
    model = build_model(config, (1, 20, 30))
    model.eval()
    ids = torch.randint(4, 30, (5, 9))
    ids[:, 0] = 2
    for row, length in enumerate((9, 3, 6, 9, 2)):  # BOS ... EOS, then padding
        ids[row, length - 1], ids[row, length:] = 3, PAD_ID
    z = torch.randn(5, model.latent_dim)
    logits, _ = model.decoder_step(ids[:, :-1], z, model.initial_hidden(z))
    expected = torch.nn.functional.cross_entropy(
        logits.transpose(1, 2), ids[:, 1:], ignore_index=PAD_ID, reduction="none"
    ).sum(1)
    torch.testing.assert_close(model.sentence_nll(ids, z), expected)
    if settings:
        assert model.code_to_output is not None
        nll = model.sentence_nll(ids, z)
        with torch.no_grad():
            model.code_to_output.weight.mul_(3.0)
        assert not torch.allclose(model.sentence_nll(ids, z), nll)


def test_a_run_saved_before_encoder_size_existed_loads_with_its_full_width_encoder(
    corpus: Path, tmp_path: Path
) -> None:
    """encoder_size came later (0: the decoder's width, then the only width) and now defaults
    to 64: a config.json without it still loads the encoder its weights were trained with."""
    config = text_config(corpus, "sentence_vae", "train.epochs=1", "model.encoder_size=0")
    run = ls.train(config, tmp_path / "run", quiet=True, report=False, diagnostics=False)
    path = tmp_path / "run" / "config.json"
    document = json.loads(path.read_text())
    del document["config"]["model"]["encoder_size"]  # as written before the setting existed
    path.write_text(json.dumps(document))
    loaded = ls.open_run(tmp_path / "run")
    assert loaded.config.model.encoder_size == 0 != type(loaded.config.model)().encoder_size
    for (name, value), saved in zip(
        loaded.model.state_dict().items(), run.model.state_dict().values(), strict=True
    ):
        assert torch.equal(value, saved), name


def test_the_encoder_has_its_own_width() -> None:
    """model.encoder_size sets each encoder direction's units (0: the decoder's); the code
    still comes out (B, latent_dim) and a negative width is a one-line error."""
    config = MODELS["sentence_vae"].config_class(embedding_dim=8, hidden_size=16, latent_dim=4)
    ids = torch.randint(4, 30, (3, 7))
    ids[:, 0], ids[:, -1] = 2, 3
    for width, expected in ((0, 16), (5, 5)):
        model = build_model(dataclasses.replace(config, encoder_size=width), (1, 20, 30))
        assert model.encoder["rnn"].hidden_size == expected
        assert model.decoder_rnn.hidden_size == 16
        mu, logvar = model.code_posterior(ids)
        assert mu.shape == logvar.shape == (3, 4)
    with pytest.raises(ConfigError, match="model.encoder_size = -1"):
        dataclasses.replace(config, encoder_size=-1).validate()


def test_the_bag_of_words_loss_trains_the_code_and_stays_out_of_the_bound() -> None:
    """model.bow_weight adds bow_weight x -sum log softmax(W z) over the sentence's words (BOS,
    EOS and padding left out) to the training loss only: validation's bound is unchanged, the
    term alone sends a gradient to the encoder, and without it no head is built."""
    config = MODELS["sentence_vae"].config_class(
        embedding_dim=8, hidden_size=16, latent_dim=4, bow_weight=0.5, kl_schedule="none"
    )
    torch.manual_seed(0)
    model = build_model(config, (1, 9, 30))
    ids = torch.tensor([[2, 7, 8, 7, 3, 0, 0], [2, 9, 3, 0, 0, 0, 0]])
    z = torch.randn(2, 4)
    log_probs = torch.log_softmax(model.bow(z), dim=1)
    expected = -0.5 * (log_probs[0, [7, 8, 7]].sum() + log_probs[1, 9]) / 2
    model.train()
    assert model.auxiliary_loss(ids, z).item() == pytest.approx(expected.item(), rel=1e-6)
    model.auxiliary_loss(ids, model.code_posterior(ids)[0]).backward()
    assert model.encoder["rnn"].weight_ih_l0.grad.abs().sum() > 0
    assert model.decoder_rnn.weight_ih_l0.grad is None  # the decoder plays no part in it
    model.eval()
    assert model.auxiliary_loss(ids, z).item() == 0.0
    torch.manual_seed(1)
    with_bow = model.loss(ids)
    without = dataclasses.replace(config, bow_weight=0.0)
    plain = build_model(without, (1, 9, 30))
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("bow")})
    plain.eval()
    torch.manual_seed(1)
    assert plain.loss(ids).total.item() == pytest.approx(with_bow.total.item())
    assert not any(name.startswith("bow") for name in plain.state_dict())
    model.train(), plain.train()
    torch.manual_seed(2)
    trained = model.loss(ids)
    torch.manual_seed(2)
    assert trained.total.item() > plain.loss(ids).total.item() + 0.5  # 4 words, ~log 30 each
    with pytest.raises(ConfigError, match="model.bow_weight = -1"):
        dataclasses.replace(config, bow_weight=-1.0).validate()


def test_kl_schedules() -> None:
    config = MODELS["sentence_vae"].config_class(embedding_dim=8, hidden_size=16, kl_steps=10)
    weights = {}
    for schedule in ("none", "linear", "cyclical"):
        model = build_model(dataclasses.replace(config, kl_schedule=schedule), (1, 20, 30))
        model.train()
        seen = []
        for _ in range(25):
            seen.append(model.kl_weight)
            model.after_step()
        weights[schedule] = seen
    assert weights["none"] == [1.0] * 25
    assert weights["linear"][0] == pytest.approx(0.1) and weights["linear"][12:] == [1.0] * 13
    cyclical = weights["cyclical"]
    assert cyclical[0] == 0.0 and cyclical[5] == 1.0 and cyclical[10] == 0.0 and cyclical[15] == 1.0


def test_an_image_family_on_text_is_a_one_line_error(tmp_path: Path, corpus: Path) -> None:
    config = ls.apply_overrides(ls.default_config(), [f"data.dataset={corpus}"])
    with pytest.raises(ConfigError) as error:
        ls.train(config, tmp_path / "run", quiet=True, report=False, diagnostics=False)
    one_line(error.value, "reads images", "text", *TEXT_FAMILIES)
    assert not (tmp_path / "run").exists()


# ---- the commands --------------------------------------------------------------------------
def test_commands_print_sentences(
    tmp_path: Path, corpus: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from latentspace.cli import main

    config = text_config(corpus, "sentence_vae")
    run = tmp_path / "run"
    ls.train(config, run, quiet=False, report=False, diagnostics=False)
    said = capsys.readouterr()
    assert "sentences each, on cpu" in said.out + said.err
    assert main(["generate", str(run), "-n", "4", "--seed", "1"]) == 0
    generated = capsys.readouterr().out.splitlines()
    assert len(generated) == 4 and all(line.strip() for line in generated)
    codes = tmp_path / "codes.npz"
    assert main(["encode", str(run), "the cat sat on the mat.", "--out", str(codes)]) == 0
    capsys.readouterr()
    for strategy in ("greedy", "beam", "sample"):
        assert main(["decode", str(run), str(codes), "--strategy", strategy]) == 0
        assert len(capsys.readouterr().out.splitlines()) == 1
    assert main(["encode", str(run), str(corpus), "--limit", "3"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 3 and len(printed[0].split("\t")[1].split()) == 3
    assert main(["reconstruct", str(run), "a dog ran.", "-n", "1"]) == 0
    out = capsys.readouterr().out
    assert "  a dog ran." in out and "> " in out and "tokens recovered" in out
    args = [
        "interpolate",
        str(run),
        "--from",
        "the cat sat.",
        "--to",
        "a big dog ran.",
        "--steps",
        "4",
    ]
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert (
        lines[0] == "from: the cat sat." and lines[-1] == "to:   a big dog ran." and len(lines) == 6
    )
    assert main(["evaluate", str(run), "--nll-samples", "3", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert {"nll", "perplexity", "kl", "active_units", "mutual_information", "bleu"} <= set(record)
    assert record["token_accuracy"] >= 0 and record["perplexity"] > 1
    # --split: the training sentences, then the validation ones, are other sentences
    for split in ("train", "val"):
        assert main(["evaluate", str(run), "--nll-samples", "1", "--json", "--split", split]) == 0
        other = json.loads(capsys.readouterr().out)
        assert f"(the run's {split} sentences)" in other["data"] and other["split"] == split
        assert other["sentences"] != record["sentences"] or split == "val"
    assert main(["evaluate", str(run), "--split", "dev"]) == 1
    assert "--split 'dev' is not one of: test, val, train" in capsys.readouterr().err
    assert main(["info", str(run)]) == 0
    assert "characters>" in capsys.readouterr().out  # the tokenizer's JSON is not printed
    assert (
        main(["generate", str(run), "-n", "2", "--strategy", "sample", "--temperature", "0"]) == 1
    )
    assert "temperature" in capsys.readouterr().err


@pytest.mark.parametrize("family", TEXT_FAMILIES)
def test_early_stopping_watches_the_declared_term(
    tmp_path: Path, corpus: Path, family: str
) -> None:
    config = text_config(
        corpus, family, "train.epochs=5", "train.patience=1", "train.min_delta=1e9"
    )
    run = ls.train(config, tmp_path / "run", quiet=True, report=False, diagnostics=False)
    epochs = [r for r in run.metrics if r.get("kind") == "epoch"]
    assert len(epochs) == 2 and MODELS[family].monitor in epochs[0]["val"]


def test_posterior_collapse_is_said_in_plain_words(tmp_path: Path, corpus: Path) -> None:
    """A KL weighed 50 times pushes every code to the prior (collapse: warned, with the KL and
    the text remedies); without a KL term the codes spread (no warning)."""
    from latentspace.diagnostics import Diagnostics, Thresholds

    said = {}
    for name, beta in (("collapsed", "50"), ("healthy", "0")):
        config = text_config(
            corpus,
            "sentence_vae",
            "train.epochs=3",
            "train.lr=0.01",
            f"model.beta={beta}",
            "model.kl_schedule=none",
            "model.free_bits=0",
            "model.word_dropout=0",
        )
        watch = Diagnostics(thresholds=Thresholds(collapse_steps=0))
        run = ls.train(
            config, tmp_path / name, quiet=True, report=False, diagnostics=False, callbacks=[watch]
        )
        said[name] = [w for r in run.metrics for w in r.get("warnings", [])]
    collapse = [w for w in said["collapsed"] if "posterior collapse" in w]
    assert collapse, said["collapsed"]
    one_line(collapse[0], "of 3 latent units are active", "validation sentences", "KL ")
    one_line(collapse[0], "model.word_dropout", "model.free_bits", "model.kl_schedule=cyclical")
    assert not [w for w in said["healthy"] if "posterior collapse" in w], said["healthy"]


def test_neighbours_and_traverse_print_sentences(
    tmp_path: Path, corpus: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from latentspace.cli import main

    run = tmp_path / "run"
    ls.train(text_config(corpus, "sentence_vae"), run, quiet=True, report=False)
    capsys.readouterr()
    assert main(["neighbours", str(run), "the cat sat.", "-k", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "query: the cat sat." and len(lines) == 4
    distances = [float(line.split()[0]) for line in lines[1:]]
    assert distances == sorted(distances)
    assert main(["traverse", str(run), "--dims", "0,2", "--steps", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "around the prior mean:" and lines[1] == "z0:" and len(lines) == 9
    assert main(["map", str(run), "--out", str(tmp_path / "map.png")]) == 0
    assert (tmp_path / "map.html").exists()  # the scatter with sentences on hover


def test_switching_to_a_text_family_takes_its_defaults_unless_set() -> None:
    """--model sentence_vae from the default (image VAE) config: a shared field the user did not
    set (latent_dim) takes the sentence VAE's default, one they set is kept."""
    switched = ls.apply_overrides(ls.default_config(), ["model.name=sentence_vae"])
    assert switched.model.latent_dim == MODELS["sentence_vae"].config_class().latent_dim == 32
    kept = ls.apply_overrides(ls.default_config("vae", latent_dim=7), ["model.name=sentence_vae"])
    assert kept.model.latent_dim == 7


def test_text_batches_shard_each_global_batch_by_rank() -> None:
    """Under torchrun each rank takes its part of every global batch, from the same seeded
    permutation: the parts add up to the batches one process sees, with nothing repeated."""
    from latentspace.data.text import TextBatches

    ids = torch.full((23, 6), PAD_ID)
    ids[:, 0], ids[:, 1], ids[:, 2] = 2, torch.arange(23) + 4, 3  # row i holds token i + 4

    def rows(rank: int, world: int) -> list[list[int]]:
        generator = torch.Generator().manual_seed(5)
        batches = TextBatches(ids, 8, shuffle=True, generator=generator, rank=rank, world=world)
        assert len(list(batches)) == len(batches)
        return [(b[:, 1] - 4).tolist() for b in batches]

    whole = rows(0, 1)
    parts = [rows(rank, 3) for rank in range(3)]
    for i, batch in enumerate(whole):
        assert [row for part in parts for row in part[i]] == batch
    assert sorted(row for batch in whole for row in batch) == list(range(23))


def test_a_text_run_started_from_another_keeps_its_vocabulary(tmp_path: Path, corpus: Path) -> None:
    """--init on other sentences: the new run reads them with the first run's tokenizer (a
    tokenizer trained on them would number the tokens otherwise), and starts from its weights."""
    first = ls.train(
        text_config(corpus, "lm", "train.epochs=1"), tmp_path / "first", quiet=True, report=False
    )
    other = tmp_path / "other.txt"
    other.write_text("\n".join(f"zebra {i} quietly crossed the road." for i in range(40)) + "\n")
    config = text_config(other, "lm", "train.epochs=1", "train.lr=1e-12")
    fine = ls.train(config, tmp_path / "fine", init=first.path, quiet=True, report=False)
    assert fine.config.model.tokenizer == first.config.model.tokenizer  # type: ignore[attr-defined]
    torch.testing.assert_close(
        fine.model.embedding.weight, first.model.embedding.weight, rtol=0, atol=1e-9
    )
    alone = ls.train(config, tmp_path / "alone", quiet=True, report=False)
    assert alone.config.model.tokenizer != first.config.model.tokenizer  # type: ignore[attr-defined]
