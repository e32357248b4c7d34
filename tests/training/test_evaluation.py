import pytest
import torch

from icae.data.tasks import AnswerSample
from icae.training.evaluation import teacher_forced_scores
from tests.conftest import make_model


def test_teacher_forced_scores_match_the_model_loss_and_the_baseline_drops_the_memory():
    model = make_model("tiny-qwen2")
    samples = [AnswerSample(list(range(5, 45)), [3, 4], [7, 8, 9, 10]), AnswerSample(list(range(50, 70)), [3], [11, 12])]
    scores = teacher_forced_scores(model, samples, batch_size=2)
    alone = [teacher_forced_scores(model, [s])[0] for s in samples]
    for a, b in zip(scores, alone):  # batch equals single
        assert abs(a["loss"] - b["loss"]) < 1e-5 and a["token_accuracy"] == b["token_accuracy"]
    with torch.no_grad():
        out = model(input_ids=[torch.tensor(s.input_ids) for s in samples], mode="ft",
                    prompt_ids=[torch.tensor(s.prompt_ids) for s in samples],
                    target_ids=[torch.tensor(s.target_ids) for s in samples])
    weighted = (scores[0]["loss"] * 4 + scores[1]["loss"] * 2) / 6  # the model's loss: mean over all target tokens
    assert abs(weighted - out.loss.item()) < 1e-5
    blind = teacher_forced_scores(model, samples, batch_size=2, no_memory=True)
    assert all(abs(a["loss"] - b["loss"]) > 1e-4 for a, b in zip(scores, blind))
    pred = out.logits[0, :-1].argmax(-1)
    target = out.labels[0, 1:]
    assert scores[0]["token_accuracy"] == ((pred == target) & (target != -100)).sum().item() / 4


def test_tally_weights_each_batch_by_its_counted_tokens():
    """Hand-computed: batch 1 counts 2 tokens (1 right, loss 0.5), batch 2 counts 3 (2 right, loss 2.0):
    loss (0.5*2 + 2.0*3) / 5 = 1.4, accuracy 3/5; an ignored label never counts, even where the guess is right."""
    from types import SimpleNamespace

    from icae.models.layouts import IGNORE
    from icae.training.evaluation import Tally

    def out(guesses, labels, loss):  # logits at position t guess label t+1; one-hot over a vocabulary of 3
        logits = torch.nn.functional.one_hot(torch.tensor([guesses + [0]]), 3).float()
        return SimpleNamespace(logits=logits, labels=torch.tensor([labels]), loss=torch.tensor(loss))

    tally = Tally()
    assert tally.metrics("ae") == {}
    tally.add(out([2, 1, 0], [IGNORE, 2, 0, IGNORE], 0.5))  # targets 2, 0, ignored: right, wrong, (right) not counted
    assert (tally.correct, tally.total, tally.loss_sum) == (1, 2, 1.0)
    tally.add(out([1, 1, 0], [IGNORE, 1, 1, 1], 2.0))  # right, right, wrong
    assert tally.metrics("lm") == {"lm_loss": pytest.approx(1.4), "lm_token_accuracy": pytest.approx(0.6)}


@pytest.mark.parametrize("family", ["tiny-qwen2", "tiny-mistral"])
def test_as_tokens_puts_the_contexts_own_embeddings_where_the_slots_go(monkeypatch, family):
    """ICAE's decoder on the full context: the memory is the context's token embeddings at positions 1..L (as
    SimpleLLM reads it), nothing is compressed, and the scores differ from those with slots."""
    model = make_model(family)
    samples = [AnswerSample(list(range(5, 45)), [3, 4], [7, 8, 9, 10]), AnswerSample(list(range(50, 70)), [3], [11, 12])]
    with_slots = teacher_forced_scores(model, samples, batch_size=2)
    seen, forward = [], type(model).forward

    def spy(self, *args, memory=None, **kwargs):
        seen.append(memory)
        return forward(self, *args, memory=memory, **kwargs)

    monkeypatch.setattr(type(model), "forward", spy)
    monkeypatch.setattr(model, "compress", lambda *a, **k: pytest.fail("as_tokens must not compress"))
    full = teacher_forced_scores(model, samples, batch_size=2, as_tokens=True)
    (memory,) = seen
    for i, s in enumerate(samples):
        n = len(s.input_ids)
        assert memory.mask[i].sum().item() == n and memory.context_lengths[i].item() == n
        assert memory.position_ids[i, :n].tolist() == list(range(1, n + 1))
        with torch.no_grad():
            assert torch.equal(memory.slots[i, :n], model.model.get_input_embeddings()(torch.tensor(s.input_ids)))
    assert all(abs(a["loss"] - b["loss"]) > 1e-4 for a, b in zip(with_slots, full))
    with pytest.raises(ValueError, match="exclude each other"):
        teacher_forced_scores(model, samples, no_memory=True, as_tokens=True)


@pytest.mark.parametrize("family", ["tiny-qwen2", "tiny-mistral"])
def test_as_tokens_scores_none_for_a_context_over_the_window_and_the_others_as_alone(family):
    """History and contexts were sized for slots: read as tokens one may not fit model_max_length. It gets None; the
    others in its batch are scored as they are alone."""
    model = make_model(family)
    samples = [AnswerSample(list(range(5, 25)), [3], [7, 8]), AnswerSample(list(range(5, 125)), [3], [7, 8])]
    alone = teacher_forced_scores(model, samples[:1], as_tokens=True)[0]
    object.__setattr__(model.args, "model_max_length", 60)  # 20 tokens fit with the prompt and answer, 120 do not
    fit, over = teacher_forced_scores(model, samples, batch_size=2, as_tokens=True)
    assert over == {"token_accuracy": None, "loss": None}
    assert fit["token_accuracy"] == alone["token_accuracy"] and abs(fit["loss"] - alone["loss"]) < 1e-5
    with pytest.raises(ValueError, match="model_max_length"):  # with slots nothing is hidden
        teacher_forced_scores(model, [AnswerSample(list(range(5, 400)), [3], [7, 8])])


def test_context_memory_refuses_an_unknown_read_before_it_compresses():
    from icae.training.evaluation import context_memory

    class Untouchable:  # any use of the model fails the test
        def __getattr__(self, name):
            raise AssertionError(f"model.{name} used before the bad read was refused")

    with pytest.raises(ValueError, match="read must be slots, none or tokens, got 'token'"):
        context_memory(Untouchable(), [[1, 2, 3]], read="token")
