"""Child process that validates one uploaded adapter (``python -m ui.validate_child``).

The dashboard never imports torch; ``gtapp.validate`` does. So the dashboard runs this
module as a child process: it reads ``{"recipe", "source", "workdir", "model_name"}`` as JSON on stdin,
runs :func:`gtapp.lora.validate.load_adapter` (which extracts a zip into a fresh folder under
``workdir``), writes the adapter's config afresh from the recipe (naming the base model
``model_name``) and prints one JSON line: ``{"ok": true, "summary": ..., "files": {...}}`` or
``{"ok": false, "error": "<what was wrong, in words>"}``.
"""

from __future__ import annotations

import json
import sys


def main() -> int:
    try:
        req = json.loads(sys.stdin.read())
        recipe_d, source, workdir = req["recipe"], req["source"], req["workdir"]
        model_name = req.get("model_name")
    except (ValueError, KeyError, TypeError) as e:
        print(json.dumps({"ok": False, "error": f"bad validation request: {e}"}))
        return 2
    import torch

    torch.set_num_threads(1)
    from gtapp.lora.recipe import LoraRecipe, RecipeError
    from gtapp.lora.peft_format import write_peft_config
    from gtapp.lora.validate import AdapterError, load_adapter

    try:
        recipe = LoraRecipe.from_dict(recipe_d, where="model pair recipe")
        va = load_adapter(source, recipe, workdir=workdir)
    except (AdapterError, RecipeError) as e:
        print(json.dumps({"ok": False, "error": str(e)}))
        return 0
    except (FileNotFoundError, IsADirectoryError) as e:
        print(json.dumps({"ok": False, "error": f"missing file: {e.filename and e.filename.rsplit('/', 1)[-1]}"}))
        return 0
    files = va.files
    # what is stored is a config written here from the recipe, never the uploaded one: no field a
    # client chose (a server path as base_model_name_or_path, an odd revision) is kept or served
    from pathlib import Path

    config = write_peft_config(recipe, Path(workdir) / "canonical", model_name)
    out = {"ok": True, "summary": va.summary.to_dict(),
           "files": {"config": str(config), "weights": str(files.weights),
                     "sidecar": str(files.sidecar) if files.sidecar else None, "kind": files.kind}}
    print(json.dumps(out, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
