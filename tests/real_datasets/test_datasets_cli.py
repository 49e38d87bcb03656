"""``gtapp datasets list`` / ``gtapp datasets show``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from gtapp.cli import main

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "datasets"
ROOT = Path(__file__).resolve().parents[2]


def test_list(capsys):
    assert main(["datasets", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("gsm8k", "aqua_rat", "commonsenseqa", "drop", "samsum", "dialogsum"):
        assert name in out
    assert "rouge_l" in out and "exact_match" in out


def test_list_with_files(capsys):
    assert main(["datasets", "list", "--files"]) == 0
    assert "drop_dataset_dev.json" in capsys.readouterr().out


def test_python_dash_m_list():
    r = subprocess.run([sys.executable, "-m", "gtapp", "datasets", "list"], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "dialogsum" in r.stdout


def test_show_fixture(capsys):
    assert main(["datasets", "show", "dialogsum", "--train", str(FIX / "dialogsum" / "dialogsum.train.jsonl"),
                 "--test", str(FIX / "dialogsum" / "dialogsum.test.jsonl"), "--n", "1"]) == 0
    out = capsys.readouterr().out
    assert "dialogsum: 3 train, 2 test" in out
    assert "--- train example 1 ---" in out and "--- test example 1 ---" in out
    assert "--- train example 2 ---" not in out
    assert "also accepted:" in out and "rouge_l" in out


def test_show_folder_and_user_file(capsys, tmp_path):
    assert main(["datasets", "show", "drop", "--path", str(FIX / "drop"), "--n", "2"]) == 0
    out = capsys.readouterr().out
    assert "drop: 4 train, 4 test" in out and "Passage:" in out and "skipped 1 record" in out
    p = tmp_path / "u.csv"
    p.write_text("prompt,answer\n1+1=,2\n2+2=,4\n3+3=,6\n", encoding="utf-8")
    assert main(["datasets", "show", "user", "--train", str(p), "--n", "1"]) == 0
    assert "u: 2 train, 1 test" in capsys.readouterr().out


def test_show_errors_exit_2(capsys, tmp_path):
    bad = tmp_path / "train.jsonl"
    bad.write_text('{"question": "q"}\n', encoding="utf-8")
    assert main(["datasets", "show", "gsm8k", "--train", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad} line 1" in err and "missing 'answer'" in err
    assert main(["datasets", "show", "gsm8k"]) == 2
    assert "--train" in capsys.readouterr().err
    assert main(["datasets", "show", "nope", "--train", str(bad)]) == 2
    assert "unknown dataset" in capsys.readouterr().err
