"""Cross-LoRA, the training-free baseline: exact on a model moved to itself, sane across sizes."""

import torch

from gtapp.baselines import cross_lora as xl


def test_identity_models_transfer_the_update_exactly():
    """Source = target (H = I, full-rank subspaces): the projected update is the update."""
    torch.manual_seed(0)
    w = torch.randn(12, 12, dtype=torch.float64)
    delta = torch.randn(12, 2, dtype=torch.float64) @ torch.randn(2, 12, dtype=torch.float64)
    eye = torch.eye(12, dtype=torch.float64)
    for kind in ("q_proj", "o_proj", "v_proj"):
        out = xl.transfer_module(delta, w, w, kind, eye, eye)
        assert torch.allclose(out, delta, atol=1e-9), kind


def test_residual_side_follows_the_embedding_map():
    """A target whose residual stream is a rotation of the source's: the input side's update is
    rotated the same way (ΔW_t = ΔW_s Rᵀ for q/v, whose input is the residual stream)."""
    torch.manual_seed(1)
    q, _ = torch.linalg.qr(torch.randn(8, 8, dtype=torch.float64))
    emb_s = torch.randn(50, 8, dtype=torch.float64)
    h = xl.embedding_map(emb_s, emb_s @ q.T)
    assert torch.allclose(h, q, atol=1e-8)
    w_s = torch.randn(8, 8, dtype=torch.float64)
    w_t = w_s @ q.T  # the same function of the rotated input
    delta = torch.randn(8, 8, dtype=torch.float64)
    out = xl.transfer_module(delta, w_s, w_t, "q_proj", h, torch.linalg.pinv(h))
    assert torch.allclose(out, delta @ q.T, atol=1e-8)


def test_relative_depth_and_factoring(micro_zoo, tmp_path):
    from peft import PeftModel

    from gtapp.finetune import FinetuneConfig, finetune
    from gtapp.lora.recipe import layer_of
    from gtapp.lora.peft_format import read_adapter
    from gtapp.models import ModelPair, load_model
    from gtapp.tasks.universe import make_task

    pair = ModelPair.from_dir(micro_zoo)
    tiny, llm = pair.recipes.tiny, pair.recipes.llm
    for m in llm.modules():
        src = xl.source_module(m, tiny, llm)
        assert src is not None and src.rsplit(".", 1)[-1] == m.rsplit(".", 1)[-1]
    last = max(llm.modules(), key=layer_of)
    assert layer_of(xl.source_module(last, tiny, llm)) == tiny.num_layers - 1

    task = make_task("math/add-fruit-easy", seed=0, n_train=16, n_test=2)
    res = finetune(pair.tiny_path, tiny, task.train, FinetuneConfig(steps=4, batch_size=4, lr=1e-2), tmp_path / "t")
    rec = xl.run_cross_lora(pair, res.adapter_dir, tmp_path / "x")
    moved = read_adapter(tmp_path / "x", llm)
    assert sum(float((b @ a).norm()) for a, b in moved.values()) > 0 and rec["training"] == "none"
    model = PeftModel.from_pretrained(load_model(pair.llm_path), str(tmp_path / "x"))
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        base = load_model(pair.llm_path)(input_ids=ids).logits
        assert not torch.allclose(model(input_ids=ids).logits, base)
    # the factoring keeps the best rank-r approximation of the projected update
    a, b = xl.to_factors(torch.diag(torch.tensor([3.0, 2.0, 1.0, 0.5], dtype=torch.float64)), llm)
    approx = llm.scale * (b.double() @ a.double())
    assert torch.allclose(torch.diag(approx)[: llm.rank], torch.tensor([3.0, 2.0, 1.0, 0.5][: llm.rank],
                                                                         dtype=torch.float64), atol=1e-6)
