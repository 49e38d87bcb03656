"""Refinement (gtapp.refine): the refined adapter moves towards the proxy-tuned distribution on
provider text it never trained on, starts from the mapped adapter, and records its privacy."""

import pytest


@pytest.mark.slow
def test_refined_adapter_is_closer_to_the_proxy_than_its_start(micro_zoo, tmp_path):
    from gtapp.baselines.distill import kl_to_teacher
    from gtapp.baselines.proxy import load_proxy
    from gtapp.evaluate import load_with_adapter
    from gtapp.finetune import FinetuneConfig, finetune
    from gtapp.models import ModelPair
    from gtapp.refine import PRIVACY_NOTE, RefineConfig, refine
    from gtapp.tasks.universe import make_task

    pair = ModelPair.from_dir(micro_zoo)
    private = make_task("math/add-fruit-easy", seed=5, n_train=32, n_test=2)
    tiny = finetune(pair.tiny_path, pair.recipes.tiny, private.train,
                    FinetuneConfig(steps=8, batch_size=8, lr=1e-2), tmp_path / "tiny").adapter_dir
    public = make_task("math/sub-fruit-easy", seed=0, n_train=96, n_test=1).train
    held_out = make_task("math/add-books-easy", seed=1, n_train=24, n_test=1).train  # never refined on
    # the start: a fresh LLM LoRA written by a 1-step fine-tune (stands in for the mapped adapter)
    start = finetune(pair.llm_path, pair.recipes.llm, public[:8], FinetuneConfig(steps=1, batch_size=8, lr=1e-4),
                     tmp_path / "start").adapter_dir
    cfg = RefineConfig(steps=20, batch_size=8, lr=1e-2, n_sequences=64, sample_tokens=12, select=False)
    rec = refine(pair, tiny, public, tmp_path / "refined", cfg, start_adapter=start)
    assert rec["privacy"] == PRIVACY_NOTE and rec["init_adapter"] == str(start)
    assert rec["text"] == {"public_examples": 32, "tiny_samples": 32, "unprompted_samples": 0,
                           "samples_from": "fine-tuned TinyLM", "prompts_from": "the provider's public examples",
                           "organisation_prompts": 0} and rec["final_loss"] < rec["first_loss"]

    assert "over the mapped adapter" in rec["teacher"]  # the default teacher: proxy-tuning over the start
    teacher, tok = load_proxy(pair, tiny, llm_adapter_dir=start)
    before, _ = load_with_adapter(pair.llm_path, start)
    after, _ = load_with_adapter(pair.llm_path, tmp_path / "refined")
    kl_before = kl_to_teacher(before, teacher, tok, held_out)
    kl_after = kl_to_teacher(after, teacher, tok, held_out)
    print("KL to the proxy-tuned distribution on held-out text:", kl_before, "->", kl_after)
    assert kl_after < 0.9 * kl_before


def test_sample_prefixes_put_the_unprompted_samples_first():
    import random

    from gtapp.refine import sample_prefixes

    prompts = [f"q{i}" for i in range(3)]
    prefixes = sample_prefixes(prompts, 8, 3, random.Random(0))
    assert prefixes[:3] == ["", "", ""] and len(prefixes) == 8
    # every public prompt once before any repeats, in the cycle sample_sequences would use
    assert sorted(prefixes[3:6]) == ["q0", "q1", "q2"] and prefixes[6:] == prefixes[3:5]
    assert sample_prefixes(prompts, 4, 4, random.Random(0)) == [""] * 4
    # no unprompted share: the draw equals the one made before free_share existed
    assert sample_prefixes(prompts, 2, 0, random.Random(1)) == random.Random(1).sample(prompts, 2)


def test_refine_refuses_bad_requests(micro_zoo, tmp_path):
    from gtapp.models import ModelPair
    from gtapp.refine import RefineConfig, refine

    pair = ModelPair.from_dir(micro_zoo)
    with pytest.raises(ValueError, match="provider text"):
        refine(pair, tmp_path, [], tmp_path / "o")
    with pytest.raises(ValueError, match="start_adapter"):
        from gtapp.tasks.base import Example

        refine(pair, tmp_path, [Example("q", "a")], tmp_path / "o")
    with pytest.raises(ValueError, match="start"):
        RefineConfig(start="somewhere")
    with pytest.raises(ValueError, match="free_share"):
        RefineConfig(free_share=1.5)
    with pytest.raises(ValueError, match="teacher_alpha"):
        RefineConfig(teacher_alpha=0)
    with pytest.raises(ValueError, match="sample_from"):
        RefineConfig(sample_from="llm")


def test_when_to_refine():
    from gtapp.refine import AUTO_REFINE_OOD, AUTO_REFINE_TASK_OOD, refine_wanted

    assert refine_wanted("always", 0.1)[0] and not refine_wanted("never", 99.0)[0]
    # the task score decides where the mapper has one, whatever the run-relative score says
    wanted, why = refine_wanted("auto", {"score": 0.5, "task_score": AUTO_REFINE_TASK_OOD + 0.1})
    assert wanted and "task score" in why and "unlike the shadow updates" in why
    wanted, why = refine_wanted("auto", {"score": 99.0, "task_score": AUTO_REFINE_TASK_OOD - 0.1})
    assert not wanted and "kept as it is" in why
    assert not refine_wanted("auto", {"task_score": AUTO_REFINE_TASK_OOD})[0]  # at the threshold: kept
    # a mapper fitted before the task reference: the run-relative score and its threshold
    for ood in (AUTO_REFINE_OOD + 0.5, {"score": AUTO_REFINE_OOD + 0.5, "task_score": float("nan")}):
        wanted, why = refine_wanted("auto", ood)
        assert wanted and why.startswith("OOD score")
    assert not refine_wanted("auto", {"score": AUTO_REFINE_OOD, "task_score": None})[0]
    assert refine_wanted("auto", None)[0] and refine_wanted("auto", float("nan"))[0]  # no score: refined
    assert refine_wanted("auto", {})[0]
    # what auto refines (updates the mapper cannot vouch for) it distils from the base LLM's proxy-tuning
    from gtapp.refine import AUTO_TEACHER_LLM, RefineConfig, mode_config

    cfg = RefineConfig(steps=7, seed=3)
    assert cfg.teacher_llm == "mapped" and mode_config("always", cfg) == cfg
    assert mode_config("auto", cfg) == RefineConfig(steps=7, seed=3, teacher_llm=AUTO_TEACHER_LLM) != cfg
    with pytest.raises(ValueError, match="never, auto, always"):
        refine_wanted("sometimes", 1.0)


def test_provider_text_comes_from_the_pair_sets_shadow_tasks():
    from gtapp.refine import provider_text
    from gtapp.tasks.universe import make_task

    manifest = {"settings": {"task_seed": 3, "n_train": 40},
                "runs": {"a": {"task": "math/add-fruit-easy"}, "b": {"task": "lm/weather-0"}}}
    text = provider_text(manifest, limit=20, seed=0)
    assert len(text) == 20
    pool = {(e.prompt, e.answer) for n in ("math/add-fruit-easy", "lm/weather-0")
            for e in make_task(n, seed=3, n_train=40, n_test=1).train}
    assert all((e.prompt, e.answer) in pool for e in text)
    with pytest.raises(ValueError, match="no shadow tasks"):
        provider_text({"runs": {}}, 5)


@pytest.mark.slow
def test_sample_check_sees_whether_the_mapped_adapter_moves_towards_the_tinylms_text(micro_zoo, tmp_path):
    """On text sampled from the fine-tuned TinyLM, an LLM adapter trained on the same private
    task lowers the LLM's NLL, more than on the base TinyLM's text, and an adapter that changes
    nothing does neither; the TinyLM's own gain is positive (it wrote the text), and the same
    seed draws the same samples."""
    from gtapp.finetune import FinetuneConfig, finetune
    from gtapp.models import ModelPair
    from gtapp.refine import sample_check
    from gtapp.tasks.universe import make_task

    pair = ModelPair.from_dir(micro_zoo)
    private = make_task("math/add-fruit-easy", seed=5, n_train=64, n_test=2).train
    public = make_task("math/sub-fruit-easy", seed=0, n_train=48, n_test=1).train
    cfg = FinetuneConfig(steps=30, batch_size=8, lr=1e-2)
    tiny = finetune(pair.tiny_path, pair.recipes.tiny, private, cfg, tmp_path / "tiny").adapter_dir
    moved = finetune(pair.llm_path, pair.recipes.llm, private, cfg, tmp_path / "moved").adapter_dir
    unmoved = finetune(pair.llm_path, pair.recipes.llm, private[:8],
                       FinetuneConfig(steps=1, batch_size=8, lr=1e-12), tmp_path / "unmoved").adapter_dir
    good = sample_check(pair, tiny, moved, public, n=24, tokens=12, seed=3)
    null = sample_check(pair, tiny, unmoved, public, n=24, tokens=12, seed=3)
    print("sample check, trained adapter:", good, "\nunchanged adapter:", null)
    assert good["tiny_gain"] > 0 and good["tiny_ft_nll"] == null["tiny_ft_nll"]  # same samples
    assert good["llm_base_nll"] == null["llm_base_nll"] and good["sample_tokens"] == null["sample_tokens"] > 24
    assert abs(null["llm_gain"]) < 1e-6 and good["llm_gain"] > 0.002 and good["agreement"] > 0.25
    assert good["agreement"] == pytest.approx(good["llm_gain"] / good["tiny_gain"])
    # the contrast: the gain on the fine-tuned TinyLM's samples beyond the gain on the base TinyLM's
    assert null["contrast"] == 0.0 and good["contrast"] > 0
    assert good["contrast"] == pytest.approx(good["llm_gain"] - good["llm_gain_base_samples"])
    with pytest.raises(ValueError, match="provider prompts"):
        sample_check(pair, tiny, moved, [], n=4)


def test_refine_teacher_alpha_and_sample_writer_change_what_is_distilled(micro_zoo, tmp_path):
    from safetensors.torch import load_file

    from gtapp.finetune import FinetuneConfig, finetune
    from gtapp.models import ModelPair
    from gtapp.refine import RefineConfig, refine
    from gtapp.tasks.universe import make_task

    pair = ModelPair.from_dir(micro_zoo)
    tiny = finetune(pair.tiny_path, pair.recipes.tiny, make_task("math/add-fruit-easy", seed=5, n_train=16).train,
                    FinetuneConfig(steps=4, batch_size=8, lr=1e-2), tmp_path / "tiny").adapter_dir
    public = make_task("math/sub-fruit-easy", seed=0, n_train=16, n_test=1).train
    weights = {}
    for name, alpha, writer in (("a1", 1.0, "tiny"), ("a2", 2.0, "tiny"), ("teacher", 1.0, "teacher")):
        cfg = RefineConfig(steps=2, batch_size=8, lr=1e-2, n_sequences=16, sample_tokens=6, select=False,
                           start="init", teacher_llm="base", teacher_alpha=alpha, sample_from=writer, free_share=0.5)
        rec = refine(pair, tiny, public, tmp_path / name, cfg)
        assert ("2 * (tiny_ft - tiny_base)" in rec["teacher"]) == (alpha == 2.0)
        assert rec["text"]["samples_from"] == ("proxy-tuned LLM" if writer == "teacher" else "fine-tuned TinyLM")
        assert rec["text"]["unprompted_samples"] == 4
        weights[name] = load_file(tmp_path / name / "adapter_model.safetensors")
    # the same seed, text and start: only the teacher (or who wrote the samples) differs, so the adapters must
    for other in ("a2", "teacher"):
        assert any(not (weights["a1"][k] == weights[other][k]).all() for k in weights["a1"]), other


def test_both_writers_split_the_unprompted_and_the_prompted_samples_alike():
    from gtapp.refine import SAMPLE_WRITERS, RefineConfig, _writers

    tiny, teacher = object(), object()
    prompts = ["", "", "q0", "q1", "q2"]
    assert _writers("tiny", tiny, teacher, prompts) == [(tiny, prompts)]
    assert _writers("teacher", tiny, teacher, prompts) == [(teacher, prompts)]
    assert _writers("both", tiny, teacher, prompts) == [(tiny, ["", "q0", "q2"]), (teacher, ["", "q1"])]
    assert _writers("both", tiny, teacher, ["q0"]) == [(tiny, ["q0"])]  # no writer gets an empty share
    assert RefineConfig(sample_from="both").sample_from in SAMPLE_WRITERS


def test_refine_with_both_writers_runs_and_says_who_wrote(micro_zoo, tmp_path):
    from gtapp.finetune import FinetuneConfig, finetune
    from gtapp.models import ModelPair
    from gtapp.refine import SAMPLE_WRITERS, RefineConfig, refine
    from gtapp.tasks.universe import make_task

    pair = ModelPair.from_dir(micro_zoo)
    public = make_task("math/sub-fruit-easy", seed=0, n_train=16, n_test=1).train
    tiny = finetune(pair.tiny_path, pair.recipes.tiny, public[:8], FinetuneConfig(steps=1, batch_size=8, lr=1e-2),
                    tmp_path / "tiny").adapter_dir
    cfg = RefineConfig(steps=2, batch_size=4, n_sequences=8, sample_tokens=4, sample_from="both", free_share=0.5,
                       start="init", teacher_llm="base", select=False)
    rec = refine(pair, tiny, public, tmp_path / "refined", cfg)
    assert rec["text"] == {"public_examples": 4, "tiny_samples": 4, "unprompted_samples": 2,
                           "samples_from": SAMPLE_WRITERS["both"], "prompts_from": "the provider's public examples",
                           "organisation_prompts": 0}
    assert (tmp_path / "refined" / "adapter_model.safetensors").is_file()
    # the organisation's public prompts instead of the provider's: said in the text and privacy record
    from gtapp.refine import ORG_PROMPTS, ORG_PROMPTS_PRIVACY

    rec = refine(pair, tiny, public, tmp_path / "own", cfg, organisation_prompts=["Tom has 3 apples.", " ", "Ann?"])
    assert (rec["text"]["prompts_from"], rec["text"]["organisation_prompts"]) == (ORG_PROMPTS, 2)
    assert rec["privacy"].endswith(ORG_PROMPTS_PRIVACY)
    with pytest.raises(ValueError, match="organisation_prompts is empty"):
        refine(pair, tiny, public, tmp_path / "none", cfg, organisation_prompts=["  "])


def test_a_teacher_over_the_mapped_adapter_stacks_the_offset_on_it(micro_zoo, tmp_path):
    from gtapp.finetune import FinetuneConfig, finetune
    from gtapp.models import ModelPair
    from gtapp.refine import RefineConfig, refine
    from gtapp.tasks.universe import make_task

    pair = ModelPair.from_dir(micro_zoo)
    public = make_task("math/sub-fruit-easy", seed=0, n_train=16, n_test=1).train
    private = make_task("math/add-fruit-easy", seed=5, n_train=16).train
    # a TinyLM "update" that changes nothing: the teacher's offset is zero
    still = finetune(pair.tiny_path, pair.recipes.tiny, private[:8], FinetuneConfig(steps=1, batch_size=8, lr=1e-12),
                     tmp_path / "still").adapter_dir
    mapped = finetune(pair.llm_path, pair.recipes.llm, private, FinetuneConfig(steps=4, batch_size=8, lr=1e-2),
                      tmp_path / "mapped").adapter_dir
    first = {}
    for teacher_llm in ("base", "mapped"):
        cfg = RefineConfig(steps=1, batch_size=8, lr=1e-2, n_sequences=16, sample_tokens=4, select=False,
                           teacher_llm=teacher_llm)
        rec = refine(pair, still, public, tmp_path / teacher_llm, cfg, start_adapter=mapped)
        first[teacher_llm] = rec["first_loss"]
        assert ("over the mapped adapter" in rec["teacher"]) == (teacher_llm == "mapped")
    # over the mapped adapter the teacher is the student's start, so there is nothing to distil yet; over
    # the base LLM the student must first unlearn the mapped update
    assert first["mapped"] < 1e-4 < first["base"], first
    with pytest.raises(ValueError, match="teacher_llm='mapped' needs the mapped adapter"):
        refine(pair, still, public, tmp_path / "x", RefineConfig(start="init", teacher_llm="mapped"))
    with pytest.raises(ValueError, match="teacher_llm must be one of"):
        RefineConfig(teacher_llm="gt")
