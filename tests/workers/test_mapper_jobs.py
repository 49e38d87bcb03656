"""The provider-side job kinds through the real job API: shadow -> train_mapper -> (an
organisation's) finetune -> generate -> a stock peft LLM adapter, on the micro zoo; bench;
refusals (members and admin kinds, bad parameters, other organisations' adapters); a
cancelled shadow job whose retry keeps the runs it had finished. The full chain once through
a real Celery worker on Redis + PostgreSQL, the rest on the embedded worker."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from jobs_helpers import MicroDeployment, make_settings
from sqlalchemy import func, select

from storage import catalog
from storage.accounts import principal
from storage.db import session_scope
from storage.models import Adapter, Evaluation, Job, MapperVersion, PairSetRecord
from workers.client import JobNotFound
from workers.embedded import stop_all

TASK = "math/add-fruit-easy"
SHADOW = {"tasks": [TASK], "subsets": 2, "subset_size": 16, "steps": 4, "snapshot_steps": [2], "seeds": [0],
          "batch_size": 4, "n_train": 64, "lr": 0.01, "device": "cpu"}
GT = {"steps": 20, "d_model": 16, "n_enc_layers": 1, "n_dec_layers": 1}


class Env(MicroDeployment):
    """A MicroDeployment that runs jobs to success and makes datasets and TinyLM adapters."""

    def __init__(self, settings, micro_zoo: Path):
        super().__init__(settings, micro_zoo)
        self.llm_path = str(micro_zoo / "llm")

    def run(self, kind: str, params: dict, user: str = "root", timeout: float = 240):
        view = self.client.wait(self.client.submit(kind, params, self.users[user]), timeout=timeout)
        assert view.status == "succeeded", (kind, view.error, view.log_tail)
        return view

    def dataset(self, who, name: str, seed: int, epsilon_budget=None) -> int:
        from gtapp.tasks import make_task

        with session_scope(settings=self.settings) as s:
            return catalog.create_dataset(s, self.store, who.org_id, name,
                                          make_task(TASK, seed=seed, n_train=32, n_test=1).train,
                                          epsilon_budget=epsilon_budget).id

    def tiny_adapter(self, dataset_id: int, seed: int = 0, user: str = "alice") -> int:
        view = self.run("finetune", {"pair_id": self.pair_id, "dataset_id": dataset_id, "steps": 4, "batch_size": 4,
                                     "max_length": 64, "lr": 0.01, "seed": seed, "device": "cpu"}, user=user)
        return view.outputs["adapter_id"]

    def count_jobs(self) -> int:
        with session_scope(settings=self.settings) as s:
            return s.scalar(select(func.count()).select_from(Job))


@pytest.fixture(scope="module")
def emb(tmp_path_factory, micro_zoo):
    env = Env(make_settings(tmp_path_factory.mktemp("mapper_jobs")), micro_zoo)
    yield env
    stop_all()


def _loads_in_peft(env: Env, artifact: str, dest: Path) -> dict:
    """The stored LLM adapter, materialised, loads with stock peft on the LLM; its LoRA B's."""
    from peft import PeftModel

    from gtapp.models import load_model

    folder = env.store.materialize(artifact, dest)
    cfg = json.loads((folder / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA"
    model = PeftModel.from_pretrained(load_model(env.llm_path), str(folder))
    return {n: m.lora_B["default"].weight.detach() for n, m in model.named_modules()
            if hasattr(m, "lora_B") and "default" in getattr(m, "lora_B", {})}


# ---------------------------------------------------------------------------------------- refusals


def test_members_and_bad_parameters_are_refused_before_queueing(emb):
    u, pid = emb.users, emb.pair_id
    before = emb.count_jobs()
    for kind, params in (("shadow", {"pair_id": pid, **SHADOW}), ("train_mapper", {"pair_id": pid}),
                         ("bench", {}), ("shadow", {"pair_id": pid})):
        with pytest.raises(PermissionError, match="admins only"):
            emb.client.submit(kind, params, u["alice"])
    bad = [
        ("shadow", {"pair_id": pid}, "non-empty list of generated task names"),
        ("shadow", {"pair_id": pid, "tasks": ["math/no-such-task"]}, r"unknown task name\(s\) \['math/no-such-task'\]"),
        ("shadow", {"pair_id": pid, "tasks": [TASK], "steps": 4, "snapshot_steps": [9]}, "snapshot_steps"),
        ("shadow", {"pair_id": pid, "config": {"tasks": [TASK], "subset": 3}}, r"unknown key\(s\) \['subset'\]"),
        ("shadow", {"tasks": [TASK]}, "needs pair_id"),
        ("train_mapper", {"pair_id": pid, "kind": "svm"}, "unknown mapper kind 'svm'; choose one of gt, ridge, mean"),
        ("train_mapper", {"pair_id": pid, "kind": "ridge", "config": {"d_model": 8}}, "unknown config key"),
        ("train_mapper", {"kind": "ridge"}, "needs pair_set_id"),
        ("generate", {"adapter_ids": []}, "at least one TinyLM adapter"),
        ("generate", {"adapter_ids": [1], "weights": [1.0, 2.0]}, "2 weights for 1 adapters"),
        ("generate", {"adapter_ids": [1], "organisation": "vote"}, "organisation must be one of"),
        ("generate", {"adapter_ids": [1], "method": "max"}, "method must be one of"),
        ("generate", {"adapter_ids": [1], "evaluate_task": "nope/x"}, "unknown evaluation task"),
        ("generate", {"adapter_ids": [1], "config": {"evaluate": {"task": "nope/x"}}}, "unknown evaluation task"),
        ("bench", {"preset": "huge"}, "unknown bench preset 'huge'"),
        ("bench", {"overrides": {"n_pubilc": 3}}, r"unknown override\(s\) \['n_pubilc'\]"),
    ]
    for kind, params, msg in bad:
        with pytest.raises(ValueError, match=msg):
            emb.client.submit(kind, params, u["root"] if kind != "generate" else u["alice"])
    # another organisation's adapter reads as "not found", exactly like a missing one
    with session_scope(settings=emb.settings) as s:
        a = Adapter(org_id=emb.bob.org_id, user_id=emb.bob.user_id, model_pair_id=pid, model="tiny",
                    origin="uploaded", name="bobs", artifact="0" * 64)
        s.add(a)
        s.flush()
        bobs = a.id
    for who in ("alice", "root"):
        with pytest.raises(JobNotFound, match=f"adapter {bobs} not found"):
            emb.client.submit("generate", {"adapter_ids": [bobs]}, u[who])
    with pytest.raises(JobNotFound, match="adapter 999999 not found"):
        emb.client.submit("generate", {"adapter_ids": [999999]}, u["alice"])
    assert emb.count_jobs() == before  # nothing was queued
    kinds = {k["kind"]: k for k in emb.client.kinds(u["alice"])}
    assert all(kinds[k]["available"] for k in ("shadow", "train_mapper", "generate", "bench"))
    assert [k for k in ("shadow", "train_mapper", "bench", "generate") if kinds[k]["allowed"]] == ["generate"]


# ---------------------------------------------------------------------------------------- the chain


def test_shadow_ridge_finetune_generate_through_real_worker(celery_pg, micro_zoo, tmp_path):
    """On PostgreSQL through a Celery worker: a pair set, a promoted ridge mapper, alice's
    TinyLM adapter, and the generated LLM adapter evaluated on a task and loadable by peft."""
    settings, worker = celery_pg
    env = Env(settings, micro_zoo)
    shadow = env.run("shadow", {"pair_id": env.pair_id, **SHADOW, "name": "micro-shadow"})
    assert shadow.worker.startswith(worker.name + "@")
    assert shadow.outputs["n_pairs"] == 4 and shadow.outputs["runs"] == 2 and shadow.outputs["tasks"] == [TASK]
    with session_scope(settings=settings) as s:
        ps = s.get(PairSetRecord, shadow.outputs["pair_set_id"])
        assert (ps.name, ps.n_pairs, ps.model_pair_id, ps.job_id) == ("micro-shadow", 4, env.pair_id, shadow.id)
        assert ps.meta["version"] == shadow.outputs["version"] and ps.meta["config"]["steps"] == 4
    files = env.store.manifest(shadow.outputs["pair_set_artifact"])
    assert "pairset.json" in files and "recipe.json" in files and sum(f.startswith("runs/") for f in files) == 2

    ridge = env.run("train_mapper", {"pair_set_id": shadow.outputs["pair_set_id"], "kind": "ridge",
                                     "promote": True})
    with session_scope(settings=settings) as s:
        mv = s.get(MapperVersion, ridge.outputs["mapper_id"])
        assert (mv.kind, mv.version, mv.promoted, mv.pair_set_id) == ("ridge", 1, True, ps.id)
        assert mv.metrics["card"]["split"]["train_pairs"] + mv.metrics["card"]["split"]["val_pairs"] == 4
        assert "val_rel_err" in mv.metrics and mv.metrics["version_hash"] == mv.metrics["card"]["version"]

    tiny = env.tiny_adapter(env.dataset(env.alice, "alice-sums", seed=1))
    # bob cannot map alice's adapter
    with pytest.raises(JobNotFound, match=f"adapter {tiny} not found"):
        env.client.submit("generate", {"adapter_ids": [tiny]}, env.users["bob"])
    gen = env.run("generate", {"adapter_ids": [tiny], "evaluate_task": TASK, "n_test": 8, "device": "cpu"},
                  user="alice")
    assert gen.outputs["mapper_id"] == mv.id and len(gen.outputs["ood"]) == 1 and gen.outputs["n"] == 8
    # the member sees the gain over the base LLM and the provider's mean baseline, on the same examples
    assert set(gen.outputs["baselines"]) == {"base_llm", "mean_shadow"}
    for name in ("over_base_llm", "over_mean_shadow"):
        nll = gen.outputs["gains"][name]["nll"]
        assert nll["n"] == 8 and nll["ci95"][0] <= nll["diff"] <= nll["ci95"][1]
    base_nll = gen.outputs["baselines"]["base_llm"]["answer_nll"]
    with session_scope(settings=settings) as s:
        ours_nll = s.get(Evaluation, gen.outputs["evaluation_id"]).meta["answer_nll"]
    assert gen.outputs["gains"]["over_base_llm"]["nll"]["diff"] == pytest.approx(base_nll - ours_nll, rel=1e-6)
    with session_scope(settings=settings) as s:
        a = s.get(Adapter, gen.outputs["adapter_id"])
        assert (a.model, a.origin, a.org_id, a.model_pair_id, a.job_id) == ("llm", "generated", env.alice.org_id,
                                                                            env.pair_id, gen.id)
        assert a.meta["contributors"][0]["adapter_id"] == tiny and a.meta["contributors"][0]["weight"] == 1.0
        assert a.meta["privacy"]["all_dp"] is False and a.meta["record"]["epsilon"] is None
        assert a.meta["mapper"]["kind"] == "ridge"
        e = s.get(Evaluation, gen.outputs["evaluation_id"])
        assert (e.adapter_id, e.method, e.task, e.n_clients, e.org_id) == (a.id, "ridge", TASK, 1, env.alice.org_id)
        assert 0.0 <= e.value <= 1.0 and e.meta["n"] == 8
        artifact = a.artifact
    lora_b = _loads_in_peft(env, artifact, tmp_path / "llm_adapter")
    assert lora_b and any(float(b.abs().sum()) > 0 for b in lora_b.values())


def test_gt_mapper_and_two_organisation_style_generate(emb, tmp_path):
    """Embedded: a GT mapper (small config, picked by id, not promoted), two of alice's
    adapters with explicit weights, map-then-average; privacy spend of a DP contributor."""
    # two shadow tasks: the mapper's OOD reference knows how far apart two tasks' updates lie
    shadow = emb.run("shadow", {"pair_id": emb.pair_id, **SHADOW, "tasks": [TASK, "math/sub-fruit-easy"]})
    gt = emb.run("train_mapper", {"pair_id": emb.pair_id, "kind": "gt", "config": GT, "device": "cpu"})
    with session_scope(settings=emb.settings) as s:
        mv = s.get(MapperVersion, gt.outputs["mapper_id"])
        assert (mv.kind, mv.promoted, mv.pair_set_id) == ("gt", False, shadow.outputs["pair_set_id"])
        assert mv.metrics["card"]["ood"]["task_reference_nn_distance"] > 0
        assert mv.metrics["card"]["config"]["steps"] == 20 and mv.metrics["card"]["config"]["d_model"] == 16
    ds = emb.dataset(emb.alice, "alice-a", seed=2, epsilon_budget=50.0)
    plain_ds = emb.dataset(emb.alice, "alice-plain", seed=2)
    plain = emb.tiny_adapter(plain_ds, seed=0)  # no budget: no DP needed
    dp = emb.run("finetune", {"pair_id": emb.pair_id, "dataset_id": ds, "steps": 3, "batch_size": 4,
                              "max_length": 64, "seed": 1, "device": "cpu", "dp": {"noise_multiplier": 1.0}},
                 user="alice").outputs["adapter_id"]
    # no promoted mapper for the pair yet: refused at submission, saying so; nothing is queued
    before = emb.count_jobs()
    with pytest.raises(ValueError, match="no promoted mapper yet.*nothing was queued"):
        emb.client.submit("generate", {"adapter_ids": [plain]}, emb.users["alice"])
    assert emb.count_jobs() == before
    gen = emb.run("generate", {"adapter_ids": [plain, dp], "mapper_id": mv.id, "weights": [1, 3],
                               "organisation": "map_then_average", "device": "cpu"}, user="alice")
    assert gen.outputs["weights"] == pytest.approx([0.25, 0.75]) and len(gen.outputs["ood"]) == 2
    with session_scope(settings=emb.settings) as s:
        a = s.get(Adapter, gen.outputs["adapter_id"])
        assert a.origin == "generated" and a.meta["combine"]["organisation"] == "map_then_average"
        spend = {c["adapter_id"]: c for c in a.meta["privacy"]["per_contributor"]}
        assert spend[plain]["dp"] is False and spend[dp]["dp"] is True and spend[dp]["epsilon"] > 0
        assert a.meta["privacy"]["all_dp"] is False and a.meta["record"]["epsilon"] is None
        artifact = a.artifact
    assert _loads_in_peft(emb, artifact, tmp_path / "gt_adapter")
    # refined towards the proxy-tuned distribution on the pair set's shadow-task text (one adapter only)
    with pytest.raises(ValueError, match="refine works on one TinyLM adapter"):
        emb.client.submit("generate", {"adapter_ids": [plain, dp], "mapper_id": mv.id, "refine": True},
                          emb.users["alice"])
    ref = emb.run("generate", {"adapter_ids": [dp], "mapper_id": mv.id, "refine": True, "device": "cpu"},
                  user="alice")
    with session_scope(settings=emb.settings) as s:
        a = s.get(Adapter, ref.outputs["adapter_id"])
        rec = a.meta["refine"]
        assert rec["text"]["public_examples"] > 0 and "post-processing" in rec["privacy"]
        assert "over the mapped adapter" in rec["teacher"]  # refine=always: proxy-tuning over the GT's adapter
        assert a.meta["record"]["epsilon"] == pytest.approx(spend[dp]["epsilon"])  # DP carried over unchanged
        artifact = a.artifact
    assert "refine.json" in emb.store.manifest(artifact)
    assert _loads_in_peft(emb, artifact, tmp_path / "refined")
    # the samples written after the organisation's own public prompts (a dataset without a budget)
    from gtapp.refine import ORG_PROMPTS

    public = emb.dataset(emb.alice, "alice-public-questions", seed=3)
    own = emb.run("generate", {"adapter_ids": [dp], "mapper_id": mv.id, "refine": True, "device": "cpu",
                               "refine_prompts_dataset_id": public}, user="alice")
    with session_scope(settings=emb.settings) as s:
        a = s.get(Adapter, own.outputs["adapter_id"])
        text = a.meta["refine"]["text"]
        assert text["prompts_from"] == ORG_PROMPTS and text["organisation_prompts"] > 0, text
        assert text["prompts_dataset"]["id"] == public and "must not be private" in a.meta["refine"]["privacy"]
        assert a.meta["record"]["epsilon"] == pytest.approx(spend[dp]["epsilon"])  # nothing charged for them
    # private data is refused as "public prompts": a budgeted dataset, the adapter's own training
    # data, another organisation's dataset (not found), and prompts with no refinement to use them
    before = emb.count_jobs()
    for params, error, match in (
            ({"adapter_ids": [dp], "refine": True, "refine_prompts_dataset_id": ds}, ValueError, "has a privacy budget"),
            ({"adapter_ids": [plain], "refine": True, "refine_prompts_dataset_id": plain_ds}, ValueError,
             f"trained adapter\\(s\\) \\[{plain}\\]"),
            ({"adapter_ids": [dp], "refine": True, "refine_prompts_dataset_id": emb.dataset(emb.bob, "bob-q", seed=4)},
             JobNotFound, "dataset .* not found"),
            ({"adapter_ids": [dp], "refine_prompts_dataset_id": public}, ValueError, "set refine to always or auto")):
        with pytest.raises(error, match=match):
            emb.client.submit("generate", {"mapper_id": mv.id, **params}, emb.users["alice"])
    assert emb.count_jobs() == before
    # refine="auto": refined only where the update's task score (or, for a pair set of one task, its
    # OOD score) is above the calibrated threshold
    from gtapp.refine import AUTO_REFINE_OOD, AUTO_REFINE_TASK_OOD

    auto = emb.run("generate", {"adapter_ids": [dp], "mapper_id": mv.id, "refine": "auto", "device": "cpu"},
                   user="alice")
    with session_scope(settings=emb.settings) as s:
        a = s.get(Adapter, auto.outputs["adapter_id"])
        rec, score = a.meta["refine"], a.meta["ood"][0]
        assert rec["mode"] == "auto" and rec["ood_score"] == score
        assert rec["task_score"] == a.meta["contributors"][0]["ood"]["task_score"] > 0, rec
        assert rec["threshold"] == AUTO_REFINE_TASK_OOD and rec["refined"] == (rec["task_score"] > AUTO_REFINE_TASK_OOD)
        assert ("task score" in rec["reason"]) and AUTO_REFINE_OOD != AUTO_REFINE_TASK_OOD
        print("refine=auto:", rec)
        assert ("refine.json" in emb.store.manifest(a.artifact)) == rec["refined"]
        if rec["refined"]:  # auto refines towards the base LLM's proxy-tuning (gtapp.refine.AUTO_TEACHER_LLM)
            assert rec["teacher"].startswith("llm_base + "), rec["teacher"]
    # two shadow tasks: the job says the task score rests on too few tasks to trust "auto"
    assert any("refine: auto: only 2 shadow tasks" in w for w in auto.outputs["warnings"]), auto.outputs["warnings"]
    assert not any("refine: auto" in w for w in ref.outputs["warnings"])
    with pytest.raises(ValueError, match="refine must be one of never, auto, always"):
        emb.client.submit("generate", {"adapter_ids": [dp], "mapper_id": mv.id, "refine": "sometimes"},
                          emb.users["alice"])


def test_a_long_fine_tune_of_ours_is_mapped_though_its_a_has_left_the_init(emb, tmp_path):
    """120 steps at lr 0.01 move LoRA A of the micro TinyLM so far from its seeded init that the
    init check an upload must pass refuses it (cosine(A, A0) about 0.44; 6/sqrt(128) = 0.53 is
    needed). The server's own fine-tune made it from the recipe's init, so generate maps it."""
    from gtapp.lora.validate import AdapterError, validate_adapter
    from gtapp.models import ModelPair

    emb.run("shadow", {"pair_id": emb.pair_id, **SHADOW})
    ridge = emb.run("train_mapper", {"pair_id": emb.pair_id, "kind": "ridge", "device": "cpu"})
    ds = emb.dataset(emb.alice, "alice-long", seed=3)
    ft = emb.run("finetune", {"pair_id": emb.pair_id, "dataset_id": ds, "steps": 120, "batch_size": 4,
                              "max_length": 64, "lr": 0.01, "seed": 0, "device": "cpu"}, user="alice")
    aid = ft.outputs["adapter_id"]
    with session_scope(settings=emb.settings) as s:
        a = s.get(Adapter, aid)
        assert a.origin == "produced"
        folder = emb.store.materialize(a.artifact, tmp_path / "long")
    recipe = ModelPair.from_dir(Path(emb.llm_path).parent).recipes.tiny
    with pytest.raises(AdapterError, match="does not match the recipe's seeded initialisation"):
        validate_adapter(folder, recipe)  # what an upload of these bytes meets
    gen = emb.run("generate", {"adapter_ids": [aid], "mapper_id": ridge.outputs["mapper_id"], "device": "cpu"},
                  user="alice")
    with session_scope(settings=emb.settings) as s:
        artifact = s.get(Adapter, gen.outputs["adapter_id"]).artifact
    assert _loads_in_peft(emb, artifact, tmp_path / "mapped")


def test_cancelled_shadow_keeps_finished_runs_and_retry_resumes(emb):
    # batches of 2 runs: the unit a cancel keeps, and that a retry skips
    params = {"pair_id": emb.pair_id, **SHADOW, "subsets": 8, "steps": 12, "snapshot_steps": [], "seed": 3,
              "batch_runs": 2}

    def finished_runs() -> dict[Path, dict]:
        """{pair-set folder: its finished runs} of this config (task_seed 3) under the data dir."""
        out = {}
        for m in (Path(emb.settings.data_dir) / "shadow").glob(f"pair{emb.pair_id}-*/pairset.json"):
            manifest = json.loads(m.read_text())
            if manifest["settings"]["task_seed"] == 3:
                out[m.parent] = manifest["runs"]
        return out

    job_id = emb.client.submit("shadow", params, emb.users["root"])
    deadline = time.monotonic() + 120
    while not any(finished_runs().values()):
        assert time.monotonic() < deadline, "no shadow run finished in time"
        assert emb.client.get(job_id, emb.users["root"]).status in ("queued", "running")
        time.sleep(0.05)
    emb.client.cancel(job_id, emb.users["root"])
    view = emb.client.wait(job_id, timeout=60)
    assert view.status == "cancelled" and view.outputs == {}
    with session_scope(settings=emb.settings) as s:
        assert s.scalars(select(PairSetRecord).where(PairSetRecord.job_id == job_id)).first() is None
    kept = finished_runs()
    assert len(kept) == 1
    folder, runs = next(iter(kept.items()))
    assert 2 <= len(runs) < 8 and len(runs) % 2 == 0  # whole batches only
    retry = emb.client.wait(emb.client.retry(job_id, emb.users["root"]), timeout=240)
    assert retry.status == "succeeded", (retry.error, retry.log_tail)
    assert retry.outputs["runs_reused"] == len(runs) and retry.outputs["runs"] == 8 and retry.outputs["n_pairs"] == 8
    assert f"{len(runs)} run(s) finished earlier are kept" in retry.log_tail
    after = finished_runs()[folder]
    for run_id, run in runs.items():  # not redone: same shard, same finish time
        assert after[run_id]["sha256"] == run["sha256"] and after[run_id]["finished_at"] == run["finished_at"]


def test_bench_job_results_reach_the_compare_tab(emb):
    from ui.service import Service

    overrides = {"in_dist_tasks": [TASK], "cross_shadow_tasks": [], "cross_private_tasks": [], "n_public": 16,
                 "n_private": 16, "n_test": 8, "eval_limit": 4, "shadow_subsets": 2, "shadow_subset_size": 8,
                 "shadow_steps": 2, "shadow_snapshots": [], "tiny_steps": 2, "llm_steps": 2, "batch_size": 4,
                 "dp_epsilons": [None], "clients": [1], "methods": ["base_llm", "oracle", "tiny_ft", "ridge",
                                                                    "mean_shadow"]}
    view = emb.run("bench", {"preset": "ci", "seeds": [0], "pair_id": emb.pair_id, "overrides": overrides,
                             "record_evaluations": True})
    out = view.outputs
    assert out["preset"] == "ci" and out["seeds"] == [0] and out["rows"] == 5 and len(out["targets"]) == 5
    result = json.loads(emb.store.read_bytes(out["results_artifact"]))
    assert {r["method"] for r in result["rows"]} == {"base_llm", "oracle", "tiny_ft", "ridge", "mean_shadow"}
    with session_scope(settings=emb.settings) as s:
        evals = s.scalars(select(Evaluation).where(Evaluation.job_id == view.id)).all()
        assert len(evals) == out["evaluations"] == 5 and {e.meta["protocol"] for e in evals} == {"in_distribution"}
    svc = Service(emb.settings)
    with session_scope(settings=emb.settings) as s:
        root = principal(s, emb.users["root"])
    entry = next(b for b in svc.list_benchmarks(root) if b["key"] == f"job:{view.id}:results_artifact")
    assert len(svc.benchmark_rows(root, entry["key"])) == 5
