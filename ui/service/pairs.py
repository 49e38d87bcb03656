"""The shared catalogue: model pairs, zoo folders an admin can register, mapper versions, pair sets."""

from __future__ import annotations

import logging
from typing import Optional

from sqlalchemy import select

from storage.accounts import Principal
from storage.catalog import promote_mapper, register_pair
from storage.models import MapperVersion, ModelPairRecord
from ui.service.base import NotFound, ServiceBase, _iso, clean_name

log = logging.getLogger("gtapp.dashboard")

class Pairs(ServiceBase):
    def register_new_zoo_pairs(self) -> list[str]:
        """Register every zoo folder under ``zoo_dir`` not registered yet (``register_zoo_on_start``)."""
        done = []
        if not self.settings.register_zoo_on_start:
            return done
        for cand in self.zoo_candidates():
            if not cand["registered"]:
                try:
                    with self.session() as s:
                        register_pair(s, cand["name"], cand["path"])
                    done.append(f"registered model pair '{cand['name']}'")
                except Exception as e:  # a half-built zoo folder: leave it for the admin
                    log.warning("could not register zoo folder %s: %s", cand["path"], e)
        return done
    def list_pairs(self) -> list[dict]:
        with self.reading() as s:
            pairs = list(s.scalars(select(ModelPairRecord).order_by(ModelPairRecord.id)))
            return [self._pair_dict(p) for p in pairs]

    @staticmethod
    def _pair_dict(p: ModelPairRecord, with_recipe: bool = False) -> dict:
        r = p.recipe or {}
        tiny, llm = r.get("tiny") or {}, r.get("llm") or {}
        d = {"id": p.id, "name": p.name, "fingerprint": p.recipe_fingerprint[:12],
             "tiny": f"{tiny.get('num_layers', '?')} layers, r={tiny.get('rank', '?')}, "
                     f"alpha={tiny.get('alpha', '?')}, {'/'.join(tiny.get('target_modules') or [])}",
             "llm": f"{llm.get('num_layers', '?')} layers, r={llm.get('rank', '?')}, "
                    f"alpha={llm.get('alpha', '?')}, {'/'.join(llm.get('target_modules') or [])}",
             "created": _iso(p.created_at)}
        if with_recipe:
            d["recipe"] = r
        return d

    def get_pair(self, pair_id: int) -> dict:
        with self.session() as s:
            p = s.get(ModelPairRecord, int(pair_id)) if pair_id is not None else None
            if p is None:
                raise NotFound(f"model pair {pair_id} not found")
            return self._pair_dict(p, with_recipe=True)

    def zoo_candidates(self) -> list[dict]:
        """Zoo folders (tiny/, llm/, recipe.json) directly under ``zoo_dir``; chosen from a
        list by an admin, never typed."""
        root = self.settings.zoo_root
        if not root.is_dir():
            return []
        with self.session() as s:
            registered = {(p.tiny_path, p.name) for p in s.scalars(select(ModelPairRecord))}
        paths = {t for t, _ in registered}
        names = {n for _, n in registered}
        out = []
        for d in sorted(root.iterdir()):
            if d.is_dir() and not d.is_symlink() and (d / "recipe.json").is_file() and (d / "tiny").is_dir() \
                    and (d / "llm").is_dir():
                out.append({"name": d.name, "path": str(d.resolve()),
                            "registered": str((d / "tiny").resolve()) in paths or d.name in names})
        return out

    def register_zoo_pair(self, who: Principal, folder: str, name: Optional[str]) -> str:
        self.require_admin(who)
        cands = {c["name"]: c for c in self.zoo_candidates()}
        if folder not in cands:
            raise NotFound(f"zoo folder '{folder}' not found under the configured zoo_dir")
        name = clean_name(name, "the pair's name", folder)
        with self.session() as s:
            if s.scalars(select(ModelPairRecord).where(ModelPairRecord.name == name)).first() is not None:
                raise ValueError(f"a model pair named '{name}' already exists")
            pair = register_pair(s, name, cands[folder]["path"])
            return f"model pair '{pair.name}' registered (id {pair.id}, recipe {pair.recipe_fingerprint[:12]})"

    # ------------------------------------------------------------------ mappers
    def list_mappers(self, pair_id: Optional[int] = None) -> list[dict]:
        with self.session() as s:
            q = select(MapperVersion, ModelPairRecord.name).join(ModelPairRecord, MapperVersion.model_pair_id == ModelPairRecord.id) \
                .order_by(MapperVersion.model_pair_id, MapperVersion.version)
            if pair_id is not None:
                q = q.where(MapperVersion.model_pair_id == int(pair_id))
            out = []
            for m, pname in s.execute(q):
                metrics = m.metrics or {}
                shown = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
                out.append({"id": m.id, "pair_id": m.model_pair_id, "pair": pname, "version": m.version,
                            "kind": m.kind, "promoted": m.promoted, "metrics": shown,
                            "metrics_text": ", ".join(f"{k}={v:.4g}" for k, v in sorted(shown.items())[:6]),
                            "created": _iso(m.created_at), "job_id": m.job_id})
            return out

    def mapper_card(self, mapper_id: int) -> dict:
        """A mapper version's model card (as its train_mapper job recorded it): the shared
        catalogue's, no organisation's data."""
        with self.session() as s:
            m = s.get(MapperVersion, int(mapper_id))
            if m is None:
                raise NotFound(f"mapper version {mapper_id} not found")
            return dict((m.metrics or {}).get("card") or {})

    def list_pair_sets(self, pair_id: Optional[int] = None) -> list[dict]:
        from storage.models import PairSetRecord

        with self.session() as s:
            q = select(PairSetRecord).order_by(PairSetRecord.id.desc())
            if pair_id is not None:
                q = q.where(PairSetRecord.model_pair_id == int(pair_id))
            out = []
            for p in s.scalars(q):
                meta = p.meta or {}
                tasks = meta.get("tasks")
                out.append({"id": p.id, "pair_id": p.model_pair_id, "name": p.name, "pairs": p.n_pairs,
                            "runs": meta.get("runs"), "tasks": ", ".join(map(str, tasks))[:200]
                            if isinstance(tasks, list) else "", "job_id": p.job_id, "created": _iso(p.created_at)})
            return out

    def promote(self, who: Principal, mapper_id: int) -> str:
        self.require_admin(who)
        with self.session() as s:
            try:
                mv = promote_mapper(s, int(mapper_id))
            except LookupError:
                raise NotFound(f"mapper version {mapper_id} not found") from None
            return f"mapper version {mv.version} ({mv.kind}, id {mv.id}) promoted for pair {mv.model_pair_id}"
