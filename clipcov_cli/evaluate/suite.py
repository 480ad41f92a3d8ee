"""Standard evaluation suites through clip_benchmark, on datasets already on disk in its WebDataset
format (nothing is downloaded).

A task's folder is looked up under ROOT as ``wds_{name}_test`` (DataComp's download_evalsets.py and
the ``djghosh/wds_*_test`` sets), ``wds_{name}`` (clip_benchmark's own ``clip-benchmark/wds_*``
sets) or ``{name}``, with ``/`` in the name written ``-``. Each holds ``test/nshards.txt``,
``test/{0..N-1}.tar``, ``classnames.txt`` and ``zeroshot_classification_templates.txt`` (or
``dataset_type.txt`` = ``retrieval``). clip_benchmark builds the dataset and computes the metrics
(its zero-shot classifier and logits, then acc1, acc5 and mean_per_class_recall as DataComp's
``wds_eval`` computes them; ``zeroshot_retrieval``: image/text retrieval recall@1/5); the suite average is the mean of each task's main metric over
the tasks found.

Suites:
- ``datacomp``: the tasks of DataComp's ``tasklist.yml`` that clip_benchmark evaluates by itself
  (33: classification and Flickr30k / MSCOCO retrieval), main metric as in that list (acc1,
  mean_per_class_recall, mean_recall@1). Left out: WinoGAViL, iWildCam, FMoW and the four fairness
  sets, whose metrics need DataComp's own evaluation code.
- ``paper`` (our reading of "ImageNet, its shifts and 11 downstream sets"): ImageNet-1k,
  ImageNet-V2 / -Sketch / -A / -R and ObjectNet, and CLIP's linear-probe downstream sets that have a
  clip_benchmark WebDataset (Food-101, CIFAR-10/100, SUN397, Cars, Aircraft, VOC2007, DTD, Pets,
  Caltech-101, Flowers-102); main metric acc1 (mean_per_class_recall where DataComp uses it).
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from pathlib import Path

from rich.table import Table

from clipcov_cli.errors import ClipcovError

ACC1, MPCR, MR1 = "acc1", "mean_per_class_recall", "mean_recall@1"


@dataclass(frozen=True)
class SuiteTask:
    name: str  # DataComp / clip_benchmark task name, e.g. "vtab/cifar100"
    main_metric: str = ACC1
    retrieval: bool = False

    def folders(self) -> tuple[str, ...]:
        stem = self.name.removeprefix("retrieval/").replace("/", "-")
        return (f"wds_{stem}_test", f"wds_{stem}", stem)


_CLASSIFICATION_DATACOMP = (
    SuiteTask("vtab/caltech101", MPCR), SuiteTask("cifar10"), SuiteTask("vtab/cifar100"),
    SuiteTask("vtab/clevr_count_all"), SuiteTask("vtab/clevr_closest_object_distance"), SuiteTask("country211"),
    SuiteTask("vtab/dtd"), SuiteTask("vtab/eurosat"), SuiteTask("fgvc_aircraft", MPCR), SuiteTask("food101"),
    SuiteTask("gtsrb"), SuiteTask("imagenet1k"), SuiteTask("imagenet_sketch"), SuiteTask("imagenetv2"),
    SuiteTask("imagenet-a"), SuiteTask("imagenet-o"), SuiteTask("imagenet-r"),
    SuiteTask("vtab/kitti_closest_vehicle_distance"), SuiteTask("mnist"), SuiteTask("objectnet"),
    SuiteTask("vtab/flowers", MPCR), SuiteTask("vtab/pets", MPCR), SuiteTask("voc2007"), SuiteTask("vtab/pcam"),
    SuiteTask("renderedsst2"), SuiteTask("vtab/resisc45"), SuiteTask("cars"), SuiteTask("stl10"), SuiteTask("sun397"),
    SuiteTask("vtab/svhn"), SuiteTask("wilds/camelyon17"),
)
_RETRIEVAL_DATACOMP = (SuiteTask("retrieval/flickr30k", MR1, True),
                       SuiteTask("retrieval/mscoco_2014_5k_test_image_text_retrieval", MR1, True))
_BY_NAME = {t.name: t for t in _CLASSIFICATION_DATACOMP}
_PAPER = tuple(_BY_NAME[name] for name in (
    "imagenet1k", "imagenetv2", "imagenet_sketch", "imagenet-a", "imagenet-r", "objectnet",
    "food101", "cifar10", "vtab/cifar100", "sun397", "cars", "fgvc_aircraft", "voc2007", "vtab/dtd", "vtab/pets",
    "vtab/caltech101", "vtab/flowers"))

SUITES: dict[str, tuple[SuiteTask, ...]] = {"datacomp": _CLASSIFICATION_DATACOMP + _RETRIEVAL_DATACOMP, "paper": _PAPER}


def get_suite(name: str) -> tuple[SuiteTask, ...]:
    if name not in SUITES:
        raise ClipcovError(f"unknown --suite {name!r}: use one of {', '.join(SUITES)}")
    return SUITES[name]


def find_tasks(suite: tuple[SuiteTask, ...], root: Path) -> tuple[list[tuple[SuiteTask, Path]], list[str]]:
    """The suite's tasks found under ``root`` (with their folder) and the names of those not found."""
    if not root.is_dir():
        raise ClipcovError(f"--data {root} is not a folder (it should hold the suite's wds_*_test folders)")
    found, missing = [], []
    for task in suite:
        folder = next((root / f for f in task.folders() if (root / f / "test" / "nshards.txt").is_file()), None)
        if folder is None:
            missing.append(task.name)
        else:
            found.append((task, folder))
    if not found:
        raise ClipcovError(f"no task of the suite is under {root}: expected folders such as "
                           f"{', '.join(t.folders()[0] for t in suite[:3])} (clip_benchmark's WebDataset format, "
                           "each with test/nshards.txt)")
    return found, missing


def evaluate_task(loaded, task: SuiteTask, folder: Path, batch_size: int) -> dict[str, float]:
    """clip_benchmark's dataset and metrics for one task; its prints go to stderr (stdout is for results)."""
    import torch
    from clip_benchmark.datasets.builder import build_dataset
    from clip_benchmark.metrics import zeroshot_classification, zeroshot_retrieval

    device = str(loaded.device).split(":")[0]
    with contextlib.redirect_stdout(sys.stderr):
        ds = build_dataset(f"wds/{task.name}", root=str(folder), transform=loaded.preprocess, split="test",
                           download=False, task="zeroshot_retrieval" if task.retrieval else "zeroshot_classification")
        loader = torch.utils.data.DataLoader(ds.batched(batch_size), batch_size=None, shuffle=False, num_workers=0)
        if task.retrieval:
            m = zeroshot_retrieval.evaluate(loaded.model, loader, loaded.tokenizer, device, amp=False,
                                            recall_k_list=[1, 5])
            m[MR1] = (m["image_retrieval_recall@1"] + m["text_retrieval_recall@1"]) / 2
        else:  # clip_benchmark's classifier and logits; the metrics as DataComp computes them from those
            clf = zeroshot_classification.zero_shot_classifier(loaded.model, loaded.tokenizer, ds.classes,
                                                               ds.templates, device, amp=False)
            logits, target = zeroshot_classification.run_classification(loaded.model, clf, loader, device, amp=False)
            m = classification_metrics(logits, target, len(ds.classes))
    return {k: float(v) for k, v in m.items() if v == v}  # acc5 is NaN under 5 classes: left out


def classification_metrics(logits, target, n_classes: int) -> dict[str, float]:
    """acc1, acc5 (5 classes or more) and mean_per_class_recall (sklearn's balanced accuracy), as
    DataComp's wds_eval. (clip_benchmark's own ``evaluate`` computes the same, but its accuracy fails
    under NumPy 2 by converting a 1-element array with float().) A multi-label set: mean average precision."""
    import torch
    from clip_benchmark.metrics.zeroshot_classification import average_precision_per_class
    from sklearn.metrics import balanced_accuracy_score

    if target.ndim == 2:
        return {"mean_average_precision": float(average_precision_per_class(logits, target).mean())}
    ks = (1, 5) if n_classes >= 5 else (1,)
    top = torch.topk(logits, max(ks), dim=1).indices
    out = {f"acc{k}": float((top[:, :k] == target[:, None]).any(dim=1).double().mean()) for k in ks}
    out[MPCR] = float(balanced_accuracy_score(target.cpu().numpy(), logits.argmax(dim=1).cpu().numpy()))
    return out


def main_value(task: SuiteTask, metrics: dict[str, float]) -> float:
    """The task's main metric (a multi-label set, e.g. VOC2007 in that form, gives its mean average precision)."""
    if task.main_metric in metrics:
        return metrics[task.main_metric]
    return metrics.get("mean_average_precision", next(iter(metrics.values())))


def suite_rows(suite: str, loaded, found: list[tuple[SuiteTask, Path]], missing: list[str], batch_size: int,
               base: dict) -> list[dict]:
    """results.json rows of one checkpoint: every metric of every task found, then the suite average.
    ``base``: the fields every row carries (model, checkpoint)."""
    rows, mains = [], []
    for task, folder in found:
        metrics = evaluate_task(loaded, task, folder, batch_size)
        mains.append(main_value(task, metrics))
        rows += [{"task": task.name, "metric": k, "value": v, **base, "data": str(folder.resolve()), "suite": suite}
                 for k, v in metrics.items()]
        rows.append({"task": task.name, "metric": "main", "value": mains[-1], **base, "data": str(folder.resolve()),
                     "suite": suite, "main_metric": task.main_metric})
    rows.append({"task": f"suite:{suite}", "metric": "average", "value": sum(mains) / len(mains), **base,
                 "data": str(found[0][1].parent.resolve()), "suite": suite, "tasks": [t.name for t, _ in found],
                 "missing": missing})
    return rows


def suite_table(rows: list[dict]) -> Table:
    """One row per task (its main metric) and the average, one column per checkpoint."""
    from clipcov_cli.evaluate.results import label

    ckpts = list(dict.fromkeys(r["checkpoint"] for r in rows))
    t = Table(title=f"suite {rows[0]['suite']}", header_style="bold")
    t.add_column("task", no_wrap=True)
    for c in ckpts:
        t.add_column(label(c), justify="right")
    mains = [r for r in rows if r["metric"] in ("main", "average")]
    for task in dict.fromkeys(r["task"] for r in mains):
        values = {r["checkpoint"]: r["value"] for r in mains if r["task"] == task}
        t.add_row(task, *(f"{100 * values[c]:.2f}" if c in values else "-" for c in ckpts))
    return t
