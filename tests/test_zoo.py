import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from gtapp import zoo


@pytest.mark.slow  # needs the session ci_zoo (about 20 s to build on an idle 2-core machine, more under load)
def test_ci_zoo_reloads_with_plain_transformers_and_generates(ci_zoo):
    info = json.loads((ci_zoo / "zoo.json").read_text())
    print("ci zoo:", info["params"], info["pretrain_loss"], f"{info['wall_s']:.1f}s")
    cfg = info["preset_config"]
    texts = zoo.corpus(cfg["corpus_docs"], info["seed"])[:400]  # the start of the pretraining corpus
    reloaded = {}
    for which in ("tiny", "llm"):
        model = AutoModelForCausalLM.from_pretrained(str(ci_zoo / which)).eval()
        tok = AutoTokenizer.from_pretrained(str(ci_zoo / which))
        assert sum(t.numel() for t in model.parameters()) == info["params"][which]
        # the reloaded weights and tokenizer are the pretrained ones: their loss on the pretraining
        # text is the one pretraining ended at (an untrained model is at about ln(vocab) = 6.6)
        data = zoo.pack(texts, tok, cfg["seq_len"])[:64]
        with torch.no_grad():
            reloaded[which] = float(model(input_ids=data, labels=data).loss)
        assert reloaded[which] == pytest.approx(info["pretrain_loss"][which], rel=0.1), (which, reloaded, info)
        ids = tok("The dog", return_tensors="pt")
        out = model.generate(**ids, max_new_tokens=8, do_sample=False)
        new = out[0][ids.input_ids.shape[1]:]
        text = tok.decode(new, skip_special_tokens=True)
        # greedy decoding runs to max_new_tokens unless the model ends the text itself
        assert 1 <= len(new) <= 8 and (len(new) == 8 or int(new[-1]) == tok.eos_token_id), out
        assert text.strip(), out
    # The pair differs in width and depth, and the LLM is the stronger pretrained model.
    assert info["params"]["llm"] > 5 * info["params"]["tiny"]
    assert info["pretrain_loss"]["llm"] < info["pretrain_loss"]["tiny"] and reloaded["llm"] < reloaded["tiny"]
    # One shared tokenizer.
    t1 = AutoTokenizer.from_pretrained(str(ci_zoo / "tiny"))
    t2 = AutoTokenizer.from_pretrained(str(ci_zoo / "llm"))
    assert t1.get_vocab() == t2.get_vocab()


def test_zoo_is_deterministic_from_seed(micro_zoo, tmp_path):
    again = zoo.build("micro", tmp_path / "again", seed=0)
    other = zoo.build("micro", tmp_path / "other", seed=1)
    r0 = json.loads((micro_zoo / "recipe.json").read_text())
    r1 = json.loads((again / "recipe.json").read_text())
    r2 = json.loads((other / "recipe.json").read_text())
    assert r0 == r1
    assert r0["tiny"]["base_fingerprint"] != r2["tiny"]["base_fingerprint"]


def test_llm_uses_grouped_query_attention_so_shapes_differ(micro_zoo):
    r = json.loads((micro_zoo / "recipe.json").read_text())
    llm_q = r["llm"]["shapes"]["model.layers.0.self_attn.q_proj"]
    llm_v = r["llm"]["shapes"]["model.layers.0.self_attn.v_proj"]
    assert llm_v[0] < llm_q[0]  # fewer KV heads than query heads
    assert r["tiny"]["num_layers"] != r["llm"]["num_layers"]


def test_progress_is_reported(tmp_path):
    seen = []
    zoo.build("micro", tmp_path / "z", seed=0, progress=seen.append)
    assert seen and seen[-1].fraction == 1.0
    assert {p.stage for p in seen} == {"pretrain tiny", "pretrain llm"}
    assert all(0 <= p.fraction <= 1 for p in seen)
    assert torch.__version__ in (tmp_path / "z" / "zoo.json").read_text()
