"""The command line as users write it: every default visible in --help, closed sets as choices with
shell completion, one meaning per flag name (renamed flags warn under their old name), and other
tools' spellings answered with a one-line "did you mean"."""

from __future__ import annotations

import re

import numpy as np
import pytest

from tests.select_helpers import clustered, write_embeddings_folder

COMMANDS = ("download", "embed", "select", "export", "pretrain", "eval", "demo")


def flat(text: str) -> str:
    return " ".join(text.split())


def click_command(name: str):
    import typer.main

    from clipcov_cli.cli import app

    return typer.main.get_command(app).commands[name]


@pytest.mark.parametrize("name", COMMANDS)
def test_every_default_is_visible_in_help(name, cli):
    r = cli(name, "--help", env={"COLUMNS": "100"})
    assert r.returncode == 0, r.stderr
    shown = flat(r.stdout)
    unwrapped = shown.replace("- ", "-")  # click breaks long words after a hyphen
    for p in click_command(name).params:
        if p.hidden or not getattr(p, "help", None):
            continue
        for written in re.findall(r"\[default: [^\]]*\]", p.help):  # defaults written into the help text
            assert flat(written) in shown or flat(written) in unwrapped, (p.name, written)
        if p.default not in (None, False, ()) and getattr(p, "show_default", True) is not False and not p.required:
            assert f"[default: {p.default}" in unwrapped, (p.name, p.default)
    assert "\\[" not in shown
    assert not re.search(r"\s\.(\s|$)", shown), shown  # no help ending in " ." where a default was meant


def test_closed_sets_are_the_librarys_and_offered_as_choices(cli):
    from clipcov_cli.commands import options
    from clipcov_cli.distribute.base import ENGINES
    from clipcov_cli.download.config import INPUT_FORMATS, RESIZE_MODES
    from clipcov_cli.embed.model import PRECISIONS
    from clipcov_cli.evaluate.runner import TASKS
    from clipcov_cli.pretrain.recipes import RECIPES
    from clipcov_cli.select.methods import METHODS
    from clipcov_cli.select.methods.clipcov import R_MODES

    assert options.METHODS == tuple(METHODS) and set(options.R_MODES) == set(R_MODES)
    assert options.ENGINES == ENGINES and options.PRECISIONS == PRECISIONS and options.TASKS == TASKS
    assert set(options.INPUT_FORMATS) == set(INPUT_FORMATS) and options.RESIZE_MODES == RESIZE_MODES
    assert options.RECIPES == tuple(RECIPES)
    r = cli("select", "--help", env={"COLUMNS": "100"})
    assert "<clipcov|random|clip-score|semdedup|negclip-loss>" in r.stdout and "<auto|exact|mean>" in r.stdout
    r = cli("select", ".", "--budget", "1", "--method", "clipkov")
    assert r.returncode == 2 and "unknown --method 'clipkov': use one of clipcov, random" in r.stderr and "negclip-loss" in r.stderr
    r = cli("pretrain", ".", "--out", "x", "--device", "gpu")
    assert r.returncode == 2 and "unknown --device 'gpu'" in r.stderr and "cuda:N" in r.stderr and r.stderr.count("\n") == 1


@pytest.mark.parametrize("words,expected", [
    ("clipcov select --method ", ["clipcov", "random", "clip-score", "semdedup", "negclip-loss"]),
    ("clipcov pretrain --recipe ", ["paper", "tiny"]),
    ("clipcov eval --task ", ["zeroshot", "retrieval"]),
    ("clipcov embed --precision f", ["fp32", "fp16"]),
    ("clipcov embed --device c", ["cpu", "cuda"]),
    ("clipcov download x --engine ", ["local", "ray"]),
])
def test_shell_completion_offers_the_choices(words, expected, cli):
    r = cli(env={"_CLIPCOV_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1))})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == expected


@pytest.mark.parametrize("args,hint", [
    (("download", "urls.tsv", "--output_folder", "out/"), "did you mean --out?"),
    (("download", "urls.tsv", "--out", "o", "--processes_count", "4"), "did you mean --processes?"),
    (("download", "urls.tsv", "--out", "o", "--thread_count=64"), "did you mean --threads?"),
    (("embed", "data/", "--num_prepro_workers", "8"), "did you mean --workers?"),
    (("embed", "data/", "--batch_size", "8"), "did you mean --batch-size?"),
    (("embed", "--input_dataset", "data/"), "did you mean DATASET_DIR (the first argument)?"),
    (("export", "subset/", "--output_folder", "x"), "did you mean --out?"),
    (("pretrain", "subset/", "--train-data", "x.tar"), "did you mean DATA (the first argument)?"),
])
def test_other_tools_spellings_get_a_did_you_mean(args, hint, cli):
    r = cli(*args)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().count("\n") == 0 and r.stderr.startswith("error: no such option") and hint in r.stderr, r.stderr


def test_flags_after_double_dash_go_to_open_clip_train_untouched():
    from clipcov_cli.cli import _foreign_flag

    assert _foreign_flag(["pretrain", "s/", "--out", "r", "--", "--batch_size", "3"]) is None
    assert _foreign_flag(["pretrain", "s/", "--out", "r", "--lr", "1e-3"]) is None  # open_clip_train's own


@pytest.fixture()
def emb_dir(tmp_path):
    V, T, labels, _ = clustered(60, 8, 3, seed=1)
    sims = np.full(60, 0.5, np.float32)
    return write_embeddings_folder(tmp_path / "emb", V, T, np.array([f"{i:09d}" for i in range(60)]), labels, sims)


def test_renamed_flags_keep_their_old_name_with_a_warning(emb_dir, tmp_path, cli):
    new = cli("select", emb_dir, "--budget", "20", "--method", "negclip-loss", "--batch-size", "16",
                  "--threads", "1", "--out", tmp_path / "a", "--print-keys")
    old = cli("select", emb_dir, "--budget", "20", "--method", "negclip-loss", "--batch", "16",
                  "--workers", "1", "--out", tmp_path / "b", "--print-keys")
    assert new.returncode == 0 and old.returncode == 0, old.stderr
    assert new.stdout == old.stdout and len(new.stdout.split()) == 20
    assert "--batch is deprecated" in old.stderr and "use --batch-size" in old.stderr
    assert "--workers is deprecated" in old.stderr and "use --threads" in old.stderr
    assert "deprecated" not in new.stderr
    assert '"batch": 16' in (tmp_path / "b" / "manifest.json").read_text().replace(" ", "").replace('"batch":16', '"batch": 16')
    help_text = cli("select", "--help").stdout
    assert "--workers" not in help_text and "--batch " not in help_text  # hidden


@pytest.mark.parametrize("name", ["embed", "eval"])
def test_templates_say_c_everywhere(name, cli):
    r = cli(name, "--help", env={"COLUMNS": "100"})
    assert "{c}" in r.stdout
