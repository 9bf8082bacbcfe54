"""Places on a storage the commands do not support: `s3://`, `http://`, the typo `gs:/` (one
slash) or a malformed bucket, given as an output folder, a model, prepared data or
pseudo-labels. Each is refused before anything is written, naming the flag or config field
and the forms that work (a local path or gs://BUCKET/PATH); none makes a local folder such
as `s3:` or `gs:` (what `pathlib.Path("s3://b/x")` would be).

The gs:// paths that work run against a Cloud Storage emulator: tests/cloud/.
"""

from __future__ import annotations

from tests.corpus import EVAL, PL, SEG, UNC, Case, prep

SUPPORTED = "gs://BUCKET/PATH"

CASES = [
    Case("segment: s3 output_dir", SEG,
         lambda w, t: ["--checkpoint=random:tiny", f"--image={w.image}", "--point=5,5",
                       "--output_dir=s3://bucket/seg"],
         ("--output_dir=s3://bucket/seg", "s3: paths are not supported", SUPPORTED)),
    Case("segment: gs with one slash", SEG,
         lambda w, t: ["--checkpoint=random:tiny", f"--image={w.image}", "--point=5,5",
                       "--output_dir=gs:/bucket/seg"],
         ("--output_dir=gs:/bucket/seg", "gs:// takes two slashes", SUPPORTED)),
    Case("segment: http image", SEG,
         lambda w, t: ["--checkpoint=random:tiny", "--image=https://example.com/a.png",
                       "--point=5,5", f"--output_dir={t / 'seg'}"],
         ("--image=https://example.com/a.png", "https: paths are not supported", SUPPORTED)),
    Case("evaluate: s3 checkpoint", "sum_jax.evaluate",
         lambda w, t: [*EVAL, "--checkpoint=s3://bucket/model", f"--workdir={t / 'ev'}",
                       f"--config.data_dir={w.data}"],
         ("--checkpoint", "s3://bucket/model", "s3: paths are not supported", SUPPORTED)),
    Case("evaluate: s3 workdir", "sum_jax.evaluate",
         lambda w, t: [*EVAL, f"--checkpoint={w.model}", "--workdir=s3://bucket/ev",
                       f"--config.data_dir={w.data}"],
         ("--workdir=s3://bucket/ev", "s3: paths are not supported", SUPPORTED)),
    Case("evaluate: bad bucket name", "sum_jax.evaluate",
         lambda w, t: [*EVAL, f"--checkpoint={w.model}", "--workdir=gs://My_Bucket/ev",
                       f"--config.data_dir={w.data}"],
         ("--workdir=gs://My_Bucket/ev", "'My_Bucket' is not a Cloud Storage bucket name")),
    Case("evaluate: http data_dir", "sum_jax.evaluate",
         lambda w, t: [*EVAL, f"--checkpoint={w.model}", f"--workdir={t / 'ev'}",
                       "--config.data_dir=http://host/prepared"],
         ("config.data_dir=http://host/prepared", "http: paths are not supported", SUPPORTED)),
    Case("prepare: s3 data_dir", "sum_jax.prepare_data",
         lambda w, t: ["--config.dataset=toy", "--config.format=folder", "--config.task_id=1",
                       f"--config.source_dir={w.src}", "--config.data_dir=s3://bucket/prepared"],
         ("config.data_dir=s3://bucket/prepared", "s3: paths are not supported", SUPPORTED)),
    Case("prepare: gs source_dir", "sum_jax.prepare_data",
         lambda w, t: ["--config.dataset=toy", "--config.format=folder", "--config.task_id=1",
                       "--config.source_dir=gs://bucket/raw", f"--config.data_dir={t / 'd'}"],
         ("config.source_dir=gs://bucket/raw", "copy it to a local disk first")),
    Case("pseudo_labels: s3 output_dir", "sum_jax.pseudo_labels",
         lambda w, t: [*PL, *prep(w)[:1], f"--config.checkpoint={w.model}",
                       "--config.output_dir=s3://bucket/labels"],
         ("config.output_dir=s3://bucket/labels", "s3: paths are not supported", SUPPORTED)),
    Case("uncertainty: gs with one slash pseudo_labels", "sum_jax.uncertainty",
         lambda w, t: [*UNC, f"--config.data_dir={w.data}", "--config.source=confidence",
                       "--config.pseudo_labels=gs:/bucket/labels"],
         ("config.pseudo_labels=gs:/bucket/labels", "gs:// takes two slashes", SUPPORTED)),
    Case("train: s3 workdir", "sum_jax.train",
         lambda w, t: ["--config=configs/ft_small.py", "--workdir=s3://bucket/run"],
         ("--workdir=s3://bucket/run", "s3: paths are not supported", SUPPORTED)),
    Case("train: demo on gs", "sum_jax.train",
         lambda w, t: ["--config=configs/demo.py", "--workdir=gs://bucket/demo"],
         ("--workdir=gs://bucket/demo", "give a local --workdir")),
]  # fmt: skip
