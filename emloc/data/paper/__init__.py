"""The paper's benchmarks (EMLoC, ICML 2025, Table 1) as `Task`s, with the paper's split protocol.

| task | data | demos | queries | score |
|---|---|---|---|---|
| `ImageNet100Task` | local ImageNet-1k folder + the paper's two JSON lists | first k of the 200-image train list (2 per class, file order) | the 5,000 val images | ground truth (dots and spaces removed) is a substring of the prediction |
| `IllusionVQATask` | HF `csebuetnlp/illusionVQA-Soft-Localization`, test | 100-doc pool | the rest | option letter |
| `MMERealWorldLiteTask` | HF `yifanzhang114/MME-RealWorld-lite-lmms-eval`, train | 100-doc pool | the rest | option letter A-E |
| `OKVQATask` | HF `lmms-lab/OK-VQA`, val2014 | 100-doc pool | the rest | VQA soft accuracy |
| `ScreenSpotRECTask` | HF `rootsautomation/ScreenSpot`, test | 100-doc pool | the rest | centre of the predicted box inside the target (or IoU / ACC@t) |
| `YouCook2Task` | HF `lmms-lab/YouCook2`, val + the extracted videos | 100-doc pool | the rest | ROUGE-L (per caption) |

Split protocol (docs/method.md §5): for every task but ImageNet the reference carves a demonstration pool of 100
documents out of the evaluated split, `random.Random(42).sample(range(N), 100)` in sampled order, and evaluates
the remaining N - 100 in index order; `load()` returns exactly (pool, rest). Demonstrations are then drawn from
the pool by `Task.split` with `demo_seed` (the paper uses 42, which reproduces the reference's
`random.seed(42); random.sample(range(100), k)`). ImageNet uses the first k demos of its list in file order
(`demo_order = "first"`).

Modules: `common` (loading, carve-out, image files, `DatasetUnavailableError`), `vqa` (classification and VQA),
`grounding` (ScreenSpot and YouCook2). `docs/reproduction.md` says how to get each dataset.
"""

from emloc.data.base import Task
from emloc.data.paper.common import DatasetUnavailableError, HFPaperTask, carve_fewshot_pool
from emloc.data.paper.grounding import ScreenSpotRECTask, YouCook2Task, box_iou, parse_box, rouge_l
from emloc.data.paper.vqa import IllusionVQATask, ImageNet100Task, MMERealWorldLiteTask, OKVQATask

PAPER_TASKS: dict[str, type[Task]] = {
    "imagenet100": ImageNet100Task,
    "illusionvqa": IllusionVQATask,
    "mme_realworld_lite": MMERealWorldLiteTask,
    "ok_vqa": OKVQATask,
    "screenspot_rec": ScreenSpotRECTask,
    "youcook2": YouCook2Task,
}

__all__ = [
    "PAPER_TASKS",
    "DatasetUnavailableError",
    "HFPaperTask",
    "IllusionVQATask",
    "ImageNet100Task",
    "MMERealWorldLiteTask",
    "OKVQATask",
    "ScreenSpotRECTask",
    "YouCook2Task",
    "box_iou",
    "carve_fewshot_pool",
    "parse_box",
    "rouge_l",
]
