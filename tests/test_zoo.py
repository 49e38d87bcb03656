import json

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from gtapp import zoo


def test_ci_zoo_reloads_with_plain_transformers_and_generates(ci_zoo):
    info = json.loads((ci_zoo / "zoo.json").read_text())
    print("ci zoo:", info["params"], info["pretrain_loss"], f"{info['wall_s']:.1f}s")
    for which in ("tiny", "llm"):
        model = AutoModelForCausalLM.from_pretrained(str(ci_zoo / which))
        tok = AutoTokenizer.from_pretrained(str(ci_zoo / which))
        ids = tok("The dog", return_tensors="pt")
        out = model.generate(**ids, max_new_tokens=8, do_sample=False)
        text = tok.decode(out[0][ids.input_ids.shape[1]:], skip_special_tokens=True)
        assert out.shape[1] > ids.input_ids.shape[1] and isinstance(text, str)
    # The pair differs in width and depth, and the LLM is the stronger pretrained model.
    assert info["params"]["llm"] > 5 * info["params"]["tiny"]
    assert info["pretrain_loss"]["llm"] < info["pretrain_loss"]["tiny"]
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
